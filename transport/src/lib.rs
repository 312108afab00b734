//! Links between Marill's processes: zeromq over TCP, encrypted and mutually authenticated
//! with CURVE (CurveZMQ: Curve25519 key exchange, XSalsa20-Poly1305 per message; RFC 26).
//!
//! Every link has a server (binds) and a client (connects). The client pins the server's public
//! key, so it talks to that server only; the server admits only clients whose public key is on
//! its allow-list, checked by a ZAP handler (RFC 27) in the server's process. A peer link carries
//! the 2PC messages and implements [`marill_mpc::channel::Transport`], so the core library's
//! byte and round counters apply unchanged.
//!
//! Sockets are blocking; every receive has a timeout so that a vanished peer is an error, not a
//! hang, and every frame is bounded in size.

#![deny(missing_docs)]

pub mod doorbell;
pub mod keys;
pub mod link;
pub mod mux;
pub mod seal;
mod secret_file;
mod zap;

pub use doorbell::{doorbell, Doorbell, Ringer, Woken};
pub use keys::KeyPair;
pub use link::{Link, LinkConfig, Role};
pub use mux::{Frames, Lane, Mux};
pub use seal::{seal, Binding, SealKeyPair, SealPublic, Sealed};

use thiserror::Error;

/// Transport failures.
#[derive(Debug, Error)]
pub enum TransportError {
    /// libzmq was built without CURVE.
    #[error("this libzmq has no CURVE support: links cannot be encrypted")]
    NoCurve,
    /// A zeromq call failed.
    #[error("zeromq {what}: {err}")]
    Zmq {
        /// what was being done
        what: &'static str,
        /// the libzmq error
        err: zmq::Error,
    },
    /// Nothing arrived in time.
    #[error("no message from {peer} within {secs} s")]
    Timeout {
        /// the peer
        peer: String,
        /// the timeout
        secs: u64,
    },
    /// A key file is missing or malformed.
    #[error("key {path}: {why}")]
    Key {
        /// the file
        path: String,
        /// what is wrong
        why: String,
    },
    /// A lane of a split link failed (see [`mux`]).
    #[error("lane: {why}")]
    Lane {
        /// what went wrong
        why: String,
    },
    /// A frame exceeds the link's limit.
    #[error("frame of {got} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// frame size
        got: usize,
        /// limit
        limit: usize,
    },
}

pub(crate) fn zmq_err(what: &'static str) -> impl FnOnce(zmq::Error) -> TransportError {
    move |err| TransportError::Zmq { what, err }
}

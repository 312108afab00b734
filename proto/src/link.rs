//! Typed messages over a link: [`send`] and [`recv`] a link's message enum ([`Wire`]) over any
//! `marill_transport::Frames` (a CURVE link or one lane of it), and a peer's `Error` message
//! turned into an error on the receiving side.

use crate::{ProtoError, Wire};
use marill_transport::{Frames, TransportError};
use std::time::Duration;
use thiserror::Error;

/// Why a typed exchange failed.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The link itself failed (closed, timed out, refused).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The bytes received are not a message of this link and build.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The peer sent an `Error` message.
    #[error("peer failed: {0}")]
    Peer(String),
}

/// Sends a typed message.
pub fn send<M: Wire>(link: &impl Frames, m: &M) -> Result<(), LinkError> {
    Ok(link.send_frame(&crate::encode(m))?)
}

/// Receives a typed message within the link's timeout; a peer's `Error` message becomes an
/// error here.
pub fn recv<M: Wire>(link: &impl Frames) -> Result<M, LinkError> {
    typed(&link.recv_frame()?)
}

/// Receives the next typed message, waiting without limit: what a worker does between a
/// session's steps and a dealer between bundle requests (an idle cluster waits for work; the
/// link's timeout still bounds every exchange inside a step).
pub fn recv_idle<M: Wire>(link: &impl Frames) -> Result<M, LinkError> {
    loop {
        if let Some(bytes) = link.try_recv_frame(Duration::from_secs(60))? {
            return typed(&bytes);
        }
    }
}

/// Decodes a received message; a peer's `Error` message becomes [`LinkError::Peer`].
pub fn typed<M: Wire>(bytes: &[u8]) -> Result<M, LinkError> {
    crate::decode::<M>(bytes)?
        .into_error()
        .map_or_else(Ok, |e| Err(LinkError::Peer(e)))
}

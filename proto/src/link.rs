//! Typed messages over a link: [`send`] and [`recv`] a [`Message`] over any
//! `marill_transport::Frames` (a CURVE link or one lane of it), and a peer's `Error` message
//! turned into an error on the receiving side.

use crate::{Message, ProtoError};
use marill_transport::{Frames, TransportError};
use std::time::Duration;
use thiserror::Error;

/// Why a typed exchange failed.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The link itself failed (closed, timed out, refused).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The bytes received are not a message of this build.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// The peer sent an `Error` message.
    #[error("peer failed: {0}")]
    Peer(String),
}

/// Sends a typed message.
pub fn send(link: &impl Frames, m: &Message) -> Result<(), LinkError> {
    Ok(link.send_frame(&crate::encode(m))?)
}

/// Receives a typed message within the link's timeout; a peer's `Error` message becomes an
/// error here.
pub fn recv(link: &impl Frames) -> Result<Message, LinkError> {
    typed(&link.recv_frame()?)
}

/// Receives the next typed message, waiting without limit: what a worker does between a
/// session's steps and a dealer between bundle requests (an idle cluster waits for work; the
/// link's timeout still bounds every exchange inside a step).
pub fn recv_idle(link: &impl Frames) -> Result<Message, LinkError> {
    loop {
        if let Some(bytes) = link.try_recv_frame(Duration::from_secs(60))? {
            return typed(&bytes);
        }
    }
}

/// Decodes a received message; a peer's `Error` message becomes [`LinkError::Peer`].
pub fn typed(bytes: &[u8]) -> Result<Message, LinkError> {
    match crate::decode(bytes)? {
        Message::Error(e) => Err(LinkError::Peer(e)),
        m => Ok(m),
    }
}

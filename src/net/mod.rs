//! The private suffix as separate processes on encrypted links: a dealer, a provider worker, a
//! helper worker and the client (`marill keys`, `marill dealer`, `marill worker`,
//! `marill client generate`). Direct mode: the client connects to its two workers itself (the
//! cluster's coordinator and Kafka intake come later). Every link is zeromq over TCP with CURVE
//! encryption and mutual authentication (`marill-transport`); every message is typed
//! (`marill-proto`).

pub mod client;
pub mod dealer;
pub mod dealer_ahead;
pub mod dealer_epochs;
pub mod keys;
pub mod worker;
pub mod worker_group;
pub mod worker_handshake;
pub mod worker_lane;
pub mod worker_metrics;

use anyhow::{anyhow, Result};
use marill_proto::Message;
use marill_transport::Frames;

/// Sends a typed message.
pub fn send(link: &impl Frames, m: &Message) -> Result<()> {
    Ok(link.send_frame(&marill_proto::encode(m))?)
}

/// Receives a typed message within the link's timeout; a peer's `Error` message becomes an
/// error here.
pub fn recv(link: &impl Frames) -> Result<Message> {
    typed(&link.recv_frame()?)
}

/// Receives the next typed message, waiting without limit: what a worker does between a
/// session's steps and a dealer between bundle requests (an idle cluster waits for work; the
/// link's timeout still bounds every exchange inside a step).
pub fn recv_idle(link: &impl Frames) -> Result<Message> {
    loop {
        if let Some(bytes) = link.try_recv_frame(std::time::Duration::from_secs(60))? {
            return typed(&bytes);
        }
    }
}

pub(crate) fn typed(bytes: &[u8]) -> Result<Message> {
    match marill_proto::decode(bytes)? {
        Message::Error(e) => Err(anyhow!("peer failed: {e}")),
        m => Ok(m),
    }
}

/// The names of the CURVE key pairs `marill keys generate` writes.
pub const ROLES: [&str; 5] = ["client", "provider", "helper", "dealer", "coordinator"];

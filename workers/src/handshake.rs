//! How a provider and a helper start their pair over the raw peer link, before they split it
//! into lanes: both say hello (again every [`RETRY`], then less often, until heard; neither
//! gives up: the pair's workers may start in any order, the provider loads the model first).
//! The provider answers the first helper hello it hears with the helper's shares of the
//! prepared suffix and its own hello (with its session count), and the helper answers with its
//! hello; each then serves the smaller of the two counts.
//!
//! A worker that restarts while its peer serves speaks outside the peer's lanes: the peer's
//! link watch stops it (its lane states no longer match a peer), it restarts too, and the pair
//! starts afresh (a provider prepares fresh shares). Stale frames (a serving peer's "no such
//! lane" notices, a previous incarnation's lane traffic, repeated hellos) are skipped.

use anyhow::{bail, Result};
use marill_proto::link::send;
use marill_proto::PeerMessage;
use marill_suffix::secure::PreparedSuffix;
use marill_suffix::SuffixConfig;
use marill_transport::{Link, TransportError};
use std::time::Duration;

/// How often a helper says hello until a provider answers.
pub const RETRY: Duration = Duration::from_secs(2);

/// Provider: waits for a helper's hello, sends it `shares` and its own session count; returns
/// the helper's session count.
pub fn provide(
    peer: &Link,
    cfg: &SuffixConfig,
    shares: PreparedSuffix,
    sessions: u32,
) -> Result<u32> {
    // "here I am" too: a helper still serving this worker's previous incarnation hears it
    // outside its lanes and restarts; a fresh helper skips it. Anything but a hello is a
    // previous helper's lane traffic or a "no such lane" notice.
    hello_until(peer, |bytes| {
        Ok(matches!(
            marill_proto::decode::<PeerMessage>(bytes),
            Ok(PeerMessage::Probe)
        )
        .then_some(()))
    })?;
    send(
        peer,
        &PeerMessage::Prepared {
            cfg: cfg.clone(),
            suffix: Box::new(shares),
        },
    )?;
    send(peer, &PeerMessage::Ready { sessions })?;
    loop {
        match marill_proto::decode(&peer.recv()?)? {
            PeerMessage::Ready { sessions } => return Ok(sessions.max(1)),
            // the helper's repeated hellos, sent before our answer reached it
            PeerMessage::Probe => continue,
            m => bail!(
                "expected the helper's hello, got {}",
                marill_proto::describe(&m)
            ),
        }
    }
}

/// Helper: says hello until a provider answers with the prepared suffix (without limit, as
/// the provider waits for a helper: the pair's workers may start in any order, and the
/// provider loads the model first).
pub fn receive(peer: &Link, me: &str) -> Result<(SuffixConfig, PreparedSuffix)> {
    let mut told = false;
    hello_until(peer, |bytes| {
        match marill_proto::decode::<PeerMessage>(bytes) {
            Ok(PeerMessage::Prepared { cfg, suffix }) => Ok(Some((cfg, *suffix))),
            // the provider's "here I am", sent until it heard a helper
            Ok(PeerMessage::Probe) => Ok(None),
            Ok(m) => bail!(
                "expected the prepared suffix, got {}",
                marill_proto::describe(&m)
            ),
            Err(_) => {
                if !told {
                    told = true;
                    tracing::info!(
                    "{me}: the provider still serves a previous helper; waiting for its restart"
                );
                }
                Ok(None)
            }
        }
    })
}

/// Says hello on `peer` (every [`RETRY`] at first, then less often; hellos queue while no
/// peer is there, and a full queue is not an error) until `heard` makes something of a frame
/// received.
fn hello_until<T>(peer: &Link, mut heard: impl FnMut(&[u8]) -> Result<Option<T>>) -> Result<T> {
    let hello = marill_proto::encode(&PeerMessage::Probe);
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        match peer.send(&hello) {
            Ok(()) | Err(TransportError::Timeout { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let wait = if attempt <= 5 { RETRY } else { 8 * RETRY };
        if let Some(bytes) = peer.try_recv(wait)? {
            if let Some(t) = heard(&bytes)? {
                return Ok(t);
            }
        }
    }
}

/// Helper: sends its own session count and returns the provider's.
pub fn exchange_hellos(peer: &Link, sessions: u32) -> Result<u32> {
    send(peer, &PeerMessage::Ready { sessions })?;
    match marill_proto::decode(&peer.recv()?)? {
        PeerMessage::Ready { sessions } => Ok(sessions.max(1)),
        m => bail!(
            "expected the provider's hello, got {}",
            marill_proto::describe(&m)
        ),
    }
}

//! The channel between the two computing parties, with byte and round accounting.
//!
//! Protocols see only [`Channel`], which wraps any [`Transport`] (an in-memory pair here, zeromq
//! with CURVE in the transport crate). One *round* is one [`Channel::exchange`]: both parties send
//! their message, then read the peer's; independent openings are batched into one exchange.
//! Values are sent in byte-aligned packed form: a `b`-bit value takes `ceil(b/8)` bytes.

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use std::future::Future;
use thiserror::Error;

/// Transport failures.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// The peer went away.
    #[error("peer channel closed")]
    Closed,
    /// Transport-specific failure.
    #[error("transport failure: {0}")]
    Transport(String),
    /// The peer sent a message of the wrong size.
    #[error("malformed message: expected {expected} bytes, got {got}")]
    Malformed {
        /// expected length
        expected: usize,
        /// received length
        got: usize,
    },
}

/// A reliable, ordered, authenticated message pipe to the peer party.
pub trait Transport: Send {
    /// Sends one message.
    fn send(&mut self, msg: Vec<u8>) -> impl Future<Output = Result<(), ChannelError>> + Send;
    /// Receives the next message.
    fn recv(&mut self) -> impl Future<Output = Result<Vec<u8>, ChannelError>> + Send;
}

/// Communication counters of one party.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommStats {
    /// bytes this party sent
    pub bytes_sent: u64,
    /// bytes this party received
    pub bytes_received: u64,
    /// sequential exchanges (rounds)
    pub rounds: u64,
    /// messages sent
    pub messages: u64,
}

impl CommStats {
    /// Difference `self - earlier` (counters since a snapshot).
    pub fn since(&self, earlier: &CommStats) -> CommStats {
        CommStats {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            rounds: self.rounds - earlier.rounds,
            messages: self.messages - earlier.messages,
        }
    }
}

/// A counted channel over a transport.
pub struct Channel<T: Transport> {
    transport: T,
    stats: CommStats,
}

/// Bytes used on the wire by one value of `bits` bits.
pub fn packed_width(bits: u32) -> usize {
    bits.div_ceil(8).clamp(1, 8) as usize
}

/// Packs the low `bits` of each value, byte aligned, little endian.
pub fn pack(values: &[u64], bits: u32, out: &mut Vec<u8>) {
    let w = packed_width(bits);
    out.reserve(values.len() * w);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes()[..w]);
    }
}

/// Unpacks `n` values of `bits` bits; errors if `bytes` has the wrong length.
pub fn unpack(bytes: &[u8], n: usize, bits: u32) -> Result<Vec<u64>, ChannelError> {
    let w = packed_width(bits);
    if bytes.len() != n * w {
        return Err(ChannelError::Malformed {
            expected: n * w,
            got: bytes.len(),
        });
    }
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    Ok(bytes
        .chunks_exact(w)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..w].copy_from_slice(c);
            u64::from_le_bytes(b) & mask
        })
        .collect())
}

impl<T: Transport> Channel<T> {
    /// Wraps a transport.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            stats: CommStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CommStats {
        self.stats
    }

    /// One round: send `mine` (values of `bits` bits each), receive the peer's `mine.len()` values.
    pub async fn exchange(&mut self, mine: &[u64], bits: u32) -> Result<Vec<u64>, ChannelError> {
        let mut buf = Vec::new();
        pack(mine, bits, &mut buf);
        let n = mine.len();
        let peer = self.exchange_bytes(buf).await?;
        unpack(&peer, n, bits)
    }

    /// One round with several independently packed groups `(values, bits)`; returns the peer's
    /// groups in the same layout. Used to batch independent openings into one round.
    pub async fn exchange_groups(
        &mut self,
        groups: &[(&[u64], u32)],
    ) -> Result<Vec<Vec<u64>>, ChannelError> {
        let mut buf = Vec::new();
        for (vals, bits) in groups {
            pack(vals, *bits, &mut buf);
        }
        let peer = self.exchange_bytes(buf).await?;
        let expected: usize = groups.iter().map(|(v, b)| v.len() * packed_width(*b)).sum();
        if peer.len() != expected {
            return Err(ChannelError::Malformed {
                expected,
                got: peer.len(),
            });
        }
        let mut out = Vec::with_capacity(groups.len());
        let mut off = 0;
        for (vals, bits) in groups {
            let len = vals.len() * packed_width(*bits);
            out.push(unpack(&peer[off..off + len], vals.len(), *bits)?);
            off += len;
        }
        Ok(out)
    }

    /// One round of raw bytes.
    pub async fn exchange_bytes(&mut self, mine: Vec<u8>) -> Result<Vec<u8>, ChannelError> {
        self.stats.bytes_sent += mine.len() as u64;
        self.stats.messages += 1;
        self.transport.send(mine).await?;
        let peer = self.transport.recv().await?;
        self.stats.bytes_received += peer.len() as u64;
        self.stats.rounds += 1;
        Ok(peer)
    }
}

/// A record of every message one party received (its view), for security tests.
pub type ViewLog = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;

/// One end of an in-memory transport.
pub struct MemoryTransport {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    view: Option<ViewLog>,
}

impl MemoryTransport {
    /// Records every received message into `log`.
    pub fn record_view(&mut self, log: ViewLog) {
        self.view = Some(log);
    }
}

impl Transport for MemoryTransport {
    async fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        self.tx.send(msg).await.map_err(|_| ChannelError::Closed)
    }

    async fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        let m = self.rx.next().await.ok_or(ChannelError::Closed)?;
        if let Some(v) = &self.view {
            v.lock().unwrap_or_else(|e| e.into_inner()).push(m.clone());
        }
        Ok(m)
    }
}

/// Two connected in-memory transports (for tests and the single-process executor).
pub fn memory_pair() -> (MemoryTransport, MemoryTransport) {
    let (tx0, rx1) = mpsc::unbounded();
    let (tx1, rx0) = mpsc::unbounded();
    (
        MemoryTransport {
            tx: tx0,
            rx: rx0,
            view: None,
        },
        MemoryTransport {
            tx: tx1,
            rx: rx1,
            view: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_counts_bytes_and_rounds() {
        let (a, b) = memory_pair();
        let (mut a, mut b) = (Channel::new(a), Channel::new(b));
        let (ra, rb) = futures::executor::block_on(async {
            futures::join!(a.exchange(&[1, 2, 3], 64), b.exchange(&[4, 5, 6], 64))
        });
        assert_eq!(ra.unwrap(), vec![4, 5, 6]);
        assert_eq!(rb.unwrap(), vec![1, 2, 3]);
        assert_eq!(a.stats().bytes_sent, 24);
        assert_eq!(a.stats().rounds, 1);
    }

    #[test]
    fn packing_round_trips_and_rejects_bad_length() {
        let vals = [0x1fffu64, 7, 0];
        let mut buf = Vec::new();
        pack(&vals, 13, &mut buf);
        assert_eq!(buf.len(), 6);
        assert_eq!(unpack(&buf, 3, 13).unwrap(), vals);
        assert!(matches!(
            unpack(&buf[..5], 3, 13),
            Err(ChannelError::Malformed { .. })
        ));
    }

    #[test]
    fn closed_peer_is_an_error() {
        let (a, b) = memory_pair();
        drop(b);
        let mut a = Channel::new(a);
        let r = futures::executor::block_on(a.exchange(&[1], 64));
        assert!(matches!(r, Err(ChannelError::Closed)));
    }
}

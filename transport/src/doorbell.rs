//! A doorbell beside a link: a link is served by one thread (a zeromq socket is not
//! thread-safe), so other threads that hand that thread something to send ring the bell, and
//! the thread waits for its link and its bell in one poll ([`Link::wait_or_bell`]) instead of
//! waking on a short tick to look at both. The bell is a Unix socket pair polled beside the
//! zeromq socket (`zmq_poll` takes plain file descriptors); ringing is one non-blocking write
//! from any thread.

use crate::link::Link;
use crate::{zmq_err, TransportError};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// The waiting side of a doorbell (owned by the link's thread).
pub struct Doorbell {
    rx: UnixStream,
}

/// The ringing side: cloned to every thread that may ring.
#[derive(Clone)]
pub struct Ringer {
    tx: Arc<UnixStream>,
}

/// A new doorbell and its ringer.
pub fn doorbell() -> std::io::Result<(Ringer, Doorbell)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Ringer { tx: Arc::new(tx) }, Doorbell { rx }))
}

impl Ringer {
    /// Rings (never blocks: a full buffer means the bell is rung already).
    pub fn ring(&self) {
        let _ = (&*self.tx).write(&[1]);
    }
}

impl Doorbell {
    /// Silences the bell (every ring so far).
    fn clear(&self) {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
    }
}

/// What ended a [`Link::wait_or_bell`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Woken {
    /// a message waits on the link
    pub link: bool,
    /// the bell rang (it is silenced again)
    pub bell: bool,
}

impl Link {
    /// Waits up to `wait` until a message waits on the link or `bell` rings. A ring is silenced
    /// before this returns, so a thread that rings after the caller looked at what it was handed
    /// wakes the next wait: no ring is lost.
    pub fn wait_or_bell(&self, bell: &Doorbell, wait: Duration) -> Result<Woken, TransportError> {
        let mut items = [
            self.socket().as_poll_item(zmq::POLLIN),
            zmq::PollItem::from_fd(bell.rx.as_raw_fd(), zmq::POLLIN),
        ];
        zmq::poll(&mut items, wait.as_millis().min(i64::MAX as u128) as i64)
            .map_err(zmq_err("poll"))?;
        let woken = Woken {
            link: items[0].is_readable(),
            bell: items[1].is_readable(),
        };
        if woken.bell {
            bell.clear();
        }
        Ok(woken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{LinkConfig, TestServer};
    use std::time::Instant;

    fn pair() -> (Link, Link) {
        let t = TestServer::new(LinkConfig::new("peer"));
        let c = t.client();
        (t.server, c)
    }

    /// A ring from another thread ends a long wait at once; a message on the link does too; with
    /// neither the wait lasts what it was given; many rings before a wait wake it once.
    #[test]
    fn a_wait_ends_on_a_ring_or_a_message_and_not_before() {
        let (s, c) = pair();
        let (ringer, bell) = doorbell().unwrap();
        // nothing: the wait lasts its time
        let t = Instant::now();
        let w = s.wait_or_bell(&bell, Duration::from_millis(150)).unwrap();
        assert_eq!(
            w,
            Woken {
                link: false,
                bell: false
            }
        );
        assert!(
            t.elapsed() >= Duration::from_millis(140),
            "{:?}",
            t.elapsed()
        );
        // a ring from another thread, 100 ms into a 20 s wait
        let r = ringer.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            r.ring();
        });
        let t = Instant::now();
        let w = s.wait_or_bell(&bell, Duration::from_secs(20)).unwrap();
        th.join().unwrap();
        assert!(w.bell && !w.link, "{w:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // silenced: the next wait is not woken by the old ring
        let w = s.wait_or_bell(&bell, Duration::from_millis(50)).unwrap();
        assert!(!w.bell, "{w:?}");
        // many rings (more than the buffer holds) wake one wait, then it is silent again
        for _ in 0..100_000 {
            ringer.ring();
        }
        assert!(s.wait_or_bell(&bell, Duration::ZERO).unwrap().bell);
        assert!(!s.wait_or_bell(&bell, Duration::ZERO).unwrap().bell);
        // a message on the link
        c.send(b"hello").unwrap();
        let t = Instant::now();
        let w = s.wait_or_bell(&bell, Duration::from_secs(20)).unwrap();
        assert!(w.link && !w.bell, "{w:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(s.recv().unwrap(), b"hello");
    }
}

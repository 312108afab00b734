//! Lanes: several independent, ordered message streams over one encrypted [`Link`], so that a
//! worker pair runs many sessions at once over one peer link and one dealer link per worker.
//!
//! Each frame on the link is `lane (u32, big endian) ‖ payload`. One pump thread owns the link
//! (a zeromq socket serves one thread at a time): it forwards what the lanes send, which reach
//! it over an in-process zeromq socket (one per lane, so a sender is never blocked by another
//! lane's traffic and the pump wakes at once), and hands each received frame to its lane's
//! inbox. A lane is used by one thread at a time (a session); different lanes run in parallel.
//! Within a lane messages arrive whole and in order, as on a link. The two ends may have
//! different numbers of lanes (each uses the ones both have): a frame on a lane this end does
//! not have is answered with a notice (the header's top bit set), and the sender's next receive
//! on that lane fails saying so. A frame too short to name a lane is a protocol error of the
//! (authenticated) peer: every lane's next receive fails with it. Nothing is dropped silently.
//!
//! Inboxes are unbounded: what waits in one is bounded by the protocol (a 2PC round's message,
//! or one step's correlations streamed by the dealer).

use crate::link::{Link, LinkConfig};
use crate::{zmq_err, TransportError};
use marill_mpc::channel::{ChannelError, Transport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of a frame's lane header.
const HEADER: usize = 4;
/// The header's top bit: "this end has no such lane" (a notice, no payload).
const NO_LANE: u32 = 1 << 31;
/// Most lanes a link is split into.
pub const MAX_LANES: u32 = 1 << 16;

/// Sending and receiving whole messages: what a [`Link`] and a [`Lane`] both do.
pub trait Frames {
    /// Sends one message.
    fn send_frame(&self, bytes: &[u8]) -> Result<(), TransportError>;
    /// Receives the next message within the timeout (its passing is an error).
    fn recv_frame(&self) -> Result<Vec<u8>, TransportError>;
    /// Receives with a shorter wait: `Ok(None)` when nothing arrived within `wait`.
    fn try_recv_frame(&self, wait: Duration) -> Result<Option<Vec<u8>>, TransportError>;
}

impl Frames for Link {
    fn send_frame(&self, bytes: &[u8]) -> Result<(), TransportError> {
        self.send(bytes)
    }
    fn recv_frame(&self) -> Result<Vec<u8>, TransportError> {
        self.recv()
    }
    fn try_recv_frame(&self, wait: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        self.try_recv(wait)
    }
}

/// The pump of a link split into lanes; stops it (and closes the link) when dropped.
pub struct Mux {
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
    events: Option<Receiver<String>>,
}

/// One lane of a [`Mux`]: an ordered message stream to the same lane at the other end.
pub struct Lane {
    id: u32,
    push: zmq::Socket,
    inbox: Receiver<Result<Vec<u8>, String>>,
    cfg: LinkConfig,
    /// set when the pump has stopped: a send then fails at once instead of waiting for the
    /// link's timeout on a socket nobody reads
    closed: Arc<AtomicBool>,
}

/// A unique name for each mux's in-process socket.
static NEXT_MUX: AtomicU64 = AtomicU64::new(0);

impl Mux {
    /// Splits `link` into lanes `0..lanes`; the other end must split its link the same way.
    pub fn split(link: Link, lanes: u32) -> Result<(Self, Vec<Lane>), TransportError> {
        if lanes == 0 || lanes > MAX_LANES {
            return Err(TransportError::Lane {
                why: format!("a link split into {lanes} lanes (1 to {MAX_LANES})"),
            });
        }
        let ctx = link.context();
        let address = format!(
            "inproc://marill-mux-{}",
            NEXT_MUX.fetch_add(1, Ordering::Relaxed)
        );
        let pull = ctx.socket(zmq::PULL).map_err(zmq_err("lane socket"))?;
        pull.bind(&address).map_err(zmq_err("lane bind"))?;
        let cfg = link.config().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut inboxes = Vec::new();
        let mut out = Vec::new();
        for id in 0..lanes {
            let push = ctx.socket(zmq::PUSH).map_err(zmq_err("lane socket"))?;
            let ms = cfg.timeout.as_millis().min(i32::MAX as u128) as i32;
            push.set_sndtimeo(ms)
                .map_err(zmq_err("lane send timeout"))?;
            push.set_linger(0).map_err(zmq_err("lane linger"))?;
            push.connect(&address).map_err(zmq_err("lane connect"))?;
            let (tx, rx) = channel();
            inboxes.push(tx);
            out.push(Lane {
                id,
                push,
                inbox: rx,
                cfg: cfg.clone(),
                closed: stop.clone(),
            });
        }
        let s = stop.clone();
        let (events_tx, events) = channel();
        let pump = std::thread::Builder::new()
            .name(format!("mux-{}", cfg.peer))
            .spawn(move || pump(link, pull, inboxes, events_tx, s))
            .map_err(|e| TransportError::Lane {
                why: format!("starting the pump: {e}"),
            })?;
        Ok((
            Self {
                stop,
                pump: Some(pump),
                events: Some(events),
            },
            out,
        ))
    }

    /// What went wrong on the link, as it happens (once; `None` after the first call): frames
    /// the other end sent on lanes this end lacks or too short to name one (e.g. a restarted
    /// peer speaking before it split its link), and failures of the link itself. The lanes
    /// concerned learn it at their next receive; this tells the link's owner at once.
    pub fn take_events(&mut self) -> Option<Receiver<String>> {
        self.events.take()
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

/// How often the pump looks at its stop flag while nothing moves.
const PUMP_TICK_MS: i64 = 50;

fn pump(
    link: Link,
    pull: zmq::Socket,
    inboxes: Vec<Sender<Result<Vec<u8>, String>>>,
    events: Sender<String>,
    stop: Arc<AtomicBool>,
) {
    pump_until_stopped(&link, &pull, &inboxes, &events, &stop);
    // the lanes' sends fail at once from now on
    stop.store(true, Ordering::Relaxed);
}

fn pump_until_stopped(
    link: &Link,
    pull: &zmq::Socket,
    inboxes: &[Sender<Result<Vec<u8>, String>>],
    events: &Sender<String>,
    stop: &AtomicBool,
) {
    let fail_all = |why: String| {
        for i in inboxes {
            let _ = i.send(Err(why.clone()));
        }
        let _ = events.send(why);
    };
    while !stop.load(Ordering::Relaxed) {
        let (outgoing, incoming) = {
            let mut items = [
                pull.as_poll_item(zmq::POLLIN),
                link.socket().as_poll_item(zmq::POLLIN),
            ];
            if let Err(e) = zmq::poll(&mut items, PUMP_TICK_MS) {
                fail_all(format!("lane pump poll: {e}"));
                return;
            }
            (items[0].is_readable(), items[1].is_readable())
        };
        if outgoing {
            while let Ok(frame) = pull.recv_bytes(zmq::DONTWAIT) {
                if let Err(e) = link.send(&frame) {
                    // the sender learns it at its next receive
                    let lane = header(&frame).unwrap_or(0) as usize;
                    if let Some(inbox) = inboxes.get(lane) {
                        let _ = inbox.send(Err(format!("sending: {e}")));
                    }
                }
            }
        }
        if incoming {
            loop {
                let frame = match link.try_recv(Duration::ZERO) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        fail_all(format!("receiving: {e}"));
                        break;
                    }
                };
                match header(&frame) {
                    None => fail_all(format!(
                        "{} sent a frame of {} bytes, too short to name a lane",
                        link.config().peer,
                        frame.len()
                    )),
                    Some(h) if h & NO_LANE != 0 => {
                        let lane = h & !NO_LANE;
                        if let Some(inbox) = inboxes.get(lane as usize) {
                            let _ = inbox.send(Err(format!("the other end has no lane {lane}")));
                        }
                    }
                    Some(lane) => match inboxes.get(lane as usize) {
                        Some(inbox) => {
                            let _ = inbox.send(Ok(frame[HEADER..].to_vec()));
                        }
                        None => {
                            let _ = events.send(format!(
                                "{} sent a frame on lane {lane}, which this end lacks",
                                link.config().peer
                            ));
                            let notice = (lane | NO_LANE).to_be_bytes();
                            if let Err(e) = link.send(&notice) {
                                fail_all(format!("sending: {e}"));
                            }
                        }
                    },
                }
            }
        }
    }
}

/// A frame's header, if it is long enough to have one.
fn header(frame: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(frame.get(..HEADER)?.try_into().ok()?))
}

impl Lane {
    /// This lane's number.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn timeout(&self) -> TransportError {
        TransportError::Timeout {
            peer: format!("{} (lane {})", self.cfg.peer, self.id),
            secs: self.cfg.timeout.as_secs(),
        }
    }

    fn delivered(&self, r: Result<Vec<u8>, String>) -> Result<Vec<u8>, TransportError> {
        r.map_err(|why| TransportError::Lane {
            why: format!("{} (lane {}): {why}", self.cfg.peer, self.id),
        })
    }

    /// Sends one message on this lane.
    pub fn send(&self, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() + HEADER > self.cfg.max_frame {
            return Err(TransportError::TooLarge {
                got: bytes.len(),
                limit: self.cfg.max_frame - HEADER,
            });
        }
        let mut frame = Vec::with_capacity(HEADER + bytes.len());
        frame.extend_from_slice(&self.id.to_be_bytes());
        frame.extend_from_slice(bytes);
        // wait for room in slices, so that a lane whose pump stopped fails at once
        // (a timeout too large to add to the clock is no deadline)
        let deadline = std::time::Instant::now().checked_add(self.cfg.timeout);
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return Err(self.closed_error());
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            let slice = left.min(Duration::from_millis(PUMP_TICK_MS as u64));
            let mut item = [self.push.as_poll_item(zmq::POLLOUT)];
            zmq::poll(&mut item, slice.as_millis() as i64).map_err(zmq_err("lane poll"))?;
            if item[0].is_writable() {
                // one thread per lane: the room just seen is still there
                return self.push.send(frame, zmq::DONTWAIT).map_err(|e| match e {
                    zmq::Error::EAGAIN => self.timeout(),
                    err => TransportError::Zmq {
                        what: "lane send",
                        err,
                    },
                });
            }
            if left.is_zero() {
                return Err(self.timeout());
            }
        }
    }

    fn closed_error(&self) -> TransportError {
        TransportError::Lane {
            why: format!("{} (lane {}): the link is closed", self.cfg.peer, self.id),
        }
    }

    /// Receives this lane's next message within the link's timeout.
    pub fn recv(&self) -> Result<Vec<u8>, TransportError> {
        match self.inbox.recv_timeout(self.cfg.timeout) {
            Ok(r) => self.delivered(r),
            Err(RecvTimeoutError::Timeout) => Err(self.timeout()),
            Err(RecvTimeoutError::Disconnected) => Err(self.closed_error()),
        }
    }

    /// Receives with a shorter wait: `Ok(None)` when nothing arrived within `wait`.
    pub fn try_recv(&self, wait: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        match self.inbox.recv_timeout(wait) {
            Ok(r) => self.delivered(r).map(Some),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.closed_error()),
        }
    }
}

impl Frames for Lane {
    fn send_frame(&self, bytes: &[u8]) -> Result<(), TransportError> {
        self.send(bytes)
    }
    fn recv_frame(&self) -> Result<Vec<u8>, TransportError> {
        self.recv()
    }
    fn try_recv_frame(&self, wait: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        self.try_recv(wait)
    }
}

/// A lane is a 2PC channel like a link (blocking inside the session's own thread).
impl Transport for Lane {
    async fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        Lane::send(self, &msg).map_err(|e| ChannelError::Transport(e.to_string()))
    }

    async fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        Lane::recv(self).map_err(|e| ChannelError::Transport(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyPair;
    use crate::link::{Role, TestServer};

    type End = (Mux, Vec<Lane>);

    /// Two muxed ends of a link; with `raw`, a second client link to the server end whose
    /// frames arrive unframed (the server's own sends would then alternate between its two
    /// clients, so only tests that send nothing from the server use it).
    fn linked(lanes: [u32; 2], secs: u64, raw: bool) -> (End, End, Option<Link>) {
        let mut cfg = LinkConfig::new("peer");
        cfg.timeout = Duration::from_secs(secs);
        cfg.max_frame = 1 << 20;
        let t = TestServer::new(cfg);
        let c = t.client();
        let raw = raw.then(|| t.client());
        (
            Mux::split(t.server, lanes[0]).unwrap(),
            Mux::split(c, lanes[1]).unwrap(),
            raw,
        )
    }

    /// A link timeout too large to add to the clock (a configuration's "never") is no deadline:
    /// lanes send and receive without a panic.
    #[test]
    fn a_huge_timeout_is_no_deadline() {
        let ((_ms, a), (_mc, b), _raw) = linked([1, 1], u64::MAX, false);
        a[0].send(b"x").unwrap();
        assert_eq!(b[0].recv().unwrap(), b"x");
    }

    /// A lane that outlives its pump (its owner dropped the mux first, as when a worker
    /// stops) fails at once on send and receive, naming why, instead of waiting out the
    /// link's timeout on a socket nobody reads.
    #[test]
    fn a_lane_outliving_its_pump_fails_at_once() {
        let ((ms, a), (_mc, _b), _raw) = linked([2, 2], 30, false);
        drop(ms);
        let t = std::time::Instant::now();
        for lane in &a {
            for _ in 0..100 {
                let e = lane.send(b"after").unwrap_err().to_string();
                assert!(e.contains("the link is closed"), "{e}");
            }
            let e = lane.recv().unwrap_err().to_string();
            assert!(e.contains("the link is closed"), "{e}");
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    /// Lanes used from parallel threads deliver every message to the same lane, in order,
    /// whatever the interleaving.
    #[test]
    fn lanes_carry_independent_ordered_streams() {
        let ((_ms, a), (_mc, b), _raw) = linked([4, 4], 10, false);
        let threads: Vec<_> = a
            .into_iter()
            .zip(b)
            .map(|(la, lb)| {
                std::thread::spawn(move || {
                    let id = la.id();
                    for i in 0..200u32 {
                        let m = [id.to_le_bytes(), i.to_le_bytes()].concat();
                        la.send(&m).unwrap();
                        assert_eq!(lb.recv().unwrap(), m, "lane {id}, message {i}");
                        lb.send(&m).unwrap();
                        assert_eq!(la.recv().unwrap(), m);
                    }
                    id
                })
            })
            .collect();
        let ids: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(ids, vec![0, 1, 2, 3]);
    }

    /// A lane is a counted 2PC channel.
    #[test]
    fn a_lane_is_a_counted_channel() {
        let ((_ms, mut a), (_mc, mut b), _raw) = linked([2, 2], 10, false);
        let (la, lb) = (a.remove(1), b.remove(1));
        let t = std::thread::spawn(move || {
            futures::executor::block_on(async move {
                let mut ch = marill_mpc::channel::Channel::new(la);
                ch.exchange(&[1, 2, 3], 64).await.unwrap()
            })
        });
        let mut ch = marill_mpc::channel::Channel::new(lb);
        let got = futures::executor::block_on(ch.exchange(&[7, 8, 9], 64)).unwrap();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(t.join().unwrap(), vec![7, 8, 9]);
        assert_eq!((ch.stats().bytes_sent, ch.stats().rounds), (24, 1));
    }

    /// A frame too short to name a lane fails every lane's next receive with a clear error.
    #[test]
    fn a_frame_too_short_to_name_a_lane_is_an_error_on_every_lane() {
        let ((_ms, a), (_mc, _b), raw) = linked([2, 2], 10, true);
        raw.unwrap().send(&[0u8, 1]).unwrap();
        for l in &a {
            let e = l.recv().unwrap_err().to_string();
            assert!(e.contains("too short to name a lane"), "{e}");
        }
    }

    /// The link's owner hears of a frame on a lane its end lacks at once.
    #[test]
    fn a_frame_on_a_missing_lane_is_an_event_for_the_owner() {
        let ((mut ms, _a), (_mc, b), _) = linked([1, 3], 10, false);
        let events = ms.take_events().unwrap();
        assert!(ms.take_events().is_none());
        b[2].send(b"hello?").unwrap();
        let ev = events.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(ev.contains("lane 2, which this end lacks"), "{ev}");
    }

    /// Ends with different numbers of lanes use the lanes both have; a message on a lane the
    /// other end lacks comes back as an error on that lane, and the others are unaffected.
    #[test]
    fn a_lane_the_other_end_lacks_is_refused_on_that_lane_only() {
        let ((_ms, a), (_mc, r), _) = linked([2, 4], 10, false);
        r[3].send(b"to nowhere").unwrap();
        let e = r[3].recv().unwrap_err().to_string();
        assert!(e.contains("the other end has no lane 3"), "{e}");
        r[1].send(b"fine").unwrap();
        assert_eq!(a[1].recv().unwrap(), b"fine");
        assert!(a[0].try_recv(Duration::from_millis(100)).unwrap().is_none());
    }

    #[test]
    fn a_silent_lane_times_out_and_try_recv_waits_only_as_asked() {
        let ((_ms, a), (_mc, b), _raw) = linked([2, 2], 1, false);
        assert!(a[0].try_recv(Duration::from_millis(10)).unwrap().is_none());
        assert!(matches!(a[0].recv(), Err(TransportError::Timeout { .. })));
        b[1].send(b"x").unwrap();
        // what lane 1 receives is not lane 0's
        assert!(a[0].try_recv(Duration::from_millis(200)).unwrap().is_none());
        assert_eq!(a[1].recv().unwrap(), b"x");
    }

    #[test]
    fn oversized_messages_and_zero_lanes_are_refused() {
        let ((_ms, a), (_mc, _b), _raw) = linked([1, 1], 5, false);
        let e = a[0].send(&vec![0u8; 1 << 20]).unwrap_err();
        assert!(matches!(e, TransportError::TooLarge { .. }));
        let k = KeyPair::generate().unwrap();
        let l = Link::open(
            Role::Server {
                endpoint: "tcp://127.0.0.1:*".into(),
                allow: vec![],
            },
            &k,
            LinkConfig::new("x"),
        )
        .unwrap();
        assert!(matches!(Mux::split(l, 0), Err(TransportError::Lane { .. })));
    }

    /// Once the other end's mux is dropped, a lane's receive fails by its timeout, and
    /// dropping a mux stops its pump (the test would hang otherwise).
    #[test]
    fn dropping_a_mux_stops_its_pump() {
        let ((ms, a), (mc, _b), _raw) = linked([1, 1], 1, false);
        drop(mc);
        assert!(a[0].recv().is_err());
        drop(ms);
        assert!(a[0].recv().is_err());
    }
}

//! One thread per (provider, helper) worker pair: it owns the two encrypted control links,
//! first waits until both workers answer a hello (they have loaded and masked the suffix: the
//! pair is *ready*, or *lost* if they do not answer in time) and learns how many sessions the
//! pair serves at once (its *lanes*: the smaller of the two workers' counts), then runs the
//! steps of all the pair's sessions concurrently: each step's sealed shares go to the two
//! workers as soon as the coordinator hands it over, and a step ends when both sealed outputs
//! are in, when either worker reports it failed, or at its deadline ([`InFlight`]). Replies of
//! different lanes come in any order. A session closed by the coordinator has its lane freed at
//! both workers (`SessionEnd`).
//!
//! A failed step (inside the 2PC its worker exits and restarts) or a broken link takes the pair
//! out of service: no new step is sent, the steps in flight end (those on a dead worker fail),
//! and then the pair is probed again every few seconds and reported ready once both workers
//! answer (restarted). Replies that belong to no step in flight — left on the links by a
//! previous coordinator or a timed-out step — are skipped. The links are blocking zeromq
//! sockets, so they live here, off the coordinator's loop.

use marill_proto::job::{Job, Outcome};
use marill_proto::ControlMessage;
use marill_transport::{KeyPair, Link, LinkConfig, Role, Sealed};
use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

/// Where a pair's workers listen for their coordinator.
#[derive(Clone, Debug)]
pub struct PairEndpoints {
    /// the provider's control endpoint
    pub provider: String,
    /// the helper's control endpoint
    pub helper: String,
}

/// A step handed to a pair.
#[derive(Debug)]
pub struct StepTask {
    /// the job
    pub job: Job,
    /// the lane its session runs on at both workers (`0..lanes` of the pair's
    /// [`PairEvent::Ready`]), the same for every step of the session
    pub lane: u32,
}

/// What the coordinator hands a pair's thread, in order.
#[derive(Debug)]
pub enum PairTask {
    /// run a step (boxed: a job is large beside an end)
    Step(Box<StepTask>),
    /// a session on the pair was closed: both workers free its lane (no reply)
    End {
        /// the session
        session: String,
        /// its lane
        lane: u32,
    },
}

/// What a pair thread reports to the coordinator.
#[derive(Debug)]
pub enum PairEvent {
    /// both workers answered the hello: the pair takes sessions
    Ready {
        /// which pair
        pair: usize,
        /// sessions the pair serves at once (lanes `0..lanes`): the smaller of its two
        /// workers' counts, at least 1
        lanes: u32,
        /// a worker is draining: the pair takes no new session
        draining: bool,
        /// what it holds for sessions' KV caches, by worker (provider, helper): the
        /// announced room and the reservation of one session
        memory: PairMemory,
    },
    /// a worker of the pair began to drain (`SIGTERM`): the pair takes no new session, its
    /// open sessions go on; it is probed every few seconds until it is gone (lost) or back
    /// (restarted: ready)
    Draining {
        /// which pair
        pair: usize,
    },
    /// a worker did not answer the hello: the pair takes no session
    Lost {
        /// which pair
        pair: usize,
        /// why
        reason: String,
    },
    /// a step ended
    Done(StepDone),
}

/// What a pair's workers announced for sessions' KV caches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairMemory {
    /// bytes each worker (provider, helper) has for KV caches (`u64::MAX`: no limit)
    pub room: [u64; 2],
    /// the larger of the two workers' reservation for one session
    pub session_kv: u64,
}

/// What a pair answered its probe with.
#[derive(Clone, Copy, Debug)]
struct Hello {
    lanes: u32,
    draining: bool,
    memory: PairMemory,
}

/// A step's end, reported back to the coordinator.
#[derive(Debug)]
pub struct StepDone {
    /// which pair ran it
    pub pair: usize,
    /// the job id
    pub job_id: String,
    /// the session
    pub session: String,
    /// the step
    pub step: u32,
    /// what became of it
    pub outcome: Outcome,
    /// a worker did not answer (its link failed): the pair must not be used again
    pub pair_lost: bool,
    /// the workers refused the step before any 2PC work (a share that does not open, a step
    /// injected into a session, ...): the pair and the session's lane are as they were
    pub refused: bool,
    /// refused because a worker of the pair drains: a step 0 may run on another pair
    pub draining: bool,
}

/// Keys the coordinator needs for its control links.
#[derive(Clone, Debug)]
pub struct ControlKeys {
    /// the coordinator's own CURVE key pair
    pub own: KeyPair,
    /// the providers' public key (Z85)
    pub provider: String,
    /// the helpers' public key (Z85)
    pub helper: String,
}

/// Starts pair `index`'s thread; returns where to send its tasks.
pub fn spawn(
    index: usize,
    ends: PairEndpoints,
    keys: ControlKeys,
    timeout: Duration,
    done: Sender<PairEvent>,
) -> std::io::Result<Sender<PairTask>> {
    let (tx, rx) = channel::<PairTask>();
    std::thread::Builder::new()
        .name(format!("pair-{index}"))
        .spawn(move || run(index, ends, keys, timeout, rx, done))?;
    Ok(tx)
}

fn open(
    endpoint: &str,
    server: &str,
    name: &str,
    own: &KeyPair,
    timeout: Duration,
) -> Result<Link, String> {
    let mut cfg = LinkConfig::new(name);
    cfg.timeout = timeout;
    Link::open(
        Role::Client {
            endpoint: endpoint.to_string(),
            server_public: server.to_string(),
        },
        own,
        cfg,
    )
    .map_err(|e| e.to_string())
}

/// How long a lost pair waits between attempts to bring it back.
const RETRY: Duration = Duration::from_secs(2);

fn run(
    index: usize,
    ends: PairEndpoints,
    keys: ControlKeys,
    timeout: Duration,
    rx: Receiver<PairTask>,
    done: Sender<PairEvent>,
) {
    let mut links: Option<[Link; 2]> = None;
    let mut reported_lost = false;
    loop {
        // (re)connect and probe: a pair that did not answer, or lost a step, comes back into
        // service once both workers answer a hello again (e.g. restarted)
        let probe = match &links {
            Some(l) => hello(l),
            None => open(
                &ends.provider,
                &keys.provider,
                "provider",
                &keys.own,
                timeout,
            )
            .and_then(|p| {
                let h = open(&ends.helper, &keys.helper, "helper", &keys.own, timeout)?;
                hello(links.insert([p, h]))
            }),
        };
        let hello = match probe {
            Ok(answer) => answer,
            Err(reason) => {
                if !reported_lost {
                    reported_lost = true;
                    let lost = PairEvent::Lost {
                        pair: index,
                        reason: reason.clone(),
                    };
                    if done.send(lost).is_err() {
                        return;
                    }
                }
                // a step sent meanwhile fails at once; otherwise try again after RETRY
                match rx.recv_timeout(RETRY) {
                    Ok(PairTask::Step(task)) => {
                        let outcome = Outcome::Failed {
                            reason: format!("worker pair {index} is not ready: {reason}"),
                        };
                        if !report(&done, index, task.job, outcome, true) {
                            return;
                        }
                    }
                    // the workers are gone or restarting; the lane's next step 0 replaces
                    // whatever is left on it
                    Ok(PairTask::End { .. }) => {}
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
        };
        let Some(l) = &links else {
            continue; // a successful hello had links
        };
        let ready = PairEvent::Ready {
            pair: index,
            lanes: hello.lanes,
            draining: hello.draining,
            memory: hello.memory,
        };
        if done.send(ready).is_err() {
            return;
        }
        match serve(index, l, timeout, &rx, &done, hello.draining) {
            Served::Gone => return,
            // on a lost step the coordinator retires the pair: no second report if the probe
            // fails; after a failed one it waits for this probe's answer
            Served::Down { lost } => {
                reported_lost = lost;
                // fresh links: what is still queued for a worker that exited (steps sent
                // before the failure was seen) must not reach its restarted process, which
                // would run a step its peer never got
                if let Some(old) = links.take() {
                    old.into_iter().for_each(Link::discard);
                }
            }
        }
    }
}

/// How [`serve`] ended.
enum Served {
    /// the coordinator is gone
    Gone,
    /// a step failed or a link broke (`lost`): the pair must be probed again
    Down { lost: bool },
}

/// How long each link is polled in turn while steps are in flight (a new step waits at most
/// twice this before it is sent).
const POLL: Duration = Duration::from_millis(2);

/// How often an idle pair's links are looked at for a worker's drain notice.
const IDLE_LOOK: Duration = Duration::from_millis(250);

/// Runs the pair's steps concurrently until one fails or a link breaks, then lets the other
/// steps in flight end (a worker whose step failed inside the 2PC exits, and the steps on it
/// fail with it) and returns. Steps handed over meanwhile fail at once.
fn serve(
    index: usize,
    links: &[Link; 2],
    timeout: Duration,
    rx: &Receiver<PairTask>,
    done: &Sender<PairEvent>,
    mut draining: bool,
) -> Served {
    let mut flight = InFlight::new(index, timeout);
    // Some(lost) once a step failed or a link broke
    let mut down: Option<bool> = None;
    // when a draining pair was last probed (through [`run`]'s hello)
    let probed = Instant::now();
    loop {
        let mut ended = Vec::new();
        // nothing in flight: wait for the coordinator (or go back to probing); a worker's
        // drain notice is looked for meanwhile, and a draining pair is probed again every
        // RETRY (gone: lost; restarted: back in service)
        let mut next = None;
        while flight.is_empty() && next.is_none() {
            if let Some(lost) = down {
                return Served::Down { lost };
            }
            if draining && probed.elapsed() >= RETRY {
                return Served::Down { lost: false };
            }
            match rx.recv_timeout(IDLE_LOOK) {
                Ok(t) => next = Some(t),
                Err(RecvTimeoutError::Timeout) => {
                    for l in links {
                        // a broken link shows at the next step sent to it
                        if let Ok(Some(m)) = next_message(l, Duration::ZERO) {
                            if notice(index, m, &mut draining, done).is_err() {
                                return Served::Gone;
                            }
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Served::Gone,
            }
        }
        // everything handed over is sent at once, without waiting for earlier steps
        loop {
            let task = match next.take() {
                Some(t) => t,
                None => match rx.try_recv() {
                    Ok(t) => t,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Served::Gone,
                },
            };
            match task {
                PairTask::Step(t) if down.is_some() => {
                    let reason =
                        format!("worker pair {index} is out of service after a failed step");
                    ended.push(flight.ended(&t.job, Outcome::Failed { reason }, false));
                }
                PairTask::Step(t) => match send_step(links, &t) {
                    Ok(()) => flight.start(&t.job, Instant::now()),
                    Err(reason) => {
                        ended.push(flight.ended(&t.job, Outcome::Failed { reason }, true));
                    }
                },
                PairTask::End { session, lane } => {
                    let m = marill_proto::encode(&ControlMessage::SessionEnd { session, lane });
                    for (i, l) in links.iter().enumerate() {
                        if let Err(e) = l.send(&m) {
                            tracing::warn!(pair = index, lane, error = %e, "sending a session end to the {}", role(i));
                            down = Some(true);
                        }
                    }
                }
            }
        }
        for (i, l) in links.iter().enumerate() {
            if flight.is_empty() {
                break;
            }
            match next_message(l, POLL) {
                Ok(None) => {}
                Ok(Some(ControlMessage::Ready { draining: true, .. })) => {
                    if notice_drain(index, &mut draining, done).is_err() {
                        return Served::Gone;
                    }
                }
                Ok(Some(m)) => match flight.on_reply(i, m) {
                    Ok(d) => ended.extend(d),
                    Err(reason) => ended.extend(flight.fail_all(&reason, true)),
                },
                Err(e) => ended.extend(flight.fail_all(&format!("{}: {e}", role(i)), true)),
            }
        }
        ended.extend(flight.expired(Instant::now()));
        for d in ended {
            if matches!(d.outcome, Outcome::Failed { .. }) && !d.refused {
                // a failed step: the pair is probed again once the others have ended (a step
                // both workers refused before any 2PC work left them as they were)
                down = Some(down.unwrap_or(false) || d.pair_lost);
            }
            if done.send(PairEvent::Done(d)).is_err() {
                return Served::Gone;
            }
        }
    }
}

/// A message from an idle pair's worker: a drain notice is reported, anything else (a reply
/// left from a timed-out step) skipped. `Err`: the coordinator is gone.
fn notice(
    index: usize,
    m: ControlMessage,
    draining: &mut bool,
    done: &Sender<PairEvent>,
) -> Result<(), ()> {
    match m {
        ControlMessage::Ready { draining: true, .. } => notice_drain(index, draining, done),
        m => {
            skipped(&m);
            Ok(())
        }
    }
}

/// A worker of the pair drains: reported once. `Err`: the coordinator is gone.
fn notice_drain(index: usize, draining: &mut bool, done: &Sender<PairEvent>) -> Result<(), ()> {
    if !*draining {
        *draining = true;
        tracing::info!(pair = index, "a worker of the pair is draining");
        done.send(PairEvent::Draining { pair: index })
            .map_err(|_| ())?;
    }
    Ok(())
}

/// Sends a step's shares to both workers; why not.
fn send_step(links: &[Link; 2], t: &StepTask) -> Result<(), String> {
    let job = &t.job;
    for (i, l) in links.iter().enumerate() {
        let m = ControlMessage::SessionStep {
            session: job.session.clone(),
            lane: t.lane,
            job_id: job.job_id.clone(),
            step: job.step,
            n_public: job.n_public,
            reply_key: job.reply_key,
            out_rows: job.out_rows,
            share: job.shares[i].clone(),
        };
        l.send(&marill_proto::encode(&m))
            .map_err(|e| format!("sending to the {}: {e}", role(i)))?;
    }
    Ok(())
}

/// Reports a step's end; false when the coordinator is gone.
fn report(done: &Sender<PairEvent>, pair: usize, job: Job, outcome: Outcome, lost: bool) -> bool {
    let d = StepDone {
        pair,
        job_id: job.job_id,
        session: job.session,
        step: job.step,
        outcome,
        pair_lost: lost,
        refused: false,
        draining: false,
    };
    done.send(PairEvent::Done(d)).is_ok()
}

/// The next message on `link` within `wait`, decoded; `Ok(None)` when none came.
fn next_message(link: &Link, wait: Duration) -> Result<Option<ControlMessage>, String> {
    match link.try_recv(wait).map_err(|e| e.to_string())? {
        Some(b) => marill_proto::decode(&b)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(None),
    }
}

fn skipped(m: &ControlMessage) {
    tracing::info!(
        message = marill_proto::describe(m),
        "skipped a stale reply from a worker"
    );
}

/// Both workers answer a hello once they serve (suffix loaded and masked); the sessions the
/// pair serves at once (the smaller count, at least 1), whether a worker drains, and their
/// memory for KV caches. Step replies still on the links (a previous coordinator's, or of steps
/// that timed out here) are skipped.
fn hello(links: &[Link; 2]) -> Result<Hello, String> {
    for l in links {
        l.send(&marill_proto::encode(&ControlMessage::Probe))
            .map_err(|e| e.to_string())?;
    }
    let mut lanes = u32::MAX;
    let mut draining = false;
    let mut memory = PairMemory::default();
    for (i, l) in links.iter().enumerate() {
        let m = loop {
            // the link's timeout ends the wait with an error
            let b = l.recv().map_err(|e| format!("{}: {e}", role(i)))?;
            let m = marill_proto::decode(&b).map_err(|e| format!("{}: {e}", role(i)))?;
            match m {
                ControlMessage::SessionOutput { .. } | ControlMessage::SessionFailed { .. } => {
                    skipped(&m)
                }
                m => break m,
            }
        };
        match m {
            ControlMessage::Ready {
                sessions,
                draining: d,
                kv_room,
                session_kv,
                ..
            } => {
                lanes = lanes.min(sessions);
                draining |= d;
                memory.room[i] = kv_room;
                memory.session_kv = memory.session_kv.max(session_kv);
            }
            m => {
                return Err(format!(
                    "{} answered the hello with {}",
                    role(i),
                    marill_proto::describe(&m)
                ))
            }
        }
    }
    Ok(Hello {
        lanes: lanes.max(1),
        draining,
        memory,
    })
}

/// One worker's output of a step.
struct Output {
    share: Sealed,
    gamma_at_client: bool,
    bytes_sent: u64,
    rounds: u64,
    dealer_bytes: u64,
}

/// A step sent to both workers and not yet ended.
struct Pending {
    session: String,
    step: u32,
    deadline: Instant,
    /// the provider's and the helper's output so far
    outs: [Option<Output>; 2],
}

/// The steps a pair has sent and not yet ended, by job id: a step ends when both workers'
/// outputs are in (in whichever order, interleaved with other steps' replies), at once when
/// either worker reports it failed (a worker whose peer died reports it within its in-step
/// timeout, while the dead one would keep the step waiting its whole timeout), or when its
/// deadline (sent + the step timeout) passes. Replies of no step in flight are stale:
/// skipped. Pure bookkeeping, no I/O.
pub struct InFlight {
    pair: usize,
    timeout: Duration,
    steps: BTreeMap<String, Pending>,
}

impl InFlight {
    /// Nothing in flight on pair `pair`, whose steps end `timeout` after they were sent.
    pub fn new(pair: usize, timeout: Duration) -> Self {
        Self {
            pair,
            timeout,
            steps: BTreeMap::new(),
        }
    }

    /// `job` was sent to both workers at `now` (job ids are unique among steps in flight).
    pub fn start(&mut self, job: &Job, now: Instant) {
        let p = Pending {
            session: job.session.clone(),
            step: job.step,
            deadline: now + self.timeout,
            outs: [None, None],
        };
        self.steps.insert(job.job_id.clone(), p);
    }

    /// No step in flight.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Steps in flight.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// The end of `job` (not in flight) with `outcome`.
    pub fn ended(&self, job: &Job, outcome: Outcome, lost: bool) -> StepDone {
        StepDone {
            pair: self.pair,
            job_id: job.job_id.clone(),
            session: job.session.clone(),
            step: job.step,
            outcome,
            pair_lost: lost,
            refused: false,
            draining: false,
        }
    }

    fn end(&mut self, job_id: &str, outcome: Outcome, lost: bool) -> Option<StepDone> {
        let p = self.steps.remove(job_id)?;
        Some(StepDone {
            pair: self.pair,
            job_id: job_id.to_string(),
            session: p.session,
            step: p.step,
            outcome,
            pair_lost: lost,
            refused: false,
            draining: false,
        })
    }

    /// Takes a message from worker `from` (0 provider, 1 helper): the step it ends, if any;
    /// `Err` when the worker failed as a whole or answered out of protocol (every step in
    /// flight is then lost: [`InFlight::fail_all`]).
    pub fn on_reply(&mut self, from: usize, m: ControlMessage) -> Result<Option<StepDone>, String> {
        match m {
            ControlMessage::SessionOutput {
                ref job_id,
                ref share,
                gamma_at_client,
                bytes_sent,
                rounds,
                dealer_bytes,
                ..
            } => {
                let Some(p) = self.steps.get_mut(job_id) else {
                    skipped(&m);
                    return Ok(None);
                };
                if p.outs[from].is_some() {
                    skipped(&m); // a second output of the same worker
                    return Ok(None);
                }
                p.outs[from] = Some(Output {
                    share: share.clone(),
                    gamma_at_client,
                    bytes_sent,
                    rounds,
                    dealer_bytes,
                });
                let [Some(_), Some(_)] = &p.outs else {
                    return Ok(None);
                };
                let [Some(prov), Some(help)] = std::mem::take(&mut p.outs) else {
                    return Ok(None); // both present, as just checked
                };
                let outcome = Outcome::Done {
                    outputs: [prov.share, help.share],
                    gamma_at_client: prov.gamma_at_client,
                    bytes_sent: [prov.bytes_sent, help.bytes_sent],
                    rounds: prov.rounds,
                    dealer_bytes: [prov.dealer_bytes, help.dealer_bytes],
                };
                Ok(self.end(job_id, outcome, false))
            }
            ControlMessage::SessionFailed {
                ref job_id,
                ref reason,
                refused,
                draining,
                ..
            } => {
                if !self.steps.contains_key(job_id) {
                    skipped(&m);
                    return Ok(None);
                }
                let reason = format!("{}: {reason}", role(from));
                let done = self.end(job_id, Outcome::Failed { reason }, false);
                Ok(done.map(|d| StepDone {
                    refused,
                    draining: refused && draining,
                    ..d
                }))
            }
            ControlMessage::Ready { .. } => {
                skipped(&m); // an extra hello answer
                Ok(None)
            }
            ControlMessage::Error(e) => Err(format!("{} failed: {e}", role(from))),
            m => Err(format!(
                "{} answered {}",
                role(from),
                marill_proto::describe(&m)
            )),
        }
    }

    /// Ends every step in flight as failed with `reason`.
    pub fn fail_all(&mut self, reason: &str, lost: bool) -> Vec<StepDone> {
        let ids: Vec<String> = self.steps.keys().cloned().collect();
        ids.iter()
            .filter_map(|id| {
                let reason = reason.to_string();
                self.end(id, Outcome::Failed { reason }, lost)
            })
            .collect()
    }

    /// Ends the steps whose deadline passed by `now` (the pair is lost: a worker did not
    /// answer).
    pub fn expired(&mut self, now: Instant) -> Vec<StepDone> {
        let late: Vec<(String, String)> = self
            .steps
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, p)| {
                let silent: Vec<&str> = (0..2).filter(|&i| p.outs[i].is_none()).map(role).collect();
                (id.clone(), silent.join(" and "))
            })
            .collect();
        let secs = self.timeout.as_secs();
        late.into_iter()
            .filter_map(|(id, silent)| {
                let reason = format!("no message from {silent} within {secs} s");
                self.end(&id, Outcome::Failed { reason }, true)
            })
            .collect()
    }
}

fn role(i: usize) -> &'static str {
    if i == 0 {
        "provider"
    } else {
        "helper"
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sealed(tag: u8) -> Sealed {
        Sealed {
            enc: vec![tag; 32],
            ct: vec![tag; 20],
        }
    }

    fn job(id: &str, step: u32) -> Job {
        Job {
            job_id: id.into(),
            session: format!("s-{id}"),
            step,
            last: false,
            model: "m".into(),
            n_public: 2,
            rows: 1,
            out_rows: 1,
            deadline_ms: u64::MAX,
            reply_key: [0; 32],
            shares: [sealed(1), sealed(2)],
        }
    }

    pub(crate) fn output(id: &str, tag: u8, bytes_sent: u64) -> ControlMessage {
        ControlMessage::SessionOutput {
            session: format!("s-{id}"),
            job_id: id.into(),
            step: 0,
            share: sealed(tag),
            gamma_at_client: true,
            bytes_sent,
            rounds: 7,
            dealer_bytes: bytes_sent * 10,
        }
    }

    pub(crate) fn failed(id: &str, reason: &str) -> ControlMessage {
        ControlMessage::SessionFailed {
            session: format!("s-{id}"),
            job_id: id.into(),
            step: 0,
            reason: reason.into(),
            refused: false,
            draining: false,
        }
    }

    const T: Duration = Duration::from_secs(15);

    #[test]
    fn a_step_ends_when_both_outputs_are_in_whatever_their_order() {
        let now = Instant::now();
        let mut f = InFlight::new(3, T);
        f.start(&job("a", 4), now);
        f.start(&job("b", 0), now);
        // the helper answers b, then a; the provider answers a, then b
        assert!(f.on_reply(1, output("b", 21, 200)).unwrap().is_none());
        assert!(f.on_reply(1, output("a", 11, 100)).unwrap().is_none());
        let a = f
            .on_reply(0, output("a", 10, 1000))
            .unwrap()
            .expect("a ends");
        assert_eq!(
            (a.pair, a.job_id.as_str(), a.session.as_str(), a.step),
            (3, "a", "s-a", 4)
        );
        assert!(!a.pair_lost);
        match a.outcome {
            Outcome::Done {
                outputs,
                gamma_at_client,
                bytes_sent,
                rounds,
                dealer_bytes,
            } => {
                // provider first, though the helper answered first
                assert_eq!(outputs, [sealed(10), sealed(11)]);
                assert_eq!(bytes_sent, [1000, 100]);
                assert_eq!(dealer_bytes, [10_000, 1000]);
                assert!(gamma_at_client);
                assert_eq!(rounds, 7);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(f.len(), 1);
        let b = f
            .on_reply(0, output("b", 20, 2000))
            .unwrap()
            .expect("b ends");
        assert_eq!(b.job_id, "b");
        assert!(matches!(
            b.outcome,
            Outcome::Done {
                bytes_sent: [2000, 200],
                ..
            }
        ));
        assert!(f.is_empty());
    }

    #[test]
    fn a_second_output_of_the_same_worker_does_not_end_a_step() {
        let mut f = InFlight::new(0, T);
        f.start(&job("a", 0), Instant::now());
        assert!(f.on_reply(0, output("a", 10, 1)).unwrap().is_none());
        assert!(f.on_reply(0, output("a", 10, 1)).unwrap().is_none());
        assert_eq!(f.len(), 1);
        assert!(f.on_reply(1, output("a", 11, 1)).unwrap().is_some());
    }

    #[test]
    fn a_failure_from_either_worker_ends_its_step_at_once_and_only_that_step() {
        let mut f = InFlight::new(1, T);
        f.start(&job("a", 0), Instant::now());
        f.start(&job("b", 0), Instant::now());
        assert!(f.on_reply(0, output("a", 10, 1)).unwrap().is_none());
        let a = f
            .on_reply(1, failed("a", "no message from provider within 5 s"))
            .unwrap()
            .expect("a fails");
        assert_eq!(a.job_id, "a");
        assert!(
            !a.pair_lost,
            "a failure inside the 2PC is reported, not lost"
        );
        match a.outcome {
            Outcome::Failed { reason } => {
                assert_eq!(reason, "helper: no message from provider within 5 s")
            }
            o => panic!("{o:?}"),
        }
        // the other worker's late answer is stale; b runs on
        assert!(f.on_reply(0, failed("a", "late")).unwrap().is_none());
        assert!(f.on_reply(1, output("a", 11, 1)).unwrap().is_none());
        assert_eq!(f.len(), 1);
        assert!(f.on_reply(0, output("b", 10, 1)).unwrap().is_none());
        assert!(f.on_reply(1, output("b", 11, 1)).unwrap().is_some());
    }

    #[test]
    fn stale_replies_and_extra_hellos_are_skipped() {
        let mut f = InFlight::new(0, T);
        f.start(&job("a", 0), Instant::now());
        assert!(f.on_reply(0, output("old", 1, 1)).unwrap().is_none());
        assert!(f.on_reply(1, failed("old", "x")).unwrap().is_none());
        let hello = ControlMessage::Ready {
            first_layer: 2,
            d_model: 8,
            gamma_at_client: true,
            sessions: 4,
            draining: false,
            kv_room: u64::MAX,
            session_kv: 1,
        };
        assert!(f.on_reply(1, hello).unwrap().is_none());
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn a_worker_error_or_an_unexpected_message_loses_every_step_in_flight() {
        let mut f = InFlight::new(2, T);
        f.start(&job("a", 0), Instant::now());
        f.start(&job("b", 3), Instant::now());
        let e = f
            .on_reply(1, ControlMessage::Error("boom".into()))
            .unwrap_err();
        assert_eq!(e, "helper failed: boom");
        let e = f.on_reply(0, ControlMessage::Probe).unwrap_err();
        assert!(e.starts_with("provider answered "), "{e}");
        assert_eq!(f.len(), 2, "the caller decides");
        let all = f.fail_all("helper failed: boom", true);
        let ids: Vec<_> = all.iter().map(|d| (d.job_id.as_str(), d.step)).collect();
        assert_eq!(ids, [("a", 0), ("b", 3)]);
        for d in &all {
            assert!(d.pair_lost);
            assert_eq!(
                d.outcome,
                Outcome::Failed {
                    reason: "helper failed: boom".into()
                }
            );
        }
        assert!(f.is_empty());
    }

    #[test]
    fn a_step_past_its_deadline_fails_naming_the_silent_worker() {
        let t0 = Instant::now();
        let mut f = InFlight::new(0, T);
        f.start(&job("a", 0), t0);
        f.start(&job("b", 0), t0 + Duration::from_secs(5));
        f.start(&job("c", 0), t0 + Duration::from_secs(5));
        assert!(f.on_reply(0, output("a", 1, 1)).unwrap().is_none());
        assert!(f.expired(t0 + T - Duration::from_millis(1)).is_empty());
        let late = f.expired(t0 + T);
        assert_eq!(late.len(), 1, "only a's deadline passed");
        assert_eq!(late[0].job_id, "a");
        assert!(late[0].pair_lost);
        assert_eq!(
            late[0].outcome,
            Outcome::Failed {
                reason: "no message from helper within 15 s".into()
            }
        );
        assert!(f.on_reply(1, output("b", 2, 1)).unwrap().is_none());
        let late = f.expired(t0 + T + Duration::from_secs(5));
        let reasons: Vec<_> = late
            .iter()
            .map(|d| match &d.outcome {
                Outcome::Failed { reason } => (d.job_id.as_str(), reason.as_str()),
                o => panic!("{o:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("b", "no message from provider within 15 s"),
                ("c", "no message from provider and helper within 15 s")
            ]
        );
        assert!(f.is_empty());
    }

    /// A fake worker on its own thread: what the pair thread sends it comes out of `got`, what
    /// goes into `say` is sent back.
    pub(crate) struct Fake {
        got: Receiver<ControlMessage>,
        pub(crate) say: Sender<ControlMessage>,
        pub(crate) endpoint: String,
        pub(crate) public: String,
    }

    pub(crate) fn fake(allow: &str) -> Fake {
        fake_with(allow, KeyPair::generate().unwrap())
    }

    /// A fake worker with key pair `own` (workers of one trust domain share theirs).
    pub(crate) fn fake_with(allow: &str, own: KeyPair) -> Fake {
        let public = own.public.clone();
        let allow = vec![allow.to_string()];
        let (got_tx, got) = channel();
        let (say, say_rx) = channel::<ControlMessage>();
        let (ep_tx, ep_rx) = channel();
        std::thread::spawn(move || {
            let server = Role::Server {
                endpoint: "tcp://127.0.0.1:*".into(),
                allow,
            };
            let link = Link::open(server, &own, LinkConfig::new("coordinator")).unwrap();
            ep_tx.send(link.endpoint().to_string()).unwrap();
            loop {
                if let Some(b) = link.try_recv(Duration::from_millis(2)).unwrap() {
                    if got_tx.send(marill_proto::decode(&b).unwrap()).is_err() {
                        return;
                    }
                }
                loop {
                    match say_rx.try_recv() {
                        Ok(m) => link.send(&marill_proto::encode(&m)).unwrap(),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
            }
        });
        let endpoint = ep_rx.recv().unwrap();
        Fake {
            got,
            say,
            endpoint,
            public,
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    impl Fake {
        /// The next message the pair sent, if one comes within `wait`.
        pub(crate) fn try_next(&self, wait: Duration) -> Option<ControlMessage> {
            self.got.recv_timeout(wait).ok()
        }

        pub(crate) fn next(&self) -> ControlMessage {
            self.got
                .recv_timeout(WAIT)
                .expect("a message from the pair")
        }

        /// The next message is a hello: answered with `sessions`.
        pub(crate) fn hello(&self, sessions: u32) {
            let m = self.next();
            assert!(matches!(m, ControlMessage::Probe), "{m:?}");
            self.say.send(ready(sessions, false)).unwrap();
        }
    }

    /// A worker's hello answer (or, with `draining`, its drain notice).
    pub(crate) fn ready(sessions: u32, draining: bool) -> ControlMessage {
        ControlMessage::Ready {
            first_layer: 2,
            d_model: 8,
            gamma_at_client: true,
            sessions,
            draining,
            kv_room: u64::MAX,
            session_kv: 1,
        }
    }

    impl Fake {
        /// The next message is a step: its (job id, lane, share).
        pub(crate) fn step(&self) -> (String, u32, Sealed) {
            match self.next() {
                ControlMessage::SessionStep {
                    job_id,
                    lane,
                    share,
                    ..
                } => (job_id, lane, share),
                m => panic!("{m:?}"),
            }
        }
    }

    fn next_done(rx: &Receiver<PairEvent>) -> StepDone {
        match rx.recv_timeout(WAIT).expect("an event") {
            PairEvent::Done(d) => d,
            e => panic!("{e:?}"),
        }
    }

    /// A pair thread with fake workers that announce `sessions` each, ready.
    fn ready_pair(sessions: [u32; 2]) -> (Fake, Fake, Sender<PairTask>, Receiver<PairEvent>) {
        let own = KeyPair::generate().unwrap();
        let (p, h) = (fake(&own.public), fake(&own.public));
        let ends = PairEndpoints {
            provider: p.endpoint.clone(),
            helper: h.endpoint.clone(),
        };
        let keys = ControlKeys {
            own,
            provider: p.public.clone(),
            helper: h.public.clone(),
        };
        let (done_tx, done) = channel();
        let tx = spawn(5, ends, keys, WAIT, done_tx).unwrap();
        p.hello(sessions[0]);
        h.hello(sessions[1]);
        match done.recv_timeout(WAIT).expect("ready") {
            PairEvent::Ready {
                pair,
                lanes,
                draining,
                ..
            } => {
                assert_eq!((pair, lanes), (5, sessions[0].min(sessions[1]).max(1)));
                assert!(!draining);
            }
            e => panic!("{e:?}"),
        }
        (p, h, tx, done)
    }

    /// The pair's next event is pair 5's hello answered with `lanes` lanes, `draining` or not.
    fn expect_ready(done: &Receiver<PairEvent>, lanes: u32, draining: bool) {
        match done.recv_timeout(WAIT).expect("a hello answered") {
            PairEvent::Ready {
                pair: 5,
                lanes: l,
                draining: d,
                ..
            } => assert_eq!((l, d), (lanes, draining)),
            e => panic!("{e:?}"),
        }
    }

    fn run_step(tx: &Sender<PairTask>, id: &str, lane: u32) {
        let task = StepTask {
            job: job(id, 0),
            lane,
        };
        tx.send(PairTask::Step(Box::new(task))).unwrap();
    }

    #[test]
    fn a_pair_runs_steps_of_several_lanes_at_once_and_ends_them_as_they_finish() {
        let (p, h, tx, done) = ready_pair([3, 2]);
        run_step(&tx, "a", 0);
        run_step(&tx, "b", 1);
        // both steps reach both workers before either is answered
        for (w, share) in [(&p, sealed(1)), (&h, sealed(2))] {
            assert_eq!(w.step(), ("a".into(), 0, share.clone()));
            assert_eq!(w.step(), ("b".into(), 1, share));
        }
        // b is answered first: it ends first, a still runs
        h.say.send(output("b", 21, 1)).unwrap();
        p.say.send(output("b", 20, 1)).unwrap();
        let b = next_done(&done);
        assert_eq!(b.job_id, "b");
        assert!(
            matches!(b.outcome, Outcome::Done { outputs, .. } if outputs == [sealed(20), sealed(21)])
        );
        p.say.send(output("a", 10, 1)).unwrap();
        h.say.send(output("a", 11, 1)).unwrap();
        let a = next_done(&done);
        assert_eq!(a.job_id, "a");
        assert!(matches!(a.outcome, Outcome::Done { .. }), "{:?}", a.outcome);
        // a closed session's lane is freed at both workers
        tx.send(PairTask::End {
            session: "s-a".into(),
            lane: 0,
        })
        .unwrap();
        for w in [&p, &h] {
            match w.next() {
                ControlMessage::SessionEnd { session, lane } => {
                    assert_eq!((session.as_str(), lane), ("s-a", 0))
                }
                m => panic!("{m:?}"),
            }
        }
    }

    #[test]
    fn after_a_failed_step_the_pair_takes_no_step_lets_the_others_end_and_is_probed_again() {
        let (p, h, tx, done) = ready_pair([2, 2]);
        run_step(&tx, "c", 0);
        run_step(&tx, "d", 1);
        for w in [&p, &h] {
            assert_eq!(w.step().0, "c");
            assert_eq!(w.step().0, "d");
        }
        h.say
            .send(failed("c", "step failed inside the 2PC"))
            .unwrap();
        let c = next_done(&done);
        assert_eq!(c.job_id, "c");
        assert!(!c.pair_lost);
        assert_eq!(
            c.outcome,
            Outcome::Failed {
                reason: "helper: step failed inside the 2PC".into()
            }
        );
        // d is still in flight; a new step fails at once without reaching the workers
        run_step(&tx, "e", 0);
        let e = next_done(&done);
        assert_eq!(e.job_id, "e");
        assert!(
            matches!(e.outcome, Outcome::Failed { .. }),
            "{:?}",
            e.outcome
        );
        p.say.send(output("d", 10, 1)).unwrap();
        h.say.send(output("d", 11, 1)).unwrap();
        let d = next_done(&done);
        assert_eq!(d.job_id, "d");
        assert!(matches!(d.outcome, Outcome::Done { .. }), "{:?}", d.outcome);
        // then the pair is probed (the next message after d's step: e never went out)
        p.hello(1);
        h.hello(1);
        expect_ready(&done, 1, false);
        run_step(&tx, "f", 0);
        assert_eq!(p.step().0, "f");
        assert_eq!(h.step().0, "f");
    }

    #[test]
    fn a_drain_notice_is_reported_the_open_steps_end_and_the_pair_is_probed_until_back() {
        let (p, h, tx, done) = ready_pair([1, 1]);
        run_step(&tx, "a", 0);
        p.step();
        h.step();
        // the helper drains while a's step runs: reported at once, a's step still ends
        h.say.send(ready(1, true)).unwrap();
        match done.recv_timeout(WAIT).expect("the drain") {
            PairEvent::Draining { pair: 5 } => {}
            e => panic!("{e:?}"),
        }
        p.say.send(output("a", 1, 1)).unwrap();
        h.say.send(output("a", 2, 1)).unwrap();
        let d = next_done(&done);
        assert!(matches!(d.outcome, Outcome::Done { .. }), "{:?}", d.outcome);
        // idle and draining: probed again within a few seconds; the helper still drains
        p.hello(1);
        let m = h.next();
        assert!(matches!(m, ControlMessage::Probe), "{m:?}");
        h.say.send(ready(1, true)).unwrap();
        expect_ready(&done, 1, true);
        // restarted (no longer draining): back in service
        p.hello(1);
        h.hello(1);
        expect_ready(&done, 1, false);
    }

    #[test]
    fn an_idle_pair_reports_a_drain_notice() {
        let (p, _h, _tx, done) = ready_pair([2, 2]);
        p.say.send(ready(2, true)).unwrap();
        match done.recv_timeout(WAIT).expect("the drain") {
            PairEvent::Draining { pair: 5 } => {}
            e => panic!("{e:?}"),
        }
    }
}

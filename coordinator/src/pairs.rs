//! One thread per (provider, helper) worker pair: it owns the two encrypted control links,
//! first waits until both workers answer a hello (they have loaded and masked the suffix: the
//! pair is *ready*, or *lost* if they do not answer in time), then sends each step's sealed
//! shares to the two workers and waits for both sealed outputs. A lost pair (no answer, or a
//! step that failed inside the 2PC) is probed again every few seconds and reported ready once
//! both workers answer (restarted). Replies that belong to no awaited step — left on the links
//! by a previous coordinator or a timed-out step — are skipped. The links are blocking zeromq
//! sockets, so they live here, off the coordinator's loop.

use marill_proto::job::{Job, Outcome};
use marill_proto::Message;
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

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
}

/// What a pair thread reports to the coordinator.
#[derive(Debug)]
pub enum PairEvent {
    /// both workers answered the hello: the pair takes sessions
    Ready {
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

/// Starts pair `index`'s thread; returns where to send its steps.
pub fn spawn(
    index: usize,
    ends: PairEndpoints,
    keys: ControlKeys,
    timeout: Duration,
    done: Sender<PairEvent>,
) -> std::io::Result<Sender<StepTask>> {
    let (tx, rx) = channel::<StepTask>();
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
    rx: Receiver<StepTask>,
    done: Sender<PairEvent>,
) {
    let mut links: Option<[Link; 2]> = None;
    let mut ready = false;
    let mut reported_lost = false;
    loop {
        if !ready {
            // (re)connect and probe: a pair that did not answer, or lost a step, comes back
            // into service once both workers answer a hello again (e.g. restarted)
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
            match probe {
                Ok(()) => {
                    ready = true;
                    reported_lost = false;
                    if done.send(PairEvent::Ready { pair: index }).is_err() {
                        return;
                    }
                }
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
                        Ok(task) => {
                            let outcome = Outcome::Failed {
                                reason: format!("worker pair {index} is not ready: {reason}"),
                            };
                            if !report(&done, index, task.job, outcome, true) {
                                return;
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    continue;
                }
            }
        }
        let Ok(task) = rx.recv() else {
            return; // the coordinator is gone
        };
        let (outcome, lost) = match &links {
            Some(l) => step(l, &task.job, timeout),
            None => (
                Outcome::Failed {
                    reason: format!("worker pair {index} has no links"),
                },
                true,
            ),
        };
        if lost {
            ready = false;
            reported_lost = true; // the coordinator retires the pair on this report
        } else if matches!(outcome, Outcome::Failed { .. }) {
            // a worker whose step failed inside the 2PC reports it, then exits (its state may
            // be out of step with its peer's): probe the pair before its next step, as the
            // coordinator does not place one on it until this probe says ready
            ready = false;
        }
        if !report(&done, index, task.job, outcome, lost) {
            return;
        }
    }
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
    };
    done.send(PairEvent::Done(d)).is_ok()
}

/// The next reply on `link` that is not stale: outputs and failures of steps other than
/// `awaited` (a previous coordinator's, or one that timed out here) and extra hello answers
/// are skipped — a restarted coordinator inherits them on the same links.
fn reply(link: &Link, awaited: Option<&str>) -> Result<Message, String> {
    // without a wait of its own, the link's timeout ends the wait with an error
    reply_within(link, awaited, None)?.ok_or_else(|| "no reply".to_string())
}

/// [`reply`] waiting at most `wait` (`None`: the link's timeout, an error when it passes):
/// `Ok(None)` when no fresh reply came within `wait`.
fn reply_within(
    link: &Link,
    awaited: Option<&str>,
    wait: Option<Duration>,
) -> Result<Option<Message>, String> {
    loop {
        let bytes = match wait {
            None => link.recv().map_err(|e| e.to_string())?,
            Some(w) => match link.try_recv(w).map_err(|e| e.to_string())? {
                Some(b) => b,
                None => return Ok(None),
            },
        };
        let m = marill_proto::decode(&bytes).map_err(|e| e.to_string())?;
        let stale = match &m {
            Message::SessionOutput { job_id, .. } | Message::SessionFailed { job_id, .. } => {
                Some(job_id.as_str()) != awaited
            }
            Message::ServerHello { .. } => awaited.is_some(),
            _ => false,
        };
        if !stale {
            return Ok(Some(m));
        }
        tracing::info!(
            message = marill_proto::describe(&m),
            "skipped a stale reply from a worker"
        );
    }
}

/// Both workers answer a hello once they serve (suffix loaded and masked).
fn hello(links: &[Link; 2]) -> Result<(), String> {
    for l in links {
        l.send(&marill_proto::encode(&Message::ClientHello { n_public: 0 }))
            .map_err(|e| e.to_string())?;
    }
    for (i, l) in links.iter().enumerate() {
        match reply(l, None).map_err(|e| format!("{}: {e}", role(i)))? {
            Message::ServerHello { .. } => {}
            m => {
                return Err(format!(
                    "{} answered the hello with {}",
                    role(i),
                    marill_proto::describe(&m)
                ))
            }
        }
    }
    Ok(())
}

/// Both workers' replies to step `job`, in whichever order they come, each within `timeout`.
/// A failure reported by either ends the wait at once: the step has failed whatever the other
/// says (a worker whose peer died reports it within its in-step timeout, while the dead one
/// would keep the coordinator waiting its whole step timeout); a late reply is skipped as
/// stale by the pair's next exchange. Unanswered slots stay `None`.
fn replies(
    links: &[Link; 2],
    job: &Job,
    timeout: Duration,
) -> [Option<Result<Message, String>>; 2] {
    let mut got: [Option<Result<Message, String>>; 2] = [None, None];
    let start = std::time::Instant::now();
    loop {
        for (i, l) in links.iter().enumerate() {
            if got[i].is_none() {
                got[i] = reply_within(l, Some(&job.job_id), Some(POLL)).transpose();
            }
        }
        let failed = got
            .iter()
            .flatten()
            .any(|r| !matches!(r, Ok(Message::SessionOutput { .. })));
        if failed || got.iter().all(Option::is_some) {
            return got;
        }
        if start.elapsed() >= timeout {
            for (i, g) in got.iter_mut().enumerate() {
                g.get_or_insert_with(|| {
                    Err(format!(
                        "no message from {} within {} s",
                        role(i),
                        timeout.as_secs()
                    ))
                });
            }
            return got;
        }
    }
}

/// How long each link is polled in turn while a step's replies are awaited.
const POLL: Duration = Duration::from_millis(20);

/// Runs one step on both workers; `(outcome, pair_lost)`.
fn step(links: &[Link; 2], job: &Job, timeout: Duration) -> (Outcome, bool) {
    let fail = |reason: String, lost: bool| (Outcome::Failed { reason }, lost);
    for (i, l) in links.iter().enumerate() {
        let m = Message::SessionStep {
            session: job.session.clone(),
            lane: 0,
            job_id: job.job_id.clone(),
            step: job.step,
            n_public: job.n_public,
            reply_key: job.reply_key,
            share: job.shares[i].clone(),
        };
        if let Err(e) = l.send(&marill_proto::encode(&m)) {
            return fail(format!("sending to the {}: {e}", role(i)), true);
        }
    }
    let mut outs = Vec::with_capacity(2);
    let mut failure = None;
    let mut lost = false;
    for (i, r) in replies(links, job, timeout).into_iter().enumerate() {
        let Some(r) = r else { continue };
        match r {
            Ok(Message::SessionOutput {
                job_id,
                share,
                gamma_at_client,
                bytes_sent,
                rounds,
                ..
            }) if job_id == job.job_id => outs.push((share, gamma_at_client, bytes_sent, rounds)),
            Ok(Message::SessionFailed { job_id, reason, .. }) if job_id == job.job_id => {
                failure.get_or_insert(format!("{}: {reason}", role(i)));
            }
            Ok(Message::Error(e)) => {
                failure.get_or_insert(format!("{} failed: {e}", role(i)));
                lost = true;
            }
            Ok(m) => {
                failure.get_or_insert(format!(
                    "{} answered {}",
                    role(i),
                    marill_proto::describe(&m)
                ));
                lost = true;
            }
            Err(e) => {
                failure.get_or_insert(format!("{}: {e}", role(i)));
                lost = true;
            }
        }
    }
    if let Some(reason) = failure {
        return fail(reason, lost);
    }
    let (p, h) = (outs.remove(0), outs.remove(0));
    (
        Outcome::Done {
            outputs: [p.0, h.0],
            gamma_at_client: p.1,
            bytes_sent: [p.2, h.2],
            rounds: p.3,
        },
        false,
    )
}

fn role(i: usize) -> &'static str {
    if i == 0 {
        "provider"
    } else {
        "helper"
    }
}

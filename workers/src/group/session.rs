//! One session's actor: it owns the session's lane (peer and dealer lanes, masked private
//! weights, the KV cache as shares) while the session is open, runs its steps in order — each
//! on a blocking thread, as the 2PC waits on its links — and hands the lane back to the
//! supervisor when the session ends (the KV cache dropped, the memory reservation freed).
//!
//! Step 0 fixes the session's reply key and its secret (carried inside the sealed share, see
//! `marill_proto::job::StepShare`); a later step is run only when its job names the same reply
//! key (which its sealing binds) and its share carries the same secret, so neither a rewritten
//! job nor a step injected by a broker or coordinator into another client's session is run.
//!
//! Before each step the two workers agree (one opening of a 0/1 flag on the lane) that both
//! could open their shares, so a bad share at one side fails the step at both instead of
//! leaving the other waiting. A failure inside the 2PC may leave the two parties' lane states
//! out of step: it is fatal for the worker (the supervisor stops the group; the process is
//! restarted).

use super::memory::MemoryMsg;
use super::supervisor::SupervisorMsg;
use super::WorkerContext;
use crate::lane::LaneState;
use marill_mpc::FailureKind;
use marill_proto::job::{StepShare, SESSION_SECRET_LEN};
use marill_proto::ControlMessage;
use marill_transport::seal::seal as seal_to;
use marill_transport::{Binding, SealPublic, Sealed};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;

/// One step of the session, as the coordinator sent it.
pub struct StepInput {
    /// the session
    pub session: String,
    /// the job
    pub job_id: String,
    /// the step
    pub step: u32,
    /// public layers the client ran
    pub n_public: usize,
    /// the client's sealing key for the output share
    pub reply_key: [u8; 32],
    /// the last rows of the output the client wants
    pub out_rows: u32,
    /// this worker's sealed share
    pub share: Sealed,
}

/// What step 0 fixes for the rest of a session: where its outputs go and the secret that
/// authenticates its later steps.
#[derive(Clone)]
pub struct SessionAuth {
    /// the client's reply key
    reply_key: [u8; 32],
    /// the session's secret for this worker
    secret: [u8; SESSION_SECRET_LEN],
}

/// Messages to a session actor.
pub enum SessionMsg {
    /// run a step
    Step(StepInput),
    /// the session is over: hand the lane back and stop
    End,
}

/// A session's actor.
pub struct SessionActor;

/// What a session actor starts with.
pub struct SessionArgs {
    /// the worker's shared context
    pub ctx: Arc<WorkerContext>,
    /// the lane the session runs on
    pub lane: LaneState,
    /// the session
    pub session: String,
    /// the memory owner
    pub memory: ActorRef<MemoryMsg>,
    /// the supervisor
    pub sup: ActorRef<SupervisorMsg>,
}

/// A session actor's state.
pub struct SessionState {
    ctx: Arc<WorkerContext>,
    session: String,
    memory: ActorRef<MemoryMsg>,
    sup: ActorRef<SupervisorMsg>,
    /// the lane, while no step has it on a blocking thread
    lane: Option<LaneState>,
    /// the last step done
    last: Option<u32>,
    /// fixed by step 0
    auth: Option<SessionAuth>,
    /// the session's KV cache is reserved with the memory owner
    reserved: bool,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let mut lane = args.lane;
        lane.sfx.reset();
        tracing::info!(
            "{}: session {} opened on lane {}",
            args.ctx.me,
            args.session,
            lane.lane
        );
        Ok(SessionState {
            ctx: args.ctx,
            session: args.session,
            memory: args.memory,
            sup: args.sup,
            lane: Some(lane),
            last: None,
            auth: None,
            reserved: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        st: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Step(input) => step(st, input).await,
            SessionMsg::End => {
                let session = st.session.clone();
                let _ = st.memory.cast(MemoryMsg::Release { session });
                if let Some(mut lane) = st.lane.take() {
                    tracing::info!(
                        "{}: session {} ended on lane {}",
                        st.ctx.me,
                        st.session,
                        lane.lane
                    );
                    lane.sfx.reset();
                    let back = SupervisorMsg::LaneBack(Box::new(lane));
                    let _ = st.sup.cast(back);
                }
                myself.stop(None);
                Ok(())
            }
        }
    }
}

/// Runs one step: the checks, the agreement with the peer, the 2PC on a blocking thread, the
/// reply to the coordinator.
async fn step(st: &mut SessionState, input: StepInput) -> Result<(), ActorProcessingErr> {
    let ctx = st.ctx.clone();
    let cfg = &ctx.cfg;
    let Some(lane) = st.lane.take() else {
        return Err("a session's lane is gone".into());
    };
    let draining = ctx.draining.load(std::sync::atomic::Ordering::Relaxed);
    let mut expected = if input.step == 0 && draining {
        // refused at both workers (agreed below): the coordinator places it elsewhere
        Err("the worker is draining: it takes no new session".to_string())
    } else if input.n_public != cfg.first_layer {
        Err(format!(
            "the client ran {} public layers, this suffix starts at layer {}",
            input.n_public, cfg.first_layer
        ))
    } else if input.session == st.session && st.last.map_or(0, |l| l + 1) == input.step {
        // the session's first step (0), or the one after its last
        Ok(())
    } else {
        Err(format!(
            "step {} of session {} does not follow this worker's state",
            input.step, input.session
        ))
    };
    if expected.is_ok() && !st.reserved {
        let bytes = lane.sfx.cache_bytes_for(cfg.max_seq) as u64;
        let session = st.session.clone();
        let admitted = ractor::call!(st.memory, |reply| MemoryMsg::Reserve {
            session,
            bytes,
            reply
        });
        expected = match admitted {
            Ok(r) => r,
            Err(e) => Err(format!("the memory owner did not answer: {e}")),
        };
        st.reserved = expected.is_ok();
    }
    let auth = st.auth.clone();
    let (lane, done) = tokio::task::spawn_blocking(move || {
        let mut lane = lane;
        let done = run_step(&mut lane, &ctx, &input, auth.as_ref(), expected, draining);
        (lane, done)
    })
    .await?;
    let used = lane.sfx.cache_bytes() as u64;
    st.lane = Some(lane);
    match done {
        StepEnd::Done { reply, step, auth } => {
            st.last = Some(step);
            st.auth = Some(auth);
            let session = st.session.clone();
            let _ = st.memory.cast(MemoryMsg::Used {
                session,
                bytes: used,
            });
            send_reply(&st.ctx, reply)
        }
        StepEnd::Refused(reply) => send_reply(&st.ctx, reply),
        StepEnd::Fatal(reply, why) => {
            send_reply(&st.ctx, reply)?;
            let _ = st.sup.cast(SupervisorMsg::Fatal(why));
            Ok(())
        }
    }
}

fn send_reply(ctx: &WorkerContext, m: ControlMessage) -> Result<(), ActorProcessingErr> {
    ctx.outbox
        .send(m)
        .map_err(|_| ActorProcessingErr::from("the control link is closed"))
}

/// How a step ended.
enum StepEnd {
    /// the output, sealed to the client
    Done {
        reply: ControlMessage,
        step: u32,
        auth: SessionAuth,
    },
    /// refused before any 2PC work, at both workers
    Refused(ControlMessage),
    /// failed inside the 2PC: the lane may be out of step with the peer's
    Fatal(ControlMessage, String),
}

/// The step on the lane (blocking: the 2PC waits on the lane's links).
fn run_step(
    lane: &mut LaneState,
    ctx: &WorkerContext,
    input: &StepInput,
    fixed: Option<&SessionAuth>,
    expected: Result<(), String>,
    draining: bool,
) -> StepEnd {
    let cfg = &ctx.cfg;
    let m = &ctx.metrics;
    let failed = |reason: String, refused: bool| ControlMessage::SessionFailed {
        session: input.session.clone(),
        job_id: input.job_id.clone(),
        step: input.step,
        reason,
        refused,
        draining: false,
    };
    let binding = Binding {
        job_id: &input.job_id,
        session: &input.session,
        step: input.step,
        party: ctx.me,
        direction: "in",
        reply_key: &input.reply_key,
    };
    let start = if input.step == 0 {
        0
    } else {
        lane.sfx.position()
    };
    let x = expected.and_then(|_| {
        if let Some(a) = fixed.filter(|_| input.step > 0) {
            if a.reply_key != input.reply_key {
                return Err(format!(
                    "step {} names another reply key than its session's step 0: refused",
                    input.step
                ));
            }
        }
        let bytes = ctx.seal.open(&input.share, &binding).map_err(|e| {
            format!("the share does not open under its binding (job, session, step, party, reply key): {e}")
        })?;
        let share = StepShare::from_bytes(&bytes).map_err(|e| e.to_string())?;
        if input.step > 0 && !fixed.is_some_and(|a| share.secret_is(&a.secret)) {
            return Err(format!(
                "step {} does not carry its session's secret: refused as a step injected into the session",
                input.step
            ));
        }
        let x = share.values;
        let rows = x.len() / cfg.d_model;
        if x.is_empty() || !x.len().is_multiple_of(cfg.d_model) || start + rows > cfg.max_seq {
            return Err(format!(
                "a share of {} values is not rows × {} fitting max_seq {} from position {start}",
                x.len(),
                cfg.d_model,
                cfg.max_seq
            ));
        }
        if !(1..=rows).contains(&(input.out_rows as usize)) {
            return Err(format!(
                "out_rows {} is not within 1..={rows}",
                input.out_rows
            ));
        }
        let auth = SessionAuth {
            reply_key: input.reply_key,
            secret: share.secret,
        };
        Ok((x, auth))
    });
    // this side's checks, then agreement with the peer before any 2PC work: the refusals
    // are counted, the step's tag opens to 0 only if the peer runs the same step, and the
    // draining workers are counted (a step 0 refused for a drain may run on another pair)
    let tag = step_tag(&input.session, input.step);
    let tag = match lane.party.id {
        marill_mpc::PartyId::P0 => tag,
        marill_mpc::PartyId::P1 => tag.wrapping_neg(),
    };
    let flags = [x.is_err() as u64, tag, (draining && input.step == 0) as u64];
    let both =
        futures::executor::block_on(marill_mpc::ops::open::open(&mut lane.party, &flags, 64));
    let both = match both {
        Ok(b) => b,
        Err(e) => {
            let why = format!("step agreement with the peer: {e}");
            m.steps.with_label_values(&["failed"]).inc();
            return StepEnd::Fatal(failed(why.clone(), false), why);
        }
    };
    if both[1] != 0 {
        // a step one worker received and the other did not (e.g. delivered late to a
        // restarted worker): the two lanes' message streams no longer pair up, and any 2PC
        // work would mix two sessions' shares. Both workers see it and restart.
        let why = format!(
            "the peer runs another step than step {} of session {} on lane {}: the lane is out of step",
            input.step, input.session, lane.lane
        );
        m.steps.with_label_values(&["failed"]).inc();
        return StepEnd::Fatal(failed(why.clone(), false), why);
    }
    let (x, auth) = match (x, both[0]) {
        (Ok(x), 0) => x,
        (x, _) => {
            let drain = both[2] != 0;
            let why = x.err().unwrap_or_else(|| {
                if drain {
                    "the peer is draining: it takes no new session".into()
                } else {
                    "the peer refused its share".into()
                }
            });
            m.steps.with_label_values(&["refused"]).inc();
            let mut reply = failed(why, true);
            if let ControlMessage::SessionFailed { draining, .. } = &mut reply {
                *draining = drain;
            }
            return StepEnd::Refused(reply);
        }
    };
    if input.step == 0 {
        lane.sfx.reset();
        m.sessions.inc();
    }
    let started = std::time::Instant::now();
    let store_before = lane.party.store.stats();
    let wait_before = lane.dealer_wait();
    let before = lane.party.comm();
    let phase = if input.step == 0 { "prefill" } else { "decode" };
    let running = m.step_running.with_label_values(&[phase]);
    running.inc();
    let y = lane.forward(&x);
    running.dec();
    let y = match y {
        Ok(y) => y,
        Err(e) => {
            // shapes were agreed above: a failure here is inside the 2PC (e.g. a declared
            // range exceeded, a lost peer) and may leave the parties out of step. Its detail
            // can depend on secret values (an out-of-range count): it stays here, at debug
            // level; only its category leaves the worker.
            tracing::debug!(session = %input.session, step = input.step, detail = %e.detail, "step failed inside the 2PC");
            m.steps.with_label_values(&["failed"]).inc();
            let why = match e.kind {
                // which party this worker lost is not data: it tells operators where to look
                FailureKind::PeerLost => {
                    let peer = if ctx.me == "provider" {
                        "helper"
                    } else {
                        "provider"
                    };
                    format!("step failed inside the 2PC: {} (the {peer})", e.kind)
                }
                kind => format!("step failed inside the 2PC: {kind}"),
            };
            return StepEnd::Fatal(failed(why.clone(), false), why);
        }
    };
    // only the last rows the client asked for leave the worker (generation needs one)
    let keep = input.out_rows as usize * cfg.d_model;
    let y = &y[y.len() - keep.min(y.len())..];
    let c = lane.party.comm().since(&before);
    let st = lane.party.store.stats();
    m.steps.with_label_values(&["done"]).inc();
    m.step_seconds
        .with_label_values(&[phase])
        .observe(started.elapsed().as_secs_f64());
    m.online_bytes.inc_by(c.bytes_sent);
    m.rounds.inc_by(c.rounds);
    m.correlations.inc_by(st.consumed - store_before.consumed);
    m.dealer_bytes
        .inc_by(st.explicit_bytes - store_before.explicit_bytes);
    m.dealer_wait_seconds
        .with_label_values(&[phase])
        .observe(lane.dealer_wait() - wait_before);
    let out = seal_to(
        &SealPublic(input.reply_key),
        &Binding {
            direction: "out",
            ..binding
        },
        &marill_proto::job::shares_to_bytes(y),
    );
    let out = match out {
        Ok(o) => o,
        Err(e) => return StepEnd::Refused(failed(format!("sealing the output: {e}"), false)),
    };
    StepEnd::Done {
        reply: ControlMessage::SessionOutput {
            session: input.session.clone(),
            job_id: input.job_id.clone(),
            step: input.step,
            share: out,
            gamma_at_client: ctx.gamma_at_client,
            bytes_sent: c.bytes_sent,
            rounds: c.rounds,
            dealer_bytes: st.explicit_bytes - store_before.explicit_bytes,
        },
        step: input.step,
        auth,
    }
}

/// A step's tag for the agreement: FNV-1a (64 bits) of the session id and the step number —
/// stable across builds and machines, as the two workers may run different builds. Not a
/// secret and not a MAC (the link is authenticated): it only tells the two ends of a lane
/// whether they are at the same step.
pub fn step_tag(session: &str, step: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    session
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(step.to_be_bytes().iter())
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::step_tag;

    /// Tags tell steps and sessions apart (the agreement opens to 0 only on equal tags), and
    /// are the published FNV-1a values (stable across builds).
    #[test]
    fn step_tags_differ_between_steps_and_sessions() {
        let tags = [
            step_tag("s1", 0),
            step_tag("s1", 1),
            step_tag("s2", 0),
            step_tag("s", 10),
            step_tag("s1", 256),
        ];
        for (i, a) in tags.iter().enumerate() {
            for b in &tags[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(step_tag("s1", 0), step_tag("s1", 0));
        // FNV-1a 64 of the empty input is its offset basis; of "a" the published value
        let fnv = |bytes: &[u8]| {
            bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
            })
        };
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(step_tag("a", 0), fnv(b"a\0\0\0\0\0"));
    }
}

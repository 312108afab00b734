//! The worker's supervisor: it answers the coordinator's readiness probe, routes each
//! session's steps to the session's actor, starts a session actor on a free lane (or once the
//! lane's previous session handed it back), ends sessions the coordinator ends, and stops the
//! group when a step failed inside the 2PC (the two workers' lane states may differ: the
//! process exits and is restarted) or a session actor failed.
//!
//! Drain (`SIGTERM`, [`SupervisorMsg::Drain`]): the worker tells the coordinator at once
//! (an unasked `Ready` with `draining`, and every probe's answer after it), refuses every new
//! session's step 0 (agreed with the peer like any refusal, so the coordinator places the
//! session elsewhere), runs the open sessions' steps to their end, and stops once every lane is
//! free, or at the drain deadline, whichever comes first.
//!
//! Routing by lane (the coordinator names the lane, the same at both workers, so both route a
//! step to the same lane and their 2PC messages meet): step 0 opens the session on its lane,
//! ending whatever session held it; a later step goes to the lane's session actor, which
//! refuses it (agreeing with the peer) unless it continues that session.

use super::links::{Links, LinksArgs};
use super::memory::{MemoryMsg, MemoryOwner};
use super::session::{SessionActor, SessionArgs, SessionMsg, StepInput};
use super::WorkerContext;
use crate::lane::LaneState;
use marill_proto::ControlMessage;
use marill_transport::Mux;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::{Arc, Mutex};

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// a message from the coordinator
    Control(ControlMessage),
    /// a session ended: its lane is free
    LaneBack(Box<LaneState>),
    /// a step failed inside the 2PC: the worker must restart
    Fatal(String),
    /// stop taking sessions, finish the open ones, then stop (`SIGTERM`)
    Drain,
    /// the drain's deadline passed
    DrainDeadline,
}

/// What the supervisor starts with.
pub struct Args {
    /// the worker's shared context
    pub ctx: Arc<WorkerContext>,
    /// the loaded lanes, in lane order
    pub lanes: Vec<LaneState>,
    /// the pumps of the peer and dealer links
    pub muxes: Vec<Mux>,
    /// the worker's memory limit in bytes (0: none)
    pub memory_limit: u64,
    /// why the group stopped, when it failed
    pub exit: Arc<Mutex<Option<String>>>,
    /// how long a drain waits for the open sessions to end
    pub drain_timeout: std::time::Duration,
}

/// A lane as the supervisor sees it.
enum Slot {
    /// no session: the supervisor holds the lane
    Free(Box<LaneState>),
    /// a session's actor holds it
    Busy {
        session: String,
        actor: ActorRef<SessionMsg>,
    },
    /// its session was told to end; steps wait for the lane to come back
    Returning(Vec<StepInput>),
}

/// The supervisor.
pub struct Supervisor;

/// Its state.
pub struct State {
    ctx: Arc<WorkerContext>,
    slots: Vec<Slot>,
    memory: ActorRef<MemoryMsg>,
    exit: Arc<Mutex<Option<String>>>,
    drain_timeout: std::time::Duration,
    /// bytes the worker has for sessions' KV caches (announced in `Ready`)
    kv_room: u64,
    /// the KV-cache reservation of one session
    session_kv: u64,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        a: Args,
    ) -> Result<State, ActorProcessingErr> {
        let limits = (a.memory_limit, a.ctx.metrics.clone());
        let (memory, _) = Actor::spawn_linked(None, MemoryOwner, limits, myself.get_cell()).await?;
        let links = LinksArgs {
            muxes: a.muxes,
            sup: myself.clone(),
        };
        Actor::spawn_linked(None, Links, links, myself.get_cell()).await?;
        // the public base weights are shared by the lanes: counted once
        let public = a.lanes.first().map_or(0, |l| l.sfx.weight_bytes().0);
        let private: usize = a.lanes.iter().map(|l| l.sfx.weight_bytes().1).sum();
        let weights = (public + private) as u64;
        memory.cast(MemoryMsg::Weights(weights))?;
        let kv_room = match a.memory_limit {
            0 => u64::MAX,
            limit => limit.saturating_sub(weights),
        };
        let cfg = &a.ctx.cfg;
        let session_kv = a
            .lanes
            .first()
            .map_or(0, |l| l.sfx.cache_bytes_for(cfg.max_seq) as u64);
        let slots = a
            .lanes
            .into_iter()
            .map(|l| Slot::Free(Box::new(l)))
            .collect();
        Ok(State {
            ctx: a.ctx,
            slots,
            memory,
            exit: a.exit,
            drain_timeout: a.drain_timeout,
            kv_room,
            session_kv,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        st: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Control(m) => control(&myself, st, m).await,
            SupervisorMsg::LaneBack(lane) => {
                let i = lane.lane as usize;
                let queued = match std::mem::replace(&mut st.slots[i], Slot::Free(lane)) {
                    Slot::Returning(q) => q,
                    other => {
                        st.slots[i] = other;
                        return Err(format!("lane {i} came back while not ending").into());
                    }
                };
                for input in queued {
                    route(&myself, st, i, input).await?;
                }
                drained(&myself, st);
                Ok(())
            }
            SupervisorMsg::Fatal(why) => {
                stop(&myself, st, why);
                Ok(())
            }
            SupervisorMsg::Drain => drain(&myself, st),
            SupervisorMsg::DrainDeadline => {
                let open = open_sessions(st);
                if open > 0 {
                    let why = format!(
                        "the drain deadline ({} s) passed with {open} sessions open",
                        st.drain_timeout.as_secs()
                    );
                    stop(&myself, st, why);
                }
                Ok(())
            }
        }
    }

    /// The free lanes go first, while the links' pumps still run: each tells its dealer lane
    /// it is done (the links' owner, a child, stops after this).
    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        st: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        st.slots.clear();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        ev: SupervisionEvent,
        st: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match ev {
            // a session that ended: its lane came back before it stopped
            SupervisionEvent::ActorTerminated(..) => {}
            SupervisionEvent::ActorFailed(who, e) => {
                stop(&myself, st, format!("actor {} failed: {e}", who.get_id()));
            }
            _ => {}
        }
        Ok(())
    }
}

fn draining(st: &State) -> bool {
    st.ctx.draining.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sessions open on the worker's lanes (running, or ending).
fn open_sessions(st: &State) -> usize {
    st.slots
        .iter()
        .filter(|s| !matches!(s, Slot::Free(_)))
        .count()
}

/// This worker's answer to a probe (and its drain notice).
fn ready(st: &State) -> ControlMessage {
    let cfg = &st.ctx.cfg;
    ControlMessage::Ready {
        first_layer: cfg.first_layer,
        d_model: cfg.d_model,
        gamma_at_client: st.ctx.gamma_at_client,
        sessions: st.slots.len() as u32,
        draining: draining(st),
        kv_room: st.kv_room,
        session_kv: st.session_kv,
    }
}

/// Begins the drain: tells the coordinator, arms the deadline, stops at once if idle.
fn drain(myself: &ActorRef<SupervisorMsg>, st: &mut State) -> Result<(), ActorProcessingErr> {
    if draining(st) {
        return Ok(());
    }
    st.ctx
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    st.ctx.metrics.draining.set(1);
    let open = open_sessions(st);
    let deadline = st.drain_timeout;
    tracing::info!(
        open,
        deadline_s = deadline.as_secs(),
        "{}: draining: {open} sessions open, deadline {} s (no new session; the open ones run to their end)",
        st.ctx.me,
        deadline.as_secs()
    );
    myself.send_after(deadline, || SupervisorMsg::DrainDeadline);
    // the coordinator may be gone: the drain goes on without it
    let _ = reply(st, ready(st));
    drained(myself, st);
    Ok(())
}

/// Stops the group (a clean exit) once a draining worker has no session open.
fn drained(myself: &ActorRef<SupervisorMsg>, st: &State) {
    if draining(st) && open_sessions(st) == 0 {
        tracing::info!("{}: drained: every session ended, exiting", st.ctx.me);
        myself.stop(None);
    }
}

fn stop(myself: &ActorRef<SupervisorMsg>, st: &State, why: String) {
    tracing::error!(reason = %why, "{}: worker stops: {why}", st.ctx.me);
    if let Ok(mut e) = st.exit.lock() {
        e.get_or_insert(why.clone());
    }
    myself.stop(Some(why));
}

fn reply(st: &State, m: ControlMessage) -> Result<(), ActorProcessingErr> {
    st.ctx
        .outbox
        .send(m)
        .map_err(|_| ActorProcessingErr::from("the control link is closed"))
}

async fn control(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut State,
    m: ControlMessage,
) -> Result<(), ActorProcessingErr> {
    match m {
        // the coordinator's readiness probe
        ControlMessage::Probe => reply(st, ready(st)),
        ControlMessage::SessionStep {
            session,
            lane,
            job_id,
            step,
            n_public,
            reply_key,
            out_rows,
            share,
        } => {
            let input = StepInput {
                session,
                job_id,
                step,
                n_public,
                reply_key,
                out_rows,
                share,
            };
            if lane as usize >= st.slots.len() {
                // the coordinator places sessions on the lanes both workers have: nothing to
                // agree with the peer about
                let reason = format!(
                    "lane {lane}: this worker serves lanes 0..{}",
                    st.slots.len()
                );
                return reply(
                    st,
                    ControlMessage::SessionFailed {
                        session: input.session,
                        job_id: input.job_id,
                        step,
                        reason,
                        refused: true,
                        draining: false,
                    },
                );
            }
            route(myself, st, lane as usize, input).await
        }
        ControlMessage::SessionEnd { session, lane } => {
            if let Some(slot) = st.slots.get_mut(lane as usize) {
                if let Slot::Busy { session: s, actor } = slot {
                    if *s == session {
                        actor.cast(SessionMsg::End)?;
                        *slot = Slot::Returning(Vec::new());
                    }
                }
            }
            Ok(())
        }
        other => {
            let what = marill_proto::describe(&other);
            tracing::warn!(message = what, "unexpected message from the coordinator");
            reply(st, ControlMessage::Error(format!("unexpected {what}")))
        }
    }
}

/// Hands `input` to lane `i`'s session, starting one or ending the previous as needed.
async fn route(
    myself: &ActorRef<SupervisorMsg>,
    st: &mut State,
    i: usize,
    input: StepInput,
) -> Result<(), ActorProcessingErr> {
    let open_here = match &st.slots[i] {
        Slot::Busy { session, .. } => *session == input.session,
        Slot::Free(_) => false,
        // decided when the lane is back
        Slot::Returning(_) => true,
    };
    if input.step != 0 && !open_here {
        // a later step of a session not open on this lane (ended, or sent before this
        // worker started): refused here, without touching the lane; the peer, sent the same
        // step, refuses it the same way
        let reason = format!(
            "step {} of session {}: no such session is open on lane {i} (step 0 opens one)",
            input.step, input.session
        );
        return reply(
            st,
            ControlMessage::SessionFailed {
                session: input.session,
                job_id: input.job_id,
                step: input.step,
                reason,
                refused: true,
                draining: false,
            },
        );
    }
    let slot = std::mem::replace(&mut st.slots[i], Slot::Returning(Vec::new()));
    st.slots[i] = match slot {
        Slot::Free(lane) => {
            let args = SessionArgs {
                ctx: st.ctx.clone(),
                lane: *lane,
                session: input.session.clone(),
                memory: st.memory.clone(),
                sup: myself.clone(),
            };
            let (actor, _) =
                Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await?;
            let session = input.session.clone();
            actor.cast(SessionMsg::Step(input))?;
            Slot::Busy { session, actor }
        }
        Slot::Busy { session, actor } if input.step == 0 => {
            let _ = session;
            actor.cast(SessionMsg::End)?;
            Slot::Returning(vec![input])
        }
        Slot::Busy { session, actor } => {
            actor.cast(SessionMsg::Step(input))?;
            Slot::Busy { session, actor }
        }
        Slot::Returning(mut queued) => {
            queued.push(input);
            Slot::Returning(queued)
        }
    };
    Ok(())
}

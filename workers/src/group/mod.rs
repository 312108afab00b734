//! The coordinated worker as an actor group (ractor): a [`supervisor`] that routes the
//! coordinator's messages, one [`session`] actor per session owning that session's lane (its
//! shares: the peer and dealer lanes, the masked private weights, the KV cache), a [`memory`]
//! owner that accounts every byte of weights and KV caches and admits sessions against the
//! worker's limit, and the [`links`] owner that holds the peer and dealer links' lane pumps.
//! The coordinator's control link lives on its own thread ([`control`]): zeromq sockets are
//! blocking and serve one thread. Sessions on different lanes run their 2PC steps in parallel
//! (each on a blocking thread of the runtime); the steps of one session run in order.

pub mod control;
pub mod links;
pub mod memory;
pub mod session;
pub mod supervisor;

use crate::lane::LaneState;
use crate::metrics::WorkerMetrics;
use marill_suffix::SuffixConfig;
use marill_transport::{Link, Mux, SealKeyPair};
use ractor::Actor;
use std::sync::Arc;

/// What every session of the worker shares.
pub struct WorkerContext {
    /// "provider" or "helper"
    pub me: &'static str,
    /// the suffix served
    pub cfg: SuffixConfig,
    /// the client applies the final γ
    pub gamma_at_client: bool,
    /// this trust domain's sealing key (opens the coordinator's sealed shares)
    pub seal: SealKeyPair,
    /// the worker's series
    pub metrics: WorkerMetrics,
    /// replies to the coordinator
    pub outbox: control::Outbox,
    /// the worker is draining: step 0 of a new session is refused (see [`supervisor`])
    pub draining: std::sync::atomic::AtomicBool,
}

/// Drains the group on `SIGTERM` (the signal Kubernetes sends a pod it stops): see
/// [`supervisor`].
fn on_sigterm(sup: ractor::ActorRef<supervisor::SupervisorMsg>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        if term.recv().await.is_some() {
            let _ = sup.cast(supervisor::SupervisorMsg::Drain);
        }
    });
    Ok(())
}

/// Runs the group until the control link closes, a step fails inside the 2PC (the worker
/// then exits; its supervisor process restarts it), or a drain ends (`SIGTERM`: no new
/// session, the open ones finished within `drain_timeout`). `lanes` are loaded; `muxes` are the pumps
/// of the peer and dealer links they use; `outgoing` is the receiving end of the context's
/// outbox ([`control::outbox`]).
pub fn run(
    ctx: WorkerContext,
    outgoing: control::Outgoing,
    lanes: Vec<LaneState>,
    muxes: Vec<Mux>,
    control: Link,
    memory_limit: u64,
    drain_timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("worker-actor")
        .build()?;
    let ctx = Arc::new(ctx);
    let exit = Arc::new(std::sync::Mutex::new(None));
    let why = exit.clone();
    let fatal = rt.block_on(async move {
        let args = supervisor::Args {
            ctx,
            lanes,
            muxes,
            memory_limit,
            exit,
            drain_timeout,
        };
        let (sup, handle) = Actor::spawn(None, supervisor::Supervisor, args)
            .await
            .map_err(|e| anyhow::anyhow!("starting the worker's actors: {e}"))?;
        on_sigterm(sup.clone())?;
        let reader = control::spawn(control, outgoing, sup.clone())?;
        handle
            .await
            .map_err(|e| anyhow::anyhow!("worker supervisor: {e}"))?;
        Ok::<_, anyhow::Error>(reader.join())
    })?;
    // a session blocked in its 2PC (the peer gone) is not waited for
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    if let Some(why) = why.lock().ok().and_then(|w| w.clone()) {
        anyhow::bail!(why);
    }
    match fatal {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(anyhow::anyhow!("the control thread panicked")),
    }
}

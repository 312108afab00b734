//! One worker process (`marill worker --role provider|helper`): one party of the private suffix. The provider loads
//! the model, prepares the suffix (folds γ, splits private weights into shares) and sends the
//! helper its shares over their encrypted peer link; both fetch correlations from the dealer,
//! mask the private weights once, then serve steps (prefill, then one token at a time) with the
//! KV cache kept as shares between steps.
//!
//! The peer and dealer links are split into lanes (`marill_transport::mux`), one per session
//! the pair runs at once (`--sessions`; the pair uses the smaller of its two workers' counts,
//! which they tell each other after the suffix's shares have crossed). Each lane loads the
//! suffix on its own correlation stream ([`crate::lane`]); the public base weights are
//! shared.
//!
//! Two fronts: **direct** (`--client-endpoint`: one client session over a CURVE link, plain
//! shares inside the encrypted link, on lane 0) and **coordinated** (`--control-endpoint`: the
//! cluster's coordinator sends [`marill_proto::ControlMessage::SessionStep`]s naming a lane, whose shares are sealed
//! to this worker's trust domain key, and gets the output share sealed to the client; the
//! worker is an actor group, [`crate::group`], running its lanes' sessions in
//! parallel).

use crate::group as worker_group;
use crate::handshake;
use crate::lane::LaneState;
use crate::metrics::WorkerMetrics;
use anyhow::{anyhow, bail, Context, Result};
use marill_model::suffix::{suffix_of, Bounds};
use marill_model::ModelOptions;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Purpose, Seeding};
use marill_mpc::PartyId;
use marill_proto::link::{recv, send};
use marill_proto::ClientMessage;
use marill_suffix::secure::{prepare, FinalGamma};
use marill_transport::{KeyPair, Link, LinkConfig, Mux, Role, SealKeyPair};
use std::path::PathBuf;
use std::time::Duration;

/// A worker's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerRole {
    /// holds the model (party 0)
    Provider,
    /// holds shares only (party 1)
    Helper,
}

/// What a worker process runs with (the `marill worker` flags, resolved).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// provider or helper
    pub role: WorkerRole,
    /// key directory (own key pair; public keys of client, peer and dealer)
    pub keys: PathBuf,
    /// direct front: where the client link binds
    pub client_endpoint: Option<String>,
    /// coordinated front: where the coordinator's control link binds
    pub control_endpoint: Option<String>,
    /// the peer link: the provider binds it, the helper connects to it
    pub peer_endpoint: String,
    /// this worker's link to the dealer (connect)
    pub dealer_endpoint: String,
    /// longest sequence served (prompt + generated tokens)
    pub max_seq: usize,
    /// sessions this worker runs at once (lanes of its peer and dealer links)
    pub sessions: u32,
    /// memory the worker may account for weights and KV caches, in MiB (0: the device's)
    pub memory_limit_mb: u64,
    /// give up when the peer, the dealer or a direct client is silent this long inside an
    /// exchange
    pub idle_timeout_s: u64,
    /// after `SIGTERM`, the longest the worker waits for its open sessions to end
    pub drain_timeout_s: u64,
    /// serve Prometheus metrics on `GET /metrics` at this address
    pub metrics_addr: Option<String>,
    /// the model (the provider loads it; the helper receives shares)
    pub model: ModelOptions,
    /// where the weight split's seed comes from (the OS CSPRNG unless a test fixes it)
    pub seeding: Seeding,
}

fn link(role: Role, own: &KeyPair, peer: &str, timeout: Duration) -> Result<Link> {
    let mut cfg = LinkConfig::new(peer);
    cfg.timeout = timeout;
    Ok(Link::open(role, own, cfg)?)
}

/// Runs a worker until its front (a direct client, or the coordinator) is done with it.
pub fn run(a: WorkerConfig) -> Result<()> {
    let (party, me, other) = match a.role {
        WorkerRole::Provider => (PartyId::P0, "provider", "helper"),
        WorkerRole::Helper => (PartyId::P1, "helper", "provider"),
    };
    let own = KeyPair::load(&a.keys, me)?;
    let registry = marill_metrics::registry(me)?;
    let metrics = WorkerMetrics::new(&registry)?;
    let _server = marill_metrics::serve_if(a.metrics_addr.as_deref(), registry, me)?;
    let timeout = Duration::from_secs(a.idle_timeout_s);
    let peer_role = match a.role {
        WorkerRole::Provider => Role::Server {
            endpoint: a.peer_endpoint.clone(),
            allow: vec![KeyPair::load_public(&a.keys, other)?],
        },
        WorkerRole::Helper => Role::Client {
            endpoint: a.peer_endpoint.clone(),
            server_public: KeyPair::load_public(&a.keys, other)?,
        },
    };
    let peer = link(peer_role, &own, other, timeout)?;
    let front = match (&a.client_endpoint, &a.control_endpoint) {
        (Some(_), Some(_)) => bail!("give --client-endpoint or --control-endpoint, not both"),
        (Some(ep), None) => Front::Direct(link(
            Role::Server {
                endpoint: ep.clone(),
                allow: vec![KeyPair::load_public(&a.keys, "client")?],
            },
            &own,
            "client",
            timeout,
        )?),
        (None, Some(ep)) => Front::Coordinated {
            link: link(
                Role::Server {
                    endpoint: ep.clone(),
                    allow: vec![KeyPair::load_public(&a.keys, "coordinator")?],
                },
                &own,
                "coordinator",
                timeout,
            )?,
            seal: SealKeyPair::load(&a.keys, me)?,
        },
        (None, None) => bail!("give --client-endpoint or --control-endpoint"),
    };
    let dealer = link(
        Role::Client {
            endpoint: a.dealer_endpoint.clone(),
            server_public: KeyPair::load_public(&a.keys, "dealer")?,
        },
        &own,
        "dealer",
        timeout,
    )?;
    let fx = FixedPoint::default();
    // the suffix: prepared by the provider, the helper's shares sent over the peer link
    // the lanes: the smaller of the two workers' session counts (1 in direct mode)
    let own_sessions = match front {
        Front::Direct(_) => 1,
        Front::Coordinated { .. } => a.sessions.max(1),
    };
    let (cfg, prep, lanes) = match a.role {
        WorkerRole::Provider => {
            let (model, _) = a
                .model
                .load(&candle_core::Device::Cpu)
                .with_context(|| format!("loading {}", a.model.model.display()))?;
            let (cfg, w) = suffix_of(&model, Bounds::default(), a.max_seq)?;
            let [p0, p1] = prepare(&cfg, &w, fx, a.seeding.seed(Purpose::WeightSplit))
                .map_err(|e| anyhow!("{e}"))?;
            let theirs = handshake::provide(&peer, &cfg, p1, own_sessions)?;
            (cfg, p0, own_sessions.min(theirs))
        }
        WorkerRole::Helper => {
            let (cfg, prep) = handshake::receive(&peer, me)?;
            let theirs = handshake::exchange_hellos(&peer, own_sessions)?;
            (cfg, prep, own_sessions.min(theirs))
        }
    };
    tracing::info!(
        "{me}: suffix of {} private layers from layer {}",
        cfg.n_layers,
        cfg.first_layer
    );
    let gamma_at_client = matches!(prep.final_gamma, FinalGamma::AtClient);
    let (peer_mux, peer_lanes) = Mux::split(peer, lanes)?;
    let (dealer_mux, dealer_lanes) = Mux::split(dealer, lanes)?;
    let loaded: Vec<Result<LaneState>> = std::thread::scope(|scope| {
        let threads: Vec<_> = peer_lanes
            .into_iter()
            .zip(dealer_lanes)
            .map(|(pl, dl)| {
                let (cfg, prep) = (&cfg, prep.clone());
                scope.spawn(move || LaneState::load(party, pl, dl, cfg, prep, fx))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("a lane's load panicked")))
            })
            .collect()
    });
    let mut lanes_loaded = Vec::with_capacity(loaded.len());
    for l in loaded {
        lanes_loaded.push(l?);
    }
    drop(prep);
    let muxes = vec![peer_mux, dealer_mux];
    match front {
        Front::Direct(client) => {
            tracing::info!("{me}: private weights masked, serving");
            let lane = lanes_loaded.remove(0);
            let r = serve(lane, &cfg, gamma_at_client, &client, me);
            if let Err(e) = &r {
                let _ = send(&client, &ClientMessage::Error(format!("{me}: {e}")));
            }
            drop(muxes); // after the lane: its dealer link says Done first
            r
        }
        Front::Coordinated { link, seal } => {
            tracing::info!(
                "{me}: private weights masked on {} lanes, serving the coordinator",
                lanes_loaded.len()
            );
            let (outbox, outgoing) = worker_group::control::outbox()?;
            let ctx = worker_group::WorkerContext {
                me,
                cfg,
                gamma_at_client,
                seal,
                metrics,
                outbox,
                draining: Default::default(),
            };
            worker_group::run(
                ctx,
                outgoing,
                lanes_loaded,
                muxes,
                link,
                memory_limit(a.memory_limit_mb),
                Duration::from_secs(a.drain_timeout_s),
            )
        }
    }
}

/// Where a worker's steps come from.
enum Front {
    /// one client, plain shares inside its encrypted link
    Direct(Link),
    /// the coordinator, shares sealed to this worker's trust domain
    Coordinated {
        /// the control link
        link: Link,
        /// this trust domain's sealing key
        seal: SealKeyPair,
    },
}

/// The memory the worker's memory owner may account: `mb` MiB, or (0) the device's.
fn memory_limit(mb: u64) -> u64 {
    if mb > 0 {
        return mb << 20;
    }
    let device = marill_metrics::memory::cuda_devices()
        .first()
        .map(|d| d.total);
    device
        .or_else(marill_metrics::memory::limit_bytes)
        .unwrap_or(0)
}

/// Serves one direct client on lane 0 until it ends the session.
fn serve(
    mut lane: LaneState,
    cfg: &marill_suffix::SuffixConfig,
    gamma_at_client: bool,
    client: &Link,
    me: &str,
) -> Result<()> {
    loop {
        match recv(client)? {
            ClientMessage::Hello { n_public } => {
                if n_public != cfg.first_layer {
                    let why = format!(
                        "the client runs {n_public} public layers, this suffix starts at layer {}",
                        cfg.first_layer
                    );
                    send(client, &ClientMessage::Error(why.clone()))?;
                    bail!(why);
                }
                let ready = ClientMessage::Ready {
                    first_layer: cfg.first_layer,
                    d_model: cfg.d_model,
                    gamma_at_client,
                };
                send(client, &ready)?;
            }
            ClientMessage::Step { out_rows, x } => {
                let rows = x.len() / cfg.d_model.max(1);
                if !(1..=rows).contains(&(out_rows as usize)) {
                    let why = format!("out_rows {out_rows} is not within 1..={rows}");
                    send(client, &ClientMessage::Error(why.clone()))?;
                    bail!(why);
                }
                let before = lane.party.comm();
                let dealer_before = lane.party.store.stats().explicit_bytes;
                let t0 = std::time::Instant::now();
                let y = match lane.forward(&x) {
                    Ok(y) => y,
                    Err(e) => {
                        // the detail may depend on secret values: debug level only
                        tracing::debug!(detail = %e.detail, "step failed inside the 2PC");
                        let why = format!("step failed inside the 2PC: {}", e.kind);
                        send(client, &ClientMessage::Error(why.clone()))?;
                        bail!(why);
                    }
                };
                let c = lane.party.comm().since(&before);
                tracing::debug!(
                    rows,
                    elapsed_ms = t0.elapsed().as_millis() as u64,
                    dealer_wait_s = lane.dealer_wait(),
                    "step done"
                );
                // only the last rows the client asked for leave the worker
                let keep = out_rows as usize * cfg.d_model;
                let y = y[y.len() - keep.min(y.len())..].to_vec();
                send(
                    client,
                    &ClientMessage::Output {
                        y,
                        bytes_sent: c.bytes_sent,
                        rounds: c.rounds,
                        dealer_bytes: lane.party.store.stats().explicit_bytes - dealer_before,
                    },
                )?;
            }
            ClientMessage::End => {
                tracing::info!("{me}: session ended by the client");
                return Ok(());
            }
            m => bail!("unexpected {} from the client", marill_proto::describe(&m)),
        }
    }
}

//! `marill worker --role provider|helper`: one party of the private suffix. The provider loads
//! the model, prepares the suffix (folds γ, splits private weights into shares) and sends the
//! helper its shares over their encrypted peer link; both fetch correlations from the dealer,
//! mask the private weights once, then serve steps (prefill, then one token at a time) with the
//! KV cache kept as shares between steps.
//!
//! Two fronts: **direct** (`--client-endpoint`: one client session over a CURVE link, plain
//! shares inside the encrypted link) and **coordinated** (`--control-endpoint`: the cluster's
//! coordinator sends [`Message::SessionStep`]s whose shares are sealed to this worker's trust
//! domain key, and gets the output share sealed to the client; sessions follow one another on
//! the loaded suffix, each step 0 resetting the KV cache). Before each coordinated step the two
//! workers agree (one opening of a 0/1 flag) that both could open their shares, so a bad share
//! at one side fails the step at both instead of leaving the other waiting.

use super::worker_metrics::WorkerMetrics;
use super::{recv, recv_idle, send};
use crate::generate::{load, ModelArgs};
use crate::secure::bridge::{suffix_of, Bounds};
use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use marill_mpc::correlation::CorrelationStore;
use marill_mpc::correlation::{Bundle, BundleSupplier, CorrRequest, CorrelationError, StepKey};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Seed;
use marill_mpc::{Party, PartyId};
use marill_proto::Message;
use marill_suffix::secure::{prepare, FinalGamma, SecureSuffix};
use marill_transport::seal::seal as seal_to;
use marill_transport::{Binding, KeyPair, Link, LinkConfig, Role, SealKeyPair, SealPublic};
use std::path::PathBuf;
use std::time::Duration;

/// A worker's role.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WorkerRole {
    /// holds the model (party 0)
    Provider,
    /// holds shares only (party 1)
    Helper,
}

/// Arguments of `marill worker`.
#[derive(Args)]
pub struct WorkerArgs {
    /// Configuration file (TOML or YAML, by extension): keys are the long flags with `_` for
    /// `-`; flags and `MARILL_WORKER_<KEY>` variables override it (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// provider or helper
    #[arg(long, value_enum)]
    role: WorkerRole,
    /// Key directory (own key pair; public keys of client, peer and dealer).
    #[arg(long)]
    keys: PathBuf,
    /// Direct front: where the client link binds, e.g. tcp://127.0.0.1:7001.
    #[arg(long)]
    client_endpoint: Option<String>,
    /// Coordinated front: where the coordinator's control link binds (needs
    /// `coordinator.pub` and this role's `<role>.seal.key` in the key directory).
    #[arg(long)]
    control_endpoint: Option<String>,
    /// The peer link: the provider binds it, the helper connects to it.
    #[arg(long)]
    peer_endpoint: String,
    /// This worker's link to the dealer (connect).
    #[arg(long)]
    dealer_endpoint: String,
    /// Longest sequence served (prompt + generated tokens).
    #[arg(long, default_value_t = 256)]
    max_seq: usize,
    /// Give up when the peer, the dealer or a direct client is silent this long inside an
    /// exchange (between a coordinator's steps the worker waits without limit).
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// Serve Prometheus metrics on `GET /metrics` at this address, e.g. 0.0.0.0:9101.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// The model (provider only; the helper receives shares).
    #[command(flatten)]
    model: ModelArgs,
}

/// Correlations from the dealer over this worker's link. A step whose manifest the dealer knows
/// arrives streamed, unasked and in order (`marill_mpc::correlation::manifest`): no round trip
/// per bundle; any other bundle is asked for. Tells the dealer the session is over when dropped.
struct DealerLink {
    link: Link,
    party: PartyId,
    /// the ids the dealer streams in the current step
    streamed: std::ops::Range<u64>,
}

impl DealerLink {
    fn new(link: Link, party: PartyId) -> Self {
        Self {
            link,
            party,
            streamed: 0..0,
        }
    }

    /// Sends `m` to the dealer; a failure makes bundle `id` unavailable.
    fn tell(&self, id: u64, m: &Message) -> Result<(), CorrelationError> {
        send(&self.link, m).map_err(|e| CorrelationError::Unavailable {
            id,
            why: e.to_string(),
        })
    }

    /// Receives bundle `id`, which the dealer sends next.
    fn receive(&self, id: u64) -> Result<Bundle, CorrelationError> {
        let unavailable = |why: String| CorrelationError::Unavailable { id, why };
        match recv(&self.link).map_err(|e| unavailable(e.to_string()))? {
            Message::Bundle(b) if b.id == id => Ok(b),
            Message::Bundle(b) => Err(unavailable(format!("dealer sent bundle {}", b.id))),
            other => Err(unavailable(format!(
                "dealer sent {}",
                marill_proto::describe(&other)
            ))),
        }
    }
}

impl Drop for DealerLink {
    fn drop(&mut self) {
        let _ = send(&self.link, &Message::Done { party: self.party });
    }
}

impl BundleSupplier for DealerLink {
    fn fetch(
        &mut self,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> Result<Bundle, CorrelationError> {
        if !self.streamed.contains(&id) {
            let ask = Message::BundleRequest {
                party,
                id,
                req: req.clone(),
            };
            self.tell(id, &ask)?;
        }
        self.receive(id)
    }

    fn begin_step(
        &mut self,
        party: PartyId,
        key: StepKey,
        first_id: u64,
    ) -> Result<u64, CorrelationError> {
        let begin = Message::StepBegin {
            party,
            key,
            first_id,
        };
        self.tell(first_id, &begin)?;
        let unavailable = |why: String| CorrelationError::Unavailable { id: first_id, why };
        match recv(&self.link).map_err(|e| unavailable(e.to_string()))? {
            Message::StepStream { first_id: f, count } if f >= first_id => {
                self.streamed = f..f.saturating_add(count);
                Ok(f)
            }
            other => Err(unavailable(format!(
                "dealer answered the step's start with {}",
                marill_proto::describe(&other)
            ))),
        }
    }

    fn end_step(&mut self, party: PartyId, next_id: u64) -> Result<u64, CorrelationError> {
        // streamed bundles the step did not use are drained (and their ids never used)
        for id in next_id..self.streamed.end {
            self.receive(id)?;
        }
        let next = next_id.max(self.streamed.end);
        self.streamed = 0..0;
        self.tell(next, &Message::StepEnd { party })?;
        Ok(next)
    }
}

fn link(role: Role, own: &KeyPair, peer: &str, timeout: Duration) -> Result<Link> {
    let mut cfg = LinkConfig::new(peer);
    cfg.timeout = timeout;
    Ok(Link::open(role, own, cfg)?)
}

/// Runs one worker for one session.
pub fn run(a: WorkerArgs) -> Result<()> {
    let (party, me, other) = match a.role {
        WorkerRole::Provider => (PartyId::P0, "provider", "helper"),
        WorkerRole::Helper => (PartyId::P1, "helper", "provider"),
    };
    let own = KeyPair::load(&a.keys, me)?;
    let registry = marill_metrics::registry(me)?;
    let metrics = WorkerMetrics::new(&registry)?;
    let _server = crate::serve_metrics(a.metrics_addr.as_deref(), registry, me)?;
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
    let (cfg, prep) = match a.role {
        WorkerRole::Provider => {
            let (model, _) = load(&a.model)?;
            let (cfg, w) = suffix_of(&model, Bounds::default(), a.max_seq)?;
            let [p0, p1] = prepare(&cfg, &w, fx, Seed::random()).map_err(|e| anyhow!("{e}"))?;
            send(
                &peer,
                &Message::Prepared {
                    cfg: cfg.clone(),
                    suffix: Box::new(p1),
                },
            )?;
            (cfg, p0)
        }
        WorkerRole::Helper => match recv(&peer)? {
            Message::Prepared { cfg, suffix } => (cfg, *suffix),
            m => bail!(
                "expected the prepared suffix, got {}",
                marill_proto::describe(&m)
            ),
        },
    };
    eprintln!(
        "{me}: suffix of {} private layers from layer {}",
        cfg.n_layers, cfg.first_layer
    );
    send(&dealer, &Message::SeedRequest { party })?;
    let seed = loop {
        match recv(&dealer)? {
            Message::Seed { seed } => break Seed(seed),
            // what the dealer was still streaming to this worker's previous incarnation
            Message::Bundle(_) | Message::StepStream { .. } => continue,
            m => bail!(
                "expected a seed from the dealer, got {}",
                marill_proto::describe(&m)
            ),
        }
    };
    let supplier = DealerLink::new(dealer, party);
    let store = CorrelationStore::with_supplier(party, seed, Box::new(supplier));
    let mut p = Party::new(party, peer, store, fx);
    let result = match &front {
        Front::Direct(client) => {
            let r = futures::executor::block_on(serve(&mut p, &cfg, prep, client, me));
            if let Err(e) = &r {
                let _ = send(client, &Message::Error(format!("{me}: {e}")));
            }
            r
        }
        Front::Coordinated { link, seal } => {
            let r = futures::executor::block_on(serve_coordinated(
                &mut p, &cfg, prep, link, seal, me, &metrics,
            ));
            if let Err(e) = &r {
                let _ = send(link, &Message::Error(format!("{me}: {e}")));
            }
            r
        }
    };
    drop(p); // the store's dealer link says Done
    result
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

/// What a worker tells its client or coordinator about the suffix it serves.
fn server_hello(cfg: &marill_suffix::SuffixConfig, gamma_at_client: bool) -> Message {
    Message::ServerHello {
        first_layer: cfg.first_layer,
        d_model: cfg.d_model,
        gamma_at_client,
        sessions: 1,
    }
}

/// Loads the suffix (masks the private weights), bracketed as a step for the dealer; returns
/// it with its program fingerprint, which names its steps for the dealer.
async fn load_suffix(
    p: &mut Party<Link>,
    cfg: &marill_suffix::SuffixConfig,
    prep: marill_suffix::secure::PreparedSuffix,
) -> Result<(SecureSuffix, u64)> {
    let program = marill_proto::program_of(cfg);
    p.store
        .begin_step(StepKey::load(program))
        .map_err(|e| anyhow!("load: {e}"))?;
    let sfx = SecureSuffix::load(p, cfg, prep)
        .await
        .map_err(|e| anyhow!("load: {e}"))?;
    p.store.end_step().map_err(|e| anyhow!("load: {e}"))?;
    Ok((sfx, program))
}

/// Runs one step on `x` (rows × d) of the suffix with fingerprint `program`, bracketed for the
/// dealer, which streams the step's correlations unasked when it knows the manifest of the
/// step's shape.
async fn forward_step(
    p: &mut Party<Link>,
    sfx: &mut SecureSuffix,
    program: u64,
    d: usize,
    x: &[u64],
) -> Result<Vec<u64>, String> {
    let key = StepKey {
        program,
        rows: (x.len() / d.max(1)) as u32,
        pos: sfx.position() as u32,
    };
    p.store.begin_step(key).map_err(|e| e.to_string())?;
    let y = sfx.forward(p, x).await.map_err(|e| e.to_string())?;
    p.store.end_step().map_err(|e| e.to_string())?;
    Ok(y)
}

/// Serves the coordinator's session steps until it closes the link (idle timeout) or a step
/// fails inside the 2PC (the two parties' states may then differ: the worker exits and its
/// supervisor restarts it).
async fn serve_coordinated(
    p: &mut Party<Link>,
    cfg: &marill_suffix::SuffixConfig,
    prep: marill_suffix::secure::PreparedSuffix,
    control: &Link,
    seal: &SealKeyPair,
    me: &'static str,
    m: &WorkerMetrics,
) -> Result<()> {
    let gamma_at_client = matches!(prep.final_gamma, FinalGamma::AtClient);
    let (mut sfx, program) = load_suffix(p, cfg, prep).await?;
    eprintln!("{me}: private weights masked, serving the coordinator");
    let mut current: Option<(String, u32)> = None;
    loop {
        let (session, job_id, step, n_public, reply_key, share) = match recv_idle(control)? {
            Message::ClientHello { .. } => {
                // the coordinator's readiness probe
                send(control, &server_hello(cfg, gamma_at_client))?;
                continue;
            }
            Message::SessionStep {
                session,
                lane: _,
                job_id,
                step,
                n_public,
                reply_key,
                share,
            } => (session, job_id, step, n_public, reply_key, share),
            m => bail!(
                "unexpected {} from the coordinator",
                marill_proto::describe(&m)
            ),
        };
        let failed = |reason: String| Message::SessionFailed {
            session: session.clone(),
            job_id: job_id.clone(),
            step,
            reason,
        };
        // this side's checks, then agreement with the peer before any 2PC work
        let expected = match &current {
            _ if n_public != cfg.first_layer => Err(format!(
                "the client ran {n_public} public layers, this suffix starts at layer {}",
                cfg.first_layer
            )),
            _ if step == 0 => Ok(()),
            Some((s, last)) if *s == session && *last + 1 == step => Ok(()),
            _ => Err(format!(
                "step {step} of session {session} does not follow this worker's state"
            )),
        };
        let binding = Binding {
            job_id: &job_id,
            session: &session,
            step,
            party: me,
            direction: "in",
        };
        let start = if step == 0 { 0 } else { sfx.position() };
        let x = expected.and_then(|_| {
            let bytes = seal.open(&share, &binding).map_err(|e| e.to_string())?;
            let x = marill_proto::job::shares_from_bytes(&bytes).map_err(|e| e.to_string())?;
            let rows = x.len() / cfg.d_model;
            if x.is_empty() || !x.len().is_multiple_of(cfg.d_model) || start + rows > cfg.max_seq {
                return Err(format!(
                    "a share of {} values is not rows × {} fitting max_seq {} from position {start}",
                    x.len(),
                    cfg.d_model,
                    cfg.max_seq
                ));
            }
            Ok(x)
        });
        let flag = [x.is_err() as u64];
        let both = marill_mpc::ops::open::open(p, &flag, 64)
            .await
            .map_err(|e| anyhow!("step agreement with the peer: {e}"))?;
        let x = match (x, both[0]) {
            (Ok(x), 0) => x,
            (x, _) => {
                let why = x
                    .err()
                    .unwrap_or_else(|| "the peer refused its share".into());
                m.steps.with_label_values(&["refused"]).inc();
                send(control, &failed(why))?;
                continue;
            }
        };
        if step == 0 {
            sfx.reset();
            m.sessions.inc();
        }
        let started = std::time::Instant::now();
        let store_before = p.store.stats();
        let before = p.comm();
        let phase = if step == 0 { "prefill" } else { "decode" };
        let running = m.step_running.with_label_values(&[phase]);
        running.set(1);
        let y = forward_step(p, &mut sfx, program, cfg.d_model, &x).await;
        running.set(0);
        let y = match y {
            Ok(y) => y,
            Err(e) => {
                // shapes were agreed above: a failure here is inside the 2PC (e.g. a declared
                // range exceeded, a lost peer) and may leave the parties out of step
                m.steps.with_label_values(&["failed"]).inc();
                send(control, &failed(e.to_string()))?;
                bail!("step failed inside the 2PC: {e}");
            }
        };
        let c = p.comm().since(&before);
        let st = p.store.stats();
        m.steps.with_label_values(&["done"]).inc();
        m.step_seconds
            .with_label_values(&[phase])
            .observe(started.elapsed().as_secs_f64());
        m.online_bytes.inc_by(c.bytes_sent);
        m.rounds.inc_by(c.rounds);
        m.correlations.inc_by(st.consumed - store_before.consumed);
        m.dealer_bytes
            .inc_by(st.explicit_bytes - store_before.explicit_bytes);
        m.kv_cache_bytes.set(sfx.cache_bytes() as i64);
        current = Some((session.clone(), step));
        let out = seal_to(
            &SealPublic(reply_key),
            &Binding {
                direction: "out",
                ..binding
            },
            &marill_proto::job::shares_to_bytes(&y),
        )?;
        send(
            control,
            &Message::SessionOutput {
                session,
                job_id,
                step,
                share: out,
                gamma_at_client,
                bytes_sent: c.bytes_sent,
                rounds: c.rounds,
            },
        )?;
    }
}

async fn serve(
    p: &mut Party<Link>,
    cfg: &marill_suffix::SuffixConfig,
    prep: marill_suffix::secure::PreparedSuffix,
    client: &Link,
    me: &str,
) -> Result<()> {
    let gamma_at_client = matches!(prep.final_gamma, FinalGamma::AtClient);
    let (mut sfx, program) = load_suffix(p, cfg, prep).await?;
    eprintln!("{me}: private weights masked, serving");
    loop {
        match recv(client)? {
            Message::ClientHello { n_public } => {
                if n_public != cfg.first_layer {
                    let why = format!(
                        "the client runs {n_public} public layers, this suffix starts at layer {}",
                        cfg.first_layer
                    );
                    send(client, &Message::Error(why.clone()))?;
                    bail!(why);
                }
                send(client, &server_hello(cfg, gamma_at_client))?;
            }
            Message::Step { x } => {
                let before = p.comm();
                let y = forward_step(p, &mut sfx, program, cfg.d_model, &x)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
                let c = p.comm().since(&before);
                send(
                    client,
                    &Message::Output {
                        y,
                        bytes_sent: c.bytes_sent,
                        rounds: c.rounds,
                    },
                )?;
            }
            Message::End => {
                eprintln!("{me}: session ended by the client");
                return Ok(());
            }
            m => bail!("unexpected {} from the client", marill_proto::describe(&m)),
        }
    }
}

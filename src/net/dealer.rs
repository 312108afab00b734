//! `marill dealer`: serves a worker pair's correlations on demand. Each worker has its own
//! encrypted link (only that worker's key is admitted); whichever asks first for bundle `id`
//! makes the dealer generate both halves, the other half waits (the logic of
//! `marill_mpc::correlation::SharedDealer`). Each worker's random half comes from the seed it
//! receives here, so only corrections travel. The dealer outlives its workers: a restarted
//! worker opens a new epoch with a fresh seed ([`super::dealer_epochs`]), so no correlation is
//! ever handed out twice, also across restarts; `--exit-when-done` ends it once both workers
//! said goodbye (one session in direct mode).

use super::dealer_epochs::Epochs;
use super::{recv_idle, send};
use anyhow::{anyhow, Result};
use clap::Args;
use marill_metrics::memory::DeviceMemory;
use marill_metrics::prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use marill_metrics::register;
use marill_mpc::correlation::{Bundle, BundleSupplier, CorrRequest, ManifestCache, StepKey};
use marill_mpc::prg::Seed;
use marill_mpc::PartyId;
use marill_proto::Message;
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Arguments of `marill dealer`.
#[derive(Args)]
pub struct DealerArgs {
    /// Configuration file (TOML or YAML, by extension): keys are the long flags with `_` for
    /// `-`; flags and `MARILL_DEALER_<KEY>` variables override it (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Key directory (`dealer.key`, `provider.pub`, `helper.pub`).
    #[arg(long)]
    keys: PathBuf,
    /// Where the provider's link binds, e.g. tcp://127.0.0.1:7101.
    #[arg(long)]
    provider_endpoint: String,
    /// Where the helper's link binds.
    #[arg(long)]
    helper_endpoint: String,
    /// Give up when a worker does not take a reply within this long (between requests the
    /// dealer waits without limit).
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// Serve Prometheus metrics on `GET /metrics` at this address, e.g. 0.0.0.0:9102.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Step manifests kept (least recently used dropped): a step whose shape was seen before
    /// is generated and streamed to both workers without a request per bundle; 0 serves every
    /// bundle on request.
    #[arg(long, default_value_t = 512)]
    manifests: usize,
    /// Megabytes of correlations (both workers' halves) generated ahead of demand for the
    /// predicted next step (the next decoded token) while the pair is idle; 0: none.
    #[arg(long, default_value_t = 256)]
    pool_mb: u64,
    /// Exit once both workers have said goodbye (one session; default: serve every
    /// incarnation of the pair until stopped).
    #[arg(long)]
    exit_when_done: bool,
}

/// The dealer's series (`marill_dealer_*`).
#[derive(Clone)]
struct DealerMetrics {
    served: IntCounterVec,
    sent_bytes: IntCounterVec,
    bundles: IntGauge,
    generation_seconds: Gauge,
    stashed: IntGaugeVec,
    epoch: IntGauge,
    streamed: IntCounterVec,
    manifests: IntGauge,
    ahead: IntGaugeVec,
}

impl DealerMetrics {
    fn new(r: &Registry) -> Result<Self> {
        register(r, DeviceMemory::new("marill_dealer_")?)?;
        let m = Self {
            served: register(
                r,
                IntCounterVec::new(
                    Opts::new("marill_dealer_served_total", "Bundles served, by party"),
                    &["party"],
                )?,
            )?,
            sent_bytes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_sent_bytes_total",
                        "Explicit correlation bytes sent, by party",
                    ),
                    &["party"],
                )?,
            )?,
            bundles: register(
                r,
                IntGauge::new(
                    "marill_dealer_generated_bundles",
                    "Bundles generated since start (both halves)",
                )?,
            )?,
            generation_seconds: register(
                r,
                Gauge::new(
                    "marill_dealer_generation_seconds",
                    "Time spent generating since start",
                )?,
            )?,
            epoch: register(
                r,
                IntGauge::new(
                    "marill_dealer_epoch",
                    "The pair's incarnation: a restarted worker opens a new epoch with a fresh seed",
                )?,
            )?,
            streamed: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "marill_dealer_streamed_total",
                        "Bundles streamed unasked (their step's manifest was known), by party",
                    ),
                    &["party"],
                )?,
            )?,
            ahead: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "marill_dealer_ahead_bundles",
                        "Bundles generated ahead of demand for a predicted step since start: \
                         used by it, or skipped (another step came)",
                    ),
                    &["outcome"],
                )?,
            )?,
            manifests: register(
                r,
                IntGauge::new(
                    "marill_dealer_manifests",
                    "Step manifests known (shapes whose bundles are streamed ahead of demand)",
                )?,
            )?,
            stashed: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "marill_dealer_stashed_bundles",
                        "Halves generated and waiting for their party",
                    ),
                    &["party"],
                )?,
            )?,
        };
        for p in ["provider", "helper"] {
            m.served.with_label_values(&[p]);
            m.sent_bytes.with_label_values(&[p]);
            m.stashed.with_label_values(&[p]);
            m.streamed.with_label_values(&[p]);
        }
        for o in ["used", "skipped"] {
            m.ahead.with_label_values(&[o]);
        }
        Ok(m)
    }

    /// The pool's series: halves stashed, bundles generated ahead.
    fn observe_pool(&self, d: &Epochs) {
        let st = d.stats();
        self.bundles.set(st.bundles as i64);
        self.generation_seconds.set(st.gen_nanos as f64 / 1e9);
        for (p, n) in ["provider", "helper"].iter().zip(d.stashed()) {
            self.stashed.with_label_values(&[p]).set(n as i64);
        }
        let (used, skipped) = d.ahead_counts();
        self.ahead.with_label_values(&["used"]).set(used as i64);
        self.ahead
            .with_label_values(&["skipped"])
            .set(skipped as i64);
    }

    fn observe(&self, party: PartyId, bytes: usize, d: &Epochs) {
        let name = party_name(party);
        self.served.with_label_values(&[name]).inc();
        self.sent_bytes
            .with_label_values(&[name])
            .inc_by(bytes as u64);
        self.epoch.set(d.epoch() as i64);
        self.observe_pool(d);
    }
}

/// What one party's serving thread keeps between messages.
struct PartyStream {
    link: Link,
    party: PartyId,
    epochs: Arc<Mutex<Epochs>>,
    manifests: Arc<Mutex<ManifestCache>>,
    m: DealerMetrics,
    /// the step being recorded (its manifest was unknown): its key and requests so far
    recording: Option<(StepKey, Vec<CorrRequest>)>,
    /// a message that arrived while a stream was being sent
    pending: Option<Message>,
    /// the step under way and its first id
    current: Option<(StepKey, u64)>,
    served: u64,
}

impl PartyStream {
    fn epochs(&self) -> Result<std::sync::MutexGuard<'_, Epochs>> {
        self.epochs
            .lock()
            .map_err(|_| anyhow!("dealer state poisoned"))
    }

    fn manifests(&self) -> Result<std::sync::MutexGuard<'_, ManifestCache>> {
        self.manifests
            .lock()
            .map_err(|_| anyhow!("dealer state poisoned"))
    }

    /// Bundle `id` of kind `req` for this party, from the current epoch's dealer.
    fn bundle(&self, id: u64, req: &CorrRequest) -> Result<Bundle, String> {
        let dealer = self
            .epochs()
            .map_err(|e| e.to_string())?
            .dealer_for(self.party);
        dealer.and_then(|mut d| d.fetch(self.party, id, req).map_err(|e| e.to_string()))
    }

    fn sent(&mut self, bytes: usize, streamed: bool) -> Result<()> {
        self.served += 1;
        let name = party_name(self.party);
        if streamed {
            self.m.streamed.with_label_values(&[name]).inc();
        }
        self.m.observe(self.party, bytes, &*self.epochs()?);
        Ok(())
    }

    /// A step begins: streams its bundles when its manifest is known, else records it.
    fn begin(&mut self, key: StepKey, asked: u64) -> Result<()> {
        self.recording = None;
        self.current = None;
        let first_id = match self.epochs()?.begin_step(self.party, key, asked) {
            Ok(first) => first,
            Err(e) => return send(&self.link, &Message::Error(e)),
        };
        self.current = Some((key, first_id));
        let Some(manifest) = self.manifests()?.get(&key) else {
            self.recording = Some((key, Vec::new()));
            return send(&self.link, &Message::StepStream { first_id, count: 0 });
        };
        let count = manifest.len() as u64;
        send(&self.link, &Message::StepStream { first_id, count })?;
        for (id, req) in (first_id..).zip(manifest.iter()) {
            let b = match self.bundle(id, req) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!(
                        "dealer: stream to {:?} stopped at bundle {id}: {e}",
                        self.party
                    );
                    return send(&self.link, &Message::Error(e));
                }
            };
            let bytes = b.explicit.len();
            if let Err(e) = send(&self.link, &Message::Bundle(b)) {
                // the worker is gone; its next incarnation asks for a seed (a new epoch)
                eprintln!("dealer: stream to {:?} stopped: {e}", self.party);
                return Ok(());
            }
            self.sent(bytes, true)?;
            // a worker that speaks during its stream no longer waits for it (it restarted)
            if let Some(bytes) = self.link.try_recv(Duration::ZERO)? {
                self.pending = Some(super::typed(&bytes)?);
                return Ok(());
            }
        }
        Ok(())
    }

    /// The worker's next message; while there is none, the predicted next step is generated
    /// ahead (up to the pool's budget).
    fn next_message(&mut self) -> Result<Message> {
        loop {
            let generated = {
                let mut epochs = self.epochs()?;
                let g = epochs.generate_ahead();
                if g == Ok(true) {
                    self.m.observe_pool(&epochs);
                }
                g
            }; // the state's lock is released before any wait on the link
            match generated {
                Ok(true) => {}
                Ok(false) => return recv_idle(&self.link),
                Err(e) => {
                    eprintln!("dealer: generating ahead stopped: {e}");
                    return recv_idle(&self.link);
                }
            }
            if let Some(bytes) = self.link.try_recv(Duration::ZERO)? {
                return super::typed(&bytes);
            }
        }
    }

    fn serve(mut self, exit_when_done: bool) -> Result<u64> {
        let party = self.party;
        loop {
            let msg = match self.pending.take() {
                Some(m) => m,
                None => self.next_message()?,
            };
            match msg {
                Message::SeedRequest { party: p } if p == party => {
                    self.recording = None;
                    let (epoch, seed) = self.epochs()?.seed(party);
                    eprintln!("dealer: {party:?} seeded in epoch {epoch}");
                    send(&self.link, &Message::Seed { seed: seed.0 })?;
                }
                Message::StepBegin {
                    party: p,
                    key,
                    first_id,
                } if p == party => self.begin(key, first_id)?,
                Message::StepEnd { party: p } if p == party => {
                    if let Some((key, reqs)) = self.recording.take() {
                        let mut known = self.manifests()?;
                        known.insert(key, reqs);
                        self.m.manifests.set(known.len() as i64);
                    }
                    let ended = self.current.take();
                    if let Some((next, ended)) =
                        ended.and_then(|(k, f)| Some((k.next_decode()?, f)))
                    {
                        let manifest = self.manifests()?.get(&next);
                        if let Some(m) = manifest {
                            self.epochs()?.predict(ended, next, m);
                        }
                    }
                }
                Message::BundleRequest { party: p, id, req } if p == party => {
                    match self.bundle(id, &req) {
                        Ok(b) => {
                            let bytes = b.explicit.len();
                            send(&self.link, &Message::Bundle(b))?;
                            if let Some((_, reqs)) = &mut self.recording {
                                reqs.push(req);
                            }
                            self.sent(bytes, false)?;
                        }
                        Err(e) => {
                            // this worker's request fails (its step fails, it restarts); the
                            // dealer keeps serving
                            self.recording = None;
                            eprintln!("dealer: refused {party:?} bundle {id}: {e}");
                            send(&self.link, &Message::Error(e))?;
                        }
                    }
                }
                Message::Done { party: p } if p == party => {
                    if exit_when_done {
                        return Ok(self.served);
                    }
                }
                other => {
                    let what = marill_proto::describe(&other);
                    eprintln!("dealer: {party:?} sent an unexpected {what}");
                    send(&self.link, &Message::Error(format!("unexpected {what}")))?;
                }
            }
        }
    }
}

fn party_name(p: PartyId) -> &'static str {
    ["provider", "helper"][p.index()]
}

/// Runs the dealer until stopped (with `--exit-when-done`: until both workers are done).
pub fn run(a: DealerArgs) -> Result<()> {
    let own = KeyPair::load(&a.keys, "dealer")?;
    let registry = marill_metrics::registry("dealer")?;
    let metrics = DealerMetrics::new(&registry)?;
    let _server = crate::serve_metrics(a.metrics_addr.as_deref(), registry, "dealer")?;
    let epochs = Epochs::new(Box::new(Seed::random)).with_ahead_budget(a.pool_mb << 20);
    let epochs = Arc::new(Mutex::new(epochs));
    let manifests = Arc::new(Mutex::new(ManifestCache::new(a.manifests)));
    let mut threads = Vec::new();
    for (party, endpoint, name) in [
        (PartyId::P0, a.provider_endpoint.clone(), "provider"),
        (PartyId::P1, a.helper_endpoint.clone(), "helper"),
    ] {
        let mut cfg = LinkConfig::new(name);
        cfg.timeout = Duration::from_secs(a.idle_timeout_s);
        let link = Link::open(
            Role::Server {
                endpoint,
                allow: vec![KeyPair::load_public(&a.keys, name)?],
            },
            &own,
            cfg,
        )?;
        let stream = PartyStream {
            link,
            party,
            epochs: epochs.clone(),
            manifests: manifests.clone(),
            m: metrics.clone(),
            recording: None,
            pending: None,
            current: None,
            served: 0,
        };
        let once = a.exit_when_done;
        threads.push(std::thread::spawn(move || stream.serve(once)));
    }
    eprintln!("dealer: serving provider and helper");
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| anyhow!("dealer thread panicked"))??;
    }
    let st = epochs
        .lock()
        .map_err(|_| anyhow!("dealer state poisoned"))?
        .stats();
    eprintln!(
        "dealer: session done, {total} bundles served, {:.1} MB sent",
        st.total_bytes() as f64 / 1e6
    );
    Ok(())
}

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
use marill_mpc::correlation::BundleSupplier;
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
        }
        Ok(m)
    }

    fn observe(&self, party: PartyId, bytes: usize, d: &Epochs) {
        let name = ["provider", "helper"][party.index()];
        self.served.with_label_values(&[name]).inc();
        self.sent_bytes
            .with_label_values(&[name])
            .inc_by(bytes as u64);
        self.epoch.set(d.epoch() as i64);
        let st = d.stats();
        self.bundles.set(st.bundles as i64);
        self.generation_seconds.set(st.gen_nanos as f64 / 1e9);
        for (p, n) in ["provider", "helper"].iter().zip(d.stashed()) {
            self.stashed.with_label_values(&[p]).set(n as i64);
        }
    }
}

fn serve(
    link: Link,
    party: PartyId,
    epochs: Arc<Mutex<Epochs>>,
    m: DealerMetrics,
    exit_when_done: bool,
) -> Result<u64> {
    let mut served = 0u64;
    let lock = || epochs.lock().map_err(|_| anyhow!("dealer state poisoned"));
    loop {
        match recv_idle(&link)? {
            Message::SeedRequest { party: p } if p == party => {
                let (epoch, seed) = lock()?.seed(party);
                eprintln!("dealer: {party:?} seeded in epoch {epoch}");
                send(&link, &Message::Seed { seed: seed.0 })?;
            }
            Message::BundleRequest { party: p, id, req } if p == party => {
                let dealer = lock()?.dealer_for(party);
                match dealer.and_then(|mut d| d.fetch(party, id, &req).map_err(|e| e.to_string())) {
                    Ok(b) => {
                        let bytes = b.explicit.len();
                        send(&link, &Message::Bundle(b))?;
                        served += 1;
                        m.observe(party, bytes, &*lock()?);
                    }
                    Err(e) => {
                        // this worker's request fails (its step fails, it restarts); the
                        // dealer keeps serving
                        eprintln!("dealer: refused {party:?} bundle {id}: {e}");
                        send(&link, &Message::Error(e))?;
                    }
                }
            }
            Message::Done { party: p } if p == party => {
                if exit_when_done {
                    return Ok(served);
                }
            }
            other => {
                let what = marill_proto::describe(&other);
                eprintln!("dealer: {party:?} sent an unexpected {what}");
                send(&link, &Message::Error(format!("unexpected {what}")))?;
            }
        }
    }
}

/// Runs the dealer until stopped (with `--exit-when-done`: until both workers are done).
pub fn run(a: DealerArgs) -> Result<()> {
    let own = KeyPair::load(&a.keys, "dealer")?;
    let registry = marill_metrics::registry("dealer")?;
    let metrics = DealerMetrics::new(&registry)?;
    let _server = crate::serve_metrics(a.metrics_addr.as_deref(), registry, "dealer")?;
    let epochs = Arc::new(Mutex::new(Epochs::new(Box::new(Seed::random))));
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
        let e = epochs.clone();
        let m = metrics.clone();
        let once = a.exit_when_done;
        threads.push(std::thread::spawn(move || serve(link, party, e, m, once)));
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

//! `marill dealer`: serves one session's correlations to its two workers on demand. Each worker
//! has its own encrypted link (only that worker's key is admitted); whichever asks first for
//! bundle `id` makes the dealer generate both halves, the other half waits (the logic of
//! `marill_mpc::correlation::SharedDealer`). Each worker's random half comes from the seed it
//! receives here, so only corrections travel.

use super::{recv_idle, send};
use anyhow::{anyhow, Result};
use clap::Args;
use marill_metrics::memory::DeviceMemory;
use marill_metrics::prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use marill_metrics::register;
use marill_mpc::correlation::{BundleSupplier, Dealer, SharedDealer};
use marill_mpc::prg::Seed;
use marill_mpc::PartyId;
use marill_proto::Message;
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use std::path::PathBuf;
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
}

/// The dealer's series (`marill_dealer_*`).
#[derive(Clone)]
struct DealerMetrics {
    served: IntCounterVec,
    sent_bytes: IntCounterVec,
    bundles: IntGauge,
    generation_seconds: Gauge,
    stashed: IntGaugeVec,
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

    fn observe(&self, party: PartyId, bytes: usize, d: &SharedDealer) {
        let name = ["provider", "helper"][party.index()];
        self.served.with_label_values(&[name]).inc();
        self.sent_bytes
            .with_label_values(&[name])
            .inc_by(bytes as u64);
        let st = d.stats();
        self.bundles.set(st.bundles as i64);
        self.generation_seconds.set(st.gen_nanos as f64 / 1e9);
        for (p, n) in ["provider", "helper"].iter().zip(d.stashed()) {
            self.stashed.with_label_values(&[p]).set(n as i64);
        }
    }
}

fn serve(link: Link, party: PartyId, dealer: SharedDealer, m: DealerMetrics) -> Result<u64> {
    let mut served = 0u64;
    let mut sup = dealer.clone();
    loop {
        match recv_idle(&link)? {
            Message::SeedRequest { party: p } if p == party => {
                send(
                    &link,
                    &Message::Seed {
                        seed: dealer.party_seed(party).0,
                    },
                )?;
            }
            Message::BundleRequest { party: p, id, req } if p == party => {
                match sup.fetch(party, id, &req) {
                    Ok(b) => {
                        let bytes = b.explicit.len();
                        send(&link, &Message::Bundle(b))?;
                        served += 1;
                        m.observe(party, bytes, &dealer);
                    }
                    Err(e) => {
                        send(&link, &Message::Error(e.to_string()))?;
                        return Err(anyhow!("{party:?}: {e}"));
                    }
                }
            }
            Message::Done { party: p } if p == party => return Ok(served),
            other => {
                let what = marill_proto::describe(&other);
                send(&link, &Message::Error(format!("unexpected {what}")))?;
                return Err(anyhow!("{party:?} sent an unexpected {what}"));
            }
        }
    }
}

/// Runs the dealer for one session; returns when both workers are done.
pub fn run(a: DealerArgs) -> Result<()> {
    let own = KeyPair::load(&a.keys, "dealer")?;
    let registry = marill_metrics::registry("dealer")?;
    let metrics = DealerMetrics::new(&registry)?;
    let _server = crate::serve_metrics(a.metrics_addr.as_deref(), registry, "dealer")?;
    let dealer = SharedDealer::new(Dealer::new(Seed::random()));
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
        let d = dealer.clone();
        let m = metrics.clone();
        threads.push(std::thread::spawn(move || serve(link, party, d, m)));
    }
    eprintln!("dealer: serving provider and helper");
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| anyhow!("dealer thread panicked"))??;
    }
    let st = dealer.stats();
    eprintln!(
        "dealer: session done, {total} bundles served, {:.1} MB sent",
        st.total_bytes() as f64 / 1e6
    );
    Ok(())
}

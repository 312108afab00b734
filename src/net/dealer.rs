//! `marill dealer`: serves one session's correlations to its two workers on demand. Each worker
//! has its own encrypted link (only that worker's key is admitted); whichever asks first for
//! bundle `id` makes the dealer generate both halves, the other half waits (the logic of
//! `marill_mpc::correlation::SharedDealer`). Each worker's random half comes from the seed it
//! receives here, so only corrections travel.

use super::{recv, send};
use anyhow::{anyhow, Result};
use clap::Args;
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
    /// Key directory (`dealer.key`, `provider.pub`, `helper.pub`).
    #[arg(long)]
    keys: PathBuf,
    /// Where the provider's link binds, e.g. tcp://127.0.0.1:7101.
    #[arg(long)]
    provider_endpoint: String,
    /// Where the helper's link binds.
    #[arg(long)]
    helper_endpoint: String,
    /// Give up after this long without a request.
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
}

fn serve(link: Link, party: PartyId, dealer: SharedDealer) -> Result<u64> {
    let mut served = 0u64;
    let mut sup = dealer.clone();
    loop {
        match recv(&link)? {
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
                        send(&link, &Message::Bundle(b))?;
                        served += 1;
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
        threads.push(std::thread::spawn(move || serve(link, party, d)));
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

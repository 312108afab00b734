//! `marill worker --role provider|helper`: one party of the private suffix. The provider loads
//! the model, prepares the suffix (folds γ, splits private weights into shares) and sends the
//! helper its shares over their encrypted peer link; both fetch correlations from the dealer,
//! mask the private weights once, then serve the client's steps (prefill, then one token at a
//! time) with the KV cache kept as shares between steps.

use super::{recv, send};
use crate::generate::{load, ModelArgs};
use crate::secure::bridge::{suffix_of, Bounds};
use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use marill_mpc::correlation::CorrelationStore;
use marill_mpc::correlation::{Bundle, BundleSupplier, CorrRequest, CorrelationError};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Seed;
use marill_mpc::{Party, PartyId};
use marill_proto::Message;
use marill_suffix::secure::{prepare, FinalGamma, SecureSuffix};
use marill_transport::{KeyPair, Link, LinkConfig, Role};
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
    /// provider or helper
    #[arg(long, value_enum)]
    role: WorkerRole,
    /// Key directory (own key pair; public keys of client, peer and dealer).
    #[arg(long)]
    keys: PathBuf,
    /// Where the client link binds, e.g. tcp://127.0.0.1:7001.
    #[arg(long)]
    client_endpoint: String,
    /// The peer link: the provider binds it, the helper connects to it.
    #[arg(long)]
    peer_endpoint: String,
    /// This worker's link to the dealer (connect).
    #[arg(long)]
    dealer_endpoint: String,
    /// Longest sequence served (prompt + generated tokens).
    #[arg(long, default_value_t = 256)]
    max_seq: usize,
    /// Give up after this long without a message.
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// The model (provider only; the helper receives shares).
    #[command(flatten)]
    model: ModelArgs,
}

/// Correlations fetched on demand from the dealer over this worker's link; tells the dealer
/// the session is over when dropped.
struct DealerLink {
    link: Link,
    party: PartyId,
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
        let unavailable = |why: String| CorrelationError::Unavailable { id, why };
        send(
            &self.link,
            &Message::BundleRequest {
                party,
                id,
                req: req.clone(),
            },
        )
        .map_err(|e| unavailable(e.to_string()))?;
        match recv(&self.link).map_err(|e| unavailable(e.to_string()))? {
            Message::Bundle(b) => Ok(b),
            other => Err(unavailable(format!(
                "dealer sent {}",
                marill_proto::describe(&other)
            ))),
        }
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
    let client = link(
        Role::Server {
            endpoint: a.client_endpoint.clone(),
            allow: vec![KeyPair::load_public(&a.keys, "client")?],
        },
        &own,
        "client",
        timeout,
    )?;
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
    let seed = match recv(&dealer)? {
        Message::Seed { seed } => Seed(seed),
        m => bail!(
            "expected a seed from the dealer, got {}",
            marill_proto::describe(&m)
        ),
    };
    let supplier = DealerLink {
        link: dealer,
        party,
    };
    let store = CorrelationStore::with_supplier(party, seed, Box::new(supplier));
    let mut p = Party::new(party, peer, store, fx);
    let result = futures::executor::block_on(serve(&mut p, &cfg, prep, &client, me));
    if let Err(e) = &result {
        let _ = send(&client, &Message::Error(format!("{me}: {e}")));
    }
    drop(p); // the store's dealer link says Done
    result
}

async fn serve(
    p: &mut Party<Link>,
    cfg: &marill_suffix::SuffixConfig,
    prep: marill_suffix::secure::PreparedSuffix,
    client: &Link,
    me: &str,
) -> Result<()> {
    let gamma_at_client = matches!(prep.final_gamma, FinalGamma::AtClient);
    let mut sfx = SecureSuffix::load(p, cfg, prep)
        .await
        .map_err(|e| anyhow!("load: {e}"))?;
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
                send(
                    client,
                    &Message::ServerHello {
                        first_layer: cfg.first_layer,
                        d_model: cfg.d_model,
                        gamma_at_client,
                    },
                )?;
            }
            Message::Step { x } => {
                let before = p.comm();
                let y = sfx.forward(p, &x).await.map_err(|e| anyhow!("{e}"))?;
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

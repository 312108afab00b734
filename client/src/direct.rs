//! The client of the direct mode: one session against a provider and a helper over two
//! encrypted links (CURVE, `marill_transport`), plain shares inside them, spoken as the client
//! link's messages ([`marill_proto::ClientMessage`]). Per step it splits the public prefix's
//! output into two additive shares, sends one to each worker, and adds their output shares
//! back. For development and for a pair without a cluster; the cluster's client is
//! [`crate::cluster::KafkaRunner`].

use crate::runner::SuffixRunner;
use crate::shares::{decode_output, share_hidden};
use anyhow::{bail, Result};
use marill_mpc::channel::CommStats;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::sharing::reconstruct;
use marill_proto::link::{recv, send};
use marill_proto::ClientMessage;
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use std::path::Path;
use std::time::Duration;

/// Where the two workers of a direct session listen.
#[derive(Clone, Debug)]
pub struct DirectTarget<'a> {
    /// key directory: `client.key`, `provider.pub`, `helper.pub`
    pub keys: &'a Path,
    /// the provider's client endpoint, e.g. tcp://127.0.0.1:7001
    pub provider: &'a str,
    /// the helper's client endpoint
    pub helper: &'a str,
    /// give up after this long without an answer inside an exchange
    pub timeout: Duration,
}

/// The two workers of a direct session, over their links.
pub struct DirectRunner {
    links: [Link; 2],
    fx: FixedPoint,
    d: usize,
    prg: Prg,
    comm: CommStats,
    dealer_bytes: u64,
    gamma: Option<Vec<f32>>,
}

impl DirectRunner {
    /// Connects to both workers and checks that they serve the suffix after the client's
    /// `n_public` layers at the width of `gamma` (the model's final-norm γ, applied here when
    /// the workers say so).
    pub fn connect(t: &DirectTarget<'_>, n_public: usize, gamma: Vec<f32>) -> Result<Self> {
        let own = KeyPair::load(t.keys, "client")?;
        let open = |endpoint: &str, name: &str| -> Result<Link> {
            let mut cfg = LinkConfig::new(name);
            cfg.timeout = t.timeout;
            Ok(Link::open(
                Role::Client {
                    endpoint: endpoint.to_string(),
                    server_public: KeyPair::load_public(t.keys, name)?,
                },
                &own,
                cfg,
            )?)
        };
        let links = [open(t.provider, "provider")?, open(t.helper, "helper")?];
        let (mut d, mut at_client) = (0, false);
        for l in &links {
            send(l, &ClientMessage::Hello { n_public })?;
        }
        for l in &links {
            match recv(l)? {
                ClientMessage::Ready {
                    first_layer,
                    d_model,
                    gamma_at_client,
                } if first_layer == n_public && d_model == gamma.len() => {
                    d = d_model;
                    at_client = gamma_at_client;
                }
                ClientMessage::Ready {
                    first_layer,
                    d_model,
                    ..
                } => bail!(
                    "the workers serve layers from {first_layer} at width {d_model}; the client \
                     runs {n_public} public layers at width {}",
                    gamma.len()
                ),
                m => bail!(
                    "expected the worker's ready, got {}",
                    marill_proto::describe(&m)
                ),
            }
        }
        Ok(Self {
            links,
            fx: FixedPoint::default(),
            d,
            prg: Prg::new(Seed::random(), 0),
            comm: CommStats::default(),
            dealer_bytes: 0,
            gamma: at_client.then_some(gamma),
        })
    }
}

impl SuffixRunner for DirectRunner {
    fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>> {
        let (s0, s1) = share_hidden(self.fx, self.d, x, &mut self.prg)?;
        for (l, s) in self.links.iter().zip([s0, s1]) {
            let step = ClientMessage::Step {
                out_rows: out_rows as u32,
                x: s,
            };
            send(l, &step)?;
        }
        let mut ys = Vec::new();
        for l in &self.links {
            match recv(l) {
                Ok(ClientMessage::Output {
                    y,
                    bytes_sent,
                    rounds,
                    dealer_bytes,
                }) => {
                    if y.len() != out_rows * self.d {
                        bail!(
                            "a worker returned {} values for {out_rows} rows of {}",
                            y.len(),
                            self.d
                        );
                    }
                    if ys.is_empty() {
                        self.comm.bytes_sent += bytes_sent;
                        self.comm.rounds += rounds;
                    }
                    self.dealer_bytes += dealer_bytes;
                    ys.push(y);
                }
                Ok(m) => bail!("expected an output, got {}", marill_proto::describe(&m)),
                Err(marill_proto::link::LinkError::Peer(why)) => {
                    bail!("a worker failed the step: {why}")
                }
                Err(e) => return Err(e.into()),
            }
        }
        let y = reconstruct(&ys[0], &ys[1]);
        Ok(decode_output(self.fx, &y, self.gamma.as_deref()))
    }

    fn comm(&self) -> CommStats {
        self.comm
    }

    fn dealer_bytes(&self) -> Option<u64> {
        Some(self.dealer_bytes)
    }
}

impl Drop for DirectRunner {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = send(l, &ClientMessage::End);
        }
    }
}

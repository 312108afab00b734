//! `marill client generate`: the client of a private generation in direct mode. It runs the
//! public prefix and the public LM head itself, splits each prefix output into two shares, sends
//! one to each worker over its encrypted link, and reconstructs the suffix's output.

use super::{recv, send};
use crate::generate::{generate_remote, load, GenerateArgs, SuffixRunner};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use marill_client::shares::{decode_output, share_hidden};
use marill_mpc::channel::CommStats;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::testing::reconstruct;
use marill_proto::Message;
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `marill client generate`.
#[derive(Args)]
pub struct ClientArgs {
    /// Key directory: direct mode `client.key`, `provider.pub`, `helper.pub`; through the
    /// cluster `provider.seal.pub`, `helper.seal.pub`.
    #[arg(long)]
    keys: PathBuf,
    /// Direct mode: the provider worker's client endpoint, e.g. tcp://127.0.0.1:7001.
    #[arg(long, required_unless_present = "brokers", requires = "helper")]
    provider: Option<String>,
    /// Direct mode: the helper worker's client endpoint.
    #[arg(long, requires = "provider")]
    helper: Option<String>,
    /// Through the cluster: Kafka bootstrap servers (jobs to the coordinator).
    #[arg(long, conflicts_with = "provider")]
    brokers: Option<String>,
    /// Through the cluster: extra librdkafka properties, key=value (repeatable).
    #[arg(long = "kafka-set", value_parser = crate::cluster::parse_kv)]
    kafka_set: Vec<(String, String)>,
    /// Through the cluster: the model name the coordinator serves.
    #[arg(long, default_value = "default")]
    model_name: String,
    /// Give up after this long without an answer.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Through the cluster: how often a session the cluster fails (its pair lost) is
    /// re-placed: opened again on a pair the coordinator picks, fed every row so far.
    #[arg(long, default_value_t = 1)]
    replace_attempts: u32,
    #[command(flatten)]
    generate: GenerateArgs,
}

/// The two workers over their links.
struct Remote {
    links: [Link; 2],
    fx: FixedPoint,
    d: usize,
    prg: Prg,
    comm: CommStats,
    gamma: Option<Vec<f32>>,
}

impl Remote {
    /// Connects to both workers; `gamma` is the model's final-norm γ (applied here when the
    /// workers say so).
    fn connect(a: &ClientArgs, n_public: usize, gamma: Vec<f32>) -> Result<Self> {
        let own = KeyPair::load(&a.keys, "client")?;
        let open = |endpoint: &str, name: &str| -> Result<Link> {
            let mut cfg = LinkConfig::new(name);
            cfg.timeout = Duration::from_secs(a.timeout_s);
            Ok(Link::open(
                Role::Client {
                    endpoint: endpoint.to_string(),
                    server_public: KeyPair::load_public(&a.keys, name)?,
                },
                &own,
                cfg,
            )?)
        };
        let (Some(p), Some(h)) = (&a.provider, &a.helper) else {
            bail!("direct mode needs --provider and --helper");
        };
        let links = [open(p, "provider")?, open(h, "helper")?];
        let (mut d, mut at_client) = (0, false);
        for l in &links {
            send(l, &Message::ClientHello { n_public })?;
        }
        for l in &links {
            match recv(l)? {
                Message::ServerHello {
                    first_layer,
                    d_model,
                    gamma_at_client,
                    ..
                } if first_layer == n_public && d_model == gamma.len() => {
                    d = d_model;
                    at_client = gamma_at_client;
                }
                Message::ServerHello {
                    first_layer,
                    d_model,
                    ..
                } => bail!(
                    "the workers serve layers from {first_layer} at width {d_model}; the client \
                     runs {n_public} public layers at width {}",
                    gamma.len()
                ),
                m => bail!("expected a hello, got {}", marill_proto::describe(&m)),
            }
        }
        Ok(Self {
            links,
            fx: FixedPoint::default(),
            d,
            prg: Prg::new(Seed::random(), 0),
            comm: CommStats::default(),
            gamma: at_client.then_some(gamma),
        })
    }
}

impl SuffixRunner for Remote {
    fn step(&mut self, x: &[f32], out_rows: usize) -> Result<Vec<f32>> {
        let (s0, s1) = share_hidden(self.fx, self.d, x, &mut self.prg)?;
        for (l, s) in self.links.iter().zip([s0, s1]) {
            send(
                l,
                &Message::Step {
                    out_rows: out_rows as u32,
                    x: s,
                },
            )?;
        }
        let mut ys = Vec::new();
        for l in &self.links {
            match recv(l)? {
                Message::Output {
                    y,
                    bytes_sent,
                    rounds,
                } => {
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
                    ys.push(y);
                }
                Message::Error(why) => bail!("a worker failed the step: {why}"),
                m => bail!("expected an output, got {}", marill_proto::describe(&m)),
            }
        }
        let y = reconstruct(&ys[0], &ys[1]);
        Ok(decode_output(self.fx, &y, self.gamma.as_deref()))
    }

    fn comm(&self) -> CommStats {
        self.comm
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = send(l, &Message::End);
        }
    }
}

/// Runs a private generation against two workers.
pub fn generate(a: ClientArgs) -> Result<()> {
    let (model, tok) = load(a.generate.model_args())?;
    let n_public = model
        .marill_spec()
        .ok_or_else(|| anyhow!("model without a Marill spec"))?
        .n_public();
    let gamma: Vec<f32> = model.norm().weight().to_vec1()?;
    if let Some(brokers) = &a.brokers {
        let kafka = marill_kafka::KafkaSettings {
            brokers: brokers.clone(),
            overrides: a.kafka_set.clone(),
        };
        let t = crate::cluster::target(
            kafka,
            &a.keys,
            &a.model_name,
            Duration::from_secs(a.timeout_s),
            a.replace_attempts,
        )?;
        let runner = marill_client::cluster::KafkaRunner::new(t, n_public, gamma)?;
        return generate_remote(&a.generate, &model, &tok, Box::new(runner));
    }
    let remote = Remote::connect(&a, n_public, gamma)?;
    generate_remote(&a.generate, &model, &tok, Box::new(remote))
}

//! `marill client generate`: the client of a private generation, in direct mode
//! (`marill_client::direct`: two workers over encrypted links) or through the cluster
//! (`marill_client::cluster`: jobs on Kafka). It runs the public prefix and the public LM head
//! itself; the library does the sharing, the exchange and the reconstruction.

use crate::generate::{generate_remote, load, GenerateArgs};
use anyhow::{anyhow, bail, Result};
use clap::Args;
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
    /// The workers' longest sequence (their --max-seq): a prompt plus --max-new-tokens past it
    /// is refused before any step.
    #[arg(long, default_value_t = marill_model::suffix::DEFAULT_MAX_SEQ)]
    max_seq: usize,
    #[command(flatten)]
    generate: GenerateArgs,
}

/// Runs a private generation against two workers.
pub fn generate(a: ClientArgs) -> Result<()> {
    let (model, tok) = load(a.generate.model_args())?;
    a.generate.check_length(&tok, a.max_seq, "the workers'")?;
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
        return generate_remote(&a.generate, &model, &tok, a.max_seq, Box::new(runner));
    }
    let (Some(provider), Some(helper)) = (&a.provider, &a.helper) else {
        bail!("direct mode needs --provider and --helper");
    };
    let target = marill_client::direct::DirectTarget {
        keys: &a.keys,
        provider,
        helper,
        timeout: Duration::from_secs(a.timeout_s),
    };
    let remote = marill_client::direct::DirectRunner::connect(&target, n_public, gamma)?;
    generate_remote(&a.generate, &model, &tok, a.max_seq, Box::new(remote))
}

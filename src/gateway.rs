//! `marill gateway`: the OpenAI-compatible HTTP endpoint on the client's side, in front of the
//! cluster (each request one private session submitted on Kafka), and the serving it shares
//! with `marill dev --serve` (the same over the embedded cluster). The gateway runs the public
//! prefix and sees the prompt: run it where the prompt may be seen (a sidecar of the
//! application, the user's machine), never at the provider. The HTTP layer is
//! `marill-gateway`; this is the command line over it.

use crate::cluster::KafkaArgs;
use crate::generate::{load, ModelArgs};
use anyhow::{anyhow, Context, Result};
use clap::Args;
use marill_client::cluster::{ClusterTarget, KafkaRunner};
use marill_client::runner::SuffixRunner;
use marill_gateway::{ApiKeys, Engine, GatewayConfig, GatewayMetrics, RunnerFactory};
use marill_model::{Llama, TextTokenizer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The HTTP options of `marill gateway` and `marill dev --serve`.
#[derive(Args, Clone)]
pub struct ServeArgs {
    /// The model id clients name in requests and `/v1/models` lists [default: the --model
    /// file's name without its extension].
    #[arg(long)]
    served_model_name: Option<String>,
    /// New tokens of a request that names no max_tokens (within the context).
    #[arg(long, default_value_t = 16)]
    default_max_tokens: usize,
    /// Largest request body, in bytes (larger: 413).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Private sessions at once (more requests: 429).
    #[arg(long, default_value_t = 8)]
    max_concurrent: usize,
    /// A file of API keys, one a line: `/v1/*` then needs `Authorization: Bearer KEY`.
    #[arg(long)]
    api_keys: Option<PathBuf>,
}

/// Arguments of `marill gateway`.
#[derive(Args)]
pub struct GatewayArgs {
    /// Where the HTTP API listens (127.0.0.1 unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Key directory (`provider.seal.pub`, `helper.seal.pub`).
    #[arg(long)]
    keys: PathBuf,
    /// The model name the coordinator serves.
    #[arg(long, default_value = "default")]
    model_name: String,
    /// The workers' longest sequence (their --max-seq): a prompt plus max_tokens past it is
    /// refused with a 400 before a session starts.
    #[arg(long, default_value_t = 256)]
    max_seq: usize,
    /// A step without a result for this many seconds fails the request (502).
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// How often a session the cluster fails (its pair lost) is re-placed.
    #[arg(long, default_value_t = 1)]
    replace_attempts: u32,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs `marill gateway`.
pub fn run(a: GatewayArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let kafka = marill_kafka::KafkaSettings {
        brokers: a.kafka.brokers.clone(),
        overrides: a.kafka.kafka_set.clone(),
    };
    let target = crate::cluster::target(
        kafka,
        &a.keys,
        &a.model_name,
        Duration::from_secs(a.timeout_s),
        a.replace_attempts,
    )?;
    serve(
        &a.listen,
        model,
        tok,
        target,
        a.max_seq,
        &a.serve,
        a.model.model_path(),
    )
}

/// The model id of a model path: the file's name without its extension.
fn default_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".into())
}

/// Serves the OpenAI API on `addr` until SIGINT or SIGTERM: each request one private session
/// on `target`, sequences of at most `max_seq` tokens.
pub fn serve(
    addr: &str,
    model: Llama,
    tok: TextTokenizer,
    target: ClusterTarget,
    max_seq: usize,
    opts: &ServeArgs,
    model_path: &Path,
) -> Result<()> {
    let n_public = model
        .marill_spec()
        .ok_or_else(|| anyhow!("model without a Marill spec"))?
        .n_public();
    let gamma: Vec<f32> = model.norm().weight().to_vec1()?;
    let factory: RunnerFactory = Arc::new(move || {
        let r = KafkaRunner::new(target.clone(), n_public, gamma.clone())?;
        Ok(Box::new(r) as Box<dyn SuffixRunner + Send>)
    });
    let chat = tok.chat_template().is_some();
    let engine = Engine::new(
        Arc::new(model),
        Arc::new(tok),
        max_seq,
        opts.default_max_tokens,
        factory,
    )?;
    let name = opts
        .served_model_name
        .clone()
        .unwrap_or_else(|| default_name(model_path));
    let cfg = GatewayConfig {
        model_name: name.clone(),
        max_body_bytes: opts.max_body_bytes,
        max_concurrent: opts.max_concurrent,
        api_keys: match &opts.api_keys {
            Some(p) => Some(ApiKeys::load(p)?),
            None => None,
        },
    };
    let registry = marill_metrics::registry("gateway")?;
    let metrics = GatewayMetrics::new(&registry)?;
    let max_seq = engine.max_seq();
    let app = marill_gateway::router(Arc::new(engine), cfg, metrics, registry);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let at = listener.local_addr()?;
        eprintln!(
            "gateway: model {name:?} (context {max_seq} tokens, chat template: {}) on \
             http://{at}/v1 (completions, chat/completions, models; /healthz, /metrics)",
            if chat { "yes" } else { "none" }
        );
        marill_gateway::serve(listener, app, marill_gateway::shutdown_signal()).await?;
        eprintln!("gateway: stopped");
        Ok(())
    })
}

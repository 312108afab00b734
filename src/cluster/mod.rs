//! The cluster's processes as `marill` subcommands: `marill coordinator` (Kafka intake around
//! `marill-coordinator`), `marill client batch` (many private sessions through Kafka at once,
//! each compared with plaintext), and `marill dev` (coordinator, provider, helper and dealer in
//! one process with librdkafka's built-in mock broker, then one private generation).

pub mod dev;
pub mod launch;
pub mod settings;

use crate::generate::{compare_greedy, load, ModelArgs, PROMPTS};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use marill_client::cluster::{self as client, ClusterTarget, KafkaRunner};
use marill_coordinator::{
    ControlKeys, CoordinatorConfig, KafkaSettings, PairEndpoints, ServedModel,
};
use marill_transport::{KeyPair, SealKeyPair};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Kafka connection options shared by the cluster's commands.
#[derive(Args, Clone, Debug)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long)]
    pub brokers: String,
    /// Extra librdkafka properties as key=value (repeatable), e.g. session.timeout.ms=1000.
    #[arg(long = "kafka-set", value_parser = parse_kv)]
    pub kafka_set: Vec<(String, String)>,
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

impl KafkaArgs {
    fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            overrides: self.kafka_set.clone(),
        }
    }
}

/// Arguments of `marill coordinator` (each also a configuration key, see
/// [`settings::REFERENCE`]; flags override the file and the environment).
#[derive(Args, Clone, Debug)]
pub struct CoordinatorArgs {
    /// Configuration file (TOML or YAML, by extension).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the configuration reference (markdown) and exit.
    #[arg(long)]
    print_reference: bool,
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long)]
    brokers: Option<String>,
    /// Extra librdkafka properties as key=value (repeatable).
    #[arg(long = "kafka-set")]
    kafka_set: Vec<String>,
    /// Key directory (`coordinator.key`, `provider.pub`, `helper.pub`).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// A worker pair's control endpoints, `PROVIDER,HELPER` (repeatable).
    #[arg(long = "pair")]
    pairs: Vec<String>,
    /// The model name jobs must carry [default: default].
    #[arg(long)]
    model_name: Option<String>,
    /// Consumer group [default: marill-coordinator].
    #[arg(long)]
    group: Option<String>,
    /// Partitions of the jobs topic when the coordinator creates it: the most coordinators
    /// that share the jobs (an existing topic keeps its own) [default: 4].
    #[arg(long)]
    job_partitions: Option<u32>,
    /// A step not answered in this many seconds fails and retires its pair [default: 300].
    #[arg(long)]
    step_timeout_s: Option<u64>,
    /// An open session with no step for this many seconds is closed [default: 60].
    #[arg(long)]
    session_idle_s: Option<u64>,
    /// Exit after this many seconds with nothing to do (default: run until killed).
    #[arg(long)]
    exit_when_idle_s: Option<u64>,
    /// Serve Prometheus metrics on `GET /metrics` at this address, e.g. 0.0.0.0:9100.
    #[arg(long)]
    metrics_addr: Option<String>,
}

impl CoordinatorArgs {
    fn overrides(&self) -> settings::CliOverrides {
        let mut v: Vec<(&'static str, config::Value)> = Vec::new();
        let mut put = |k: &'static str, x: Option<config::Value>| {
            if let Some(x) = x {
                v.push((k, x));
            }
        };
        put("brokers", self.brokers.clone().map(Into::into));
        put(
            "keys",
            self.keys.as_ref().map(|p| p.display().to_string().into()),
        );
        put("model_name", self.model_name.clone().map(Into::into));
        put("group", self.group.clone().map(Into::into));
        put("job_partitions", self.job_partitions.map(Into::into));
        put("step_timeout_s", self.step_timeout_s.map(Into::into));
        put("session_idle_s", self.session_idle_s.map(Into::into));
        put("exit_when_idle_s", self.exit_when_idle_s.map(Into::into));
        put("metrics_addr", self.metrics_addr.clone().map(Into::into));
        if !self.pairs.is_empty() {
            put("pairs", Some(self.pairs.clone().into()));
        }
        if !self.kafka_set.is_empty() {
            put("kafka", Some(self.kafka_set.clone().into()));
        }
        settings::CliOverrides {
            file: self.config.clone(),
            values: v,
        }
    }
}

fn coordinator_config(s: &settings::CoordinatorSettings) -> Result<CoordinatorConfig> {
    Ok(CoordinatorConfig {
        kafka: KafkaSettings {
            brokers: s.brokers.clone(),
            overrides: s.kafka_overrides(),
        },
        group: s.group.clone(),
        pairs: s
            .pair_endpoints()
            .into_iter()
            .map(|(provider, helper)| PairEndpoints { provider, helper })
            .collect(),
        keys: ControlKeys {
            own: KeyPair::load(&s.keys, "coordinator")?,
            provider: KeyPair::load_public(&s.keys, "provider")?,
            helper: KeyPair::load_public(&s.keys, "helper")?,
        },
        model: ServedModel {
            name: s.model_name.clone(),
        },
        step_timeout: Duration::from_secs(s.step_timeout_s),
        session_idle: Duration::from_secs(s.session_idle_s),
        exit_when_idle: s.exit_when_idle_s.map(Duration::from_secs),
        create_topics: true,
        job_partitions: s.job_partitions,
    })
}

/// Runs `marill coordinator`.
pub fn coordinator(a: CoordinatorArgs) -> Result<()> {
    if a.print_reference {
        print!("{}", settings::reference_markdown());
        return Ok(());
    }
    let s = settings::CoordinatorSettings::load(&a.overrides())?;
    let cfg = coordinator_config(&s)?;
    eprintln!(
        "coordinator: {} worker pair(s), model {:?}",
        cfg.pairs.len(),
        cfg.model.name
    );
    let registry = marill_metrics::registry("coordinator")?;
    let metrics = marill_coordinator::CoordinatorMetrics::new(&registry)?;
    let _server = marill_metrics::serve_if(s.metrics_addr.as_deref(), registry, "coordinator")?;
    let stats = marill_coordinator::run(cfg, Arc::new(AtomicBool::new(false)), metrics)?;
    eprintln!("coordinator: done: {stats:?}");
    Ok(())
}

/// Arguments of `marill client batch`.
#[derive(Args, Clone)]
pub struct BatchArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Key directory (`provider.seal.pub`, `helper.seal.pub`).
    #[arg(long)]
    keys: PathBuf,
    /// The model name the coordinator serves.
    #[arg(long, default_value = "default")]
    model_name: String,
    /// Sessions: the first N built-in prompts.
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    /// Greedy tokens per session (each is one job; the session's end is one more).
    #[arg(long, default_value_t = 2)]
    tokens: usize,
    /// Sessions in flight at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// A step without a result for this many seconds fails.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// How often a session the cluster fails (its pair lost) is re-placed: opened again on a
    /// pair the coordinator picks, fed every row so far.
    #[arg(long, default_value_t = 1)]
    replace_attempts: u32,
    /// A job without a result for this many seconds is submitted again (idempotent: the same
    /// job id, answered once).
    #[arg(long, default_value_t = client::RESEND_AFTER.as_secs())]
    resend_after_s: u64,
    #[command(flatten)]
    model: ModelArgs,
}

pub(crate) fn target(
    kafka: KafkaSettings,
    keys: &std::path::Path,
    model: &str,
    timeout: Duration,
    replace: u32,
) -> Result<ClusterTarget> {
    Ok(ClusterTarget {
        kafka,
        model: model.to_string(),
        domains: [
            SealKeyPair::load_public(keys, "provider")?,
            SealKeyPair::load_public(keys, "helper")?,
        ],
        timeout,
        resend_after: client::RESEND_AFTER,
        replace,
    })
}

/// One session's figures in a batch.
#[derive(serde::Serialize)]
pub struct BatchRow {
    /// the prompt
    pub prompt: String,
    /// the session id
    pub session: String,
    /// jobs the session took (its steps and its end)
    pub jobs: usize,
    /// first private token equals plaintext
    pub next_token_agree: bool,
    /// the whole greedy continuation equals plaintext
    pub greedy_identical: bool,
    /// largest |private − plaintext| logit
    pub max_abs_logit_err: f32,
    /// wall time of the session
    pub seconds: f64,
}

/// What a batch did.
pub struct BatchReport {
    /// finished sessions
    pub rows: Vec<BatchRow>,
    /// failed sessions, with the error
    pub errors: Vec<String>,
    /// wall time of the whole batch
    pub wall_s: f64,
}

impl BatchReport {
    /// Jobs of the finished sessions.
    pub fn jobs(&self) -> usize {
        self.rows.iter().map(|r| r.jobs).sum()
    }
}

/// Runs `n` sessions (the first `n` built-in prompts, `tokens` greedy tokens each) through the
/// cluster with `concurrency` in flight, each compared with plaintext.
pub fn run_batch(
    model: &marill_model::Llama,
    tok: &marill_model::TextTokenizer,
    t: &ClusterTarget,
    n: usize,
    tokens: usize,
    concurrency: usize,
) -> Result<BatchReport> {
    let n_public = model
        .marill_spec()
        .ok_or_else(|| anyhow!("model without a Marill spec"))?
        .n_public();
    let gamma: Vec<f32> = model.norm().weight().to_vec1()?;
    let n = n.min(PROMPTS.len());
    let next = Mutex::new(0usize);
    let rows = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|sc| {
        for _ in 0..concurrency.clamp(1, n.max(1)) {
            sc.spawn(|| loop {
                let i = {
                    let mut k = next.lock().expect("lock");
                    if *k >= n {
                        return;
                    }
                    *k += 1;
                    *k - 1
                };
                let run = || -> Result<BatchRow> {
                    let t0 = Instant::now();
                    let ids = tok.encode(PROMPTS[i])?;
                    let runner = KafkaRunner::new(t.clone(), n_public, gamma.clone())?;
                    let session = runner.session().to_string();
                    let c = compare_greedy(model, &ids, tokens, Box::new(runner))?;
                    Ok(BatchRow {
                        prompt: PROMPTS[i].to_string(),
                        session,
                        jobs: c.tokens.len() + 1,
                        next_token_agree: c.next_token_agree,
                        greedy_identical: c.first_divergence.is_none(),
                        max_abs_logit_err: c.max_abs_logit_err,
                        seconds: t0.elapsed().as_secs_f64(),
                    })
                };
                match run() {
                    Ok(r) => {
                        let mut rows = rows.lock().expect("lock");
                        eprintln!(
                            "[{}/{n}] {}: identical {}, max abs logit error {:.4}, {:.1} s",
                            rows.len() + 1,
                            r.session,
                            r.greedy_identical,
                            r.max_abs_logit_err,
                            r.seconds
                        );
                        rows.push(r);
                    }
                    Err(e) => errors
                        .lock()
                        .expect("lock")
                        .push(format!("prompt {i}: {e:#}")),
                }
            });
        }
    });
    Ok(BatchReport {
        rows: rows.into_inner().expect("lock"),
        errors: errors.into_inner().expect("lock"),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// Runs `marill client batch`: sessions through the cluster, each compared with plaintext.
/// Errors if any session fails or any greedy continuation differs from plaintext.
pub fn batch(a: BatchArgs) -> Result<()> {
    let (model, tok) = load(&a.model)?;
    let t = target(
        a.kafka.settings(),
        &a.keys,
        &a.model_name,
        Duration::from_secs(a.timeout_s),
        a.replace_attempts,
    )?;
    let t = ClusterTarget {
        resend_after: Duration::from_secs(a.resend_after_s.max(1)),
        ..t
    };
    let n = a.prompts.min(PROMPTS.len());
    let r = run_batch(&model, &tok, &t, n, a.tokens, a.concurrency)?;
    let same = r.rows.iter().filter(|r| r.greedy_identical).count();
    let agree = r.rows.iter().filter(|r| r.next_token_agree).count();
    let worst = r
        .rows
        .iter()
        .map(|r| r.max_abs_logit_err)
        .fold(0f32, f32::max);
    let done = r.rows.len();
    println!("| sessions | jobs | failed | next-token agreement | greedy {} identical | max abs logit error | wall s | jobs/s |", a.tokens);
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {done} | {} | {} | {agree}/{done} | {same}/{done} | {worst:.4} | {:.1} | {:.2} |",
        r.jobs(),
        r.errors.len(),
        r.wall_s,
        r.jobs() as f64 / r.wall_s
    );
    for e in &r.errors {
        eprintln!("failed: {e}");
    }
    if !r.errors.is_empty() {
        bail!("{} of {n} sessions failed", r.errors.len());
    }
    if same != done {
        bail!("{} of {n} sessions differ from plaintext", done - same);
    }
    Ok(())
}

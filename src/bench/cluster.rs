//! `marill bench cluster`: completed jobs per second through the whole cluster (tansu broker,
//! coordinator, worker pairs with their dealers, all separate processes on this machine) for
//! several pair counts and sessions per pair (lanes) in one run, on a tiny seeded random model
//! by default, so the figures
//! measure the cluster (Kafka round trips, placement, sealed shares, 2PC steps), not a big
//! model. Every session is also compared with plaintext; a failed or differing session fails
//! the run.

use crate::bench::chart::{bars, Panel};
use crate::cluster::launch::{launch, FAST_GROUP};
use crate::cluster::run_batch;
use crate::generate::{load, ModelArgs};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser};
use marill_client::cluster::ClusterTarget;
use marill_coordinator::KafkaSettings;
use marill_model::{Llama, TextTokenizer};
use marill_transport::SealKeyPair;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `marill bench cluster`.
#[derive(Args)]
pub struct ClusterArgs {
    /// Worker pairs, comma separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pairs: Vec<usize>,
    /// Sessions each pair runs at once (its workers' `--sessions`, its dealer's `--lanes`),
    /// comma separated for several runs of every pair count.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    lanes: Vec<u32>,
    /// Sessions per run (the first N built-in prompts).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Greedy tokens per session (each a job, plus one job to end the session).
    #[arg(long, default_value_t = 2)]
    tokens: usize,
    /// The tansu binary.
    #[arg(long, default_value = "target/tools/tansu")]
    tansu: PathBuf,
    /// The processes' logs go to `<logs>/<N>-pairs-<L>-lanes/`.
    #[arg(long, default_value = "target/bench-cluster/logs")]
    logs: PathBuf,
    /// Run on the model given by the model options instead of a tiny random one.
    #[arg(long)]
    use_model: bool,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw jobs/s per pair count into this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

/// One run's figures.
#[derive(Serialize)]
pub(crate) struct Row {
    pub pairs: usize,
    pub lanes: u32,
    pub sessions: usize,
    pub jobs: usize,
    pub failed: usize,
    pub identical: usize,
    pub max_abs_logit_err: f32,
    pub wall_s: f64,
    pub jobs_per_s: f64,
    pub speedup: f64,
}

#[derive(Parser)]
struct Reparse {
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs the benchmark.
pub fn run(a: ClusterArgs) -> Result<()> {
    let tiny_dir = std::env::temp_dir().join(format!("marill-tiny-{}", std::process::id()));
    let model_args = if a.use_model {
        a.model.clone()
    } else {
        marill_model::tiny::write_tiny_model(&tiny_dir, &Default::default())?;
        let mut args = a.model.to_args();
        let i = args.iter().position(|s| s == "--model").expect("--model");
        args[i + 1] = tiny_dir.display().to_string();
        args.insert(0, "reparse".into());
        Reparse::try_parse_from(args)?.model
    };
    let result = run_with(&a, &model_args);
    let _ = std::fs::remove_dir_all(&tiny_dir);
    result
}

fn run_with(a: &ClusterArgs, model_args: &ModelArgs) -> Result<()> {
    let (model, tok) = load(model_args)?;
    let n_public = model
        .marill_spec()
        .ok_or_else(|| anyhow!("model without a Marill spec"))?
        .n_public();
    let cfg = model.config();
    eprintln!(
        "model: {} layers ({n_public} public), width {}",
        cfg.n_layers, cfg.hidden_size
    );
    let mut rows: Vec<Row> = Vec::new();
    for &lanes in &a.lanes {
        for &pairs in &a.pairs {
            let mut row = run_pairs(
                &a.tansu,
                &a.logs,
                model_args,
                (&model, &tok),
                (pairs, lanes),
                a.sessions,
                a.tokens,
            )?;
            // against the first run (fewest pairs, fewest lanes)
            row.speedup = row.jobs_per_s / rows.first().map_or(row.jobs_per_s, |b| b.jobs_per_s);
            rows.push(row);
        }
    }
    println!("| worker pairs | sessions per pair | sessions | jobs | failed | identical to plaintext | max abs logit error | wall s | jobs/s | scaling |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {}/{} | {:.4} | {:.1} | {:.2} | {:.2}× |",
            r.pairs,
            r.lanes,
            r.sessions,
            r.jobs,
            r.failed,
            r.identical,
            r.sessions,
            r.max_abs_logit_err,
            r.wall_s,
            r.jobs_per_s,
            r.speedup
        );
    }
    println!(
        "All processes share this machine's {} cores (broker, coordinator, client, 2 workers and a dealer per pair).",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    if let Some(p) = &a.png {
        let cats: Vec<String> = rows
            .iter()
            .map(|r| format!("{}p×{}", r.pairs, r.lanes))
            .collect();
        bars(
            p,
            "marill bench cluster: completed jobs/s",
            &cats,
            &[Panel {
                title: "jobs/s",
                values: rows.iter().map(|r| r.jobs_per_s).collect(),
            }],
        )?;
        eprintln!("wrote {}", p.display());
    }
    super::write_json(&a.json, &rows)?;
    if rows
        .iter()
        .any(|r| r.failed > 0 || r.identical != r.sessions)
    {
        bail!("some sessions failed or differ from plaintext");
    }
    Ok(())
}

/// One run of the benchmark: launches a cluster of `pairs` worker pairs running up to `lanes`
/// sessions each at once (logs under `<logs>/<pairs>-pairs-<lanes>-lanes/`), runs `sessions` sessions of `tokens` greedy tokens through it,
/// each compared with plaintext, and stops it (`speedup` is left at 1).
pub(crate) fn run_pairs(
    tansu: &Path,
    logs: &Path,
    model_args: &ModelArgs,
    (model, tok): (&Llama, &TextTokenizer),
    (pairs, lanes): (usize, u32),
    sessions: usize,
    tokens: usize,
) -> Result<Row> {
    eprintln!(
        "{pairs} pair(s) × {lanes} lane(s): starting tansu, {pairs} dealer(s), {} worker(s), the coordinator…",
        2 * pairs
    );
    let logs = logs.join(format!("{pairs}-pairs-{lanes}-lanes"));
    let cluster = launch(tansu, pairs, lanes, &model_args.to_args(), &logs)?;
    let mut kafka = KafkaSettings::new(cluster.brokers.clone());
    kafka.overrides = FAST_GROUP
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let target = ClusterTarget {
        kafka,
        model: "default".into(),
        domains: [
            SealKeyPair::load_public(&cluster.keys, "provider")?,
            SealKeyPair::load_public(&cluster.keys, "helper")?,
        ],
        timeout: Duration::from_secs(300),
        resend_after: marill_client::cluster::RESEND_AFTER,
        replace: 0,
    };
    let r = run_batch(model, tok, &target, sessions, tokens, sessions)?;
    drop(cluster);
    for e in &r.errors {
        eprintln!("failed: {e}");
    }
    let jobs = r.jobs();
    Ok(Row {
        pairs,
        lanes,
        sessions: r.rows.len(),
        jobs,
        failed: r.errors.len(),
        identical: r.rows.iter().filter(|x| x.greedy_identical).count(),
        max_abs_logit_err: r
            .rows
            .iter()
            .map(|x| x.max_abs_logit_err)
            .fold(0f32, f32::max),
        wall_s: r.wall_s,
        jobs_per_s: jobs as f64 / r.wall_s,
        speedup: 1.0,
    })
}

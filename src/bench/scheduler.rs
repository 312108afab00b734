//! `marill bench scheduler`: placement latency per decision (place, release, resize) with a
//! pool of workers filled with live sessions (`marill_scheduler::bench`).

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Arguments of `marill bench scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// Workers in the pool (half providers, half helpers), comma separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    workers: Vec<usize>,
    /// Live sessions placed before the timed mixed decisions.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Seed of the pool and the requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    workers: usize,
    sessions: usize,
    decisions: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    rejected: usize,
    time_s: f64,
}

/// Runs the benchmark.
pub fn run(a: SchedulerArgs) -> Result<()> {
    let mut rows = Vec::new();
    println!(
        "| workers | live sessions | decisions | p50 µs | p99 µs | max µs | rejected | total s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &w in &a.workers {
        eprintln!("placing {} sessions on {w} workers…", a.sessions);
        let r = marill_scheduler::bench::run(w, a.sessions, a.seed);
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {} | {:.2} |",
            r.workers, r.sessions, r.decisions, r.p50_us, r.p99_us, r.max_us, r.rejected, r.total_s
        );
        rows.push(Row {
            workers: r.workers,
            sessions: r.sessions,
            decisions: r.decisions,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            max_us: r.max_us,
            rejected: r.rejected,
            time_s: r.total_s,
        });
    }
    super::write_json(&a.json, &rows)
}

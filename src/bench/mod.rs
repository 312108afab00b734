//! `marill bench ...` subcommands.

mod chart;
pub(crate) mod cluster;
mod gateway;
mod ops;
mod scheduler;
mod suffix;

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;

/// Which benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Per-op table of the secure-computation core: rounds, online bytes/elt, dealer bytes/elt,
    /// max abs error against an f64 reference, online and offline time.
    Ops(ops::OpsArgs),
    /// The Marill configurations side by side (bytes, rounds, dealer bytes, loopback and
    /// projected LAN/WAN time) for prefill and decoding.
    Suffix(suffix::SuffixArgs),
    /// Placement latency of the scheduler (place, release, resize) at scale.
    Scheduler(scheduler::SchedulerArgs),
    /// Completed jobs/s through the whole cluster (separate processes, tansu broker) for
    /// several worker-pair counts, on a tiny model.
    Cluster(cluster::ClusterArgs),
    /// Time to first token and tokens/s through the OpenAI-compatible gateway (streamed
    /// completions at several concurrencies; starts `marill dev --serve` without --url).
    Gateway(gateway::GatewayBenchArgs),
}

/// Runs a benchmark subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Ops(args) => ops::run(args),
        BenchCommand::Suffix(args) => suffix::run(args),
        BenchCommand::Scheduler(args) => scheduler::run(args),
        BenchCommand::Cluster(args) => cluster::run(args),
        BenchCommand::Gateway(args) => gateway::run(args),
    }
}

/// Writes rows as a JSON array when a path is given.
pub fn write_json<T: serde::Serialize>(path: &Option<PathBuf>, rows: &[T]) -> Result<()> {
    if let Some(p) = path {
        if let Some(dir) = p.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        std::fs::write(p, serde_json::to_string_pretty(rows)?)?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

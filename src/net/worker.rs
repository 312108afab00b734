//! `marill worker --role provider|helper`: the command-line layer over `marill_workers::run`
//! (the flags, layered with a configuration file and the environment, resolved into a
//! `WorkerConfig`).

use crate::generate::ModelArgs;
use anyhow::Result;
use clap::{Args, ValueEnum};
use marill_workers::WorkerConfig;
use std::path::PathBuf;

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
    /// Configuration file (TOML or YAML, by extension): keys are the long flags with `_` for
    /// `-`; flags and `MARILL_WORKER_<KEY>` variables override it (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// provider or helper
    #[arg(long, value_enum)]
    role: WorkerRole,
    /// Key directory (own key pair; public keys of client, peer and dealer).
    #[arg(long)]
    keys: PathBuf,
    /// Direct front: where the client link binds, e.g. tcp://127.0.0.1:7001.
    #[arg(long)]
    client_endpoint: Option<String>,
    /// Coordinated front: where the coordinator's control link binds (needs
    /// `coordinator.pub` and this role's `<role>.seal.key` in the key directory).
    #[arg(long)]
    control_endpoint: Option<String>,
    /// The peer link: the provider binds it, the helper connects to it.
    #[arg(long)]
    peer_endpoint: String,
    /// This worker's link to the dealer (connect).
    #[arg(long)]
    dealer_endpoint: String,
    /// Longest sequence served (prompt + generated tokens).
    #[arg(long, default_value_t = marill_model::suffix::DEFAULT_MAX_SEQ)]
    max_seq: usize,
    /// Sessions this worker runs at once (lanes of its peer and dealer links; at most the
    /// dealer's `--lanes`). The pair serves the smaller of its two workers' counts.
    #[arg(long, default_value_t = 4)]
    sessions: u32,
    /// Memory the worker may account for weights and KV caches, in MiB (0: the device's: the
    /// first CUDA device's memory in a `cuda` build with a GPU, else the host's cgroup limit or
    /// physical memory): a session whose KV cache (its most, `--max-seq` positions) does not
    /// fit is refused.
    #[arg(long, default_value_t = 0)]
    memory_limit_mb: u64,
    /// Give up when the peer, the dealer or a direct client is silent this long inside an
    /// exchange (between a coordinator's steps the worker waits without limit).
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// On `SIGTERM` the worker drains: it takes no new session, runs its open sessions to
    /// their end, and exits once they have ended or after this many seconds, whichever comes
    /// first (a session's length: `marill plan`; the Helm chart's
    /// `terminationGracePeriodSeconds` must exceed it).
    #[arg(long, default_value_t = 600)]
    drain_timeout_s: u64,
    /// Serve Prometheus metrics on `GET /metrics` at this address, e.g. 0.0.0.0:9101.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// The model (provider only; the helper receives shares).
    #[command(flatten)]
    model: ModelArgs,
}

impl WorkerArgs {
    /// The flags as the worker's configuration.
    pub fn config(&self) -> Result<WorkerConfig> {
        Ok(WorkerConfig {
            role: match self.role {
                WorkerRole::Provider => marill_workers::WorkerRole::Provider,
                WorkerRole::Helper => marill_workers::WorkerRole::Helper,
            },
            keys: self.keys.clone(),
            client_endpoint: self.client_endpoint.clone(),
            control_endpoint: self.control_endpoint.clone(),
            peer_endpoint: self.peer_endpoint.clone(),
            dealer_endpoint: self.dealer_endpoint.clone(),
            max_seq: self.max_seq,
            sessions: self.sessions,
            memory_limit_mb: self.memory_limit_mb,
            idle_timeout_s: self.idle_timeout_s,
            drain_timeout_s: self.drain_timeout_s,
            metrics_addr: self.metrics_addr.clone(),
            model: self.model.options()?,
            seeding: self.model.seeding(),
        })
    }
}

/// Runs `marill worker`.
pub fn run(a: WorkerArgs) -> Result<()> {
    marill_workers::run(a.config()?)
}

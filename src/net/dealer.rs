//! `marill dealer`: the command-line layer over `marill_dealer_pool::run` (the flags, layered
//! with a configuration file and the environment, resolved into a `DealerConfig`).

use anyhow::Result;
use clap::Args;
use marill_dealer_pool::DealerConfig;
use std::path::PathBuf;

/// Arguments of `marill dealer`.
#[derive(Args)]
pub struct DealerArgs {
    /// Configuration file (TOML or YAML, by extension): keys are the long flags with `_` for
    /// `-`; flags and `MARILL_DEALER_<KEY>` variables override it (see docs/configuration.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Key directory (`dealer.key`, `provider.pub`, `helper.pub`).
    #[arg(long)]
    keys: PathBuf,
    /// Where the provider's link binds, e.g. tcp://127.0.0.1:7101.
    #[arg(long)]
    provider_endpoint: String,
    /// Where the helper's link binds.
    #[arg(long)]
    helper_endpoint: String,
    /// Give up when a worker does not take a reply within this long (between requests the
    /// dealer waits without limit).
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,
    /// Serve Prometheus metrics on `GET /metrics` at this address, e.g. 0.0.0.0:9102.
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Step manifests kept (least recently used dropped): a step whose shape was seen before
    /// is generated and streamed to both workers without a request per bundle; 0 serves every
    /// bundle on request.
    #[arg(long, default_value_t = 512)]
    manifests: usize,
    /// Megabytes of correlations (both workers' halves) generated ahead of demand for the
    /// predicted next step (the next decoded token), shared out among the lanes; a lane's
    /// share must hold a whole step for it to be shipped ahead (a SmolLM2 decode step with
    /// LF 0.5 and LoRA r 8 is ~92 MB); 0: none.
    #[arg(long, default_value_t = 1024)]
    pool_mb: u64,
    /// Ship the predicted next step's correlations to each worker as soon as they are
    /// generated, between steps, so that they cross the link before the step starts (false:
    /// send them when the worker starts the step).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ship_ahead: bool,
    /// Lanes of each worker link: the most sessions the pair runs at once (each worker's
    /// `--sessions` must not exceed it); the pool is shared out among them.
    #[arg(long, default_value_t = 8)]
    lanes: u32,
    /// Exit once both workers have said goodbye on lane 0 (one session in direct mode;
    /// default: serve every incarnation of the pair until stopped).
    #[arg(long)]
    exit_when_done: bool,
}

impl DealerArgs {
    /// The flags as the dealer's configuration.
    pub fn config(&self) -> DealerConfig {
        DealerConfig {
            keys: self.keys.clone(),
            provider_endpoint: self.provider_endpoint.clone(),
            helper_endpoint: self.helper_endpoint.clone(),
            idle_timeout_s: self.idle_timeout_s,
            metrics_addr: self.metrics_addr.clone(),
            manifests: self.manifests,
            pool_mb: self.pool_mb,
            ship_ahead: self.ship_ahead,
            lanes: self.lanes,
            exit_when_done: self.exit_when_done,
        }
    }
}

/// Runs `marill dealer`.
pub fn run(a: DealerArgs) -> Result<()> {
    marill_dealer_pool::run(a.config())
}

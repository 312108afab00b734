//! `marill plan`: capacity planning from the measured cost of one request.
//!
//! - `marill plan measure` measures a model and Marill configuration in one process and writes
//!   the inputs (JSON): online bytes and rounds, wall and CPU seconds per party, dealer bytes,
//!   bundles and CPU seconds per step, KV-cache and weight memory, fitted per step.
//! - `marill plan --requests-per-day D ...` turns those inputs and a target load into pairs,
//!   dealers, bandwidth between the trust domains and memory per worker (the pure model is in
//!   [`model`]; method and formulae in docs/capacity.md).
//! - `marill plan check` compares the model's prediction with `marill bench cluster`.

pub mod check;
pub mod clock;
pub mod measure;
pub mod model;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use model::{Inputs, Load, Plan, Target};
use serde::Serialize;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Arguments of `marill plan`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    which: Option<PlanCommand>,
    #[command(flatten)]
    target: TargetArgs,
}

/// The subcommands of `marill plan`.
#[derive(Subcommand)]
pub enum PlanCommand {
    /// Measures the cost of private requests on a model and configuration (in one process)
    /// and writes the planning inputs as JSON.
    Measure(measure::MeasureArgs),
    /// Predicts `marill bench cluster` (tiny model, 1 and 2 pairs over loopback) from measured
    /// inputs and runs it: predicted vs measured jobs/s; fails beyond the stated factor.
    Check(check::CheckArgs),
}

/// The target load and deployment of `marill plan`.
#[derive(Args)]
pub struct TargetArgs {
    /// The measured inputs (written by `marill plan measure`).
    #[arg(long, default_value = "target/plan/inputs.json")]
    inputs: PathBuf,
    /// Target load in requests per second (or --requests-per-day).
    #[arg(
        long,
        allow_negative_numbers = true,
        conflicts_with = "requests_per_day"
    )]
    requests_per_s: Option<f64>,
    /// Target load in requests per day, spread evenly (plan for your peak rate).
    #[arg(long, allow_negative_numbers = true)]
    requests_per_day: Option<f64>,
    /// Prompt tokens per request.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Output tokens per request (the first comes from the prefill).
    #[arg(long, default_value_t = 32)]
    output_tokens: usize,
    /// Round-trip time between the provider's and the helper's trust domains, ms.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    rtt_ms: f64,
    /// Bandwidth between the trust domains, each direction, Gbit/s.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    bandwidth_gbps: f64,
    /// Round-trip time between a worker and its dealer, ms (default: --rtt-ms).
    #[arg(long, allow_negative_numbers = true)]
    dealer_rtt_ms: Option<f64>,
    /// Model a dealer that streams correlations ahead of demand (today's dealer serves them
    /// on demand, one round trip per bundle).
    #[arg(long)]
    dealer_ahead: bool,
    /// Per Kafka job (one per step and one to end the session): client → broker →
    /// coordinator → pair and back, ms (≈ 4 ms measured by `marill bench cluster` here).
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    job_overhead_ms: f64,
    /// CPU cores of each worker (default: the measuring machine's).
    #[arg(long, allow_negative_numbers = true)]
    cores_per_worker: Option<f64>,
    /// CPU cores of each dealer.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    dealer_cores: f64,
    /// Fraction of the capacity planned busy.
    #[arg(long, default_value_t = 0.7, allow_negative_numbers = true)]
    target_utilization: f64,
    /// Write the plan (target, inputs used, outputs) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `marill plan` or one of its subcommands.
pub fn run(a: PlanArgs) -> Result<()> {
    match a.which {
        Some(PlanCommand::Measure(m)) => measure::run(m),
        Some(PlanCommand::Check(c)) => check::run(c),
        None => plan(a.target),
    }
}

/// Reads and validates an inputs file.
pub fn read_inputs(path: &Path) -> Result<Inputs> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (write it with `marill plan measure --out {}`)",
            path.display(),
            path.display()
        )
    })?;
    let i: Inputs =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    i.validate()
        .with_context(|| format!("checking {}", path.display()))?;
    Ok(i)
}

/// Writes `value` as pretty JSON, creating the directory.
pub(crate) fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

impl TargetArgs {
    fn target(&self, inputs: &Inputs) -> Result<Target> {
        let load = match (self.requests_per_s, self.requests_per_day) {
            (Some(r), None) => Load::PerSecond(r),
            (None, Some(d)) => Load::PerDay(d),
            (None, None) => {
                bail!("give the target load: --requests-per-s R or --requests-per-day D")
            }
            (Some(_), Some(_)) => bail!("give --requests-per-s or --requests-per-day, not both"),
        };
        Ok(Target {
            load,
            prompt_tokens: self.prompt_tokens,
            output_tokens: self.output_tokens,
            rtt_s: self.rtt_ms / 1e3,
            bandwidth_bps: self.bandwidth_gbps * 1e9,
            dealer_rtt_s: self.dealer_rtt_ms.unwrap_or(self.rtt_ms) / 1e3,
            dealer_ahead: self.dealer_ahead,
            job_overhead_s: self.job_overhead_ms / 1e3,
            cores_per_worker: self.cores_per_worker.unwrap_or(inputs.machine.cores as f64),
            dealer_cores: self.dealer_cores,
            utilization: self.target_utilization,
        })
    }
}

/// What `marill plan --json` writes.
#[derive(Serialize)]
struct PlanFile<'a> {
    inputs_file: String,
    inputs_measured_at_unix_s: u64,
    model: &'a model::ModelInfo,
    config: &'a model::ConfigInfo,
    machine: &'a model::Machine,
    target: TargetJson,
    plan: &'a Plan,
}

#[derive(Serialize)]
struct TargetJson {
    requests_per_s: f64,
    prompt_tokens: usize,
    output_tokens: usize,
    rtt_ms: f64,
    bandwidth_gbps: f64,
    dealer_rtt_ms: f64,
    dealer_ahead: bool,
    job_overhead_ms: f64,
    cores_per_worker: f64,
    dealer_cores: f64,
    target_utilization: f64,
}

fn plan(a: TargetArgs) -> Result<()> {
    let inputs = read_inputs(&a.inputs)?;
    let t = a.target(&inputs)?;
    let p = model::plan(&inputs, &t)?;
    print!("{}", render(&inputs, &a.inputs, &t, &p));
    if let Some(path) = &a.json {
        write_json_file(
            path,
            &PlanFile {
                inputs_file: a.inputs.display().to_string(),
                inputs_measured_at_unix_s: inputs.measured_at_unix_s,
                model: &inputs.model,
                config: &inputs.config,
                machine: &inputs.machine,
                target: TargetJson {
                    requests_per_s: p.requests_per_s,
                    prompt_tokens: t.prompt_tokens,
                    output_tokens: t.output_tokens,
                    rtt_ms: t.rtt_s * 1e3,
                    bandwidth_gbps: t.bandwidth_bps / 1e9,
                    dealer_rtt_ms: t.dealer_rtt_s * 1e3,
                    dealer_ahead: t.dealer_ahead,
                    job_overhead_ms: t.job_overhead_s * 1e3,
                    cores_per_worker: t.cores_per_worker,
                    dealer_cores: t.dealer_cores,
                    target_utilization: t.utilization,
                },
                plan: &p,
            },
        )?;
    }
    Ok(())
}

fn si_bytes(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn gbps(v: f64) -> String {
    if v >= 0.1 {
        format!("{v:.2} Gbit/s")
    } else {
        format!("{:.2} Mbit/s", v * 1e3)
    }
}

/// The plan as markdown: the inputs used, one request, the deployment.
pub fn render(i: &Inputs, file: &Path, t: &Target, p: &Plan) -> String {
    let mut s = String::new();
    let c = &p.request;
    let load = match t.load {
        Load::PerDay(d) => format!(
            "{:.2} requests/s ({d:.0} per day, spread evenly)",
            p.requests_per_s
        ),
        Load::PerSecond(r) => format!("{r} requests/s ({:.0} per day)", r * model::SECONDS_PER_DAY),
    };
    let _ = writeln!(s, "### Inputs\n");
    let _ = writeln!(s, "| input | value | from |");
    let _ = writeln!(s, "|---|---|---|");
    let measured = format!("`{}` (measured)", file.display());
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "model",
            format!(
                "{} — {} layers ({} public, {} private), width {}",
                i.model.path,
                i.model.n_layers,
                i.model.n_public,
                i.model.n_private,
                i.model.d_model
            ),
            &measured,
        ),
        (
            "configuration",
            format!(
                "LoRA {} on {}, head merging {}, {} fractional bits",
                i.config
                    .lora_rank
                    .map_or("none (full rank)".into(), |r| format!("r = {r}")),
                i.config.lora_targets.join(","),
                i.config.head_merge,
                i.config.frac_bits
            ),
            &measured,
        ),
        (
            "measured on",
            format!(
                "{}, {} cores; prompts {:?}, {} decode steps each",
                i.machine.cpu_model,
                i.machine.cores,
                i.runs.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>(),
                i.runs.first().map_or(0, |r| r.decode.len())
            ),
            &measured,
        ),
        ("load", load, "target"),
        (
            "prompt / output tokens",
            format!("{} / {}", t.prompt_tokens, t.output_tokens),
            "target",
        ),
        (
            "RTT provider ↔ helper",
            format!("{} ms", t.rtt_s * 1e3),
            "target",
        ),
        (
            "bandwidth between trust domains",
            format!("{} Gbit/s each way", t.bandwidth_bps / 1e9),
            "target",
        ),
        (
            "dealer",
            if t.dealer_ahead {
                "streams ahead of demand (no round trip on a step's path)".into()
            } else {
                format!("on demand, RTT {} ms per bundle", t.dealer_rtt_s * 1e3)
            },
            "target",
        ),
        (
            "Kafka job overhead",
            format!("{} ms per job", t.job_overhead_s * 1e3),
            "target",
        ),
        (
            "cores per worker / per dealer",
            format!("{} / {}", t.cores_per_worker, t.dealer_cores),
            "target",
        ),
        ("target utilization", format!("{}", t.utilization), "target"),
    ];
    for (k, v, from) in rows {
        let _ = writeln!(s, "| {k} | {v} | {from} |");
    }
    let _ = writeln!(s, "\n### One request\n");
    let _ = writeln!(s, "| quantity | value |");
    let _ = writeln!(s, "|---|---:|");
    for (k, v) in [
        (
            "2PC steps / Kafka jobs",
            format!("{} / {}", c.steps, c.jobs),
        ),
        ("online bytes per party", si_bytes(c.online_bytes_per_party)),
        ("rounds", format!("{:.0}", c.rounds)),
        (
            "dealer bytes (both parties) / bundles",
            format!("{} / {:.0}", si_bytes(c.dealer_bytes), c.dealer_bundles),
        ),
        (
            "compute (CPU path: busier party + on-demand dealer)",
            format!("{:.3} s", c.compute_s),
        ),
        (
            "(cross-check: the steps' measured in-process wall)",
            format!("({:.3} s)", c.measured_wall_s),
        ),
        ("rounds × RTT", format!("{:.3} s", c.rounds_s)),
        ("bytes / bandwidth", format!("{:.3} s", c.transfer_s)),
        (
            "dealer round trips and bytes",
            format!("{:.3} s", c.dealer_wait_s),
        ),
        ("Kafka jobs", format!("{:.3} s", c.jobs_s)),
        (
            "client (public prefix, head)",
            format!("{:.3} s", c.client_s),
        ),
        (
            "**latency = pair busy time**",
            format!("**{:.3} s**", c.latency_s),
        ),
        ("CPU per worker", format!("{:.3} s", c.cpu_s_per_worker)),
        ("dealer CPU", format!("{:.3} s", c.dealer_cpu_s)),
        (
            "KV cache per worker at the end",
            si_bytes(c.kv_bytes_per_worker),
        ),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\n### Deployment\n");
    let _ = writeln!(s, "| need | value |");
    let _ = writeln!(s, "|---|---:|");
    for (k, v) in [
        (
            "**provider/helper pairs**".to_string(),
            format!(
                "**{}** (R × busy = {:.1} pairs busy, / {}; the workers' CPU alone needs {})",
                p.pairs, p.busy_pairs, t.utilization, p.pairs_for_cpu
            ),
        ),
        (
            "provider workers + helper workers".into(),
            format!("{} + {}", p.pairs, p.pairs),
        ),
        (
            "worker CPU utilization".into(),
            format!(
                "{:.0} % of {} cores",
                100.0 * p.worker_cpu_utilization,
                t.cores_per_worker
            ),
        ),
        (
            "dealers".into(),
            format!(
                "{} by CPU ({:.2} cores busy, {} cores each); today one per pair: {}",
                p.dealers_for_cpu, p.dealer_cores_busy, t.dealer_cores, p.dealers_today
            ),
        ),
        (
            "**provider ↔ helper bandwidth**".into(),
            format!(
                "**{}** both ways ({} each way: {} link(s) of {} Gbit/s at {})",
                gbps(p.inter_domain_gbps),
                gbps(p.inter_domain_gbps_each_way),
                p.inter_domain_links,
                t.bandwidth_bps / 1e9,
                t.utilization
            ),
        ),
        (
            "dealer → workers".into(),
            format!(
                "{} ({} link(s) of {} Gbit/s)",
                gbps(p.dealer_gbps),
                p.dealer_links,
                t.bandwidth_bps / 1e9
            ),
        ),
        ("clients ↔ workers".into(), gbps(p.client_gbps)),
        (
            "memory per worker".into(),
            format!(
                "{} ({} weights + one session's KV cache)",
                si_bytes(p.memory_per_worker_bytes),
                si_bytes(i.memory.weights_loaded_bytes_per_worker as f64)
            ),
        ),
        ("memory, all workers".into(), si_bytes(p.memory_total_bytes)),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(
        s,
        "\nToday a pair serves one session at a time and holds it from its prefill to its end job, so a pair is busy for a request's whole latency (network waits included); the dealer serves each bundle on demand, one round trip per bundle per party{}. The bandwidth is each pair's path for the latency; the totals say how many such links the traffic between the trust domains fills.",
        if t.dealer_ahead {
            " (modelled here as streaming ahead instead: no round trip and no generation on a step's path)"
        } else {
            ""
        }
    );
    s
}

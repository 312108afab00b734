//! The capacity model of `marill plan`: pure functions (no I/O) from the measured cost of one
//! private request (`marill plan measure`, the [`Inputs`]) and a target load (a [`Target`]) to
//! what a deployment needs (a [`Plan`]): provider/helper pairs, dealer cores, bandwidth between
//! the trust domains and memory per worker.
//!
//! The method (docs/capacity.md has it with the measured figures):
//! - A request of `T` prompt tokens and `N` output tokens is one prefill step of `T` tokens
//!   (whose logits give the first token) and `N − 1` decode steps of one token; through the
//!   cluster each step is one Kafka job and one more job ends the session.
//! - Every per-step cost is a least-squares fit of the measured steps ([`Fit`]): a prefill cost
//!   in `T` (`a·T + b·T²`, or `a + b·T + c·T²` from three lengths or more: attention is
//!   quadratic), a decode cost in the keys attended `c` (`a + b·c`), and round and dealer
//!   bundle counts in `⌈log2 n⌉` (`a + b·⌈log2 n⌉`: the tournament max of the softmax).
//! - Latency of a request = compute (the steps' critical path in CPU seconds: the busier
//!   party's CPU plus the on-demand dealer's generation, which both parties wait for; the
//!   measured in-process wall time agrees on an unshared machine and is kept as a
//!   cross-check) + rounds × RTT + online bytes per party / bandwidth + dealer bundles ×
//!   dealer RTT + dealer bytes / bandwidth (the dealer serves bundles on demand today;
//!   `dealer_ahead` models a dealer that streams them ahead) + one job overhead per Kafka job
//!   + the client's own work per step.
//! - Today a worker pair serves one session at a time and is held from the session's prefill to
//!   its end job, so a pair is busy for the whole latency of a request: pairs =
//!   ⌈R × busy / utilization⌉, at least enough for the workers' CPU.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The version of the inputs file this code reads.
pub const INPUTS_VERSION: u32 = 1;

/// Seconds in a day (requests per day are spread evenly: plan for the peak rate).
pub const SECONDS_PER_DAY: f64 = 86_400.0;

/// What can be wrong with a planning question.
#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    /// The target load or the deployment parameters.
    #[error("invalid target: {0}")]
    Target(String),
    /// The measured inputs.
    #[error("invalid inputs: {0}")]
    Inputs(String),
    /// A cost cannot be fitted from the measured points.
    #[error("cannot fit {what}: {why}")]
    Fit {
        /// the quantity
        what: String,
        /// why
        why: String,
    },
}

/// The functions a fitted cost is a combination of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// `a + b·x`
    Linear,
    /// `a·x + b·x²` (no cost without tokens)
    Quadratic0,
    /// `a + b·x + c·x²`
    Quadratic,
    /// `a + b·⌈log2 x⌉`
    Log2,
}

impl Basis {
    fn terms(self, x: f64) -> Vec<f64> {
        match self {
            Basis::Linear => vec![1.0, x],
            Basis::Quadratic0 => vec![x, x * x],
            Basis::Quadratic => vec![1.0, x, x * x],
            Basis::Log2 => vec![1.0, ceil_log2(x)],
        }
    }

    /// The formula, for tables.
    pub fn formula(self) -> &'static str {
        match self {
            Basis::Linear => "a + b·x",
            Basis::Quadratic0 => "a·x + b·x²",
            Basis::Quadratic => "a + b·x + c·x²",
            Basis::Log2 => "a + b·⌈log2 x⌉",
        }
    }
}

/// `⌈log2 x⌉` for x ≥ 1 (0 below).
pub fn ceil_log2(x: f64) -> f64 {
    if x <= 1.0 {
        0.0
    } else {
        x.log2().ceil()
    }
}

/// A cost fitted by least squares over a [`Basis`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// the functions
    pub basis: Basis,
    /// their coefficients, in the basis's order
    pub coef: Vec<f64>,
}

impl Fit {
    /// Least squares of `points` `(x, y)` over `basis`; `what` names the quantity in errors.
    /// Needs as many distinct `x` as the basis has terms; for [`Basis::Log2`] points that all
    /// share one `⌈log2 x⌉` give a constant (their mean).
    pub fn least_squares(
        what: &str,
        basis: Basis,
        points: &[(f64, f64)],
    ) -> Result<Fit, PlanError> {
        let err = |why: String| PlanError::Fit {
            what: what.to_string(),
            why,
        };
        let k = basis.terms(1.0).len();
        if let Some((x, y)) = points
            .iter()
            .find(|(x, y)| !x.is_finite() || !y.is_finite())
        {
            return Err(err(format!("non-finite point ({x}, {y})")));
        }
        if basis == Basis::Log2 && !points.is_empty() {
            let first = ceil_log2(points[0].0);
            if points.iter().all(|(x, _)| ceil_log2(*x) == first) {
                // one ⌈log2⌉ measured: the count is taken as constant
                let mean = points.iter().map(|(_, y)| y).sum::<f64>() / points.len() as f64;
                return Ok(Fit {
                    basis,
                    coef: vec![mean, 0.0],
                });
            }
        }
        // normal equations, scaled so that the columns are of comparable size
        let rows: Vec<Vec<f64>> = points.iter().map(|(x, _)| basis.terms(*x)).collect();
        let scale: Vec<f64> = (0..k)
            .map(|j| {
                rows.iter()
                    .map(|r| r[j].abs())
                    .fold(0.0, f64::max)
                    .max(f64::MIN_POSITIVE)
            })
            .collect();
        let mut a = vec![vec![0.0; k + 1]; k];
        for (r, (_, y)) in rows.iter().zip(points) {
            for i in 0..k {
                for j in 0..k {
                    a[i][j] += r[i] / scale[i] * r[j] / scale[j];
                }
                a[i][k] += r[i] / scale[i] * y;
            }
        }
        // Gaussian elimination with partial pivoting
        for col in 0..k {
            let piv = (col..k)
                .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
                .expect("k > 0");
            if a[piv][col].abs() < 1e-9 {
                return Err(err(format!(
                    "{} points do not determine {} ({} terms): measure more distinct lengths",
                    points.len(),
                    basis.formula(),
                    k
                )));
            }
            a.swap(col, piv);
            let pivot = a[col].clone();
            for (r, row) in a.iter_mut().enumerate() {
                if r != col {
                    let f = row[col] / pivot[col];
                    for (x, p) in row.iter_mut().zip(&pivot).skip(col) {
                        *x -= f * p;
                    }
                }
            }
        }
        let coef = (0..k).map(|i| a[i][k] / a[i][i] / scale[i]).collect();
        Ok(Fit { basis, coef })
    }

    /// The fitted value at `x`, never negative (a fit may cross zero outside the measured
    /// range).
    pub fn at(&self, x: f64) -> f64 {
        let v: f64 = self
            .basis
            .terms(x)
            .iter()
            .zip(&self.coef)
            .map(|(t, c)| t * c)
            .sum();
        v.max(0.0)
    }

    fn check(&self, what: &str) -> Result<(), PlanError> {
        if self.coef.len() != self.basis.terms(1.0).len() {
            return Err(PlanError::Inputs(format!(
                "fit of {what}: {} coefficients for {}",
                self.coef.len(),
                self.basis.formula()
            )));
        }
        if self.coef.iter().any(|c| !c.is_finite()) {
            return Err(PlanError::Inputs(format!(
                "fit of {what}: non-finite coefficient"
            )));
        }
        Ok(())
    }
}

/// The measured cost of one step (a prefill of several tokens or one decoded token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    /// tokens this step brought (prompt length for a prefill, 1 for a decode step)
    pub new_tokens: usize,
    /// keys the step's last row attends to (position + 1 of the last token)
    pub context: usize,
    /// bytes each party sent to the other (provider, helper)
    pub online_bytes: [u64; 2],
    /// sequential exchanges between the parties
    pub rounds: u64,
    /// wall seconds of the step at the parties (both in one process, in-memory channel,
    /// correlations generated on demand on the requesting party's thread)
    pub wall_s: f64,
    /// CPU seconds of each party (its threads, its own rayon pool), the dealer's generation
    /// excluded
    pub cpu_s: [f64; 2],
    /// explicit correlation bytes the dealer sent to each party
    pub dealer_bytes: [u64; 2],
    /// bundles the dealer generated (each one request per party to an on-demand dealer)
    pub dealer_bundles: u64,
    /// CPU seconds the dealer spent generating this step's bundles
    pub dealer_cpu_s: f64,
    /// wall seconds of the client's own work (public prefix, head, sharing, reconstruction)
    pub client_s: f64,
}

/// One measured request: a prefill and the decode steps after it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// prompt tokens
    pub prompt_tokens: usize,
    /// the prefill step
    pub prefill: StepCost,
    /// the decode steps, in order
    pub decode: Vec<StepCost>,
    /// KV-cache bytes of the busier party at the end of the run
    pub kv_bytes_per_party: u64,
}

/// Per-step costs fitted over one phase's steps (x: prompt tokens for the prefill, keys
/// attended for a decode step).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseFit {
    /// bytes sent by the busier party
    pub online_bytes_per_party: Fit,
    /// rounds
    pub rounds: Fit,
    /// wall seconds at the parties
    pub wall_s: Fit,
    /// CPU seconds of the busier party
    pub cpu_s_per_party: Fit,
    /// dealer bytes to both parties
    pub dealer_bytes: Fit,
    /// bundles generated
    pub dealer_bundles: Fit,
    /// dealer CPU seconds
    pub dealer_cpu_s: Fit,
    /// the client's wall seconds
    pub client_s: Fit,
}

impl PhaseFit {
    /// Fits every cost over `steps` with `x` of each; `prefill` picks the bases of a prefill
    /// (quadratic in T) or of a decode step (linear in the context).
    pub fn fit(steps: &[(f64, &StepCost)], prefill: bool) -> Result<PhaseFit, PlanError> {
        let phase = if prefill { "prefill" } else { "decode" };
        let distinct = {
            let mut xs: Vec<f64> = steps.iter().map(|(x, _)| *x).collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            xs.len()
        };
        let grow = if !prefill {
            Basis::Linear
        } else if distinct >= 3 {
            Basis::Quadratic
        } else {
            Basis::Quadratic0
        };
        let f = |name: &str, basis: Basis, y: &dyn Fn(&StepCost) -> f64| {
            let pts: Vec<(f64, f64)> = steps.iter().map(|(x, s)| (*x, y(s))).collect();
            Fit::least_squares(&format!("{phase} {name}"), basis, &pts)
        };
        let max2 = |v: [u64; 2]| v[0].max(v[1]) as f64;
        Ok(PhaseFit {
            online_bytes_per_party: f("online bytes", grow, &|s| max2(s.online_bytes))?,
            rounds: f("rounds", Basis::Log2, &|s| s.rounds as f64)?,
            wall_s: f("wall time", grow, &|s| s.wall_s)?,
            cpu_s_per_party: f("CPU time", grow, &|s| s.cpu_s[0].max(s.cpu_s[1]))?,
            dealer_bytes: f("dealer bytes", grow, &|s| {
                (s.dealer_bytes[0] + s.dealer_bytes[1]) as f64
            })?,
            dealer_bundles: f("dealer bundles", Basis::Log2, &|s| s.dealer_bundles as f64)?,
            dealer_cpu_s: f("dealer CPU time", grow, &|s| s.dealer_cpu_s)?,
            client_s: f("client time", grow, &|s| s.client_s)?,
        })
    }

    fn check(&self, phase: &str) -> Result<(), PlanError> {
        for (name, f) in [
            ("online_bytes_per_party", &self.online_bytes_per_party),
            ("rounds", &self.rounds),
            ("wall_s", &self.wall_s),
            ("cpu_s_per_party", &self.cpu_s_per_party),
            ("dealer_bytes", &self.dealer_bytes),
            ("dealer_bundles", &self.dealer_bundles),
            ("dealer_cpu_s", &self.dealer_cpu_s),
            ("client_s", &self.client_s),
        ] {
            f.check(&format!("{phase}.{name}"))?;
        }
        Ok(())
    }
}

/// The fitted costs of both phases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fits {
    /// prefill step, x = prompt tokens
    pub prefill: PhaseFit,
    /// one decode step, x = keys attended (position + 1)
    pub decode: PhaseFit,
}

impl Fits {
    /// Fits both phases over the runs' steps.
    pub fn from_runs(runs: &[Run]) -> Result<Fits, PlanError> {
        let pre: Vec<(f64, &StepCost)> = runs
            .iter()
            .map(|r| (r.prompt_tokens as f64, &r.prefill))
            .collect();
        let dec: Vec<(f64, &StepCost)> = runs
            .iter()
            .flat_map(|r| r.decode.iter().map(|s| (s.context as f64, s)))
            .collect();
        Ok(Fits {
            prefill: PhaseFit::fit(&pre, true)?,
            decode: PhaseFit::fit(&dec, false)?,
        })
    }
}

/// The model that was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// where it was loaded from
    pub path: String,
    /// decoder layers
    pub n_layers: usize,
    /// public layers (run by the client)
    pub n_public: usize,
    /// private layers (run under 2PC)
    pub n_private: usize,
    /// model width
    pub d_model: usize,
    /// query heads
    pub n_heads: usize,
    /// key/value heads
    pub n_kv_heads: usize,
    /// head width
    pub head_dim: usize,
    /// MLP width
    pub d_ff: usize,
    /// vocabulary
    pub vocab_size: usize,
}

/// The Marill configuration that was measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigInfo {
    /// the model options as given (`--model ... --lf ...`)
    pub options: Vec<String>,
    /// LoRA rank (None: private layers fully private)
    pub lora_rank: Option<usize>,
    /// LoRA targets
    pub lora_targets: Vec<String>,
    /// head-merging factor
    pub head_merge: usize,
    /// fixed-point fractional bits
    pub frac_bits: u32,
}

/// The machine the measurement ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// logical cores available to the process
    pub cores: usize,
    /// `model name` of /proc/cpuinfo
    pub cpu_model: String,
    /// rayon threads of each party's pool
    pub party_threads: usize,
}

/// The one-time cost of loading the suffix on a pair (per model load, not per request).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadCost {
    /// bytes each party sent (the masked private weights)
    pub online_bytes_per_party: u64,
    /// rounds
    pub rounds: u64,
    /// wall seconds
    pub wall_s: f64,
    /// dealer bytes to both parties
    pub dealer_bytes: u64,
    /// dealer CPU seconds
    pub dealer_cpu_s: f64,
}

/// Memory of a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// KV-cache bytes per token processed by the suffix, per party (one session)
    pub kv_bytes_per_token_per_party: f64,
    /// bytes of the prepared weight shares a worker receives (per model load)
    pub weights_prepared_bytes_per_worker: u64,
    /// bytes of the loaded weights a worker holds (public bases, and for each private matrix
    /// the opened `W − B` and its share of `B`), per worker, shared by its sessions
    pub weights_loaded_bytes_per_worker: u64,
}

/// How the figures were taken (stated in the file so a reader knows what they mean).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Method {
    /// how CPU seconds were measured
    pub cpu_time: String,
    /// how dealer CPU seconds were measured
    pub dealer_cpu_time: String,
    /// how wall seconds were measured
    pub wall_time: String,
}

/// Everything `marill plan measure` writes and `marill plan` reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    /// [`INPUTS_VERSION`]
    pub version: u32,
    /// seconds since the Unix epoch when measured
    pub measured_at_unix_s: u64,
    /// the model
    pub model: ModelInfo,
    /// the Marill configuration
    pub config: ConfigInfo,
    /// the machine
    pub machine: Machine,
    /// how the figures were taken
    pub method: Method,
    /// the one-time load of the suffix on a pair
    pub load: LoadCost,
    /// the measured requests
    pub runs: Vec<Run>,
    /// the per-step costs fitted over the runs
    pub fits: Fits,
    /// memory
    pub memory: Memory,
}

impl Inputs {
    /// Checks what a file could get wrong (version, shapes of the fits, signs).
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.version != INPUTS_VERSION {
            return Err(PlanError::Inputs(format!(
                "version {} (this marill reads version {INPUTS_VERSION}: measure again)",
                self.version
            )));
        }
        if self.runs.is_empty() {
            return Err(PlanError::Inputs("no measured run".into()));
        }
        self.fits.prefill.check("fits.prefill")?;
        self.fits.decode.check("fits.decode")?;
        let m = &self.memory;
        if !(m.kv_bytes_per_token_per_party.is_finite() && m.kv_bytes_per_token_per_party >= 0.0) {
            return Err(PlanError::Inputs(
                "memory.kv_bytes_per_token_per_party must be ≥ 0".into(),
            ));
        }
        if self.model.d_model == 0 {
            return Err(PlanError::Inputs("model.d_model is 0".into()));
        }
        Ok(())
    }
}

/// The load to plan for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// requests per second
    PerSecond(f64),
    /// requests per day (spread evenly)
    PerDay(f64),
}

impl Load {
    /// Requests per second; errors unless positive and finite.
    pub fn per_second(self) -> Result<f64, PlanError> {
        let (v, unit) = match self {
            Load::PerSecond(v) => (v, "requests per second"),
            Load::PerDay(v) => (v, "requests per day"),
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(PlanError::Target(format!("{unit} must be > 0 (got {v})")));
        }
        Ok(match self {
            Load::PerSecond(v) => v,
            Load::PerDay(v) => v / SECONDS_PER_DAY,
        })
    }
}

/// A request's shape and the deployment it runs on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// the load
    pub load: Load,
    /// prompt tokens per request
    pub prompt_tokens: usize,
    /// output tokens per request (≥ 1; the first comes from the prefill)
    pub output_tokens: usize,
    /// round-trip time between the provider and the helper (seconds)
    pub rtt_s: f64,
    /// bandwidth between the trust domains, each direction (bits per second)
    pub bandwidth_bps: f64,
    /// round-trip time between a worker and its dealer (seconds)
    pub dealer_rtt_s: f64,
    /// the dealer streams bundles ahead of demand (no dealer round trip on a step's path);
    /// today's dealer serves them on demand
    pub dealer_ahead: bool,
    /// per Kafka job: client → broker → coordinator → pair and the result back (seconds)
    pub job_overhead_s: f64,
    /// CPU cores of each worker
    pub cores_per_worker: f64,
    /// CPU cores of each dealer
    pub dealer_cores: f64,
    /// fraction of capacity planned busy (0 < u ≤ 1)
    pub utilization: f64,
}

impl Target {
    fn validate(&self) -> Result<f64, PlanError> {
        let r = self.load.per_second()?;
        let bad = |what: &str, v: f64, want: &str| {
            PlanError::Target(format!("{what} must be {want} (got {v})"))
        };
        if self.prompt_tokens == 0 {
            return Err(PlanError::Target("prompt tokens must be ≥ 1".into()));
        }
        if self.output_tokens == 0 {
            return Err(PlanError::Target(
                "output tokens must be ≥ 1 (the first comes from the prefill)".into(),
            ));
        }
        for (what, v) in [
            ("rtt", self.rtt_s),
            ("dealer rtt", self.dealer_rtt_s),
            ("job overhead", self.job_overhead_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(what, v, "≥ 0"));
            }
        }
        for (what, v) in [
            ("bandwidth", self.bandwidth_bps),
            ("cores per worker", self.cores_per_worker),
            ("dealer cores", self.dealer_cores),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(what, v, "> 0"));
            }
        }
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return Err(bad("target utilization", self.utilization, "in (0, 1]"));
        }
        Ok(r)
    }
}

/// The cost of one request of the target's shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestCost {
    /// 2PC steps (prefill + decode steps)
    pub steps: usize,
    /// Kafka jobs (steps + the end job)
    pub jobs: usize,
    /// bytes each party sends to the other (the busier one)
    pub online_bytes_per_party: f64,
    /// rounds between the parties
    pub rounds: f64,
    /// dealer bytes to both parties
    pub dealer_bytes: f64,
    /// dealer bundles (each a request per party to an on-demand dealer)
    pub dealer_bundles: f64,
    /// the steps' critical path: the busier party's CPU seconds plus the on-demand dealer's
    /// (none when it runs ahead), stretched on workers of less than one core
    pub compute_s: f64,
    /// the in-process wall seconds of the steps as measured (a cross-check of `compute_s` with
    /// an on-demand dealer: equal on a machine not shared with other work)
    pub measured_wall_s: f64,
    /// rounds × RTT
    pub rounds_s: f64,
    /// online bytes per party / bandwidth
    pub transfer_s: f64,
    /// dealer bundles × dealer RTT + dealer bytes / bandwidth (0 when the dealer runs ahead)
    pub dealer_wait_s: f64,
    /// jobs × job overhead
    pub jobs_s: f64,
    /// the client's work (public prefix, head)
    pub client_s: f64,
    /// end to end
    pub latency_s: f64,
    /// how long the request holds a pair (one session per pair at a time: the whole latency)
    pub pair_busy_s: f64,
    /// CPU seconds of each worker (the busier party)
    pub cpu_s_per_worker: f64,
    /// dealer CPU seconds
    pub dealer_cpu_s: f64,
    /// KV-cache bytes of the session at each worker at its end
    pub kv_bytes_per_worker: f64,
    /// bytes between the client and the workers (input shares in, output shares out, both
    /// workers; sealing overhead left out)
    pub client_bytes: f64,
}

/// The cost of one request of `prompt_tokens` and `output_tokens` on the target's network and
/// workers (the load is not used).
pub fn request_cost(inputs: &Inputs, t: &Target) -> Result<RequestCost, PlanError> {
    t.validate()?;
    inputs.validate()?;
    let f = &inputs.fits;
    let tt = t.prompt_tokens as f64;
    // decode steps: positions T .. T+N−2, attending T+1 .. T+N−1 keys
    let decode_ctx: Vec<f64> = (1..t.output_tokens).map(|k| tt + k as f64).collect();
    let sum =
        |pre: &Fit, dec: &Fit| pre.at(tt) + decode_ctx.iter().map(|c| dec.at(*c)).sum::<f64>();
    let steps = t.output_tokens;
    let jobs = steps + 1;
    let bytes = sum(
        &f.prefill.online_bytes_per_party,
        &f.decode.online_bytes_per_party,
    );
    let rounds = sum(&f.prefill.rounds, &f.decode.rounds);
    let dealer_bytes = sum(&f.prefill.dealer_bytes, &f.decode.dealer_bytes);
    let bundles = sum(&f.prefill.dealer_bundles, &f.decode.dealer_bundles);
    let wall = sum(&f.prefill.wall_s, &f.decode.wall_s);
    let cpu = sum(&f.prefill.cpu_s_per_party, &f.decode.cpu_s_per_party);
    let dealer_cpu_s = sum(&f.prefill.dealer_cpu_s, &f.decode.dealer_cpu_s);
    // the critical path of the steps in CPU seconds: the parties work in lockstep and an
    // on-demand dealer generates each bundle while both wait (a dealer ahead of demand takes
    // it off the path); no parallel speed-up is assumed, and fewer than one core stretches it
    let path = cpu + if t.dealer_ahead { 0.0 } else { dealer_cpu_s };
    let compute_s = path / t.cores_per_worker.min(1.0);
    let rounds_s = rounds * t.rtt_s;
    let transfer_s = bytes * 8.0 / t.bandwidth_bps;
    let dealer_wait_s = if t.dealer_ahead {
        0.0
    } else {
        bundles * t.dealer_rtt_s + dealer_bytes * 8.0 / t.bandwidth_bps
    };
    let jobs_s = jobs as f64 * t.job_overhead_s;
    let client_s = sum(&f.prefill.client_s, &f.decode.client_s);
    let latency_s = compute_s + rounds_s + transfer_s + dealer_wait_s + jobs_s + client_s;
    let suffix_tokens = tt + (t.output_tokens - 1) as f64;
    Ok(RequestCost {
        steps,
        jobs,
        online_bytes_per_party: bytes,
        rounds,
        dealer_bytes,
        dealer_bundles: bundles,
        compute_s,
        measured_wall_s: wall,
        rounds_s,
        transfer_s,
        dealer_wait_s,
        jobs_s,
        client_s,
        latency_s,
        pair_busy_s: latency_s,
        cpu_s_per_worker: cpu,
        dealer_cpu_s,
        kv_bytes_per_worker: inputs.memory.kv_bytes_per_token_per_party * suffix_tokens,
        client_bytes: 2.0 * 2.0 * 8.0 * inputs.model.d_model as f64 * suffix_tokens,
    })
}

/// What the target load needs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// requests per second planned for
    pub requests_per_s: f64,
    /// one request
    pub request: RequestCost,
    /// pairs held by sessions on average (Little's law: R × busy)
    pub busy_pairs: f64,
    /// provider/helper pairs: ⌈R × busy / utilization⌉, at least the CPU's need
    pub pairs: u64,
    /// pairs the workers' CPU alone needs: ⌈R × CPU / (cores × utilization)⌉
    pub pairs_for_cpu: u64,
    /// average CPU utilization of a worker at that many pairs
    pub worker_cpu_utilization: f64,
    /// dealer cores busy on average: R × dealer CPU
    pub dealer_cores_busy: f64,
    /// dealers (of `dealer_cores` each) by CPU: ⌈R × dealer CPU / (cores × utilization)⌉
    pub dealers_for_cpu: u64,
    /// dealer processes as deployed today (one per pair, on demand)
    pub dealers_today: u64,
    /// provider ↔ helper traffic, both directions together (Gbit/s)
    pub inter_domain_gbps: f64,
    /// provider → helper traffic, one direction (Gbit/s)
    pub inter_domain_gbps_each_way: f64,
    /// links of the target's bandwidth the provider ↔ helper traffic needs at the target
    /// utilization (each way)
    pub inter_domain_links: u64,
    /// dealer → workers (Gbit/s)
    pub dealer_gbps: f64,
    /// links of the target's bandwidth the dealer traffic needs at the target utilization
    pub dealer_links: u64,
    /// clients ↔ workers (Gbit/s)
    pub client_gbps: f64,
    /// memory of a worker: loaded weights + one session's KV cache (bytes)
    pub memory_per_worker_bytes: f64,
    /// every worker together (bytes)
    pub memory_total_bytes: f64,
}

/// `⌈x⌉` that does not round a float's last-bit excess up to the next count (x ≥ 0).
fn count(x: f64) -> u64 {
    (x * (1.0 - 1e-12)).ceil().max(0.0) as u64
}

/// Plans the target load on the measured costs.
pub fn plan(inputs: &Inputs, t: &Target) -> Result<Plan, PlanError> {
    let r = t.validate()?;
    let c = request_cost(inputs, t)?;
    let u = t.utilization;
    let busy_pairs = r * c.pair_busy_s;
    let pairs_for_cpu = count(r * c.cpu_s_per_worker / (t.cores_per_worker * u));
    let pairs = count(busy_pairs / u).max(pairs_for_cpu).max(1);
    let gbit = |bytes: f64| bytes * 8.0 * r / 1e9;
    let mem = inputs.memory.weights_loaded_bytes_per_worker as f64 + c.kv_bytes_per_worker;
    let links = |gbps: f64| count(gbps * 1e9 / (t.bandwidth_bps * u)).max(1);
    Ok(Plan {
        requests_per_s: r,
        busy_pairs,
        pairs,
        pairs_for_cpu,
        worker_cpu_utilization: r * c.cpu_s_per_worker / (pairs as f64 * t.cores_per_worker),
        dealer_cores_busy: r * c.dealer_cpu_s,
        dealers_for_cpu: count(r * c.dealer_cpu_s / (t.dealer_cores * u)).max(1),
        dealers_today: pairs,
        inter_domain_gbps: gbit(2.0 * c.online_bytes_per_party),
        inter_domain_gbps_each_way: gbit(c.online_bytes_per_party),
        inter_domain_links: links(gbit(c.online_bytes_per_party)),
        dealer_gbps: gbit(c.dealer_bytes),
        dealer_links: links(gbit(c.dealer_bytes)),
        client_gbps: gbit(c.client_bytes),
        memory_per_worker_bytes: mem,
        memory_total_bytes: mem * 2.0 * pairs as f64,
        request: c,
    })
}

/// The cluster benchmark (`marill bench cluster`) as the model sees it: `sessions` sessions
/// (their prompt lengths), `tokens` greedy tokens each, on `pairs` pairs, with every process
/// on one machine of `machine_cores` cores.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchShape {
    /// prompt tokens of each session
    pub prompts: Vec<usize>,
    /// tokens per session (jobs per session = tokens + 1)
    pub tokens: usize,
    /// worker pairs
    pub pairs: usize,
    /// cores of the machine all processes share
    pub machine_cores: f64,
    /// CPU seconds per exchange between the parties (both ends, transport and encryption)
    pub cpu_per_round_s: f64,
    /// CPU seconds per bundle request to the dealer (both ends)
    pub cpu_per_bundle_s: f64,
    /// cores the Kafka path (broker, coordinator, the clients' polling) keeps busy while the
    /// run lasts, taken from the machine's
    pub kafka_cores: f64,
}

/// The model's figures for a cluster benchmark run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchPrediction {
    /// worker pairs
    pub pairs: usize,
    /// jobs the run completes
    pub jobs: usize,
    /// Σ pair-busy seconds of the sessions
    pub busy_s: f64,
    /// Σ CPU seconds of every process for the sessions
    pub cpu_s: f64,
    /// wall seconds if the pairs were the bottleneck: max(Σ busy / pairs, longest session)
    pub wall_pairs_s: f64,
    /// wall seconds if the cores were: Σ CPU / (cores − Kafka cores)
    pub wall_cores_s: f64,
    /// the larger of the two
    pub wall_s: f64,
    /// jobs / wall
    pub jobs_per_s: f64,
}

/// Predicts the cluster benchmark's jobs/s: each session holds a pair for its latency (on
/// `network`, with `network.cores_per_worker` the cores a worker gets), and the parties',
/// dealers', client's and messaging CPU shares the machine's cores less those the Kafka path
/// keeps busy; the run takes the longer of the two bounds.
pub fn predict_bench(
    inputs: &Inputs,
    network: &Target,
    shape: &BenchShape,
) -> Result<BenchPrediction, PlanError> {
    if shape.pairs == 0 {
        return Err(PlanError::Target("pairs must be ≥ 1".into()));
    }
    if shape.prompts.is_empty() {
        return Err(PlanError::Target("no session".into()));
    }
    if !(shape.machine_cores.is_finite() && shape.machine_cores > 0.0) {
        return Err(PlanError::Target(format!(
            "machine cores must be > 0 (got {})",
            shape.machine_cores
        )));
    }
    let free_cores = shape.machine_cores - shape.kafka_cores;
    if !(shape.kafka_cores >= 0.0 && free_cores > 0.0) {
        return Err(PlanError::Target(format!(
            "Kafka cores must be ≥ 0 and below the machine's {} (got {})",
            shape.machine_cores, shape.kafka_cores
        )));
    }
    let (mut busy, mut cpu, mut longest, mut jobs) = (0.0, 0.0, 0.0f64, 0usize);
    for &t in &shape.prompts {
        let c = request_cost(
            inputs,
            &Target {
                prompt_tokens: t,
                output_tokens: shape.tokens,
                ..*network
            },
        )?;
        busy += c.pair_busy_s;
        longest = longest.max(c.pair_busy_s);
        jobs += c.jobs;
        // both parties, the dealer, the client's compute and the messaging
        cpu += 2.0 * c.cpu_s_per_worker
            + c.dealer_cpu_s
            + c.client_s
            + c.rounds * shape.cpu_per_round_s
            + c.dealer_bundles * shape.cpu_per_bundle_s;
    }
    let wall_pairs_s = (busy / shape.pairs as f64).max(longest);
    let wall_cores_s = cpu / free_cores;
    let wall_s = wall_pairs_s.max(wall_cores_s);
    Ok(BenchPrediction {
        pairs: shape.pairs,
        jobs,
        busy_s: busy,
        cpu_s: cpu,
        wall_pairs_s,
        wall_cores_s,
        wall_s,
        jobs_per_s: jobs as f64 / wall_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(basis: Basis, coef: &[f64]) -> Fit {
        Fit {
            basis,
            coef: coef.to_vec(),
        }
    }

    /// A phase whose every cost is `a + b·x` (rounds and bundles constant).
    fn phase(bytes: f64, wall: f64, cpu: f64, rounds: f64) -> PhaseFit {
        PhaseFit {
            online_bytes_per_party: fit(Basis::Linear, &[0.0, bytes]),
            rounds: fit(Basis::Log2, &[rounds, 0.0]),
            wall_s: fit(Basis::Linear, &[0.0, wall]),
            cpu_s_per_party: fit(Basis::Linear, &[0.0, cpu]),
            dealer_bytes: fit(Basis::Linear, &[0.0, 2.0 * bytes]),
            dealer_bundles: fit(Basis::Log2, &[10.0, 0.0]),
            dealer_cpu_s: fit(Basis::Linear, &[0.0, cpu / 10.0]),
            client_s: fit(Basis::Linear, &[0.0, 0.0]),
        }
    }

    fn inputs() -> Inputs {
        let step = StepCost {
            new_tokens: 1,
            context: 1,
            online_bytes: [1, 1],
            rounds: 1,
            wall_s: 1.0,
            cpu_s: [1.0, 1.0],
            dealer_bytes: [1, 1],
            dealer_bundles: 1,
            dealer_cpu_s: 0.1,
            client_s: 0.0,
        };
        Inputs {
            version: INPUTS_VERSION,
            measured_at_unix_s: 0,
            model: ModelInfo {
                path: "m".into(),
                n_layers: 2,
                n_public: 1,
                n_private: 1,
                d_model: 4,
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: 4,
                d_ff: 8,
                vocab_size: 10,
            },
            config: ConfigInfo {
                options: vec![],
                lora_rank: Some(8),
                lora_targets: vec!["q".into()],
                head_merge: 1,
                frac_bits: 16,
            },
            machine: Machine {
                cores: 2,
                cpu_model: "test".into(),
                party_threads: 1,
            },
            method: Method {
                cpu_time: "t".into(),
                dealer_cpu_time: "t".into(),
                wall_time: "t".into(),
            },
            load: LoadCost {
                online_bytes_per_party: 0,
                rounds: 0,
                wall_s: 0.0,
                dealer_bytes: 0,
                dealer_cpu_s: 0.0,
            },
            runs: vec![Run {
                prompt_tokens: 1,
                prefill: step.clone(),
                decode: vec![step],
                kv_bytes_per_party: 16,
            }],
            // prefill: 1000 B, 1 ms wall, 1 ms CPU per prompt token, 20 rounds;
            // decode: 100 B, 0.1 ms, 0.1 ms per key attended, 10 rounds
            fits: Fits {
                prefill: phase(1000.0, 1e-3, 1e-3, 20.0),
                decode: phase(100.0, 1e-4, 1e-4, 10.0),
            },
            memory: Memory {
                kv_bytes_per_token_per_party: 64.0,
                weights_prepared_bytes_per_worker: 1000,
                weights_loaded_bytes_per_worker: 2000,
            },
        }
    }

    fn target() -> Target {
        Target {
            load: Load::PerSecond(10.0),
            prompt_tokens: 10,
            output_tokens: 3,
            rtt_s: 1e-3,
            bandwidth_bps: 8e6,
            dealer_rtt_s: 0.0,
            dealer_ahead: false,
            job_overhead_s: 0.0,
            cores_per_worker: 1.0,
            dealer_cores: 1.0,
            utilization: 1.0,
        }
    }

    #[test]
    fn least_squares_recovers_exact_costs() {
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 5.0]
            .iter()
            .map(|x| (*x, 3.0 + 2.0 * x))
            .collect();
        let f = Fit::least_squares("y", Basis::Linear, &pts).unwrap();
        assert!((f.coef[0] - 3.0).abs() < 1e-9 && (f.coef[1] - 2.0).abs() < 1e-9);
        let pts: Vec<(f64, f64)> = [32.0, 64.0]
            .iter()
            .map(|x| (*x, 5.0 * x + 0.25 * x * x))
            .collect();
        let f = Fit::least_squares("y", Basis::Quadratic0, &pts).unwrap();
        assert!((f.at(128.0) - (5.0 * 128.0 + 0.25 * 128.0 * 128.0)).abs() < 1e-6);
        let pts: Vec<(f64, f64)> = [3.0, 9.0, 20.0, 33.0]
            .iter()
            .map(|x| (*x, 1.0 - 0.5 * x + 0.01 * x * x))
            .collect();
        let f = Fit::least_squares("y", Basis::Quadratic, &pts).unwrap();
        assert!((f.coef[2] - 0.01).abs() < 1e-9, "{f:?}");
        let pts: Vec<(f64, f64)> = [16.0, 32.0, 33.0]
            .iter()
            .map(|x| (*x, 100.0 + 4.0 * ceil_log2(*x)))
            .collect();
        let f = Fit::least_squares("rounds", Basis::Log2, &pts).unwrap();
        assert!((f.at(64.0) - 124.0).abs() < 1e-9);
    }

    #[test]
    fn a_fit_needs_enough_distinct_points_and_never_goes_negative() {
        let e = Fit::least_squares("rounds", Basis::Linear, &[(4.0, 1.0), (4.0, 2.0)]);
        assert!(matches!(e, Err(PlanError::Fit { .. })), "{e:?}");
        // 17 and 30 share ⌈log2⌉ = 5: the count is taken as constant
        let f = Fit::least_squares("rounds", Basis::Log2, &[(17.0, 1.0), (30.0, 2.0)]).unwrap();
        assert_eq!((f.at(17.0), f.at(1000.0)), (1.5, 1.5));
        assert!(Fit::least_squares("y", Basis::Linear, &[]).is_err());
        assert!(Fit::least_squares("y", Basis::Linear, &[(1.0, f64::NAN), (2.0, 1.0)]).is_err());
        assert_eq!(fit(Basis::Linear, &[1.0, -1.0]).at(5.0), 0.0);
        assert_eq!(ceil_log2(1.0), 0.0);
        assert_eq!(ceil_log2(33.0), 6.0);
    }

    #[test]
    fn an_exact_small_case() {
        let i = inputs();
        let c = request_cost(&i, &target()).unwrap();
        // prefill at T = 10, decode steps attending 11 and 12 keys
        assert_eq!((c.steps, c.jobs), (3, 4));
        assert!((c.online_bytes_per_party - (10_000.0 + 1_100.0 + 1_200.0)).abs() < 1e-6);
        assert!((c.rounds - 40.0).abs() < 1e-9);
        // CPU path: the party's 12.3 ms and the dealer's 1.23 ms
        assert!((c.compute_s - 0.01353).abs() < 1e-12);
        assert!((c.measured_wall_s - 0.0123).abs() < 1e-12);
        assert!((c.rounds_s - 0.040).abs() < 1e-12);
        // 12 300 B at 8 Mbit/s = 1 MB/s
        assert!((c.transfer_s - 0.0123).abs() < 1e-12);
        // dealer: 30 bundles at RTT 0, 24 600 B at 1 MB/s
        assert!((c.dealer_wait_s - 0.0246).abs() < 1e-12);
        let latency = 0.01353 + 0.040 + 0.0123 + 0.0246;
        assert!((c.latency_s - latency).abs() < 1e-12);
        assert_eq!(c.pair_busy_s, c.latency_s);
        // KV: T + N − 1 = 12 tokens × 64 B
        assert_eq!(c.kv_bytes_per_worker, 768.0);
        let p = plan(&i, &target()).unwrap();
        // 10 requests/s × 0.09043 s = 0.904 busy pairs → 1 pair
        assert_eq!(p.pairs, 1);
        assert!((p.busy_pairs - 10.0 * latency).abs() < 1e-9);
        // 2 × 12 300 B × 10/s × 8 bit = 1.968 Mbit/s
        assert!((p.inter_domain_gbps - 1.968e-3).abs() < 1e-12);
        assert!((p.dealer_gbps - 1.968e-3).abs() < 1e-12);
        // 0.984 Mbit/s each way on 8 Mbit/s links: one link
        assert_eq!((p.inter_domain_links, p.dealer_links), (1, 1));
        assert_eq!(p.memory_per_worker_bytes, 2768.0);
        assert_eq!(p.memory_total_bytes, 2.0 * 2768.0);
        // utilization 0.5 doubles the pairs' headroom: ⌈0.904 / 0.5⌉ = 2
        let p = plan(
            &i,
            &Target {
                utilization: 0.5,
                ..target()
            },
        )
        .unwrap();
        assert_eq!(p.pairs, 2);
    }

    #[test]
    fn units_per_day_and_bandwidth() {
        assert_eq!(Load::PerDay(86_400.0).per_second().unwrap(), 1.0);
        assert!((Load::PerDay(1e6).per_second().unwrap() - 11.574_074).abs() < 1e-5);
        let i = inputs();
        let per_s = plan(
            &i,
            &Target {
                load: Load::PerSecond(1e6 / SECONDS_PER_DAY),
                ..target()
            },
        )
        .unwrap();
        let per_day = plan(
            &i,
            &Target {
                load: Load::PerDay(1e6),
                ..target()
            },
        )
        .unwrap();
        assert_eq!(per_s, per_day);
        // ten times the bandwidth: a tenth of the transfer time
        let slow = request_cost(&i, &target()).unwrap();
        let fast = request_cost(
            &i,
            &Target {
                bandwidth_bps: 80e6,
                ..target()
            },
        )
        .unwrap();
        assert!((slow.transfer_s / fast.transfer_s - 10.0).abs() < 1e-9);
    }

    #[test]
    fn more_load_longer_prompts_slower_networks_never_need_less() {
        let i = inputs();
        let base = plan(&i, &target()).unwrap();
        for t in [
            Target {
                load: Load::PerSecond(100.0),
                ..target()
            },
            Target {
                prompt_tokens: 100,
                ..target()
            },
            Target {
                output_tokens: 30,
                ..target()
            },
            Target {
                rtt_s: 0.02,
                ..target()
            },
            Target {
                bandwidth_bps: 1e6,
                ..target()
            },
            Target {
                dealer_rtt_s: 0.01,
                ..target()
            },
            Target {
                job_overhead_s: 0.004,
                ..target()
            },
            Target {
                utilization: 0.3,
                ..target()
            },
        ] {
            let p = plan(&i, &t).unwrap();
            assert!(p.pairs >= base.pairs, "{t:?}");
            assert!(p.request.latency_s >= base.request.latency_s || t.utilization < 1.0);
            assert!(p.inter_domain_gbps >= base.inter_domain_gbps);
        }
        // monotone in the load, step by step
        let mut last = 0;
        for r in [0.1, 1.0, 5.0, 11.3, 50.0, 1e3, 1e5] {
            let p = plan(
                &i,
                &Target {
                    load: Load::PerSecond(r),
                    ..target()
                },
            )
            .unwrap();
            assert!(p.pairs >= last);
            last = p.pairs;
        }
        // a dealer ahead of demand takes the dealer off the path
        let ahead = request_cost(
            &i,
            &Target {
                dealer_ahead: true,
                dealer_rtt_s: 0.01,
                ..target()
            },
        )
        .unwrap();
        assert_eq!(ahead.dealer_wait_s, 0.0);
        // and its generation: compute falls to the parties' CPU (dealer CPU = CPU / 10 here)
        let on_demand = request_cost(&i, &target()).unwrap();
        assert!((ahead.compute_s - on_demand.cpu_s_per_worker).abs() < 1e-12);
        assert!(ahead.compute_s <= on_demand.compute_s);
        // ten times the load on a link a hundredth as wide: links multiply
        let p = plan(
            &i,
            &Target {
                load: Load::PerSecond(1000.0),
                bandwidth_bps: 8e4,
                ..target()
            },
        )
        .unwrap();
        // 12 300 B × 1000/s × 8 = 98.4 Mbit/s each way over 80 kbit/s links
        assert_eq!(p.inter_domain_links, 1230);
    }

    #[test]
    fn cores_stretch_compute_below_one_and_bound_the_cpu() {
        let i = inputs();
        let at = |cores: f64| {
            request_cost(
                &i,
                &Target {
                    cores_per_worker: cores,
                    ..target()
                },
            )
            .unwrap()
        };
        // half a core: twice as long; more than one: no speed-up assumed
        assert!((at(0.5).compute_s / at(1.0).compute_s - 2.0).abs() < 1e-9);
        assert_eq!(at(4.0).compute_s, at(1.0).compute_s);
        // the CPU need counts: 1000 requests/s × 12.3 ms CPU on 1 core at 100 %
        let p = plan(
            &i,
            &Target {
                load: Load::PerSecond(1000.0),
                ..target()
            },
        )
        .unwrap();
        assert_eq!(p.pairs_for_cpu, 13);
        assert!(p.pairs >= p.pairs_for_cpu);
        assert!(p.worker_cpu_utilization <= 1.0 + 1e-9);
        let p4 = plan(
            &i,
            &Target {
                load: Load::PerSecond(1000.0),
                cores_per_worker: 4.0,
                ..target()
            },
        )
        .unwrap();
        assert_eq!(p4.pairs_for_cpu, 4);
    }

    #[test]
    fn bad_targets_and_inputs_are_errors_not_panics() {
        let i = inputs();
        for (t, needle) in [
            (
                Target {
                    load: Load::PerSecond(0.0),
                    ..target()
                },
                "requests per second",
            ),
            (
                Target {
                    load: Load::PerDay(-5.0),
                    ..target()
                },
                "requests per day",
            ),
            (
                Target {
                    load: Load::PerSecond(f64::NAN),
                    ..target()
                },
                "requests per second",
            ),
            (
                Target {
                    prompt_tokens: 0,
                    ..target()
                },
                "prompt tokens",
            ),
            (
                Target {
                    output_tokens: 0,
                    ..target()
                },
                "output tokens",
            ),
            (
                Target {
                    rtt_s: -1.0,
                    ..target()
                },
                "rtt",
            ),
            (
                Target {
                    bandwidth_bps: 0.0,
                    ..target()
                },
                "bandwidth",
            ),
            (
                Target {
                    cores_per_worker: 0.0,
                    ..target()
                },
                "cores per worker",
            ),
            (
                Target {
                    dealer_cores: -1.0,
                    ..target()
                },
                "dealer cores",
            ),
            (
                Target {
                    utilization: 1.5,
                    ..target()
                },
                "utilization",
            ),
            (
                Target {
                    utilization: 0.0,
                    ..target()
                },
                "utilization",
            ),
        ] {
            let e = plan(&i, &t).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
        }
        let mut bad = inputs();
        bad.version = 99;
        assert!(plan(&bad, &target())
            .unwrap_err()
            .to_string()
            .contains("version"));
        let mut bad = inputs();
        bad.runs.clear();
        assert!(plan(&bad, &target()).is_err());
        let mut bad = inputs();
        bad.fits.decode.rounds.coef.pop();
        let e = plan(&bad, &target()).unwrap_err().to_string();
        assert!(e.contains("fits.decode.rounds"), "{e}");
        let mut bad = inputs();
        bad.fits.prefill.wall_s.coef[0] = f64::INFINITY;
        assert!(plan(&bad, &target()).is_err());
    }

    #[test]
    fn a_file_missing_a_field_names_it() {
        let mut v = serde_json::to_value(inputs()).unwrap();
        v["memory"]
            .as_object_mut()
            .unwrap()
            .remove("weights_loaded_bytes_per_worker");
        let e = serde_json::from_value::<Inputs>(v).unwrap_err().to_string();
        assert!(e.contains("weights_loaded_bytes_per_worker"), "{e}");
        let back: Inputs =
            serde_json::from_str(&serde_json::to_string(&inputs()).unwrap()).unwrap();
        assert_eq!(back, inputs());
    }

    #[test]
    fn fitting_runs_gives_the_steps_back() {
        let step = |tokens: usize, context: usize, rounds: u64, bytes: u64, wall: f64| StepCost {
            new_tokens: tokens,
            context,
            online_bytes: [bytes, bytes - 1],
            rounds,
            wall_s: wall,
            cpu_s: [wall, wall / 2.0],
            dealer_bytes: [bytes / 2, bytes],
            dealer_bundles: rounds * 3,
            dealer_cpu_s: wall / 4.0,
            client_s: wall / 8.0,
        };
        let run = |t: usize| Run {
            prompt_tokens: t,
            prefill: step(
                t,
                t,
                100 + 2 * ceil_log2(t as f64) as u64,
                (1000 * t + t * t) as u64,
                t as f64,
            ),
            decode: (0..4)
                .map(|k| {
                    let c = t + k + 1;
                    step(
                        1,
                        c,
                        50 + 2 * ceil_log2(c as f64) as u64,
                        (500 + 3 * c) as u64,
                        0.1 + 0.01 * c as f64,
                    )
                })
                .collect(),
            kv_bytes_per_party: 0,
        };
        let runs = [run(32), run(64)];
        let f = Fits::from_runs(&runs).unwrap();
        assert_eq!(f.prefill.online_bytes_per_party.basis, Basis::Quadratic0);
        assert!((f.prefill.online_bytes_per_party.at(128.0) - (128_000.0 + 16_384.0)).abs() < 1e-3);
        assert!((f.prefill.rounds.at(128.0) - 114.0).abs() < 1e-9);
        assert!((f.decode.online_bytes_per_party.at(200.0) - 1100.0).abs() < 1e-6);
        assert!((f.decode.wall_s.at(200.0) - 2.1).abs() < 1e-9);
        assert!((f.decode.rounds.at(200.0) - 66.0).abs() < 1e-9);
        assert!((f.decode.dealer_bytes.at(40.0) - 1.5 * 620.0).abs() < 1.0);
        // one length only: the prefill cannot be fitted
        assert!(Fits::from_runs(&runs[..1]).is_err());
    }

    #[test]
    fn the_bench_prediction_takes_the_tighter_bound() {
        let i = inputs();
        let shape = BenchShape {
            prompts: vec![10, 10, 10, 10],
            tokens: 3,
            pairs: 1,
            machine_cores: 100.0,
            cpu_per_round_s: 0.0,
            cpu_per_bundle_s: 0.0,
            kafka_cores: 0.0,
        };
        let one = predict_bench(&i, &target(), &shape).unwrap();
        let c = request_cost(&i, &target()).unwrap();
        assert_eq!(one.jobs, 16);
        assert!((one.wall_s - 4.0 * c.latency_s).abs() < 1e-12);
        let two = predict_bench(
            &i,
            &target(),
            &BenchShape {
                pairs: 2,
                ..shape.clone()
            },
        )
        .unwrap();
        assert!((two.jobs_per_s / one.jobs_per_s - 2.0).abs() < 1e-9);
        // more pairs than sessions: the longest session bounds the run
        let many = predict_bench(
            &i,
            &target(),
            &BenchShape {
                pairs: 8,
                ..shape.clone()
            },
        )
        .unwrap();
        assert!((many.wall_s - c.latency_s).abs() < 1e-12);
        // on one core the CPU bound takes over and more pairs do not help
        let cpu1 = BenchShape {
            machine_cores: 0.01,
            ..shape.clone()
        };
        let a = predict_bench(&i, &target(), &cpu1).unwrap();
        let b = predict_bench(
            &i,
            &target(),
            &BenchShape {
                pairs: 2,
                ..cpu1.clone()
            },
        )
        .unwrap();
        assert_eq!(a.wall_s, a.wall_cores_s);
        assert_eq!(a.jobs_per_s, b.jobs_per_s);
        // cores taken by Kafka leave fewer for the rest
        let half = predict_bench(
            &i,
            &target(),
            &BenchShape {
                kafka_cores: 0.005,
                ..cpu1.clone()
            },
        );
        assert!((half.unwrap().wall_cores_s / a.wall_cores_s - 2.0).abs() < 1e-9);
        for bad in [
            BenchShape {
                pairs: 0,
                ..shape.clone()
            },
            BenchShape {
                kafka_cores: 100.0,
                ..shape.clone()
            },
            BenchShape {
                kafka_cores: -1.0,
                ..shape.clone()
            },
            BenchShape {
                machine_cores: 0.0,
                ..shape.clone()
            },
            BenchShape {
                prompts: vec![],
                ..shape.clone()
            },
        ] {
            assert!(predict_bench(&i, &target(), &bad).is_err(), "{bad:?}");
        }
    }
}

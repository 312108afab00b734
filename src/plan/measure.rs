//! `marill plan measure`: the measured cost of private requests on a model and Marill
//! configuration, in one process — the client runs the public prefix with candle, the provider
//! and the helper run the private suffix on two threads over the in-memory channel with the
//! on-demand dealer, as `marill generate` does — with every party instrumented:
//!
//! - online bytes and rounds of each step: the parties' [`CommStats`];
//! - wall seconds of each step at the parties;
//! - CPU seconds of each party: each party runs inside its own rayon pool (so the ring GEMM's
//!   threads are its own) and its CPU time is the sum of the pool threads' clocks
//!   (`CLOCK_THREAD_CPUTIME_ID` through `pthread_getcpuclockid`), less the time spent serving
//!   correlations;
//! - the dealer: explicit bytes and bundles from its counters ([`SharedDealer::stats`]) and
//!   its CPU seconds as the CPU time of the requesting party's pool while it was inside the
//!   dealer (bundles are generated on demand on the thread that asks first);
//! - memory: the KV cache ([`SecureSuffix::cache_bytes`]) at the end of each run, and the
//!   weight shares a worker holds.
//!
//! A run is one prefill of T tokens then N decode steps; runs at several prompt lengths
//! (default T and 2T) on one loaded pair (reset between runs, as a worker does at each step 0)
//! give the points the per-step costs are fitted on ([`Fits`]).

use super::clock::{cores, cpu_model, ThreadClocks};
use super::model::{
    ConfigInfo, Fits, Inputs, LoadCost, Machine, Memory, Method, ModelInfo, Run, StepCost,
    INPUTS_VERSION,
};
use crate::generate::{load, ModelArgs, PublicPrefix, PROMPTS};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use marill_client::shares::{decode_output, share_hidden};
use marill_model::llama::argmax_last;
use marill_model::suffix::{suffix_of, Bounds};
use marill_mpc::channel::{memory_pair, CommStats};
use marill_mpc::correlation::dealer::DealerStats;
use marill_mpc::correlation::{
    Bundle, BundleSupplier, CorrRequest, CorrelationError, CorrelationStore, Dealer, SharedDealer,
};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Prg;
use marill_mpc::prg::{Purpose, Seeding};
use marill_mpc::testing::reconstruct;
use marill_mpc::{Party, PartyId};
use marill_suffix::secure::{
    gamma_at_client, prepare, Base, FinalGamma, PreparedProj, PreparedSuffix, SecureSuffix,
};
use marill_suffix::SuffixConfig;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// The longest sequence a worker serves by default (`marill worker --max-seq`): the suffix is
/// configured the same way so that the measured protocol is the served one.
const WORKER_MAX_SEQ: usize = 256;

/// Arguments of `marill plan measure`.
#[derive(Args)]
pub struct MeasureArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens T of the first run (the runs use T and 2T unless --lengths is given).
    #[arg(long, default_value_t = 32)]
    prompt_tokens: usize,
    /// Decode steps measured after each prefill.
    #[arg(long, default_value_t = 8)]
    output_tokens: usize,
    /// Prompt lengths of the runs, comma separated (overrides T, 2T; three or more fit the
    /// prefill with a constant term too).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Measure a tiny seeded random model (4 layers, width 32: what `marill bench cluster`
    /// and `marill plan check` run) instead of --model.
    #[arg(long)]
    tiny: bool,
    /// Where to write the inputs (JSON).
    #[arg(long, default_value = "target/plan/inputs.json")]
    out: PathBuf,
}

/// Runs `marill plan measure`.
pub fn run(a: MeasureArgs) -> Result<()> {
    let lengths = if a.lengths.is_empty() {
        vec![a.prompt_tokens, 2 * a.prompt_tokens]
    } else {
        a.lengths.clone()
    };
    let inputs = if a.tiny {
        let tiny = super::check::TinyModel::write(&a.model)?;
        measure(&tiny.args, &lengths, a.output_tokens, true)?
    } else {
        measure(&a.model, &lengths, a.output_tokens, true)?
    };
    print!("{}", summary(&inputs));
    super::write_json_file(&a.out, &inputs)
}

enum Cmd {
    Step(Vec<u64>),
    Reset,
}

/// What a party reports after loading or after a step.
struct Report {
    y: Vec<u64>,
    comm: CommStats,
    wall_s: f64,
    cpu_s: f64,
    dealer_cpu_s: f64,
    cache_bytes: usize,
}

type Reply = std::result::Result<Report, String>;

/// The on-demand dealer, with the CPU time of the party pool that asked counted as the
/// dealer's.
struct TimedDealer {
    inner: SharedDealer,
    clocks: ThreadClocks,
    spent_s: Arc<Mutex<f64>>,
}

impl BundleSupplier for TimedDealer {
    fn fetch(
        &mut self,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> std::result::Result<Bundle, CorrelationError> {
        let t0 = self.clocks.cpu_s();
        let r = self.inner.fetch(party, id, req);
        *self.spent_s.lock().unwrap_or_else(|e| e.into_inner()) += self.clocks.cpu_s() - t0;
        r
    }
}

/// The two parties, instrumented.
struct Pair {
    to: Vec<mpsc::Sender<Cmd>>,
    from: Vec<mpsc::Receiver<Reply>>,
    handles: Vec<JoinHandle<()>>,
    dealer: SharedDealer,
}

impl Pair {
    /// Starts both parties, each in its own rayon pool of `threads` threads, and loads the
    /// suffix; returns the pair and the two load reports.
    fn start(
        cfg: &SuffixConfig,
        prepared: [PreparedSuffix; 2],
        seeding: Seeding,
        threads: usize,
    ) -> Result<(Self, [Report; 2])> {
        let fx = FixedPoint::default();
        let dealer = SharedDealer::new(Dealer::new(seeding.seed(Purpose::Dealer)));
        let (t0, t1) = memory_pair();
        let mut pair = Pair {
            to: Vec::new(),
            from: Vec::new(),
            handles: Vec::new(),
            dealer: dealer.clone(),
        };
        for (prep, t) in prepared.into_iter().zip([t0, t1]) {
            let id = prep.party;
            let clocks = ThreadClocks::default();
            let spent_s = Arc::new(Mutex::new(0.0f64));
            let store = CorrelationStore::with_supplier(
                id,
                dealer.party_seed(id),
                Box::new(TimedDealer {
                    inner: dealer.clone(),
                    clocks: clocks.clone(),
                    spent_s: spent_s.clone(),
                }),
            );
            let (in_tx, in_rx) = mpsc::channel::<Cmd>();
            let (out_tx, out_rx) = mpsc::channel::<Reply>();
            let cfg = cfg.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(move |i| format!("party-{}-{i}", id.index()))
                .start_handler({
                    let c = clocks.clone();
                    move |_| c.register_current()
                })
                .build()
                .map_err(|e| anyhow!("party pool: {e}"))?;
            pair.handles.push(std::thread::spawn(move || {
                pool.install(move || {
                    let spent = || *spent_s.lock().unwrap_or_else(|e| e.into_inner());
                    let snap = || (Instant::now(), clocks.cpu_s(), spent());
                    let report = |(w0, c0, d0): (Instant, f64, f64), y, comm, cache_bytes| {
                        let dealer_cpu_s = spent() - d0;
                        Report {
                            y,
                            comm,
                            wall_s: w0.elapsed().as_secs_f64(),
                            cpu_s: (clocks.cpu_s() - c0 - dealer_cpu_s).max(0.0),
                            dealer_cpu_s,
                            cache_bytes,
                        }
                    };
                    futures::executor::block_on(async {
                        let mut p = Party::new(id, t, store, fx);
                        let s = snap();
                        let mut sfx = match SecureSuffix::load(&mut p, &cfg, prep).await {
                            Ok(sfx) => sfx,
                            Err(e) => {
                                let _ = out_tx.send(Err(format!("party {id:?}: load: {e}")));
                                return;
                            }
                        };
                        if out_tx.send(Ok(report(s, Vec::new(), p.comm(), 0))).is_err() {
                            return;
                        }
                        while let Ok(cmd) = in_rx.recv() {
                            let x = match cmd {
                                Cmd::Reset => {
                                    sfx.reset();
                                    continue;
                                }
                                Cmd::Step(x) => x,
                            };
                            let (s, before) = (snap(), p.comm());
                            let r = match sfx.forward(&mut p, &x).await {
                                Ok(y) => {
                                    Ok(report(s, y, p.comm().since(&before), sfx.cache_bytes()))
                                }
                                Err(e) => Err(format!("party {id:?}: {e}")),
                            };
                            let failed = r.is_err();
                            if out_tx.send(r).is_err() || failed {
                                return;
                            }
                        }
                    })
                });
            }));
            pair.to.push(in_tx);
            pair.from.push(out_rx);
        }
        let loaded = pair.replies()?;
        Ok((pair, loaded))
    }

    fn replies(&self) -> Result<[Report; 2]> {
        let mut out = Vec::new();
        for rx in &self.from {
            out.push(
                rx.recv()
                    .map_err(|_| anyhow!("a party has stopped"))?
                    .map_err(|e| anyhow!(e))?,
            );
        }
        let [a, b]: [Report; 2] = out.try_into().map_err(|_| anyhow!("two parties"))?;
        Ok([a, b])
    }

    fn send(&self, cmds: [Cmd; 2]) -> Result<()> {
        for (tx, c) in self.to.iter().zip(cmds) {
            tx.send(c).map_err(|_| anyhow!("a party has stopped"))?;
        }
        Ok(())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.to.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn since(a: &DealerStats, b: &DealerStats) -> ([u64; 2], u64) {
    (
        [a.bytes_to[0] - b.bytes_to[0], a.bytes_to[1] - b.bytes_to[1]],
        a.bundles - b.bundles,
    )
}

/// The client's state over one run.
struct Client<'a> {
    prefix: PublicPrefix<'a>,
    fx: FixedPoint,
    d: usize,
    gamma: Option<Vec<f32>>,
    prg: Prg,
}

impl Client<'_> {
    /// One step: the prefix on `tokens` here, the suffix at the pair; returns the measured
    /// step, the next greedy token and the parties' larger KV cache after the step.
    fn step(&mut self, pair: &Pair, tokens: &[u32]) -> Result<(StepCost, u32, u64)> {
        let c0 = Instant::now();
        let (x, t, d) = self.prefix.hidden(tokens)?;
        let (s0, s1) = share_hidden(self.fx, self.d, &x, &mut self.prg)?;
        let client_before = c0.elapsed().as_secs_f64();
        let d_before = pair.dealer.stats();
        pair.send([Cmd::Step(s0), Cmd::Step(s1)])?;
        let [r0, r1] = pair.replies()?;
        let (dealer_bytes, dealer_bundles) = since(&pair.dealer.stats(), &d_before);
        let c1 = Instant::now();
        let y = reconstruct(&r0.y, &r1.y);
        let y = decode_output(self.fx, &y, self.gamma.as_deref());
        let normed = Tensor::from_vec(y, (1, t, d), &Device::Cpu)?;
        let next = argmax_last(&self.prefix.model.head(&normed)?)?;
        let client_after = c1.elapsed().as_secs_f64();
        if r0.comm.rounds != r1.comm.rounds {
            bail!(
                "the parties counted {} and {} rounds",
                r0.comm.rounds,
                r1.comm.rounds
            );
        }
        Ok((
            StepCost {
                new_tokens: t,
                context: self.prefix.pos,
                online_bytes: [r0.comm.bytes_sent, r1.comm.bytes_sent],
                rounds: r0.comm.rounds,
                wall_s: r0.wall_s.max(r1.wall_s),
                cpu_s: [r0.cpu_s, r1.cpu_s],
                dealer_bytes,
                dealer_bundles,
                dealer_cpu_s: r0.dealer_cpu_s + r1.dealer_cpu_s,
                client_s: client_before + client_after,
            },
            next,
            r0.cache_bytes.max(r1.cache_bytes) as u64,
        ))
    }
}

/// `n` tokens of real text (the built-in prompts, joined).
fn prompt_ids(tok: &marill_model::TextTokenizer, n: usize) -> Result<Vec<u32>> {
    let mut text = String::new();
    for p in PROMPTS.iter().cycle().take(PROMPTS.len() * 8) {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(p);
        let ids = tok.encode(&text)?;
        if ids.len() >= n {
            return Ok(ids[..n].to_vec());
        }
    }
    bail!("the built-in prompts encode to fewer than {n} tokens")
}

fn tensor_bytes(t: &marill_mpc::ring::RingTensor) -> u64 {
    8 * t.len() as u64
}

/// (prepared, loaded) bytes of a projection at a worker: a private matrix is held as the
/// opened `W − B` and the share of `B` once loaded.
fn proj_bytes(p: &PreparedProj) -> (u64, u64) {
    let (pb, lb) = match &p.base {
        Base::Public(w) => (w.heap_bytes() as u64, w.heap_bytes() as u64),
        Base::Private(w) => (tensor_bytes(w), 2 * tensor_bytes(w)),
    };
    let (pl, ll) = match &p.lora {
        Some((a, b)) => {
            let s = tensor_bytes(a) + tensor_bytes(b);
            (s, 2 * s)
        }
        None => (0, 0),
    };
    (pb + pl, lb + ll)
}

/// (prepared, loaded) weight bytes of one worker.
fn weight_bytes(p: &PreparedSuffix) -> (u64, u64) {
    let mut out = (0, 0);
    for l in &p.layers {
        for proj in [&l.qkv, &l.o, &l.gate_up, &l.down] {
            let (a, b) = proj_bytes(proj);
            out.0 += a;
            out.1 += b;
        }
    }
    let g = match &p.final_gamma {
        FinalGamma::AtClient => 0,
        FinalGamma::Public(g) | FinalGamma::Private(g) => tensor_bytes(g),
    };
    (out.0 + g, out.1 + g)
}

/// Measures runs of prefill `lengths[i]` tokens then `decode` decode steps on the model of
/// `model_args`; shows a progress bar when `progress`.
pub(crate) fn measure(
    model_args: &ModelArgs,
    lengths: &[usize],
    decode: usize,
    progress: bool,
) -> Result<Inputs> {
    if lengths.is_empty() || lengths.contains(&0) {
        bail!("prompt lengths must be ≥ 1 (got {lengths:?})");
    }
    let mut distinct = lengths.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 2 {
        bail!("measure at least two distinct prompt lengths (got {lengths:?}): the prefill cost is fitted in T");
    }
    if decode == 0 {
        bail!("measure at least one decode step (--output-tokens ≥ 1)");
    }
    let (model, tok) = load(model_args)?;
    let spec = model.marill_spec().context("spec")?.clone();
    let n_public = spec.n_public();
    let longest = *lengths.iter().max().expect("non-empty");
    let max_seq = WORKER_MAX_SEQ.max(longest + decode + 1);
    let (cfg, w) = suffix_of(&model, Bounds::default(), max_seq)?;
    let fx = FixedPoint::default();
    let seeding = model_args.seeding();
    let prepared =
        prepare(&cfg, &w, fx, seeding.seed(Purpose::WeightSplit)).map_err(|e| anyhow!("{e}"))?;
    let (w0, w1) = (weight_bytes(&prepared[0]), weight_bytes(&prepared[1]));
    let threads = cores();
    let ids = prompt_ids(&tok, longest)?;
    let mc = model.config().clone();
    eprintln!(
        "model: {} layers ({n_public} public, {} private), width {}; runs: prompts {lengths:?}, {decode} decode steps each",
        mc.n_layers,
        cfg.n_layers,
        mc.hidden_size
    );

    let d_start = DealerStats::default();
    let (pair, loaded) = Pair::start(&cfg, prepared, seeding, threads)?;
    let (ld_bytes, _) = since(&pair.dealer.stats(), &d_start);
    let load = LoadCost {
        online_bytes_per_party: loaded[0].comm.bytes_sent.max(loaded[1].comm.bytes_sent),
        rounds: loaded[0].comm.rounds,
        wall_s: loaded[0].wall_s.max(loaded[1].wall_s),
        dealer_bytes: ld_bytes[0] + ld_bytes[1],
        dealer_cpu_s: loaded[0].dealer_cpu_s + loaded[1].dealer_cpu_s,
    };

    let total: usize = lengths.len() * (1 + decode);
    let bar = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed}<{eta}]")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let mut runs = Vec::new();
    let mut kv_per_token = 0f64;
    for (i, &t) in lengths.iter().enumerate() {
        if i > 0 {
            pair.send([Cmd::Reset, Cmd::Reset])?;
        }
        let mut client = Client {
            prefix: PublicPrefix::new(&model, n_public),
            fx,
            d: cfg.d_model,
            gamma: gamma_at_client(&cfg, &w).then(|| w.final_norm.clone()),
            prg: Prg::new(seeding.seed(Purpose::InputMasks(i as u64)), 3),
        };
        bar.set_message(format!("prefill T={t}"));
        let (prefill, mut next, mut kv) = client.step(&pair, &ids[..t])?;
        bar.inc(1);
        if progress && bar.is_hidden() {
            eprintln!("T={t}: prefill {:.2} s", prefill.wall_s);
        }
        let mut steps = Vec::new();
        for k in 0..decode {
            bar.set_message(format!("T={t} decode {}/{decode}", k + 1));
            let (s, n, cache) = client.step(&pair, &[next])?;
            (next, kv) = (n, cache);
            steps.push(s);
            bar.inc(1);
        }
        if progress && bar.is_hidden() {
            eprintln!(
                "T={t}: {decode} decode steps {:.2} s",
                steps.iter().map(|s| s.wall_s).sum::<f64>()
            );
        }
        kv_per_token = kv_per_token.max(kv as f64 / (t + decode) as f64);
        runs.push(Run {
            prompt_tokens: t,
            prefill,
            decode: steps,
            kv_bytes_per_party: kv,
        });
    }
    bar.finish_and_clear();
    drop(pair);
    let fits = Fits::from_runs(&runs).map_err(|e| anyhow!("{e}"))?;
    let lora = spec.lora();
    let inputs = Inputs {
        version: INPUTS_VERSION,
        measured_at_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: ModelInfo {
            path: model_args.to_args()[1].clone(),
            n_layers: mc.n_layers,
            n_public,
            n_private: cfg.n_layers,
            d_model: mc.hidden_size,
            n_heads: mc.n_heads,
            n_kv_heads: mc.n_kv_heads,
            head_dim: mc.head_dim,
            d_ff: mc.intermediate_size,
            vocab_size: mc.vocab_size,
        },
        config: ConfigInfo {
            options: model_args.to_args(),
            lora_rank: lora.map(|l| l.rank),
            lora_targets: lora
                .map(|l| l.targets.iter().map(|t| t.short_name().to_string()).collect())
                .unwrap_or_default(),
            head_merge: spec.head_merge(),
            frac_bits: fx.frac_bits(),
        },
        machine: Machine {
            cores: cores(),
            cpu_model: cpu_model(),
            party_threads: threads,
        },
        method: Method {
            cpu_time: "per-thread CPU clocks (CLOCK_THREAD_CPUTIME_ID via pthread_getcpuclockid) of each party's own rayon pool, which runs the party and its ring GEMM; time inside the dealer subtracted".into(),
            dealer_cpu_time: "CPU time of the requesting party's pool while inside the on-demand dealer (generation of both halves, stash look-ups)".into(),
            wall_time: "wall time of a step at each party, the slower party's; both parties in one process on an in-memory channel (no network), the dealer on demand on the party threads; the machine may have been shared".into(),
        },
        load,
        runs,
        fits,
        memory: Memory {
            kv_bytes_per_token_per_party: kv_per_token,
            weights_prepared_bytes_per_worker: w0.0.max(w1.0),
            weights_loaded_bytes_per_worker: w0.1.max(w1.1),
        },
    };
    inputs.validate().map_err(|e| anyhow!("{e}"))?;
    Ok(inputs)
}

fn mb(b: f64) -> f64 {
    b / 1e6
}

/// The measured figures as markdown.
pub fn summary(i: &Inputs) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Measured on {} ({} cores): {} ({} layers, {} public, {} private, width {}), LoRA {:?}, HM {}\n",
        i.machine.cpu_model,
        i.machine.cores,
        i.model.path,
        i.model.n_layers,
        i.model.n_public,
        i.model.n_private,
        i.model.d_model,
        i.config.lora_rank,
        i.config.head_merge
    );
    let _ = writeln!(s, "| step | tokens | keys | online MB/party | rounds | wall s | CPU s/party | dealer MB | bundles | dealer CPU s | client s |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let row = |s: &mut String, name: String, st: &StepCost| {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.3} | {} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {:.3} |",
            st.new_tokens,
            st.context,
            mb(st.online_bytes[0].max(st.online_bytes[1]) as f64),
            st.rounds,
            st.wall_s,
            st.cpu_s[0].max(st.cpu_s[1]),
            mb((st.dealer_bytes[0] + st.dealer_bytes[1]) as f64),
            st.dealer_bundles,
            st.dealer_cpu_s,
            st.client_s
        );
    };
    for r in &i.runs {
        row(&mut s, format!("prefill T={}", r.prompt_tokens), &r.prefill);
        if let (Some(first), Some(last)) = (r.decode.first(), r.decode.last()) {
            row(&mut s, "first decode".into(), first);
            row(&mut s, "last decode".into(), last);
        }
    }
    let f = &i.fits;
    let _ = writeln!(
        s,
        "\nFitted per-step costs (prefill: x = T; decode: x = keys attended):\n"
    );
    let _ = writeln!(s, "| cost | prefill | decode |");
    let _ = writeln!(s, "|---|---|---|");
    for (name, p, d) in [
        (
            "online bytes/party",
            &f.prefill.online_bytes_per_party,
            &f.decode.online_bytes_per_party,
        ),
        ("rounds", &f.prefill.rounds, &f.decode.rounds),
        ("wall s", &f.prefill.wall_s, &f.decode.wall_s),
        (
            "CPU s/party",
            &f.prefill.cpu_s_per_party,
            &f.decode.cpu_s_per_party,
        ),
        (
            "dealer bytes",
            &f.prefill.dealer_bytes,
            &f.decode.dealer_bytes,
        ),
        (
            "dealer bundles",
            &f.prefill.dealer_bundles,
            &f.decode.dealer_bundles,
        ),
        (
            "dealer CPU s",
            &f.prefill.dealer_cpu_s,
            &f.decode.dealer_cpu_s,
        ),
        ("client s", &f.prefill.client_s, &f.decode.client_s),
    ] {
        let _ = writeln!(s, "| {name} | {} | {} |", fit_text(p), fit_text(d));
    }
    let (prefill_bytes, prefill_cpu, decode_bytes, decode_cpu) = dealer_per_token(i);
    let _ = writeln!(
        s,
        "\nDealer per token (both parties): prefill {:.2} MB and {:.3} CPU s per prompt token; \
         decode {:.2} MB and {:.3} CPU s per decoded token (means over the runs above).",
        mb(prefill_bytes),
        prefill_cpu,
        mb(decode_bytes),
        decode_cpu
    );
    let _ = writeln!(
        s,
        "\nMemory: KV cache {:.0} B per token per worker; weights per worker {:.1} MB prepared, {:.1} MB loaded. Load (once per pair): {:.1} MB/party, {} rounds, {:.2} s, dealer {:.1} MB.",
        i.memory.kv_bytes_per_token_per_party,
        mb(i.memory.weights_prepared_bytes_per_worker as f64),
        mb(i.memory.weights_loaded_bytes_per_worker as f64),
        mb(i.load.online_bytes_per_party as f64),
        i.load.rounds,
        i.load.wall_s,
        mb(i.load.dealer_bytes as f64)
    );
    s
}

/// The dealer's bytes (both halves) and CPU seconds per prompt token of the prefills and per
/// decoded token: `(prefill bytes, prefill CPU s, decode bytes, decode CPU s)`.
pub fn dealer_per_token(i: &Inputs) -> (f64, f64, f64, f64) {
    let bytes = |st: &StepCost| (st.dealer_bytes[0] + st.dealer_bytes[1]) as f64;
    let prompt: usize = i.runs.iter().map(|r| r.prompt_tokens).sum();
    let decoded: usize = i.runs.iter().map(|r| r.decode.len()).sum();
    let per = |total: f64, n: usize| if n == 0 { 0.0 } else { total / n as f64 };
    let prefills = i.runs.iter().map(|r| &r.prefill);
    let decodes = i.runs.iter().flat_map(|r| &r.decode);
    (
        per(prefills.clone().map(bytes).sum(), prompt),
        per(prefills.map(|st| st.dealer_cpu_s).sum(), prompt),
        per(decodes.clone().map(bytes).sum(), decoded),
        per(decodes.map(|st| st.dealer_cpu_s).sum(), decoded),
    )
}

fn fit_text(f: &super::model::Fit) -> String {
    let names = ["a", "b", "c"];
    let coefs: Vec<String> = f
        .coef
        .iter()
        .zip(names)
        .map(|(c, n)| format!("{n} = {c:.4e}"))
        .collect();
    format!("{}: {}", f.basis.formula(), coefs.join(", "))
}

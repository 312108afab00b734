//! `marill plan check`: the capacity model's prediction against `marill bench cluster`.
//!
//! 1. Measures the planning inputs of the tiny model the cluster benchmark runs (in process,
//!    as `marill plan measure`), at prompt lengths spanning the benchmark's prompts.
//! 2. Measures this machine's loopback links the way the cluster uses them (zeromq with
//!    CURVE): a simultaneous exchange between two links of this process (one 2PC round) and
//!    its CPU at both ends, throughput, and a bundle fetch from a real `marill dealer` process
//!    by two concurrent parties (one on-demand dealer round trip) with the CPU of both ends.
//! 3. Predicts the benchmark's jobs/s for each pair count with [`predict_bench`]: sessions hold
//!    a pair for their latency (compute + rounds × round trip + bundles × dealer round trip +
//!    bytes / throughput + a Kafka overhead per job), and the parties', dealers', client's and
//!    messaging CPU shares this machine's cores less those the Kafka path keeps busy; the run
//!    lasts the longer of the two bounds.
//! 4. Runs the benchmark (the same code as `marill bench cluster`) for each pair count while
//!    sampling every process's CPU time from /proc, and prints predicted vs measured.
//!
//! Two inputs are not measured for the prediction and are taken as flags: the Kafka round
//! trip per job (`--job-overhead-ms`, ≈ 4 ms measured by `marill bench cluster` on this
//! machine) and the cores the Kafka path (tansu, the coordinator, the clients' polling) keeps
//! busy (`--kafka-cores`); the check prints the measured figure of the latter each run so that
//! it can be judged.
//!
//! It fails when measured and predicted jobs/s differ by more than `--max-factor` (default
//! 2): the model is a bottleneck bound — it leaves out queueing, the cores' sharing with
//! anything else running, and scheduling delays of processes that each wake thousands of
//! times per step — so it is expected to be optimistic, and a factor of 2 separates "the
//! model has the right costs" from "a cost is missing".

use super::clock::{cores, process_cpu_s};
use super::measure::measure;
use super::model::{predict_bench, BenchPrediction, BenchShape, Inputs, Load, Target};
use crate::bench::cluster::run_pairs;
use crate::generate::{load, ModelArgs, PROMPTS};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser};
use marill_transport::{KeyPair, Link, LinkConfig, Role};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `marill plan check`.
#[derive(Args)]
pub struct CheckArgs {
    /// Worker pairs, comma separated (one benchmark run each).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pairs: Vec<usize>,
    /// Sessions per run (the first N built-in prompts, as `marill bench cluster`).
    #[arg(long, default_value_t = 16)]
    sessions: usize,
    /// Greedy tokens per session (each a job, plus one job to end the session).
    #[arg(long, default_value_t = 2)]
    tokens: usize,
    /// Kafka round trip per job (client → broker → coordinator → pair, result back), ms.
    #[arg(long, default_value_t = 4.0)]
    job_overhead_ms: f64,
    /// Cores the Kafka path (tansu, the coordinator, the 16 clients' polling) keeps busy while
    /// the benchmark runs (0.37–0.59 measured by this check on a 2-core machine; each run
    /// prints its own figure).
    #[arg(long, default_value_t = 0.5)]
    kafka_cores: f64,
    /// Fail when measured and predicted jobs/s differ by more than this factor.
    #[arg(long, default_value_t = 2.0)]
    max_factor: f64,
    /// The tansu binary.
    #[arg(long, default_value = "target/tools/tansu")]
    tansu: PathBuf,
    /// The processes' logs go to `<logs>/<N>-pairs-<L>-lanes/`.
    #[arg(long, default_value = "target/plan/check-logs")]
    logs: PathBuf,
    /// Write predicted and measured rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Model options (the model itself is replaced by the tiny one; LF, LoRA, HM are kept).
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Parser)]
struct Reparse {
    #[command(flatten)]
    model: ModelArgs,
}

/// The tiny seeded random model `marill bench cluster` runs by default, written to a temporary
/// directory (removed when dropped), with the other model options kept.
pub(crate) struct TinyModel {
    /// the model options with `--model` pointing at the tiny model
    pub args: ModelArgs,
    dir: PathBuf,
}

impl TinyModel {
    /// Writes the tiny model and returns `options` pointing at it.
    pub fn write(options: &ModelArgs) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "marill-plan-tiny-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        marill_model::tiny::write_tiny_model(&dir, &Default::default())?;
        let mut args = options.to_args();
        let i = args
            .iter()
            .position(|s| s == "--model")
            .ok_or_else(|| anyhow!("model options without --model"))?;
        args[i + 1] = dir.display().to_string();
        args.insert(0, "reparse".into());
        Ok(Self {
            args: Reparse::try_parse_from(args)?.model,
            dir,
        })
    }
}

impl Drop for TinyModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The loopback links as the cluster uses them.
#[derive(Clone, Debug, Serialize)]
pub struct LinkCosts {
    /// one simultaneous exchange of small messages between two CURVE links of this process
    /// (a 2PC round), seconds
    pub round_s: f64,
    /// CPU seconds of one exchange, both ends
    pub cpu_per_round_s: f64,
    /// one-way throughput of 8 MB messages between two CURVE links of this process, bits per
    /// second
    pub bandwidth_bps: f64,
    /// one bundle fetch from a `marill dealer` process (request, generation, reply), as each
    /// of two concurrent parties sees it, seconds
    pub dealer_request_s: f64,
    /// CPU seconds of one bundle fetch: the dealer process and the fetching side together
    pub cpu_per_dealer_request_s: f64,
    /// explicit bytes of the bundles fetched (the larger half)
    pub bundle_bytes: usize,
}

/// Measures exchanges and throughput between two CURVE links of this process: (round s, CPU
/// s per round, bits per second).
fn measure_peer_link() -> Result<(f64, f64, f64)> {
    let (server_keys, client_keys) = (KeyPair::generate()?, KeyPair::generate()?);
    let server = Link::open(
        Role::Server {
            endpoint: "tcp://127.0.0.1:*".into(),
            allow: vec![client_keys.public.clone()],
        },
        &server_keys,
        LinkConfig::new("client"),
    )?;
    let endpoint = server.endpoint().to_string();
    let client = Link::open(
        Role::Client {
            endpoint,
            server_public: server_keys.public.clone(),
        },
        &client_keys,
        LinkConfig::new("server"),
    )?;
    const WARM: usize = 50;
    const ROUNDS: usize = 2000;
    const BULK: usize = 8 << 20;
    const BULKS: usize = 8;
    let srv = std::thread::spawn(move || -> Result<()> {
        for _ in 0..(WARM + ROUNDS) {
            server.send(&[1u8; 64])?;
            server.recv()?;
        }
        for _ in 0..BULKS {
            server.recv()?;
            server.send(&[0u8])?;
        }
        Ok(())
    });
    // warm up (the CURVE handshake happens on the first message)
    for _ in 0..WARM {
        client.send(&[2u8; 64])?;
        client.recv()?;
    }
    let (c0, t0) = (process_cpu_s(), Instant::now());
    for _ in 0..ROUNDS {
        client.send(&[2u8; 64])?;
        client.recv()?;
    }
    let round_s = t0.elapsed().as_secs_f64() / ROUNDS as f64;
    let cpu_per_round_s = (process_cpu_s() - c0) / ROUNDS as f64;
    let bulk = vec![5u8; BULK];
    let t0 = Instant::now();
    for _ in 0..BULKS {
        client.send(&bulk)?;
        client.recv()?;
    }
    let bulk_s = t0.elapsed().as_secs_f64() / BULKS as f64;
    srv.join().map_err(|_| anyhow!("link server panicked"))??;
    Ok((
        round_s,
        cpu_per_round_s,
        BULK as f64 * 8.0 / (bulk_s - round_s).max(1e-6),
    ))
}

/// Starts a `marill dealer` process and fetches `n` bundles of `bundle_bytes` from it as the
/// provider and the helper do, concurrently: (seconds per fetch, CPU seconds per fetch).
fn measure_dealer(n: usize, bundle_bytes: usize) -> Result<(f64, f64)> {
    use crate::cluster::launch::free_port;
    use marill_mpc::correlation::CorrRequest;
    use marill_mpc::PartyId;
    use marill_proto::link::{recv, send};
    use marill_proto::DealerMessage;
    let keys = std::env::temp_dir().join(format!(
        "marill-plan-keys-{}-{}",
        std::process::id(),
        free_port()?
    ));
    crate::net::keys::write_all(&keys)?;
    let eps = [
        format!("tcp://127.0.0.1:{}", free_port()?),
        format!("tcp://127.0.0.1:{}", free_port()?),
    ];
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["dealer", "--keys"])
        .arg(&keys)
        .args(["--provider-endpoint", &eps[0], "--helper-endpoint", &eps[1]])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting marill dealer")?;
    struct Kill(std::process::Child, PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let child = Kill(child, keys.clone());
    let pid = child.0.id();
    let dealer_public = KeyPair::load_public(&keys, "dealer")?;
    // a multiplication triple's correction travels to party 1 only: 8 bytes per element
    let req = CorrRequest::MulTriples {
        n: (bundle_bytes / 8).max(1),
    };
    let tick = ticks_per_s();
    let cpu_now = || -> Result<f64> {
        let (_, dealer) =
            proc_stat(pid, tick).ok_or_else(|| anyhow!("marill dealer has stopped"))?;
        Ok(dealer + process_cpu_s())
    };
    const WARM: u64 = 50;
    let c0 = cpu_now()?;
    let done = std::thread::scope(|sc| -> Result<Vec<(f64, Link, PartyId)>> {
        let mut handles = Vec::new();
        for (party, name, ep) in [
            (PartyId::P0, "provider", &eps[0]),
            (PartyId::P1, "helper", &eps[1]),
        ] {
            let (keys, dealer_public, req) = (&keys, &dealer_public, &req);
            handles.push(sc.spawn(move || -> Result<(f64, Link, PartyId)> {
                let own = KeyPair::load(keys, name)?;
                let link = Link::open(
                    Role::Client {
                        endpoint: ep.to_string(),
                        server_public: dealer_public.clone(),
                    },
                    &own,
                    LinkConfig::new("dealer"),
                )?;
                send(&link, &DealerMessage::SeedRequest { party })?;
                recv::<DealerMessage>(&link)?;
                let fetch = |id: u64| -> Result<()> {
                    let r = DealerMessage::BundleRequest {
                        party,
                        id,
                        req: req.clone(),
                    };
                    send(&link, &r)?;
                    match recv(&link)? {
                        DealerMessage::Bundle(_) => Ok(()),
                        other => bail!("dealer sent {}", marill_proto::describe(&other)),
                    }
                };
                for id in 0..WARM {
                    fetch(id)?;
                }
                let t0 = Instant::now();
                for id in WARM..WARM + n as u64 {
                    fetch(id)?;
                }
                Ok((t0.elapsed().as_secs_f64(), link, party))
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("fetch thread panicked"))?)
            .collect()
    })?;
    // the warm-up and the handshakes are counted in the CPU too (a few % of it)
    let cpu = cpu_now()? - c0;
    let mut times = Vec::new();
    for (dt, link, party) in done {
        let _ = send(&link, &DealerMessage::Done { party });
        times.push(dt);
    }
    drop(child);
    let per = times.iter().cloned().fold(0.0, f64::max) / n as f64;
    Ok((per, cpu / (2 * (n + WARM as usize)) as f64))
}

/// CPU seconds of this process's children, by kind, sampled from /proc while they run (the
/// last sample before each exits counts).
struct ChildCpu {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<BTreeMap<u32, (String, f64)>>,
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (parent pid, CPU seconds) of a process, from /proc/<pid>/stat.
fn proc_stat(pid: u32, tick: f64) -> Option<(u32, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after "comm": state(0) ppid(1) ... utime(11) stime(12)
    let ppid = f.get(1)?.parse().ok()?;
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some((ppid, ticks / tick))
}

fn kind_of(pid: u32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmd
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let has = |s: &str| args.iter().any(|a| a == s);
    if args.first().is_some_and(|a| a.ends_with("tansu")) {
        "broker".into()
    } else if has("provider") {
        "provider workers".into()
    } else if has("helper") {
        "helper workers".into()
    } else if has("dealer") {
        "dealers".into()
    } else if has("coordinator") {
        "coordinator".into()
    } else {
        "other".into()
    }
}

impl ChildCpu {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let me = std::process::id();
        let handle = std::thread::spawn(move || {
            let tick = ticks_per_s();
            let mut seen: BTreeMap<u32, (String, f64)> = BTreeMap::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    for e in dir.flatten() {
                        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
                            continue;
                        };
                        if let Some((ppid, cpu)) = proc_stat(pid, tick) {
                            if ppid == me {
                                let entry = seen.entry(pid).or_insert_with(|| (kind_of(pid), 0.0));
                                entry.1 = entry.1.max(cpu);
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            seen
        });
        Self { stop, handle }
    }

    /// CPU seconds by kind.
    fn finish(self) -> BTreeMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.handle.join().unwrap_or_default();
        let mut by = BTreeMap::new();
        for (kind, cpu) in seen.into_values() {
            *by.entry(kind).or_insert(0.0) += cpu;
        }
        by
    }
}

/// One pair count: predicted and measured.
#[derive(Serialize)]
struct CheckRow {
    pairs: usize,
    predicted: BenchPrediction,
    measured_jobs: usize,
    measured_wall_s: f64,
    measured_jobs_per_s: f64,
    /// measured / predicted jobs/s
    ratio: f64,
    /// CPU seconds of every process of the run (start-up included), by kind; "client" is
    /// this process
    measured_cpu_s: BTreeMap<String, f64>,
    failed: usize,
}

#[derive(Serialize)]
struct CheckFile<'a> {
    link: &'a LinkCosts,
    job_overhead_ms: f64,
    kafka_cores: f64,
    max_factor: f64,
    machine_cores: usize,
    prompt_tokens: Vec<usize>,
    tokens: usize,
    inputs: &'a Inputs,
    rows: Vec<CheckRow>,
}

/// Runs `marill plan check`.
pub fn run(a: CheckArgs) -> Result<()> {
    if !(a.max_factor.is_finite() && a.max_factor >= 1.0) {
        bail!("--max-factor must be ≥ 1 (got {})", a.max_factor);
    }
    if a.tokens == 0 || a.sessions == 0 || a.pairs.is_empty() || a.pairs.contains(&0) {
        bail!("--tokens, --sessions and every --pairs must be ≥ 1");
    }
    if !a.tansu.exists() {
        bail!("{} absent: run scripts/fetch-tansu.sh", a.tansu.display());
    }
    let tiny = TinyModel::write(&a.model)?;
    let (model, tok) = load(&tiny.args)?;
    let n = a.sessions.min(PROMPTS.len());
    let prompts: Vec<usize> = PROMPTS[..n]
        .iter()
        .map(|p| tok.encode(p).map(|ids| ids.len()))
        .collect::<Result<_, _>>()?;
    let lo = *prompts.iter().min().context("no prompt")?;
    let hi = (*prompts.iter().max().context("no prompt")?).max(2 * lo);
    eprintln!("measuring the tiny model in process at prompt lengths {lo} and {hi}…");
    let inputs = measure(&tiny.args, &[lo, hi], a.tokens.max(4), false)?;
    let bundle = {
        // the larger half of an average bundle of the benchmark's steps
        let r = &inputs.runs[0];
        let (bytes, bundles) =
            std::iter::once(&r.prefill)
                .chain(&r.decode[..1])
                .fold((0, 0), |(b, n), s| {
                    (
                        b + s.dealer_bytes[0].max(s.dealer_bytes[1]),
                        n + s.dealer_bundles,
                    )
                });
        (bytes / bundles.max(1)).max(8) as usize
    };
    eprintln!("measuring the loopback links (zeromq, CURVE; a marill dealer process)…");
    let (round_s, cpu_per_round_s, bandwidth_bps) = measure_peer_link()?;
    let (dealer_request_s, cpu_per_dealer_request_s) = measure_dealer(2000, bundle)?;
    let link = LinkCosts {
        round_s,
        cpu_per_round_s,
        bandwidth_bps,
        dealer_request_s,
        cpu_per_dealer_request_s,
        bundle_bytes: bundle,
    };
    let machine = cores();
    let network = Target {
        load: Load::PerSecond(1.0),
        prompt_tokens: lo,
        output_tokens: a.tokens,
        rtt_s: link.round_s,
        bandwidth_bps: link.bandwidth_bps,
        dealer_rtt_s: link.dealer_request_s,
        dealer_ahead: false,
        job_overhead_s: a.job_overhead_ms / 1e3,
        cores_per_worker: machine as f64,
        dealer_cores: 1.0,
        utilization: 1.0,
    };
    let mut rows = Vec::new();
    for &pairs in &a.pairs {
        let predicted = predict_bench(
            &inputs,
            &network,
            &BenchShape {
                prompts: prompts.clone(),
                tokens: a.tokens,
                pairs,
                machine_cores: machine as f64,
                cpu_per_round_s: link.cpu_per_round_s,
                // each party fetches its own half of every bundle
                cpu_per_bundle_s: 2.0 * link.cpu_per_dealer_request_s,
                kafka_cores: a.kafka_cores,
            },
        )?;
        let sampler = ChildCpu::start();
        let self0 = process_cpu_s();
        let row = run_pairs(
            &a.tansu,
            &a.logs,
            &tiny.args,
            (&model, &tok),
            // the capacity model counts one session at a time per pair
            (pairs, 1),
            a.sessions,
            a.tokens,
        )?;
        let client_cpu = process_cpu_s() - self0;
        let mut measured_cpu_s = sampler.finish();
        measured_cpu_s.insert("client (this process)".into(), client_cpu);
        rows.push(CheckRow {
            pairs,
            measured_jobs: row.jobs,
            measured_wall_s: row.wall_s,
            measured_jobs_per_s: row.jobs_per_s,
            ratio: row.jobs_per_s / predicted.jobs_per_s,
            predicted,
            measured_cpu_s,
            failed: row.failed,
        });
    }
    print_report(&a, &inputs, &link, &prompts, machine, &rows);
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| r.ratio > a.max_factor || r.ratio < 1.0 / a.max_factor || r.failed > 0)
        .map(|r| format!("{} pair(s): measured/predicted {:.2}", r.pairs, r.ratio))
        .collect();
    if let Some(path) = &a.json {
        super::write_json_file(
            path,
            &CheckFile {
                link: &link,
                job_overhead_ms: a.job_overhead_ms,
                kafka_cores: a.kafka_cores,
                max_factor: a.max_factor,
                machine_cores: machine,
                prompt_tokens: prompts.clone(),
                tokens: a.tokens,
                inputs: &inputs,
                rows,
            },
        )?;
    }
    if !bad.is_empty() {
        bail!(
            "prediction off by more than {}× (or sessions failed): {}",
            a.max_factor,
            bad.join("; ")
        );
    }
    Ok(())
}

fn print_report(
    a: &CheckArgs,
    inputs: &Inputs,
    link: &LinkCosts,
    prompts: &[usize],
    machine: usize,
    rows: &[CheckRow],
) {
    let mean = prompts.iter().sum::<usize>() as f64 / prompts.len() as f64;
    let (pre, dec) = (&inputs.fits.prefill, &inputs.fits.decode);
    let c = mean + 1.0;
    println!(
        "Inputs (measured now): the tiny model in process — prefill at the mean prompt T = {mean:.1}: {:.0} rounds, {:.0} dealer bundles, {:.1} ms wall, {:.1} ms CPU per party, {:.1} ms dealer CPU; a decode step: {:.0} rounds, {:.0} bundles, {:.1} ms wall, {:.1} ms CPU per party, {:.1} ms dealer CPU. Loopback: a 2PC round {:.0} µs and {:.0} µs CPU (both ends, in process), {:.2} Gbit/s; a bundle fetch from a `marill dealer` process {:.0} µs and {:.0} µs CPU (both ends, {} B bundles, two parties at once).",
        pre.rounds.at(mean),
        pre.dealer_bundles.at(mean),
        1e3 * pre.wall_s.at(mean),
        1e3 * pre.cpu_s_per_party.at(mean),
        1e3 * pre.dealer_cpu_s.at(mean),
        dec.rounds.at(c),
        dec.dealer_bundles.at(c),
        1e3 * dec.wall_s.at(c),
        1e3 * dec.cpu_s_per_party.at(c),
        1e3 * dec.dealer_cpu_s.at(c),
        link.round_s * 1e6,
        link.cpu_per_round_s * 1e6,
        link.bandwidth_bps / 1e9,
        link.dealer_request_s * 1e6,
        link.cpu_per_dealer_request_s * 1e6,
        link.bundle_bytes,
    );
    println!(
        "Inputs (flags): Kafka round trip {} ms per job; the Kafka path keeps {} of the {machine} cores busy.\n",
        a.job_overhead_ms, a.kafka_cores
    );
    println!("| pairs | sessions × tokens | jobs | predicted jobs/s | measured jobs/s | measured / predicted | predicted bound | predicted wall s: pairs / cores | measured wall s | predicted CPU s (2PC, dealer, messaging) | measured CPU s (workers, dealers) | measured Kafka-path cores |");
    println!("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let p = &r.predicted;
        let bound = if p.wall_pairs_s >= p.wall_cores_s {
            "pairs (latency)"
        } else {
            "cores (CPU)"
        };
        let cpu = |kinds: &[&str]| -> f64 {
            r.measured_cpu_s
                .iter()
                .filter(|(k, _)| kinds.iter().any(|n| k.starts_with(n)))
                .map(|(_, v)| v)
                .sum()
        };
        println!(
            "| {} | {} × {} | {} | {:.2} | {:.2} | {:.2} | {bound} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.pairs,
            prompts.len(),
            a.tokens,
            r.measured_jobs,
            p.jobs_per_s,
            r.measured_jobs_per_s,
            r.ratio,
            p.wall_pairs_s,
            p.wall_cores_s,
            r.measured_wall_s,
            p.cpu_s,
            cpu(&["provider", "helper", "dealers"]),
            cpu(&["broker", "coordinator", "client"]) / r.measured_wall_s,
        );
    }
    println!("\nMeasured CPU seconds by process (start-up included; \"client\" is this process: the sessions' clients, their Kafka polling and plaintext comparison):\n");
    let kinds: Vec<&String> = rows
        .first()
        .map(|r| r.measured_cpu_s.keys().collect())
        .unwrap_or_default();
    println!(
        "| pairs | {} |",
        kinds
            .iter()
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---:|{}", "---:|".repeat(kinds.len()));
    for r in rows {
        println!(
            "| {} | {} |",
            r.pairs,
            kinds
                .iter()
                .map(|k| format!("{:.1}", r.measured_cpu_s.get(*k).copied().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    println!(
        "\nAccepted: measured / predicted within {}× either way. The model is a bottleneck bound (no queueing, no scheduling delay, no other load on the cores), so measured below predicted is the expected side.",
        a.max_factor
    );
}

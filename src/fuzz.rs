//! `marill fuzz`: a mutation fuzzer for every decoder that reads bytes from another party or
//! process — the typed messages of each link (`marill_proto::decode`), the Kafka envelopes (`Job`,
//! `JobResult`, `DeadLetter`), share payloads, sealed (HPKE) shares, correlation bundles as a
//! worker expands them, and settings files. Each target starts from valid encodings (seeds) and
//! applies seeded random mutations (bit flips, byte overwrites, truncation, extension, chunk
//! duplication, length fields set to extremes, random bytes); every input must come back as a
//! value or an error, never a panic. A panic is caught, counted and reported with its input's
//! length and the mutation's seed, and the command fails. The equivalent of a `cargo fuzz`
//! target per decoder (libFuzzer needs a nightly toolchain these machines do not have), run in
//! CI with a small budget and for millions of executions from the command line.

use anyhow::{bail, Result};
use clap::Args;
use marill_mpc::correlation::{Bundle, CorrRequest, CorrelationStore, Dealer};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Seed;
use marill_mpc::testing::run_pair;
use marill_mpc::PartyId;
use marill_proto::job::{DeadLetter, Job, JobResult, Outcome};
use marill_proto::{ClientMessage, ControlMessage, DealerMessage, PeerMessage};
use marill_transport::seal::seal;
use marill_transport::{Binding, SealKeyPair, Sealed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `marill fuzz`.
#[derive(Args)]
pub struct FuzzArgs {
    /// Mutated inputs per target.
    #[arg(long, default_value_t = 100_000)]
    iterations: u64,
    /// Seed of the mutations (a reported panic names the seed of its input).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only the targets whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What a decoder made of one input.
enum Verdict {
    Accepted,
    Rejected,
}

/// A decoder run on one input.
type Decoder = Box<dyn Fn(&[u8]) -> Verdict>;

/// A decoder under test: valid inputs to start from and the decoder itself.
struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    decode: Decoder,
    /// authenticated input: any accepted input other than a seed is a forgery (a finding)
    authenticated: bool,
}

fn verdict<T, E>(r: Result<T, E>) -> Verdict {
    match r {
        Ok(_) => Verdict::Accepted,
        Err(_) => Verdict::Rejected,
    }
}

/// One target's figures.
#[derive(Serialize)]
pub struct FuzzRow {
    target: &'static str,
    executions: u64,
    accepted: u64,
    rejected: u64,
    panics: u64,
    /// accepted inputs that differ from every valid one, on an authenticated decoder
    forged: u64,
    /// whether the decoder authenticates its input
    authenticated: bool,
    seconds: f64,
    execs_per_s: f64,
}

fn sealed(n: usize) -> Sealed {
    Sealed {
        enc: vec![7; 32],
        ct: vec![9; n + 16],
    }
}

fn sample_job() -> Job {
    Job {
        job_id: "job-1".into(),
        session: "session-1".into(),
        step: 0,
        last: false,
        model: "default".into(),
        n_public: 15,
        rows: 4,
        out_rows: 1,
        deadline_ms: 60_000,
        reply_key: [3; 32],
        shares: [sealed(64), sealed(64)],
    }
}

/// The correlation requests of a real secure suffix (prefill and decode of a tiny LoRA +
/// head-merged suffix), each kind once: what a worker asks of its dealer — at the suffix
/// crate's default bounds (SiLU fused) and at the model's (SiLU gated with coarse gates, exp
/// with inexact cells).
fn suffix_requests() -> Vec<CorrRequest> {
    let mut seen = std::collections::BTreeSet::new();
    [(64.0, 31.0), (128.0, 256.0)]
        .into_iter()
        .flat_map(|(score, act)| suffix_requests_at(score, act))
        .filter(|r| seen.insert(format!("{r:?}")))
        .collect()
}

/// The requests of [`suffix_requests`] at one pair of bounds.
fn suffix_requests_at(score_bound: f64, act_bound: f64) -> Vec<CorrRequest> {
    use marill_suffix::config::LoraConfig;
    use marill_suffix::secure::{prepare, SecureSuffix};
    use marill_suffix::{SuffixConfig, SuffixWeights, Target as T};
    let cfg = SuffixConfig {
        d_model: 16,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 4,
        d_ff: 32,
        n_layers: 1,
        first_layer: 0,
        head_merge: 2,
        lora: Some(LoraConfig {
            rank: 2,
            targets: T::ALL.to_vec(),
        }),
        private_base: false,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        max_seq: 8,
        score_bound,
        act_bound,
        norm_sum_bound: 1e6,
    };
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(&cfg, 5, false).expect("random weights");
    let prepared = prepare(&cfg, &w, fx, Seed::from_u64(6)).expect("prepare");
    let d = cfg.d_model;
    let x = vec![0u64; 3 * d];
    let run = run_pair(7, fx, |mut p| {
        let prep = prepared[p.id.index()].clone();
        let (cfg, x) = (cfg.clone(), x.clone());
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.expect("load");
            sfx.forward(&mut p, &x[..2 * d]).await.expect("prefill");
            sfx.forward(&mut p, &x[2 * d..]).await.expect("decode");
            ((), p)
        }
    });
    run.manifest
}

fn targets() -> Result<Vec<Target>> {
    let mut out = Vec::new();
    // typed link messages
    let requests = suffix_requests();
    let mut dealer = Dealer::new(Seed::from_u64(11));
    let bundles: Vec<(CorrRequest, [Bundle; 2])> = requests
        .iter()
        .map(|r| Ok((r.clone(), dealer.next_bundle(r)?)))
        .collect::<Result<_, marill_mpc::correlation::CorrelationError>>()?;
    let control = [
        ControlMessage::Probe,
        ControlMessage::Ready {
            first_layer: 15,
            d_model: 576,
            gamma_at_client: true,
            sessions: 4,
            draining: false,
            kv_room: u64::MAX,
            session_kv: 4096,
        },
        ControlMessage::SessionStep {
            session: "s".into(),
            lane: 3,
            job_id: "j".into(),
            step: 1,
            n_public: 15,
            reply_key: [2; 32],
            out_rows: 1,
            share: sealed(24),
        },
        ControlMessage::SessionOutput {
            session: "s".into(),
            job_id: "j".into(),
            step: 1,
            share: sealed(24),
            gamma_at_client: false,
            bytes_sent: 1,
            rounds: 1,
            dealer_bytes: 2,
        },
        ControlMessage::SessionFailed {
            session: "s".into(),
            job_id: "j".into(),
            step: 1,
            reason: "why".into(),
            refused: true,
            draining: false,
        },
        ControlMessage::SessionEnd {
            session: "s".into(),
            lane: 3,
        },
        ControlMessage::Error("boom".into()),
    ];
    let peer = [
        PeerMessage::Probe,
        PeerMessage::Ready { sessions: 4 },
        PeerMessage::Error("boom".into()),
    ];
    let mut dealer_link = vec![
        DealerMessage::SeedRequest { party: PartyId::P1 },
        DealerMessage::Seed { seed: [1; 16] },
        DealerMessage::Done { party: PartyId::P0 },
        DealerMessage::StepBegin {
            party: PartyId::P0,
            key: marill_mpc::correlation::StepKey {
                program: 3,
                rows: 4,
                pos: 0,
            },
            first_id: 17,
        },
        DealerMessage::StepStream {
            first_id: 17,
            count: 40,
        },
        DealerMessage::StepEnd { party: PartyId::P1 },
        DealerMessage::AheadStream {
            key: marill_mpc::correlation::StepKey {
                program: 3,
                rows: 1,
                pos: 4,
            },
            first_id: 57,
            count: 40,
        },
        DealerMessage::Error("boom".into()),
    ];
    for (i, (r, [b0, _])) in bundles.iter().enumerate().take(8) {
        dealer_link.push(DealerMessage::BundleRequest {
            party: PartyId::P0,
            id: i as u64,
            req: r.clone(),
        });
        dealer_link.push(DealerMessage::Bundle(b0.clone()));
    }
    let client = [
        ClientMessage::Hello { n_public: 15 },
        ClientMessage::Ready {
            first_layer: 15,
            d_model: 576,
            gamma_at_client: true,
        },
        ClientMessage::Step {
            out_rows: 1,
            x: vec![1, 2, 3],
        },
        ClientMessage::Output {
            y: vec![4; 5],
            bytes_sent: 9,
            rounds: 2,
            dealer_bytes: 3,
        },
        ClientMessage::End,
        ClientMessage::Error("boom".into()),
    ];
    // each link's decoder starts from its own messages (that another link's are refused by
    // their magic is `marill_proto`'s unit test)
    out.push(Target {
        name: "control-link message (decode::<ControlMessage>)",
        authenticated: false,
        seeds: control.iter().map(marill_proto::encode).collect(),
        decode: Box::new(|b| verdict(marill_proto::decode::<ControlMessage>(b))),
    });
    out.push(Target {
        name: "peer-link message (decode::<PeerMessage>)",
        authenticated: false,
        seeds: peer.iter().map(marill_proto::encode).collect(),
        decode: Box::new(|b| verdict(marill_proto::decode::<PeerMessage>(b))),
    });
    out.push(Target {
        name: "dealer-link message (decode::<DealerMessage>)",
        authenticated: false,
        seeds: dealer_link.iter().map(marill_proto::encode).collect(),
        decode: Box::new(|b| match marill_proto::decode::<DealerMessage>(b) {
            // a dealer validates what it is asked before generating
            Ok(DealerMessage::BundleRequest { req, .. }) => verdict(req.validate()),
            r => verdict(r),
        }),
    });
    out.push(Target {
        name: "client-link message (decode::<ClientMessage>)",
        authenticated: false,
        seeds: client.iter().map(marill_proto::encode).collect(),
        decode: Box::new(|b| verdict(marill_proto::decode::<ClientMessage>(b))),
    });
    // Kafka envelopes
    out.push(Target {
        name: "job (Job::decode)",
        authenticated: false,
        seeds: vec![sample_job().encode(), {
            let mut j = sample_job();
            (j.step, j.rows, j.last) = (3, 1, true);
            j.encode()
        }],
        decode: Box::new(|b| verdict(Job::decode(b))),
    });
    let result = |outcome| JobResult {
        job_id: "job-1".into(),
        session: "session-1".into(),
        step: 0,
        outcome,
    };
    out.push(Target {
        name: "job result (JobResult::decode)",
        authenticated: false,
        seeds: vec![
            result(Outcome::Failed {
                reason: "no".into(),
            })
            .encode(),
            result(Outcome::Closed).encode(),
        ],
        decode: Box::new(|b| verdict(JobResult::decode(b))),
    });
    out.push(Target {
        name: "dead letter (DeadLetter::decode)",
        authenticated: false,
        seeds: vec![DeadLetter {
            topic: "marill.jobs".into(),
            partition: 1,
            offset: 2,
            reason: "bad".into(),
            payload: vec![1, 2, 3],
        }
        .encode()],
        decode: Box::new(|b| verdict(DeadLetter::decode(b))),
    });
    out.push(Target {
        name: "share payload (StepShare::from_bytes)",
        authenticated: false,
        seeds: vec![marill_proto::job::StepShare {
            secret: [4; marill_proto::job::SESSION_SECRET_LEN],
            values: vec![1, 2, u64::MAX],
        }
        .to_bytes()],
        decode: Box::new(|b| verdict(marill_proto::job::StepShare::from_bytes(b))),
    });
    // sealed shares: the mutated bytes are enc ‖ ct; only the genuine ones may open
    let keys = SealKeyPair::generate();
    let binding = || Binding {
        job_id: "j",
        session: "s",
        step: 0,
        party: "provider",
        direction: "in",
        reply_key: &[8; 32],
    };
    let genuine = seal(&keys.public, &binding(), &[5u8; 48])?;
    out.push(Target {
        name: "sealed share (SealKeyPair::open)",
        seeds: vec![[genuine.enc.clone(), genuine.ct.clone()].concat()],
        authenticated: true,
        decode: Box::new(move |b| {
            let cut = b.len().min(32);
            let s = Sealed {
                enc: b[..cut].to_vec(),
                ct: b[cut..].to_vec(),
            };
            verdict(keys.open(&s, &binding()))
        }),
    });
    // correlation bundles as a worker expands them (the explicit bytes mutated)
    let seeds0 = dealer.party_seed(PartyId::P1);
    let reqs: Vec<(CorrRequest, u64)> = bundles
        .iter()
        .map(|(r, [_, b1])| (r.clone(), b1.id))
        .collect();
    out.push(Target {
        name: "correlation bundle (CorrelationStore::take)",
        authenticated: false,
        seeds: bundles
            .iter()
            .enumerate()
            .map(|(i, (_, [_, b1]))| {
                [(i as u32).to_le_bytes().to_vec(), b1.explicit.clone()].concat()
            })
            .collect(),
        decode: Box::new(move |b| {
            if b.len() < 4 {
                return Verdict::Rejected;
            }
            let i = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
            let Some((req, id)) = reqs.get(i % reqs.len()) else {
                return Verdict::Rejected;
            };
            let mut store = CorrelationStore::new(PartyId::P1, seeds0);
            store.resume_at(*id);
            let bundle = Bundle {
                id: *id,
                req: req.clone(),
                explicit: b[4..].to_vec(),
            };
            match store.insert(bundle) {
                Ok(()) => verdict(store.take(req)),
                Err(_) => Verdict::Rejected,
            }
        }),
    });
    // settings files (the worker's, through the `config` crate and the flags' parsers)
    out.push(Target {
        name: "settings file (marill worker --config)",
        authenticated: false,
        seeds: vec![
            b"role = \"provider\"\nkeys = \"/k\"\nmax_seq = 256\nlora_targets = [\"q\", \"v\"]\n"
                .to_vec(),
        ],
        decode: Box::new(settings_file),
    });
    Ok(out)
}

thread_local! {
    /// Where the settings target writes its input (removed at the end of a run).
    static SETTINGS_FILE: PathBuf = std::env::temp_dir().join(format!(
        "marill-fuzz-{}-{:?}.toml",
        std::process::id(),
        std::thread::current().id()
    ));
}

fn settings_file(b: &[u8]) -> Verdict {
    use clap::CommandFactory;
    SETTINGS_FILE.with(|f| {
        if std::fs::write(f, b).is_err() {
            return Verdict::Rejected;
        }
        let argv: Vec<std::ffi::OsString> = vec![
            "marill".into(),
            "worker".into(),
            "--config".into(),
            f.into(),
        ];
        verdict(crate::layered::apply(crate::Cli::command(), &argv))
    })
}

/// One mutation of `input` drawn from `rng`.
fn mutate(input: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        let n = b.len();
        match rng.gen_range(0..8) {
            0 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if n > 0 => {
                let i = rng.gen_range(0..n);
                b[i] = rng.gen();
            }
            2 if n > 0 => b.truncate(rng.gen_range(0..n)),
            3 => {
                let extra: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                let at = rng.gen_range(0..=n);
                b.splice(at..at, extra);
            }
            4 if n > 8 => {
                // a length or count field set to an extreme
                let i = rng.gen_range(0..n - 8);
                let v: u64 = match rng.gen_range(0..4) {
                    0 => u64::MAX,
                    1 => u32::MAX as u64,
                    2 => 1 << rng.gen_range(16..63),
                    _ => 0,
                };
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            5 if n > 2 => {
                let i = rng.gen_range(0..n - 1);
                let j = rng.gen_range(i + 1..=n.min(i + 64));
                let chunk = b[i..j].to_vec();
                b.splice(j..j, chunk);
            }
            6 if n > 2 => {
                let i = rng.gen_range(0..n - 1);
                let j = rng.gen_range(i + 1..=n);
                b.drain(i..j);
            }
            _ => {
                b = (0..rng.gen_range(0..128)).map(|_| rng.gen()).collect();
            }
        }
    }
    b
}

/// Runs `iterations` mutated inputs through `t`.
fn fuzz_target(t: &Target, iterations: u64, seed: u64) -> (FuzzRow, Vec<String>) {
    let start = Instant::now();
    let (mut accepted, mut rejected, mut panics, mut forged) = (0, 0, 0, 0);
    let mut reports = Vec::new();
    // the seeds themselves first: each valid input must be accepted
    for s in &t.seeds {
        if !matches!((t.decode)(s), Verdict::Accepted) {
            reports.push(format!("{}: a valid seed input was rejected", t.name));
        }
    }
    for i in 0..iterations {
        let input_seed = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i;
        let mut rng = StdRng::seed_from_u64(input_seed);
        let base = &t.seeds[rng.gen_range(0..t.seeds.len())];
        let input = mutate(base, &mut rng);
        match catch_unwind(AssertUnwindSafe(|| (t.decode)(&input))) {
            Ok(Verdict::Accepted) if t.authenticated && !t.seeds.contains(&input) => {
                accepted += 1;
                forged += 1;
                if reports.len() < 10 {
                    reports.push(format!(
                        "{}: a modified input was accepted (mutation seed {input_seed})",
                        t.name
                    ));
                }
            }
            Ok(Verdict::Accepted) => accepted += 1,
            Ok(Verdict::Rejected) => rejected += 1,
            Err(_) => {
                panics += 1;
                if reports.len() < 10 {
                    reports.push(format!(
                        "{}: panic on a {}-byte input (mutation seed {input_seed})",
                        t.name,
                        input.len()
                    ));
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    (
        FuzzRow {
            target: t.name,
            executions: iterations,
            accepted,
            rejected,
            panics,
            forged,
            authenticated: t.authenticated,
            seconds,
            execs_per_s: iterations as f64 / seconds.max(1e-9),
        },
        reports,
    )
}

/// Runs `marill fuzz`.
pub fn run(a: FuzzArgs) -> Result<()> {
    let targets = targets()?;
    // a caught panic is counted and reported below; its message would only flood stderr
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    let selected: Vec<&Target> = targets
        .iter()
        .filter(|t| a.only.as_deref().is_none_or(|o| t.name.contains(o)))
        .collect();
    if selected.is_empty() {
        bail!("no fuzz target matches {:?}", a.only);
    }
    let bar = indicatif::ProgressBar::new(selected.len() as u64);
    for t in selected {
        bar.set_message(t.name);
        let (row, r) = fuzz_target(t, a.iterations, a.seed);
        rows.push(row);
        reports.extend(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    std::panic::set_hook(default_hook);
    SETTINGS_FILE.with(|f| {
        let _ = std::fs::remove_file(f);
    });
    println!(
        "| decoder | executions | accepted | rejected with an error | panics | forgeries accepted | execs/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let forged = if r.authenticated {
            r.forged.to_string()
        } else {
            "—".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {forged} | {:.0} |",
            r.target, r.executions, r.accepted, r.rejected, r.panics, r.execs_per_s
        );
    }
    if let Some(p) = &a.json {
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(p, serde_json::to_string_pretty(&rows)?)?;
    }
    if !reports.is_empty() {
        for r in &reports {
            eprintln!("{r}");
        }
        bail!("{} finding(s)", reports.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_from_their_seed() {
        let base = b"0123456789abcdef".to_vec();
        let a = mutate(&base, &mut StdRng::seed_from_u64(42));
        let b = mutate(&base, &mut StdRng::seed_from_u64(42));
        assert_eq!(a, b);
        let differ = (0..100u64)
            .filter(|s| mutate(&base, &mut StdRng::seed_from_u64(*s)) != base)
            .count();
        assert!(differ > 90, "{differ}");
    }

    #[test]
    fn a_panicking_decoder_is_caught_and_reported() {
        let t = Target {
            name: "panics on a zero byte",
            authenticated: false,
            seeds: vec![vec![1, 2, 3]],
            decode: Box::new(|b| {
                assert!(!b.contains(&0), "zero");
                Verdict::Accepted
            }),
        };
        let (row, reports) = fuzz_target(&t, 200, 3);
        assert!(row.panics > 0 && !reports.is_empty(), "{reports:?}");
        assert_eq!(row.accepted + row.rejected + row.panics, 200);
    }
}

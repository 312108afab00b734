//! `marill bench suffix`: the Marill configurations side by side — bytes, rounds, dealer bytes,
//! time over loopback and projected LAN/WAN time — for prefill and per decoded token.
//!
//! Presets:
//! - `marill` (default): a model of `--layers` layers; configurations all-private full-rank
//!   suffix, LF (private full-rank second half), LF+LoRA, LF+LoRA+HM for each `--hm` factor.
//! - `synthetic`: d = 768, 12 heads, MLP 2048, 2 private layers, random weights; full-rank,
//!   LoRA r = 8, HM = 4, LoRA+HM = 4 (identical work for comparisons with other frameworks).
//!
//! Every knob is a flag; weights are seeded random of realistic scale. Errors are against the
//! f64 plaintext reference of the same suffix.

use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use marill_mpc::channel::CommStats;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::testing::{reconstruct, run_pair_stocked, share};
use marill_suffix::config::LoraConfig;
use marill_suffix::plain::{forward, PlainCache};
use marill_suffix::secure::{finish_at_client, prepare, SecureSuffix};
use marill_suffix::{SuffixConfig, SuffixWeights, Target};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Which set of configurations.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Preset {
    /// the paper's configurations on one model shape
    Marill,
    /// the fixed synthetic comparison shape (d 768, 12 heads, MLP 2048, 2 private layers)
    Synthetic,
}

/// Arguments of `marill bench suffix`.
#[derive(Args)]
pub struct SuffixArgs {
    /// Configuration set.
    #[arg(long, value_enum, default_value = "marill")]
    preset: Preset,
    /// Model width.
    #[arg(long, default_value_t = 576)]
    d: usize,
    /// Query heads.
    #[arg(long, default_value_t = 9)]
    heads: usize,
    /// Key/value heads.
    #[arg(long, default_value_t = 3)]
    kv_heads: usize,
    /// MLP width.
    #[arg(long, default_value_t = 1536)]
    mlp: usize,
    /// Total decoder layers of the model (the preset `marill` makes LF of them public).
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Fraction of layers frozen public (LF).
    #[arg(long, default_value_t = 0.5)]
    lf: f64,
    /// Public layers, overriding --lf.
    #[arg(long)]
    n_public: Option<usize>,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA targets, comma separated (q,k,v,o,gate,up,down).
    #[arg(long, default_value = "q,k,v,o,gate,up,down")]
    lora_targets: String,
    /// Head-merging factors to add (each must divide the head count).
    #[arg(long, value_delimiter = ',', default_value = "3,9")]
    hm: Vec<usize>,
    /// Run only the configurations whose name contains this text (e.g. `LoRA r=8+HM=4`, for a
    /// profile); the ratios are then to the first configuration run.
    #[arg(long)]
    only: Option<String>,
    /// Prefill lengths.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    tokens: Vec<usize>,
    /// Decoded tokens measured after the first prefill.
    #[arg(long, default_value_t = 4)]
    decode: usize,
    /// Longest sequence the suffix is built for (the workers' and `marill generate`'s default,
    /// so the benchmark runs their protocol; raised to the longest run when that is longer).
    #[arg(long, default_value_t = marill_model::suffix::DEFAULT_MAX_SEQ)]
    max_seq: usize,
    /// Decode the pre-generated material (seed expansion, key decoding) before the clock
    /// starts. Off by default: a worker decodes each bundle inside the step that takes it, and
    /// the timed step is the worker's.
    #[arg(long)]
    decode_ahead: bool,
    /// Seed of weights, inputs and dealer (a reproducible run); without it a seed is drawn from the
    /// OS CSPRNG and printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a PNG chart (prefill at the first length: LAN time, WAN time, online MB) here.
    #[arg(long)]
    png: Option<PathBuf>,
}

/// One row.
#[derive(Serialize, Clone, Debug)]
pub struct SuffixRow {
    config: String,
    phase: String,
    tokens: usize,
    private_layers: usize,
    online_bytes_per_party: u64,
    rounds: u64,
    dealer_bytes: u64,
    time_s: f64,
    /// the link the timed parties spoke over
    link: &'static str,
    /// the material's decoding ran inside the timed step
    decoding_in_step: bool,
    lan_s: f64,
    wan_s: f64,
    max_abs_err: f64,
}

/// The timed parties speak over an in-memory channel in this process: no network, no
/// encryption (the LAN and WAN columns project them).
const LINK: &str = "in-memory";

const LAN: (f64, f64) = (1e9, 0.5e-3);
const WAN: (f64, f64) = (100e6, 40e-3);

fn project(time: f64, bytes: u64, rounds: u64, (bw, rtt): (f64, f64)) -> f64 {
    time + rounds as f64 * rtt + bytes as f64 * 8.0 / bw
}

fn configs(a: &SuffixArgs) -> Result<Vec<(String, SuffixConfig)>> {
    let targets: Vec<Target> = a
        .lora_targets
        .split(',')
        .map(Target::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("{e}"))?;
    let lora = Some(LoraConfig {
        rank: a.lora_rank,
        targets,
    });
    let mut out = Vec::new();
    match a.preset {
        Preset::Synthetic => {
            let base = SuffixConfig::synthetic(2);
            let mut lora_cfg = base.clone();
            lora_cfg.private_base = false;
            lora_cfg.lora = lora.clone();
            let mut hm = base.clone();
            hm.head_merge = 4;
            let mut lora_hm = lora_cfg.clone();
            lora_hm.head_merge = 4;
            out.push(("full-rank".into(), base));
            out.push((format!("LoRA r={}", a.lora_rank), lora_cfg));
            out.push(("HM=4".into(), hm));
            out.push((format!("LoRA r={}+HM=4", a.lora_rank), lora_hm));
        }
        Preset::Marill => {
            let n_public = a
                .n_public
                .unwrap_or_else(|| (a.lf * a.layers as f64).round() as usize);
            if n_public >= a.layers {
                bail!(
                    "n_public {n_public} leaves no private layer of {}",
                    a.layers
                );
            }
            let mut base = SuffixConfig::synthetic(a.layers);
            base.d_model = a.d;
            base.n_heads = a.heads;
            base.n_kv_heads = a.kv_heads;
            base.head_dim = a.d / a.heads;
            base.d_ff = a.mlp;
            let mut lf = base.clone();
            lf.n_layers = a.layers - n_public;
            lf.first_layer = n_public;
            let mut lf_lora = lf.clone();
            lf_lora.private_base = false;
            lf_lora.lora = lora;
            out.push(("all-private full-rank".into(), base));
            out.push((format!("LF={}/{}", n_public, a.layers), lf));
            out.push((format!("LF+LoRA r={}", a.lora_rank), lf_lora.clone()));
            for &m in &a.hm {
                let mut c = lf_lora.clone();
                c.head_merge = m;
                out.push((format!("LF+LoRA+HM={m}"), c));
            }
        }
    }
    if let Some(only) = &a.only {
        out.retain(|(name, _)| name.contains(only.as_str()));
        if out.is_empty() {
            bail!("no configuration of this preset is named like {only:?}");
        }
    }
    for (name, c) in &mut out {
        c.max_seq = a
            .max_seq
            .max(a.tokens.iter().max().copied().unwrap_or(32) + a.decode + 1);
        c.validate().map_err(|e| anyhow!("{name}: {e}"))?;
    }
    Ok(out)
}

struct Measured {
    prefill: (CommStats, f64),
    decode: (CommStats, f64),
}

/// Runs one configuration for prefill of `t` tokens then `decode` tokens.
fn measure(
    cfg: &SuffixConfig,
    (t, decode): (usize, usize),
    seed: u64,
    decode_ahead: bool,
) -> Result<(Measured, u64, f64)> {
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(cfg, seed, false).map_err(|e| anyhow!("{e}"))?;
    let d = cfg.d_model;
    let total = t + decode;
    let mut prg = Prg::new(Seed::from_u64(seed), 9);
    let x: Vec<f64> = (0..total * d)
        .map(|_| (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        .collect();
    let mut cache = PlainCache::default();
    let mut want = forward(cfg, &w, &x[..t * d], 0, &mut cache);
    for s in 0..decode {
        let r = t + s;
        want.extend(forward(cfg, &w, &x[r * d..(r + 1) * d], r, &mut cache));
    }
    let xe = fx.encode_slice(&x).map_err(|e| anyhow!("{e}"))?;
    let (x0, x1) = share(&xe, &mut prg);
    let prepared =
        prepare(cfg, &w, fx, Seed::from_u64(seed ^ 0xabc)).map_err(|e| anyhow!("{e}"))?;
    let (run, _) = run_pair_stocked(seed, fx, decode_ahead, |mut p| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        let prep = prepared[p.id.index()].clone();
        let cfg = cfg.clone();
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.expect("load");
            let c0 = p.comm();
            let t0 = Instant::now();
            let mut out = sfx.forward(&mut p, &xs[..t * d]).await.expect("prefill");
            let pre = (p.comm().since(&c0), t0.elapsed().as_secs_f64());
            let c1 = p.comm();
            let t1 = Instant::now();
            for s in 0..decode {
                let r = t + s;
                out.extend(
                    sfx.forward(&mut p, &xs[r * d..(r + 1) * d])
                        .await
                        .expect("decode"),
                );
            }
            let dec = (p.comm().since(&c1), t1.elapsed().as_secs_f64());
            ((out, pre, dec), p)
        }
    });
    let mut got = fx.decode_slice(&reconstruct(&run.out[0].0, &run.out[1].0));
    finish_at_client(cfg, &w, &mut got);
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let m = Measured {
        prefill: (run.out[0].1 .0, run.out[0].1 .1.max(run.out[1].1 .1)),
        decode: (run.out[0].2 .0, run.out[0].2 .1.max(run.out[1].2 .1)),
    };
    let dealer = run.dealer.bytes_to[0] + run.dealer.bytes_to[1];
    Ok((m, dealer, err))
}

/// Runs the benchmark.
pub fn run(a: SuffixArgs) -> Result<()> {
    let cfgs = configs(&a)?;
    let seed = crate::secure::seeds::bench_seed(a.seed);
    let bar = ProgressBar::new((cfgs.len() * a.tokens.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let mut rows = Vec::new();
    for (name, cfg) in &cfgs {
        for (ti, &t) in a.tokens.iter().enumerate() {
            bar.set_message(format!("{name} T={t}"));
            let dec = if ti == 0 { a.decode } else { 0 };
            // The dealer prepares a whole run at once: the prefill's own dealer bytes come from
            // a run without decoding, the decoded tokens' from the difference.
            let (m, dealer, err) = measure(cfg, (t, 0), seed, a.decode_ahead)?;
            let (c, time) = m.prefill;
            rows.push(SuffixRow {
                config: name.clone(),
                phase: "prefill".into(),
                tokens: t,
                private_layers: cfg.n_layers,
                online_bytes_per_party: c.bytes_sent,
                rounds: c.rounds,
                dealer_bytes: dealer,
                time_s: time,
                link: LINK,
                decoding_in_step: !a.decode_ahead,
                lan_s: project(time, c.bytes_sent, c.rounds, LAN),
                wan_s: project(time, c.bytes_sent, c.rounds, WAN),
                max_abs_err: err,
            });
            if dec > 0 {
                let (m, dealer_all, err) = measure(cfg, (t, dec), seed, a.decode_ahead)?;
                let dealer_decode = dealer_all.saturating_sub(dealer) / dec as u64;
                let (c, time) = m.decode;
                let per = |v: u64| v / dec as u64;
                let tt = time / dec as f64;
                rows.push(SuffixRow {
                    config: name.clone(),
                    phase: "decode".into(),
                    tokens: 1,
                    private_layers: cfg.n_layers,
                    online_bytes_per_party: per(c.bytes_sent),
                    rounds: per(c.rounds),
                    dealer_bytes: dealer_decode,
                    time_s: tt,
                    link: LINK,
                    decoding_in_step: !a.decode_ahead,
                    lan_s: project(tt, per(c.bytes_sent), per(c.rounds), LAN),
                    wan_s: project(tt, per(c.bytes_sent), per(c.rounds), WAN),
                    max_abs_err: err,
                });
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    println!(
        "Timed: each step as a worker runs it, its material generated before the clock (the \
         dealer's stock) and {}; link: {LINK} (both parties in this process, no network or \
         encryption; LAN and WAN are projections).\n",
        if a.decode_ahead {
            "decoded before the clock (--decode-ahead)"
        } else {
            "decoded inside the step, as each bundle is taken (what a worker does today)"
        }
    );
    print_table(&rows);
    if let Some(path) = &a.png {
        let t0 = a.tokens.first().copied().unwrap_or(0);
        let pre: Vec<&SuffixRow> = rows
            .iter()
            .filter(|r| r.phase == "prefill" && r.tokens == t0)
            .collect();
        let cats: Vec<String> = pre.iter().map(|r| r.config.clone()).collect();
        super::chart::bars(
            path,
            &format!("Marill private suffix, prefill of {t0} tokens"),
            &cats,
            &[
                super::chart::Panel {
                    title: "LAN time (s)",
                    values: pre.iter().map(|r| r.lan_s).collect(),
                },
                super::chart::Panel {
                    title: "WAN time (s)",
                    values: pre.iter().map(|r| r.wan_s).collect(),
                },
                super::chart::Panel {
                    title: "online MB per party",
                    values: pre
                        .iter()
                        .map(|r| r.online_bytes_per_party as f64 / 1e6)
                        .collect(),
                },
            ],
        )?;
        eprintln!("wrote {}", path.display());
    }
    super::write_json(&a.json, &rows)
}

fn print_table(rows: &[SuffixRow]) {
    println!("| config | phase | T | private layers | online MB/party | rounds | dealer MB | loopback s | LAN s | WAN s | max abs err | time ratio (LAN) | comm ratio |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let base = rows
            .iter()
            .find(|b| b.phase == r.phase && b.tokens == r.tokens)
            .unwrap_or(r);
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {:.1} | {:.3} | {:.3} | {:.3} | {:.1e} | {:.2}× | {:.2}× |",
            r.config,
            r.phase,
            r.tokens,
            r.private_layers,
            r.online_bytes_per_party as f64 / 1e6,
            r.rounds,
            r.dealer_bytes as f64 / 1e6,
            r.time_s,
            r.lan_s,
            r.wan_s,
            r.max_abs_err,
            base.lan_s / r.lan_s,
            base.online_bytes_per_party as f64 / r.online_bytes_per_party.max(1) as f64,
        );
    }
    println!();
    println!("Ratios are to the first configuration of the same phase and length. The Marill paper reports 3.6–11.3× lower runtime and 2.4–6.9× lower communication than all-private full-rank fine-tuning.");
    println!("LAN: 1 Gb/s, 0.5 ms RTT; WAN: 100 Mb/s, 40 ms RTT (projection: loopback time + rounds·RTT + bytes/bandwidth).");
}

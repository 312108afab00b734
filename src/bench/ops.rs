//! `marill bench ops`: one row per protocol with its measured cost and error.
//!
//! Every op runs both parties on two threads over the in-memory channel, after an offline
//! phase in which the dealer generates the whole correlation manifest. Inputs are seeded and
//! spread over each op's declared range; errors are against an f64 reference.

use anyhow::{anyhow, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use marill_mpc::channel::{CommStats, MemoryTransport};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::ops::{
    cmp, lut, matmul, max, mul, nonlinear, norm, rotary, softmax, swiglu, trunc,
};
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::ring::RingTensor;
use marill_mpc::testing::{reconstruct, run_pair_offline, share};
use marill_mpc::Party;
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;

/// Arguments of `marill bench ops`.
#[derive(Args)]
pub struct OpsArgs {
    /// Elements per elementwise op.
    #[arg(long, default_value_t = 4096)]
    elements: usize,
    /// Matrix shape m,k,n for the matmul rows.
    #[arg(long, default_value = "32,768,768", value_parser = parse_shape)]
    matmul: (usize, usize, usize),
    /// Seed of inputs and dealer (a reproducible run); without it a seed is drawn from the
    /// OS CSPRNG and printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Only ops whose name contains this string.
    #[arg(long)]
    filter: Option<String>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize), String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|x| x.trim().parse::<usize>().map_err(|e| format!("{x}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [m, k, n] if *m > 0 && *k > 0 && *n > 0 => Ok((*m, *k, *n)),
        _ => Err(format!("expected m,k,n with positive values, got {s:?}")),
    }
}

/// One row of the table.
#[derive(Serialize, Clone, Debug)]
pub struct OpRow {
    op: String,
    elements: usize,
    rounds: u64,
    online_bytes_per_party: f64,
    online_bytes_per_party_total: u64,
    dealer_bytes: f64,
    dealer_bytes_total: u64,
    max_abs_err: f64,
    time_s: f64,
    offline_s: f64,
}

type P = Party<MemoryTransport>;

/// Runs one op: `g` gets the party and its input share and returns output shares plus the
/// communication to attribute to the op (usually `p.comm()`).
#[allow(clippy::too_many_arguments)]
fn measure<G, Fut>(
    op: &str,
    seed: u64,
    fx: FixedPoint,
    x: &[u64],
    want: &[f64],
    out_frac: u32,
    g: G,
) -> OpRow
where
    G: Fn(P, Vec<u64>) -> Fut + Sync,
    Fut: Future<Output = ((Vec<u64>, CommStats), P)>,
{
    let mut prg = Prg::new(Seed::from_u64(seed), 1234);
    let (x0, x1) = share(x, &mut prg);
    let (run, times) = run_pair_offline(seed, fx, |p: P| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        g(p, xs)
    });
    let got = reconstruct(&run.out[0].0, &run.out[1].0);
    let scale = (1u64 << out_frac) as f64;
    let max_abs_err = got
        .iter()
        .zip(want)
        .map(|(g, w)| ((*g as i64) as f64 / scale - w).abs())
        .fold(0.0, f64::max);
    let comm = run.out[0].1;
    let elements = want.len();
    let dealer_total = run.dealer.bytes_to[0] + run.dealer.bytes_to[1];
    OpRow {
        op: op.to_string(),
        elements,
        rounds: comm.rounds,
        online_bytes_per_party: comm.bytes_sent as f64 / elements as f64,
        online_bytes_per_party_total: comm.bytes_sent,
        dealer_bytes: dealer_total as f64 / elements as f64,
        dealer_bytes_total: dealer_total,
        max_abs_err,
        time_s: times.online_s,
        offline_s: times.offline_s,
    }
}

fn uniform(prg: &mut Prg, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|_| lo + (hi - lo) * (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

fn enc(fx: FixedPoint, v: &[f64]) -> Result<Vec<u64>> {
    fx.encode_slice(v).map_err(|e| anyhow!("{e}"))
}

/// Runs the benchmark.
pub fn run(args: OpsArgs) -> Result<()> {
    let fx = FixedPoint::default();
    let f = fx.frac_bits();
    let n = args.elements.max(2);
    let seed = crate::secure::seeds::bench_seed(args.seed);
    let mut prg = Prg::new(Seed::from_u64(seed), 77);
    let names = [
        "mul",
        "matmul",
        "matmul_weight",
        "trunc",
        "drelu",
        "relu",
        "max_row32",
        "argmax_row32",
        "exp",
        "reciprocal",
        "rsqrt",
        "silu",
        "silu_ungated",
        "gelu",
        "swiglu",
        "softmax_row128_causal",
        "rmsnorm_d768",
        "layernorm_d768",
        "rotary",
    ];
    let selected: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| args.filter.as_deref().is_none_or(|f| n.contains(f)))
        .collect();
    let bar = ProgressBar::new(selected.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .map_err(|e| anyhow!("{e}"))?,
    );
    let mut rows = Vec::new();
    for name in selected {
        bar.set_message(name.to_string());
        let row = match name {
            "mul" => {
                // inputs on the fixed-point grid, so the error is the protocol's alone
                let q = |v: f64| (v * fx.scale()).round() / fx.scale();
                let a: Vec<f64> = uniform(&mut prg, n, -100.0, 100.0)
                    .into_iter()
                    .map(q)
                    .collect();
                let b: Vec<f64> = uniform(&mut prg, n, -100.0, 100.0)
                    .into_iter()
                    .map(q)
                    .collect();
                let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
                let be = enc(fx, &b)?;
                let (b0, b1) = share(&be, &mut prg);
                measure(
                    "mul (fixed point, Beaver + trunc)",
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| {
                        let y = if p.is_p0() { b0.clone() } else { b1.clone() };
                        async move {
                            let z = mul::mul(&mut p, &x, &y).await.expect("mul");
                            let z = trunc::trunc(&mut p, &z, f).await.expect("trunc");
                            ((z, p.comm()), p)
                        }
                    },
                )
            }
            "matmul" | "matmul_weight" => {
                let (m, k, nn) = args.matmul;
                let q = |v: f64| (v * fx.scale()).round() / fx.scale();
                let a: Vec<f64> = uniform(&mut prg, m * k, -2.0, 2.0)
                    .into_iter()
                    .map(q)
                    .collect();
                let w: Vec<f64> = uniform(&mut prg, k * nn, -0.1, 0.1)
                    .into_iter()
                    .map(q)
                    .collect();
                let want: Vec<f64> = (0..m * nn)
                    .map(|ij| {
                        let (i, j) = (ij / nn, ij % nn);
                        (0..k).map(|l| a[i * k + l] * w[l * nn + j]).sum()
                    })
                    .collect();
                let we = enc(fx, &w)?;
                let (w0, w1) = share(&we, &mut prg);
                let weight = name == "matmul_weight";
                let label = if weight {
                    format!("matmul_weight {m}x{k}x{nn} (private W masked once; per use)")
                } else {
                    format!("matmul {m}x{k}x{nn} (Beaver matrix triple)")
                };
                measure(&label, seed, fx, &enc(fx, &a)?, &want, f, |mut p, x| {
                    let ws = if p.is_p0() { w0.clone() } else { w1.clone() };
                    async move {
                        let x = RingTensor::from_vec(&[m, k], x).expect("shape");
                        let ws = RingTensor::from_vec(&[k, nn], ws).expect("shape");
                        let (z, start) = if weight {
                            let mw = matmul::mask_weight(&mut p, 1, &ws).await.expect("mask");
                            let start = p.comm();
                            (
                                matmul::matmul_weight(&mut p, &x, &mw).await.expect("mm"),
                                start,
                            )
                        } else {
                            (
                                matmul::matmul(&mut p, &x, &ws).await.expect("mm"),
                                CommStats::default(),
                            )
                        };
                        let z = trunc::trunc(&mut p, z.data(), f).await.expect("trunc");
                        ((z, p.comm().since(&start)), p)
                    }
                })
            }
            "trunc" => {
                let a = uniform(&mut prg, n, -1e6, 1e6);
                let want: Vec<f64> = a.iter().map(|v| v / fx.scale()).collect();
                measure(
                    "trunc (by f)",
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let z = trunc::trunc(&mut p, &x, f).await.expect("trunc");
                        ((z, p.comm()), p)
                    },
                )
            }
            "drelu" | "relu" => {
                let a = uniform(&mut prg, n, -1000.0, 1000.0);
                let is_relu = name == "relu";
                let want: Vec<f64> = a
                    .iter()
                    .map(|v| {
                        if is_relu {
                            v.max(0.0)
                        } else if *v >= 0.0 {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let of = if is_relu { f } else { 0 };
                let label = if is_relu {
                    "relu"
                } else {
                    "drelu (sign / comparison)"
                };
                measure(
                    label,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    of,
                    |mut p, x| async move {
                        let z = if is_relu {
                            cmp::relu(&mut p, &x, cmp::DEFAULT_CMP_BITS).await
                        } else {
                            cmp::drelu(&mut p, &x, cmp::DEFAULT_CMP_BITS).await
                        }
                        .expect("cmp");
                        ((z, p.comm()), p)
                    },
                )
            }
            "max_row32" | "argmax_row32" => {
                let cols = 32;
                let rows = (n / cols).max(1);
                let a = uniform(&mut prg, rows * cols, -100.0, 100.0);
                let arg = name == "argmax_row32";
                let want: Vec<f64> = a
                    .chunks(cols)
                    .map(|r| {
                        let (i, m) = r.iter().enumerate().fold((0, f64::MIN), |acc, (i, v)| {
                            if *v > acc.1 {
                                (i, *v)
                            } else {
                                acc
                            }
                        });
                        if arg {
                            i as f64
                        } else {
                            m
                        }
                    })
                    .collect();
                let of = if arg { 0 } else { f };
                measure(
                    name,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    of,
                    |mut p, x| async move {
                        let (m, i) = max::max_rows(&mut p, &x, rows, cols, 40, arg)
                            .await
                            .expect("max");
                        let out = if arg { i.expect("index") } else { m };
                        ((out, p.comm()), p)
                    },
                )
            }
            "exp" | "reciprocal" | "rsqrt" | "silu" | "silu_ungated" | "gelu" => {
                let (table, lo, hi) = match name {
                    "exp" => (nonlinear::exp_table(fx, f, -64.0)?, -20.0, 0.0),
                    "reciprocal" => (
                        nonlinear::reciprocal_table(fx, f, 1.0, 4096.0, 1.0)?,
                        1.0,
                        4096.0,
                    ),
                    "rsqrt" => (
                        nonlinear::rsqrt_table(fx, f, 1.0 / 64.0, 65536.0, 0.0, 1.0)?,
                        1.0 / 64.0,
                        65536.0,
                    ),
                    "silu" => (nonlinear::silu_table(fx, 64.0)?, -20.0, 20.0),
                    "silu_ungated" => (nonlinear::silu_table(fx, 31.0)?, -31.0, 31.0),
                    _ => (nonlinear::gelu_table(fx, 64.0)?, -10.0, 10.0),
                };
                let a = uniform(&mut prg, n, lo, hi);
                let func = table.function().clone();
                let want: Vec<f64> = a.iter().map(|v| func(*v)).collect();
                let label = format!("{name} ({} segment(s))", table.segments.len());
                let t = &table;
                measure(
                    &label,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let z = lut::eval(&mut p, t, &x).await.expect("lut");
                        ((z, p.comm()), p)
                    },
                )
            }
            "swiglu" => {
                // SiLU(gate)·up from the untruncated gate|up projection (scale 2f): one
                // opening truncates both, SiLU by the signed bit-DPF lookup
                let table = nonlinear::silu_table(fx, 31.0)?;
                let g = uniform(&mut prg, n, -31.0, 31.0);
                let u = uniform(&mut prg, n, -8.0, 8.0);
                let func = table.function().clone();
                let want: Vec<f64> = g.iter().zip(&u).map(|(a, b)| func(*a) * b).collect();
                let x: Vec<f64> = g.iter().chain(&u).copied().collect();
                let t = &table;
                measure(
                    "swiglu: SiLU(gate)·up, signed lookup (ungated)",
                    seed,
                    fx,
                    &enc(fx, &x)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let wide: Vec<u64> = x.iter().map(|v| v << f).collect();
                        let (gs, us) = wide.split_at(wide.len() / 2);
                        let z = swiglu::silu_mul(&mut p, t, gs, us, f)
                            .await
                            .expect("swiglu");
                        ((z, p.comm()), p)
                    },
                )
            }
            "softmax_row128_causal" => {
                let cols = 128;
                let rows = (n / cols).max(1);
                let a = uniform(&mut prg, rows * cols, -20.0, 20.0);
                let off = cols - rows.min(cols);
                let mut want = vec![0.0; rows * cols];
                for i in 0..rows {
                    let seen = (off + i + 1).min(cols);
                    let r = &a[i * cols..i * cols + seen];
                    let mx = r.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = r.iter().map(|v| (v - mx).exp()).sum();
                    for j in 0..seen {
                        want[i * cols + j] = (r[j] - mx).exp() / z;
                    }
                }
                let sm = softmax::Softmax::new(fx, 64.0, cols)?;
                let sm = &sm;
                measure(
                    name,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let z = softmax::softmax_rows(&mut p, sm, &x, rows, cols, Some(off))
                            .await
                            .expect("softmax");
                        ((z, p.comm()), p)
                    },
                )
            }
            "rmsnorm_d768" | "layernorm_d768" => {
                let d = 768;
                let rows = (n / d).max(1);
                let a = uniform(&mut prg, rows * d, -4.0, 4.0);
                let kind = if name.starts_with("rms") {
                    norm::NormKind::Rms
                } else {
                    norm::NormKind::Layer
                };
                let mut want = vec![0.0; rows * d];
                for r in 0..rows {
                    let row = &a[r * d..(r + 1) * d];
                    let mean = if kind == norm::NormKind::Layer {
                        row.iter().sum::<f64>() / d as f64
                    } else {
                        0.0
                    };
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                    for j in 0..d {
                        want[r * d + j] = (row[j] - mean) / (var + 1e-5).sqrt();
                    }
                }
                let nm = norm::Norm::new(fx, kind, d, 1e-5, 1e7)?;
                let nm = &nm;
                measure(
                    name,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let z = norm::norm_rows(&mut p, nm, &x, None, None)
                            .await
                            .expect("norm");
                        ((z, p.comm()), p)
                    },
                )
            }
            "rotary" => {
                let (hd, width) = (64, 768);
                let rows = (n / width).max(1);
                let a = uniform(&mut prg, rows * width, -4.0, 4.0);
                let ang: Vec<f64> = (0..rows * hd / 2)
                    .map(|k| {
                        (k / (hd / 2)) as f64
                            / 10000f64.powf((k % (hd / 2)) as f64 * 2.0 / hd as f64)
                    })
                    .collect();
                let mut want = vec![0.0; a.len()];
                for r in 0..rows {
                    for h in 0..width / hd {
                        for i in 0..hd / 2 {
                            let base = r * width + h * hd;
                            let t = ang[r * hd / 2 + i];
                            let (x1, x2) = (a[base + i], a[base + i + hd / 2]);
                            want[base + i] = x1 * t.cos() - x2 * t.sin();
                            want[base + i + hd / 2] = x1 * t.sin() + x2 * t.cos();
                        }
                    }
                }
                let cos = enc(fx, &ang.iter().map(|t| t.cos()).collect::<Vec<_>>())?;
                let sin = enc(fx, &ang.iter().map(|t| t.sin()).collect::<Vec<_>>())?;
                let (c, s) = (&cos, &sin);
                measure(
                    name,
                    seed,
                    fx,
                    &enc(fx, &a)?,
                    &want,
                    f,
                    |mut p, x| async move {
                        let z = rotary::rotary(
                            &mut p,
                            &x,
                            rows,
                            width,
                            hd,
                            c,
                            s,
                            rotary::RotaryLayout::Half,
                        )
                        .await
                        .expect("rotary");
                        ((z, p.comm()), p)
                    },
                )
            }
            other => return Err(anyhow!("unknown op {other}")),
        };
        rows.push(row);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print_table(&rows);
    super::write_json(&args.json, &rows)
}

fn print_table(rows: &[OpRow]) {
    println!("| op | elements | rounds | online B/elt/party | dealer B/elt | max abs err | online s | offline s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.2e} | {:.4} | {:.4} |",
            r.op,
            r.elements,
            r.rounds,
            r.online_bytes_per_party,
            r.dealer_bytes,
            r.max_abs_err,
            r.time_s,
            r.offline_s
        );
    }
}

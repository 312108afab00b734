//! RMSNorm and LayerNorm over the rows of a shared matrix.
//!
//! RMSNorm: `y = x·γ / sqrt(mean(x²) + eps)`. Round 1: square pairs for `x²` batched with the
//! truncation of `x·γ` (public γ, local product); round 2 truncates the squares back to scale f
//! when the declared bound on the row sums needs it (LLM residual streams carry "massive
//! activations" — |x| ≈ 2·10^4 in SmolLM2 — whose squares summed at scale 2f would leave no
//! headroom in the ring; below 2^61 at scale 2f the sums are read untruncated and this round
//! disappears); the rsqrt lookup reads the row sums with the `1/d` folded into its table:
//! `sqrt(d)/sqrt(Σx² + d·eps)` (3 rounds, output left at scale `f + t`); one Beaver product (1)
//! and a truncation (1).
//! Without γ (callers that fold γ into the next projection), a norm triple lets one mask serve
//! the squares and the product with the per-row rsqrt: the input is opened once (8 bytes/elt)
//! and the rsqrt once per row instead of 24 bytes/elt for square + Beaver product.
//! Rounds: 7 (6 without the square truncation). LayerNorm first computes the mean with one
//! truncation (batched with `x·γ`), then proceeds like RMSNorm on `x − mean`, adding β: 8 (7).
//! Declared range: `Σ (x − mean)²` per row in `[2^-10, sum_bound]` (checked securely by the rsqrt
//! lookup), and every `|x| < 2^(31 − f)` so that its square at scale 2f stays below 2^62
//! (2^15 = 32768 at f = 16; SmolLM2's largest activation is 22,552) — not checked securely.
//! Error: rsqrt table ≤ 1e-4 relative plus a few ulps (tests assert ≤ 1e-3·|y| + 1e-3).

use crate::channel::Transport;
use crate::correlation::CorrRequest;
use crate::error::{MpcError, Result};
use crate::fixed::FixedPoint;
use crate::ops::lut::{eval_untruncated, PiecewiseLinear};
use crate::ops::mul::{mul, SquarePending};
use crate::ops::nonlinear::rsqrt_table;
use crate::ops::open::open;
use crate::ops::open::open_groups;
use crate::ops::trunc::{trunc, MaskPending};
use crate::party::Party;

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// root-mean-square norm (Llama)
    Rms,
    /// layer norm (GPT-2)
    Layer,
}

/// Precomputed rsqrt table for rows of width `d`.
#[derive(Clone, Debug)]
pub struct Norm {
    kind: NormKind,
    d: usize,
    rsqrt: PiecewiseLinear,
    fx: FixedPoint,
    /// squares are truncated before summing (row sums at scale 2f could reach 2^62)
    truncate_squares: bool,
}

impl Norm {
    /// A norm over rows of `d` with `eps`, for row sums of squares up to `sum_bound`.
    pub fn new(fx: FixedPoint, kind: NormKind, d: usize, eps: f64, sum_bound: f64) -> Result<Self> {
        if d == 0 || sum_bound.is_nan() || sum_bound <= 1.0 {
            return Err(MpcError::InvalidParameter {
                op: "norm",
                detail: format!("d={d}, sum_bound={sum_bound}"),
            });
        }
        let f = fx.frac_bits();
        // Row sums at scale 2f stay below 2^61 for sums up to the bound: read them untruncated.
        let truncate_squares = sum_bound * 2f64.powi(2 * f as i32) >= 2f64.powi(61);
        let in_frac = if truncate_squares { f } else { 2 * f };
        let rsqrt = rsqrt_table(
            fx,
            in_frac,
            2f64.powi(-10),
            sum_bound,
            d as f64 * eps,
            (d as f64).sqrt(),
        )?;
        Ok(Self {
            kind,
            d,
            rsqrt,
            fx,
            truncate_squares,
        })
    }
}

/// Normalises the rows of `x` (rows × d); `gamma`/`beta` are public, encoded at scale f.
pub async fn norm_rows<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    x: &[u64],
    gamma: Option<&[u64]>,
    beta: Option<&[u64]>,
) -> Result<Vec<u64>> {
    let (y, shift) = norm_rows_untruncated(p, nm, x, gamma, beta).await?;
    trunc(p, &y, shift).await
}

/// [`norm_rows`] without its last round: returns the result at scale `f + shift` and `shift`,
/// for callers that fuse the truncation into their next opening (one round less).
pub async fn norm_rows_untruncated<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    x: &[u64],
    gamma: Option<&[u64]>,
    beta: Option<&[u64]>,
) -> Result<(Vec<u64>, u32)> {
    let d = nm.d;
    if !x.len().is_multiple_of(d)
        || gamma.is_some_and(|g| g.len() != d)
        || beta.is_some_and(|b| b.len() != d)
    {
        return Err(MpcError::Shape {
            op: "norm",
            detail: format!("{} elements for rows of {d}", x.len()),
        });
    }
    let rows = x.len() / d;
    let f = nm.fx.frac_bits();
    // centred input
    let xc: Vec<u64> = match nm.kind {
        NormKind::Rms => x.to_vec(),
        NormKind::Layer => {
            let inv_d = (nm.fx.scale() / d as f64).round() as u64;
            let sums: Vec<u64> = x
                .chunks(d)
                .map(|r| {
                    r.iter()
                        .fold(0u64, |a, b| a.wrapping_add(*b))
                        .wrapping_mul(inv_d)
                })
                .collect();
            let mean = trunc(p, &sums, f).await?;
            x.iter()
                .enumerate()
                .map(|(k, v)| v.wrapping_sub(mean[k / d]))
                .collect()
        }
    };
    if gamma.is_none() {
        return norm_fused(p, nm, xc, beta, rows).await;
    }
    // round: x² and trunc(x·γ) together
    let sq = SquarePending::begin(p, &xc)?;
    let xg: Option<(MaskPending, Vec<u64>)> = match gamma {
        Some(g) => {
            let prod: Vec<u64> = xc
                .iter()
                .enumerate()
                .map(|(k, v)| v.wrapping_mul(g[k % d]))
                .collect();
            Some((MaskPending::begin(p, &prod, &[f], 0, &[])?, prod))
        }
        None => None,
    };
    let mut groups: Vec<(&[u64], u32)> = vec![(sq.message(), 64)];
    if let Some((m, _)) = &xg {
        groups.push((m.message(), 64));
    }
    let opened = open_groups(p, &groups).await?;
    let squares = sq.finish(&opened[0]);
    let squares = if nm.truncate_squares {
        trunc(p, &squares, f).await?
    } else {
        squares
    };
    let scaled = match xg {
        Some((m, _)) => m.finish(opened[1].clone()).trunc(f)?,
        None => xc,
    };
    let sums: Vec<u64> = squares
        .chunks(d)
        .map(|r| r.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        .collect();
    let inv = eval_untruncated(p, &nm.rsqrt, &sums).await?; // scale u = out_frac + t
    let inv_b: Vec<u64> = (0..rows * d).map(|k| inv[k / d]).collect();
    // |x·inv| ≤ sqrt(d) in reals, so the product at scale f + u stays far below 2^62
    let mut y = mul(p, &scaled, &inv_b).await?;
    let shift = nm.rsqrt.untruncated_frac();
    if let Some(b) = beta {
        if p.is_p0() {
            for (k, v) in y.iter_mut().enumerate() {
                *v = v.wrapping_add(b[k % d] << shift);
            }
        }
    }
    Ok((y, shift))
}

/// The norm without γ (folded into the next projection by the caller): one mask serves the
/// squares and the product with the per-row rsqrt, so `x` is opened once (8 bytes/elt) and the
/// rsqrt once per row.
async fn norm_fused<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    xc: Vec<u64>,
    beta: Option<&[u64]>,
    rows: usize,
) -> Result<(Vec<u64>, u32)> {
    let (d, f) = (nm.d, nm.fx.frac_bits());
    let p0 = p.is_p0();
    let t = p.take_norm_triple(CorrRequest::NormTriple { rows, d })?;
    let msg: Vec<u64> = xc
        .iter()
        .zip(&t.a)
        .map(|(x, a)| x.wrapping_sub(*a))
        .collect();
    let e = open(p, &msg, 64).await?;
    // x² = e² + 2·e·a + a²
    let squares: Vec<u64> = (0..xc.len())
        .map(|i| {
            let mut v = t.a2[i].wrapping_add(2u64.wrapping_mul(e[i]).wrapping_mul(t.a[i]));
            if p0 {
                v = v.wrapping_add(e[i].wrapping_mul(e[i]));
            }
            v
        })
        .collect();
    let squares = if nm.truncate_squares {
        trunc(p, &squares, f).await?
    } else {
        squares
    };
    let sums: Vec<u64> = squares
        .chunks(d)
        .map(|r| r.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        .collect();
    let inv = eval_untruncated(p, &nm.rsqrt, &sums).await?; // scale u = out_frac + t
    let msg: Vec<u64> = inv
        .iter()
        .zip(&t.b)
        .map(|(v, b)| v.wrapping_sub(*b))
        .collect();
    let g = open(p, &msg, 64).await?;
    // x·inv = (e + a)(g + b) = e·g + e·b + a·g + a·b, per row
    let shift = nm.rsqrt.untruncated_frac();
    let y: Vec<u64> = (0..xc.len())
        .map(|i| {
            let r = i / d;
            let mut v = t.c[i]
                .wrapping_add(e[i].wrapping_mul(t.b[r]))
                .wrapping_add(t.a[i].wrapping_mul(g[r]));
            if p0 {
                v = v.wrapping_add(e[i].wrapping_mul(g[r]));
                if let Some(b) = beta {
                    v = v.wrapping_add(b[i % d] << shift);
                }
            }
            v
        })
        .collect();
    Ok((y, shift))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    fn check(kind: NormKind, sum_bound: f64) {
        let fx = FixedPoint::default();
        let (rows, d) = (6, 64);
        let nm = Norm::new(fx, kind, d, 1e-5, sum_bound).unwrap();
        let trunc_round = nm.truncate_squares as u64;
        assert_eq!(nm.truncate_squares, sum_bound > 1e9);
        let mut prg = Prg::new(Seed::from_u64(51), 0);
        let vals: Vec<f64> = (0..rows * d)
            .map(|k| ((prg.next_u64() % 20_000) as f64 / 1000.0 - 10.0) * (1 + k / d) as f64 * 0.3)
            .collect();
        let gam: Vec<f64> = (0..d).map(|j| 0.5 + j as f64 / d as f64).collect();
        let bet: Vec<f64> = (0..d).map(|j| j as f64 / 100.0).collect();
        let x = fx.encode_slice(&vals).unwrap();
        let g = fx.encode_slice(&gam).unwrap();
        let b = fx.encode_slice(&bet).unwrap();
        let (x0, x1) = share(&x, &mut prg);
        let nm2 = &nm;
        let (g2, b2) = (&g, &b);
        let run = run_pair(52, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move {
                let beta = if kind == NormKind::Layer {
                    Some(b2.as_slice())
                } else {
                    None
                };
                (norm_rows(&mut p, nm2, &x, Some(g2), beta).await.unwrap(), p)
            }
        });
        let got = fx.decode_slice(&reconstruct(&run.out[0], &run.out[1]));
        for r in 0..rows {
            let row = &vals[r * d..(r + 1) * d];
            let mean = if kind == NormKind::Layer {
                row.iter().sum::<f64>() / d as f64
            } else {
                0.0
            };
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for j in 0..d {
                let mut want = (row[j] - mean) / (var + 1e-5).sqrt() * gam[j];
                if kind == NormKind::Layer {
                    want += bet[j];
                }
                let err = (got[r * d + j] - want).abs();
                assert!(
                    err < 1e-3 * want.abs() + 1e-3,
                    "{kind:?} row {r} col {j}: {} vs {want}",
                    got[r * d + j]
                );
            }
        }
        let expected_rounds = 6 + trunc_round + if kind == NormKind::Layer { 1 } else { 0 };
        assert_eq!(run.comm[0].rounds, expected_rounds);
    }

    /// Without γ (folded by the caller) the input is opened once: 8 bytes per element plus one
    /// value per row, and the same result.
    #[test]
    fn norm_without_gamma_opens_the_input_once() {
        let fx = FixedPoint::default();
        let (rows, d) = (5, 48);
        let nm = Norm::new(fx, NormKind::Rms, d, 1e-5, 1e6).unwrap();
        let mut prg = Prg::new(Seed::from_u64(61), 0);
        let vals: Vec<f64> = (0..rows * d)
            .map(|_| (prg.next_u64() % 20_000) as f64 / 1000.0 - 10.0)
            .collect();
        let (x0, x1) = share(&fx.encode_slice(&vals).unwrap(), &mut prg);
        let nm2 = &nm;
        let run = run_pair(62, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move {
                let before = p.comm();
                let y = norm_rows(&mut p, nm2, &x, None, None).await.unwrap();
                ((y, p.comm().since(&before)), p)
            }
        });
        let got = fx.decode_slice(&reconstruct(&run.out[0].0, &run.out[1].0));
        for r in 0..rows {
            let row = &vals[r * d..(r + 1) * d];
            let rms = (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
            for j in 0..d {
                let want = row[j] / rms;
                let err = (got[r * d + j] - want).abs();
                assert!(err < 1e-3 * want.abs() + 1e-3, "row {r} col {j}");
            }
        }
        let c = run.out[0].1;
        // open x, rsqrt lookup (3 rounds), open the row values, final truncation
        assert_eq!(c.rounds, 6);
        let lut_bytes = c.bytes_sent - 8 * (2 * rows * d + rows) as u64;
        assert!(lut_bytes < 2000 * rows as u64, "lookup bytes {lut_bytes}");
    }

    #[test]
    fn rmsnorm_matches_plaintext() {
        check(NormKind::Rms, 1e6);
        check(NormKind::Rms, 2e9);
    }

    #[test]
    fn layernorm_matches_plaintext() {
        check(NormKind::Layer, 1e6);
        check(NormKind::Layer, 2e9);
    }
}

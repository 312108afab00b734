//! Row softmax with an optional causal mask.
//!
//! `softmax(x)_j = exp(x_j − max x) / Σ_k exp(x_k − max x)`:
//! max (binary tournament, `2·⌈log2 n⌉` rounds) → exp lookup left at scale `f + t`
//! (3 rounds) → local row sums → reciprocal lookup reading scale `f + t` directly, output left
//! at scale `f + t` (3 rounds) → one Beaver product (1 round) → one truncation by `f + 2t`
//! (1 round). Rounds: `2·⌈log2 n⌉ + 8`.
//! Masked (causal) entries are set to a public very negative value, so exp gives exactly 0.
//! Scores may come at a higher scale than f ([`Softmax::with_input_frac`]): the caller then
//! skips their truncation (one round), the comparisons and the exp lookup read them as they are.
//! Declared range: scores |x| ≤ `bound`; row length ≤ `max_cols`.
//! Error: exp table error (≤ 5e-5 abs) and reciprocal table error (≤ 1e-4 rel) plus a few ulps;
//! the tests assert ≤ 2e-4 absolute on probabilities.

use crate::channel::Transport;
use crate::error::{MpcError, Result};
use crate::fixed::FixedPoint;
use crate::ops::lut::{eval_untruncated, PiecewiseLinear};
use crate::ops::max::max_rows;
use crate::ops::mul::mul;
use crate::ops::nonlinear::{exp_table, exp_table_inexact, reciprocal_table, DEFAULT_T};
use crate::ops::trunc::trunc;
use crate::party::Party;

/// Precomputed tables and widths of a softmax configuration.
#[derive(Clone, Debug)]
pub struct Softmax {
    exp: PiecewiseLinear,
    recip: PiecewiseLinear,
    fx: FixedPoint,
    in_frac: u32,
    bound: f64,
    cmp_bits: u32,
    max_cols: usize,
}

impl Softmax {
    /// Softmax over rows of at most `max_cols` scores with |score| ≤ `bound`.
    pub fn new(fx: FixedPoint, bound: f64, max_cols: usize) -> Result<Self> {
        Self::with_input_frac(fx, fx.frac_bits(), bound, max_cols)
    }

    /// Softmax over scores given at scale `in_frac` (e.g. `2f`: the untruncated products
    /// `Q·Kᵀ`, whose truncation then costs nothing: the max and the exp lookup read them as
    /// they are, with exact cell location up to the wider cells).
    pub fn with_input_frac(
        fx: FixedPoint,
        in_frac: u32,
        bound: f64,
        max_cols: usize,
    ) -> Result<Self> {
        let f = fx.frac_bits();
        let too_wide = bound * 4.0 * 2f64.powi(in_frac as i32) >= 2f64.powi(60);
        if bound.is_nan() || bound <= 0.0 || max_cols == 0 || in_frac < f || too_wide {
            return Err(MpcError::InvalidParameter {
                op: "softmax",
                detail: format!(
                    "bound {bound} and max_cols {max_cols} must be positive, scale {in_frac}                      at least {f}, 4·bound below 2^60 ulps"
                ),
            });
        }
        // cells located without a borrow key when the table is gated (issue 19: 26 levels on
        // scores at scale 32), exactly otherwise
        let exp = if 4.0 * bound > 15.968_75 {
            exp_table_inexact(fx, in_frac, -4.0 * bound)?
        } else {
            exp_table(fx, in_frac, -4.0 * bound)?.exact_up_to(in_frac)
        };
        // sums are ≥ 1 (the maximal entry contributes exp(0) = 1); 0.5 leaves room for rounding
        let recip = reciprocal_table(fx, f + DEFAULT_T, 0.5, max_cols.max(2) as f64, 1.0)?;
        // differences of masked scores stay within 4·bound
        let cmp_bits = ((4.0 * bound * 2f64.powi(in_frac as i32)).log2().ceil() as u32) + 2;
        Ok(Self {
            exp,
            recip,
            fx,
            in_frac,
            bound,
            cmp_bits,
            max_cols,
        })
    }

    /// The masked-entry value (public).
    fn mask_value(&self) -> u64 {
        ((-2.0 * self.bound * 2f64.powi(self.in_frac as i32)) as i64) as u64
    }
}

/// Row softmax of shared scores `x` (rows × cols, at the configuration's input scale). With `causal = Some(offset)`, row `i` sees
/// columns `j ≤ offset + i` only (query position `offset + i`).
pub async fn softmax_rows<T: Transport>(
    p: &mut Party<T>,
    sm: &Softmax,
    x: &[u64],
    rows: usize,
    cols: usize,
    causal: Option<usize>,
) -> Result<Vec<u64>> {
    let visible: Option<Vec<usize>> =
        causal.map(|off| (0..rows).map(|i| (off + i + 1).min(cols)).collect());
    softmax_rows_visible(p, sm, x, rows, cols, visible.as_deref()).await
}

/// Row softmax where row `i` sees only its first `visible[i]` columns (all when `None`); the
/// general form of the causal mask, e.g. for several heads stacked as rows.
pub async fn softmax_rows_visible<T: Transport>(
    p: &mut Party<T>,
    sm: &Softmax,
    x: &[u64],
    rows: usize,
    cols: usize,
    visible: Option<&[usize]>,
) -> Result<Vec<u64>> {
    if rows * cols != x.len() || cols > sm.max_cols || visible.is_some_and(|v| v.len() != rows) {
        return Err(MpcError::Shape {
            op: "softmax",
            detail: format!(
                "{} elements for {rows}×{cols} (max cols {})",
                x.len(),
                sm.max_cols
            ),
        });
    }
    let f = sm.fx.frac_bits();
    let mut xm = x.to_vec();
    if let Some(vis) = visible {
        let mv = sm.mask_value();
        let p0 = p.is_p0();
        for (i, v) in vis.iter().enumerate() {
            for j in (*v).min(cols)..cols {
                xm[i * cols + j] = if p0 { mv } else { 0 };
            }
        }
    }
    let (m, _) = max_rows(p, &xm, rows, cols, sm.cmp_bits, false).await?;
    let d: Vec<u64> = xm
        .iter()
        .enumerate()
        .map(|(k, v)| v.wrapping_sub(m[k / cols]))
        .collect();
    let e = eval_untruncated(p, &sm.exp, &d).await?; // scale f + t (exp's out_frac is f)
    let sums: Vec<u64> = e
        .chunks(cols)
        .map(|r| r.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        .collect();
    let inv = eval_untruncated(p, &sm.recip, &sums).await?; // scale recip.out_frac + t
    let inv_b: Vec<u64> = (0..rows * cols).map(|k| inv[k / cols]).collect();
    // e ≤ 1 at f + t times inv ≤ 2 at out_frac + t: below 2^58
    let prod = mul(p, &e, &inv_b).await?;
    trunc(
        p,
        &prod,
        sm.exp.untruncated_frac() + sm.recip.untruncated_frac() - f,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    #[test]
    fn causal_softmax_matches_plaintext() {
        check(FixedPoint::default().frac_bits());
    }

    /// Scores handed over untruncated at scale 2f: same accuracy, same rounds.
    #[test]
    fn scores_at_twice_the_scale() {
        check(2 * FixedPoint::default().frac_bits());
    }

    fn check(in_frac: u32) {
        let fx = FixedPoint::default();
        let (rows, cols) = (8, 32);
        let sm = Softmax::with_input_frac(fx, in_frac, 64.0, 64).unwrap();
        // gated (|score| ≤ 64): exp's cells are located without a borrow key
        assert_eq!((sm.exp.segments[0].bits, sm.exp.max_exact_shift), (11, 0));
        let mut prg = Prg::new(Seed::from_u64(41), 0);
        let vals: Vec<f64> = (0..rows * cols)
            .map(|_| ((prg.next_u64() % 20_000) as f64 / 1000.0 - 10.0) * 1.5)
            .collect();
        let x: Vec<u64> = fx
            .encode_slice(&vals)
            .unwrap()
            .iter()
            .map(|v| v << (in_frac - fx.frac_bits()))
            .collect();
        let (x0, x1) = share(&x, &mut prg);
        let off = cols - rows;
        let sm2 = &sm;
        let run = run_pair(42, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move {
                (
                    softmax_rows(&mut p, sm2, &x, rows, cols, Some(off))
                        .await
                        .unwrap(),
                    p,
                )
            }
        });
        let got = fx.decode_slice(&reconstruct(&run.out[0], &run.out[1]));
        let mut worst: f64 = 0.0;
        for i in 0..rows {
            let seen = off + i + 1;
            let row = &vals[i * cols..i * cols + seen];
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            for j in 0..cols {
                let want = if j < seen {
                    (vals[i * cols + j] - mx).exp() / z
                } else {
                    0.0
                };
                worst = worst.max((got[i * cols + j] - want).abs());
            }
        }
        assert!(worst < 2e-4, "softmax max abs error {worst}");
        // 2·log2(32) + 8
        assert_eq!(run.comm[0].rounds, 18);
    }
}

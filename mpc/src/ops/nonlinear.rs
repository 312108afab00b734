//! Nonlinear functions built on the piecewise-linear lookup ([`crate::ops::lut`]):
//! exp of non-positive inputs, reciprocal, reciprocal square root, SiLU and GeLU.
//!
//! | op | segments (index bits) | rounds | table error bound (measured, asserted in tests) |
//! |---|---|---|---|
//! | exp on [−16, 0], 0 below | 1 (10 bits exact, 11 inexact cells when gated) | 4 (3 untruncated) | 5e-5 |
//! | reciprocal on [lo, hi] | one per octave (8 bits) | 4 (3) | 1e-4 relative |
//! | rsqrt on [lo, hi] | one per octave (8 bits) | 4 (3) | 1e-4 relative |
//! | SiLU on [−32, 32] (|x| ≤ 31.9), or on [−16, 16], 0 below, x above (gated: coarse gates, 11 bits, inexact cells) | 1 (10 / 11 bits) | 4 | 2.5e-4 / 8e-5 |
//! | GeLU (tanh form) on [−8, 8], 0 below, x above | 1 (11 bits) | 4 | 1e-4 |
//!
//! Online bytes and dealer bytes per element follow from the segment count (see the lookup
//! module header); `marill bench ops` prints the measured figures.

use crate::error::Result;
use crate::fixed::{FixedPoint, ValueRange};
use crate::ops::lut::{PiecewiseLinear, Tail};
use std::sync::Arc;

/// Default position bits inside a cell.
pub const DEFAULT_T: u32 = 8;

/// Extra output bits of the reciprocal and rsqrt tables: their outputs are small (1/Σ, 1/√Σ of
/// large sums), so nodes tabulated at scale f would keep only a few significant bits (1.4 %
/// relative at 1e-3); at f + 8 they keep ≥ 14 bits down to 1e-3. Their consumers (softmax,
/// norms) multiply the untruncated output and truncate once by the combined scale.
pub const EXTRA_OUT_BITS: u32 = 8;

/// exp(x) for x ≤ 0 (declared range [`min`, 0]): 1022 cells of 1/64 (10 index bits) on
/// [−15.97, 0); inputs below give 0 (< 1.2e-7 error).
pub fn exp_table(fx: FixedPoint, in_frac: u32, min: f64) -> Result<PiecewiseLinear> {
    exp_table_bits(fx, in_frac, min, 10)
}

/// [`exp_table`] for the dealer (issue 19): 2044 cells of 1/128 (11 index bits) located by plain
/// truncation with centred slopes ([`PiecewiseLinear::inexact_cells`]), so no borrow key of
/// `in_frac − 6` levels (26 on softmax's scores at scale 32): interpolation error
/// `max|exp''|·h²/2` = 3.1e-5 from either node, the exact 10-bit table's `h²/8` with cells of
/// 1/64. Needs `min < −15.97` (a gated table).
pub fn exp_table_inexact(fx: FixedPoint, in_frac: u32, min: f64) -> Result<PiecewiseLinear> {
    exp_table_bits(fx, in_frac, min, 11)?.inexact_cells()
}

/// exp on [−15.97, 0) with `bits` index bits.
fn exp_table_bits(fx: FixedPoint, in_frac: u32, min: f64, bits: u32) -> Result<PiecewiseLinear> {
    PiecewiseLinear::build(
        "exp",
        Arc::new(f64::exp),
        &[(-15.968_75, 0.0, bits)],
        in_frac,
        fx.frac_bits(),
        DEFAULT_T,
        Tail::Zero,
        Tail::Constant(1.0),
        ValueRange {
            min,
            max: 0.0,
            what: "exp",
        },
    )
}

/// One segment per octave of [lo, hi]; an octave narrower than `2^bits` input ulps gets fewer
/// index bits (cells are at least two ulps wide), and octaves below 8 ulps are dropped (the
/// left tail covers them).
fn octaves(lo: f64, hi: f64, bits: u32, in_frac: u32) -> Vec<(f64, f64, u32)> {
    let e0 = (lo.log2().floor() as i32).max(3 - in_frac as i32);
    let e1 = (hi.log2().ceil() as i32).max(e0 + 1);
    (e0..e1)
        .map(|e| {
            let k = bits.min((e + in_frac as i32 - 1) as u32);
            (2f64.powi(e), 2f64.powi(e + 1), k)
        })
        .collect()
}

/// `scale / x` on [lo, hi] (lo > 0), one 8-bit segment per octave; clamped outside.
pub fn reciprocal_table(
    fx: FixedPoint,
    in_frac: u32,
    lo: f64,
    hi: f64,
    scale: f64,
) -> Result<PiecewiseLinear> {
    let segs = octaves(lo, hi, 8, in_frac);
    let (a, b) = (segs[0].0, segs[segs.len() - 1].1);
    PiecewiseLinear::build(
        "reciprocal",
        Arc::new(move |x: f64| scale / x),
        &segs,
        in_frac,
        fx.frac_bits() + EXTRA_OUT_BITS,
        DEFAULT_T,
        Tail::Constant(scale / a),
        Tail::Constant(scale / b),
        ValueRange {
            min: lo,
            max: hi,
            what: "reciprocal",
        },
    )
}

/// `scale / sqrt(x + eps)` on [lo, hi] (lo > 0), one 8-bit segment per octave; clamped outside.
pub fn rsqrt_table(
    fx: FixedPoint,
    in_frac: u32,
    lo: f64,
    hi: f64,
    eps: f64,
    scale: f64,
) -> Result<PiecewiseLinear> {
    let segs = octaves(lo, hi, 8, in_frac);
    let (a, b) = (segs[0].0, segs[segs.len() - 1].1);
    let f = move |x: f64| scale / (x + eps).sqrt();
    PiecewiseLinear::build(
        "rsqrt",
        Arc::new(f),
        &segs,
        in_frac,
        fx.frac_bits() + EXTRA_OUT_BITS,
        DEFAULT_T,
        Tail::Constant(f(a)),
        Tail::Constant(f(b)),
        ValueRange {
            min: 0.0,
            max: hi,
            what: "rsqrt",
        },
    )
}

/// SiLU(x) = x·sigmoid(x), declared range |x| ≤ `bound`. Up to |x| ≤ 31.9 one 10-bit segment
/// covers the whole range (no gating: 3 rounds, 26 B/elt online untruncated); beyond, the
/// segment [−16, 16] is gated with a zero left tail and an identity right tail.
///
/// The gated table is made cheap for the dealer (issue 19): its gates are coarse
/// ([`PiecewiseLinear::coarse_gates`]: a comparison key of 8 levels instead of 26 at 16
/// fractional bits and |x| ≤ 256; a tail read within 4 of the segment's ends costs
/// ≤ 12·σ(−12) = 7.4e-5, below the table's error, so the op's bound is the table's) and
/// its cells are located without a borrow key ([`PiecewiseLinear::inexact_cells`]: centred
/// slopes, 11 index bits with cells of `2^-6`, interpolation error `0.5·h²/2` = 6.1e-5 from
/// either node, 7.8e-5 measured with the nodes' rounding against the exact 10-bit table's
/// 6.5e-5): dealer bytes per element 1008 → 292 to P0
/// and 1136 → 420 to P1 (the mask 941 → 208 and 973 → 240, the signed lookup's bundle 67 → 84
/// and 123 → 140, five Beaver triples 40 to P1; `dealer_bytes_by_kind model verbose`).
///
/// 10 index bits, not 11: the fused lookup's cost is linear in the table (its masked sums run
/// over all `2^bits` entries, its bit-output DPF has `2^bits` leaves), and at 10 bits the
/// interpolation error is `max|SiLU''|·h²/8 = 0.5·h²/8`: 2.4e-4 with cells of `h = 2^-4`
/// (ungated), 6.1e-5 with `2^-5` (gated), times `|up|` in the product. Measured against 11 bits
/// (2026-12-01): the synthetic LoRA r=8+HM=4 prefill's max abs error stays 2.5e-3 (other ops
/// dominate) and its loopback time drops ~18 %; on SmolLM2 (LF 0.5, LoRA r=8, 12 prompts × 4
/// greedy tokens) top-1 agreement and greedy tokens stay 12/12, max abs logit error
/// 0.0158 → 0.0175.
pub fn silu_table(fx: FixedPoint, bound: f64) -> Result<PiecewiseLinear> {
    let gated = bound > 31.9;
    let seg = if !gated {
        // 1022 cells of 2^-4 cover ±31.9375 exactly
        (-31.9375, 31.9375, 10)
    } else {
        // 2044 cells of 2^-6 cover ±15.96875 exactly (located by plain truncation, so 11 bits
        // give the error 10 exact bits gave, see below)
        (-15.96875, 15.96875, 11)
    };
    let table = PiecewiseLinear::build(
        "silu",
        Arc::new(|x: f64| x / (1.0 + (-x).exp())),
        &[seg],
        fx.frac_bits(),
        fx.frac_bits(),
        DEFAULT_T,
        Tail::Zero,
        Tail::Identity,
        ValueRange::symmetric(bound, "silu"),
    )?;
    if gated {
        // gates 4 units coarse: a tail read in [−16, −12) or [12, 16) costs ≤ 12·σ(−12) = 7.4e-5
        table.inexact_cells()?.coarse_gates(fx.frac_bits() + 2)
    } else {
        Ok(table)
    }
}

/// GeLU, tanh approximation as in GPT-2/Gemma, declared range |x| ≤ `bound`.
pub fn gelu_table(fx: FixedPoint, bound: f64) -> Result<PiecewiseLinear> {
    PiecewiseLinear::build(
        "gelu",
        Arc::new(|x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }),
        &[(-8.0, 8.0, 11)],
        fx.frac_bits(),
        fx.frac_bits(),
        DEFAULT_T,
        Tail::Zero,
        Tail::Identity,
        ValueRange::symmetric(bound, "gelu"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlation::{CorrRequest, Dealer};
    use crate::ops::lut::eval;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    /// Runs `table` securely on values spread over its declared range; returns the worst
    /// absolute and relative errors against the exact function, and P0's rounds.
    fn check(table: PiecewiseLinear, n: usize, seed: u64) -> (f64, f64, u64) {
        let fx = FixedPoint::default();
        let (lo, hi) = (table.range.min, table.range.max);
        let mut prg = Prg::new(Seed::from_u64(seed), 1);
        let mut vals: Vec<f64> = (0..n)
            .map(|_| lo + (hi - lo) * (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
            .collect();
        vals[0] = lo;
        vals[1] = hi;
        let x: Vec<u64> = vals
            .iter()
            .map(|v| (v * (1u64 << table.in_frac) as f64).round() as i64 as u64)
            .collect();
        let (x0, x1) = share(&x, &mut prg);
        let t = &table;
        let run = run_pair(seed, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move { (eval(&mut p, t, &x).await.unwrap(), p) }
        });
        let got = reconstruct(&run.out[0], &run.out[1]);
        let f = table.function().clone();
        let mut abs: f64 = 0.0;
        let mut rel: f64 = 0.0;
        for (v, g) in vals.iter().zip(&got) {
            let want = f(*v);
            let g = fx.decode(*g);
            abs = abs.max((g - want).abs());
            // relative error beyond 4 output ulps of rounding
            let excess = ((g - want).abs() - 4.0 / fx.scale()).max(0.0);
            rel = rel.max(excess / want.abs().max(1e-9));
        }
        (abs, rel, run.comm[0].rounds)
    }

    #[test]
    fn exp_within_bound_in_four_rounds() {
        let fx = FixedPoint::default();
        // the exact 10-bit table and the 11-bit one with inexact cells (centred slopes, its
        // error measured over both cells an input may read), at scales 16 and 32
        for (t, seed) in [
            (exp_table(fx, 16, -64.0).unwrap(), 1),
            (exp_table_inexact(fx, 16, -64.0).unwrap(), 2),
            (exp_table_inexact(fx, 32, -64.0).unwrap(), 3),
        ] {
            assert!(
                t.max_error(100_000) < 5e-5,
                "table error {}",
                t.max_error(100_000)
            );
            let (abs, _, rounds) = check(t, 3000, seed);
            assert!(abs < 1e-4, "exp abs error {abs}");
            assert_eq!(rounds, 4);
        }
    }

    #[test]
    fn silu_and_gelu_within_bound() {
        let fx = FixedPoint::default();
        // the tables' interpolation bounds: SiLU 0.5·h²/8 with cells of 2^-4 (ungated), 0.5·h²/2
        // with centred slopes and cells of 2^-6 read from either node (gated), plus half an
        // output ulp of node rounding (7.6e-6), GeLU's 11-bit table as measured
        for (t, table_bound) in [
            (silu_table(fx, 64.0).unwrap(), 8e-5),
            (silu_table(fx, 24.0).unwrap(), 2.53e-4),
            (gelu_table(fx, 64.0).unwrap(), 1.5e-4),
        ] {
            assert_eq!(t.gated, t.range.max > 31.9, "{}", t.name);
            let name = t.name;
            let table_err = t.max_error(100_000);
            assert!(table_err < table_bound, "{name} table error {table_err}");
            let gate_err = t.gate_error(10_000);
            let (abs, _, rounds) = check(t, 3000, 2);
            // secure = the table (or a tail in a coarse gate's band) up to 2 output ulps of
            // truncation and the position rounding
            assert!(abs < table_err + gate_err + 1e-4, "{name} abs error {abs}");
            assert_eq!(rounds, 4);
        }
    }

    #[test]
    fn inputs_outside_the_declared_range_are_refused() {
        let fx = FixedPoint::default();
        // an ungated table (bound 8) and a gated one (bound 40, coarse gates: inputs more than
        // 4 outside are refused)
        for (bound, vals) in [
            (8.0, [1.0, -3.0, 9.5, -12.0]),
            (40.0, [1.0, -3.0, 44.01, -50.0]),
        ] {
            let t = silu_table(fx, bound).unwrap();
            assert_eq!(t.gated, bound > 31.9);
            let x = fx.encode_slice(&vals).unwrap();
            let mut prg = Prg::new(Seed::from_u64(9), 0);
            let (x0, x1) = share(&x, &mut prg);
            let t = &t;
            let run = run_pair(10, fx, |mut p| {
                let x = if p.is_p0() { x0.clone() } else { x1.clone() };
                async move { (eval(&mut p, t, &x).await.map_err(|e| e.to_string()), p) }
            });
            for r in &run.out {
                let e = r.as_ref().unwrap_err();
                assert!(e.contains("2 input(s) of silu are outside"), "{e}");
            }
        }
    }

    /// SiLU gated with coarse gates (|x| ≤ 256, the model's bound): inputs across the range,
    /// packed into the gates' bands and at the segment's and the range's ends, all within the
    /// table's error or the bands' tail error; inputs up to 4 past the range are either
    /// refused or right; the comparison key is 18 levels shorter than the exact gates' (8
    /// instead of 26 at 16 fractional bits).
    #[test]
    fn silu_coarse_gates_stay_within_bound() {
        let fx = FixedPoint::default();
        let t = silu_table(fx, 256.0).unwrap();
        assert!(t.gated);
        assert_eq!((t.cmp_bits, t.cmp_shift), (27, 18));
        let (table_err, gate_err) = (t.max_error(100_000), t.gate_error(10_000));
        assert!(
            table_err < 8e-5 && gate_err < 7.6e-5,
            "{table_err} {gate_err}"
        );
        let mut prg = Prg::new(Seed::from_u64(31), 0);
        let mut uni = |a: f64, b: f64| a + (b - a) * (prg.next_u64() >> 11) as f64 / 2f64.powi(53);
        let mut vals = Vec::new();
        for (a, b) in [
            (-256.0, 256.0),
            (-18.5, -11.5),
            (11.5, 18.5),
            (-16.5, -15.5),
            (15.5, 16.5),
        ] {
            vals.extend((0..1000).map(|_| uni(a, b)));
        }
        let edges = [-256.0, 256.0, -15.96875, 15.96875, -11.96875, 11.96875, 0.0];
        vals.extend(edges);
        vals.extend(edges.iter().map(|e| e - 1.0 / 65536.0));
        let run_on = |vals: &[f64], seed: u64| {
            let x = fx.encode_slice(vals).unwrap();
            let mut prg = Prg::new(Seed::from_u64(seed), 1);
            let (x0, x1) = share(&x, &mut prg);
            let t = &t;
            run_pair(seed, fx, |mut p| {
                let x = if p.is_p0() { x0.clone() } else { x1.clone() };
                async move { (eval(&mut p, t, &x).await.map_err(|e| e.to_string()), p) }
            })
        };
        let silu = |x: f64| x / (1.0 + (-x).exp());
        let run = run_on(&vals, 32);
        let got = fx.decode_slice(&reconstruct(
            run.out[0].as_ref().unwrap(),
            run.out[1].as_ref().unwrap(),
        ));
        for (v, g) in vals.iter().zip(&got) {
            let err = (g - silu(*v)).abs();
            // an input reads the table or, in a band, its tail
            assert!(
                err < table_err.max(gate_err) + 1e-4,
                "silu({v}) = {g}, err {err}"
            );
        }
        // past the range by less than the band: refused, or right
        for seed in 0..6u64 {
            let over = [259.5, -257.9, 256.5, 1.0];
            let run = run_on(&over, 40 + seed);
            match (&run.out[0], &run.out[1]) {
                (Ok(y0), Ok(y1)) => {
                    let got = fx.decode_slice(&reconstruct(y0, y1));
                    for (v, g) in over.iter().zip(&got) {
                        assert!((g - silu(*v)).abs() < 1e-3, "silu({v}) = {g}");
                    }
                }
                (Err(e0), Err(e1)) => {
                    assert!(
                        e0.contains("of silu are outside") && e0 == e1,
                        "{e0} / {e1}"
                    );
                }
                other => panic!("parties disagree: {other:?}"),
            }
        }
        // the mask's comparison key: 8 levels instead of 26 (25 bytes a level, both parties),
        // and no borrow key: cells of 2^10 ulps located by plain truncation
        assert_eq!((t.segments[0].shift, t.segments[0].bits), (10, 11));
        let bytes = |cmp_shift, exact: Vec<u32>| {
            let req = CorrRequest::Mask {
                n: 1,
                shifts: vec![10, 2],
                cmp_bits: 27,
                cmp_shift,
                exact,
            };
            let [b0, b1] = Dealer::new(Seed::from_u64(1)).next_bundle(&req).unwrap();
            (b0.explicit.len(), b1.explicit.len())
        };
        assert_eq!(bytes(0, vec![10]), (658 + 258, 658 + 258 + 32));
        assert_eq!(bytes(18, vec![]), (208, 208 + 32));
        // ... which is what the lookup asked for
        let n = vals.len();
        assert!(
            run.manifest.contains(&CorrRequest::Mask {
                n,
                shifts: vec![10, 2],
                cmp_bits: 27,
                cmp_shift: 18,
                exact: vec![],
            }),
            "{:?}",
            run.manifest
        );
    }

    #[test]
    fn reciprocal_and_rsqrt_relative_error() {
        let fx = FixedPoint::default();
        let r = reciprocal_table(fx, 16, 1.0, 1024.0, 1.0).unwrap();
        let (_, rel, rounds) = check(r, 2000, 3);
        assert!(rel < 2e-3, "reciprocal rel error {rel}");
        assert_eq!(rounds, 4);
        let q = rsqrt_table(fx, 16, 1.0 / 64.0, 4096.0, 0.0, 1.0).unwrap();
        let (_, rel, _) = check(q, 2000, 4);
        assert!(rel < 2e-3, "rsqrt rel error {rel}");
    }
}

//! RMSNorm and LayerNorm over the rows of a shared matrix.
//!
//! RMSNorm: `y = x·γ / sqrt(mean(x²) + eps)`. Round 1 opens `x − a` for the mask `a` of a norm
//! triple (squares `x² = e² + 2ea + a²`, and the input check below) batched with the truncation
//! of `x·γ` (public γ, local product); round 2 truncates the squares back to scale f when the
//! declared bound on the row sums needs it (LLM residual streams carry "massive activations" —
//! |x| ≈ 2·10^4 in SmolLM2 — whose squares summed at scale 2f would leave no headroom in the
//! ring; when every accepted row sum compares in 62 bits at scale 2f it is read untruncated and
//! this round disappears); the rsqrt lookup reads the row sums with the `1/d` folded into its
//! table: `sqrt(d)/sqrt(Σx² + d·eps)` (3 rounds, output left at scale `f + t`); one Beaver
//! product (1) and a truncation (1).
//! Without γ (callers that fold γ into the next projection), the norm triple's mask also serves
//! the product with the per-row rsqrt: the input is opened once (8 bytes/elt) and the rsqrt once
//! per row instead of 24 bytes/elt for square + Beaver product.
//! Rounds: 7 (6 without the square truncation). LayerNorm first computes the mean with one
//! truncation, then proceeds like RMSNorm on `x − mean`, adding β: 8 (7).
//! Error: rsqrt table ≤ 1e-4 relative plus a few ulps (tests assert ≤ 1e-3·|y| + 1e-3).
//!
//! **Declared range, checked securely.** Every row's `Σx²` (LayerNorm: `Σ(x − mean)²`) lies in
//! `[0, sum_bound]`, which also bounds every element: `|x| ≤ sqrt(sum_bound)`. `sum_bound` must
//! keep the squares of accepted rows below 2^63 at scale 2f ([`Norm::new`] refuses larger
//! ones): about `2^(63−2f)`, 2.1·10^9 at f = 16 (SmolLM2's calibrated bound is 2·10^9, its
//! largest activation 22,552; squares are exact up to |x| < 2^(31.5−f) = 46,341). A row outside
//! fails the op with [`MpcError::OutOfRange`] instead of a wrong result; what is revealed, to
//! the two workers only, is the number of failed row tests (below).
//! The rsqrt lookup already checks its input against `[0, sum_bound]` exactly (its DCF range
//! check, see `ops::lut`), but that input is `Σx²` only when no square wrapped the ring or
//! overflowed its truncation; two row tests on values the norm gets for free certify that
//! first. The opened `e = x − a` is a masked opening `x + r` with mask `r = −a`, so the dealer
//! adds truncation material for `r` ([`NormCheckMaterial`], `ops::trunc`): truncations of `x`
//! are local, `w = P(c) − M(c_hi)` with `P` public and `M` dealer-known for either public top
//! bit, and so are their squares `P² − 2·P·M + M²` (shares of `M(0)²`, `M(1)²`).
//! - **coarse**: `u = ⌊(x + 2^(s−1))/2^s⌋ (+1)` must be 0 or 1 for every element, tested as
//!   `Σ u(u−1) = 0` per row (`u(u−1)` is ≥ 0 and zero only at 0 and 1). For *any* ring value
//!   the truncation returns `|u| ≤ 1.25·2^(64−s) + 1` (it is off by `2^(64−s)` only when x is
//!   outside ±2^62), and `s` is chosen so that `d` such terms stay below 2^61: the row sum
//!   compares exactly (s = 39 at d = 768, 40 at 2048–4096). `u ∈ {0, 1}` implies
//!   `|x| ≤ 3·2^(s−1)`; `|x| < 2^(s−1)` (2^22 at f = 16, d = 768) gives `u ∈ {0, 1}`.
//! - **fine**: `v = ⌊x/2^t⌋ (+1)`, `Σ v² ≤ T` per row, with `t` the smallest shift whose row
//!   sums compare in 62 bits for every input that passes the coarse test (t = 14 at d = 768)
//!   and `T` the largest `Σ v²` of a row with `Σx² ≤ sum_bound` (`|v| ≤ |x|/2^t + 1`, so
//!   `T = S/2^2t + 2·sqrt(d·S)/2^t + d`, plus the squares' truncation slack). A passing row
//!   has `Σx² < 2^2t·(T + 2·sqrt(d·T) + d)` (`|x| < 2^t·(|v| + 1)`, Cauchy–Schwarz): 0.06 %
//!   above the bound at d = 768, sum_bound = 2·10^9, 0.9 % at 10^7. Its squares and their sum
//!   are then exact (the squares are truncated as non-negative values below 2^63), and the
//!   lookup's check — widened to compare every such sum exactly — decides.
//!
//! So the check is sound for every ring input (a row with `Σx²` above `sum_bound` by more than
//! the squares' truncation error, `d` ulps at scale f, never returns a result) and accepts
//! every row inside the bound: no slack band beyond that truncation error at the bound itself. The two row sums are opened masked with the
//! lookup's first round, compared with one DCF key each per row (≤ 61 levels), and the count
//! of failed tests (0..2 per row) is opened with the lookup's second round, checked before the
//! lookup's own count: no extra round. Cost: online +16 bytes per row + 8 per call; dealer
//! +56 bytes/elt (top bit, two low parts and four squared masks of `r`, to P1) and two masks
//! with comparison keys per row (≈ 6 KB). Measured at d = 768 (in-memory channel, on-demand
//! dealer): dealer bytes of a norm without γ 46 → 110 per element (sums read untruncated) and
//! 71 → 135 (truncated), online and rounds unchanged up to the 16 bytes per row; on the
//! synthetic suffix (2 layers, d = 768) +2.1 % dealer bytes for a 16-token prefill, +2.6 % for
//! one token.
//! LayerNorm checks `x − mean`; its mean is one truncation of `Σx·⌊2^f/d⌉`, exact while that
//! stays below 2^62 (|mean| < 2^(62−2f)), which the check does not cover.
//! γ and β are public: [`norm_rows`] refuses values for which `x·γ` or the result could leave
//! the range of exact truncation for an accepted row.

use crate::channel::Transport;
use crate::correlation::{CorrRequest, NormCheck, NormCheckMaterial, NormTriple};
use crate::error::{MpcError, Result};
use crate::fixed::FixedPoint;
use crate::ops::lut::{eval_untruncated_with, Companion, PiecewiseLinear};
use crate::ops::mul::mul;
use crate::ops::nonlinear::rsqrt_table;
use crate::ops::open::{open, open_groups};
use crate::ops::trunc::{public_part, trunc, trunc_nonnegative, MaskPending, Masked, OFFSET};
use crate::party::Party;

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// root-mean-square norm (Llama)
    Rms,
    /// layer norm (GPT-2)
    Layer,
}

/// Precomputed rsqrt table for rows of width `d`, and the parameters of the input check.
#[derive(Clone, Debug)]
pub struct Norm {
    kind: NormKind,
    d: usize,
    rsqrt: PiecewiseLinear,
    fx: FixedPoint,
    /// squares are truncated before summing (row sums at scale 2f could reach 2^62)
    truncate_squares: bool,
    /// the declared row bound on `Σx²`, in reals
    sum_bound: f64,
    /// shifts and comparison widths of the input check
    check: NormCheck,
    /// largest accepted `Σ v²` of a row (fine values, see the module header)
    fine_limit: u64,
    /// upper bound on `Σx²` (ring units at scale 2f) of every row that passes the check
    certified: f64,
}

/// Width `n` of a comparison that is exact for values in `[0, max]` against thresholds in
/// `[1, max + 1]`: every difference is below `2^(n−1)` in magnitude.
fn cmp_width(max: f64) -> u32 {
    (max * (1.0 + 1e-9) + 2.0).log2().ceil() as u32 + 1
}

/// Plans the input check for rows of `d` whose `Σx²` (ring units at scale 2f) up to `accept`
/// must pass: the coarse shift is the smallest whose row sums `Σ u(u−1)` compare in 62 bits
/// for *every* ring input, the fine shift the smallest whose `Σ v²` do for inputs that pass
/// the coarse test. Returns the check, the fine limit and the certified bound on `Σx²` of rows
/// that pass (see the module header for the argument).
fn plan_check(d: usize, accept: f64) -> Option<(NormCheck, u64, f64)> {
    let df = d as f64;
    let p2 = |e: i64| 2f64.powi(e as i32);
    // |u| ≤ 2^(62−s) + 2^(64−s) + 1 for any input (see the module header)
    let coarse_max = |s: u32| {
        let u = 1.25 * p2(64 - s as i64) + 1.0;
        df * u * (u + 1.0)
    };
    let coarse = (2..=62u32).find(|&s| cmp_width(coarse_max(s)) <= 62)?;
    let coarse_bits = cmp_width(coarse_max(coarse));
    // passing the coarse test: |x| ≤ 3·2^(coarse−1)
    let w = 3.0 * p2(coarse as i64 - 1);
    for fine in 1..coarse {
        let step = p2(fine as i64);
        let vmax = w / step + 1.0;
        let fine_max = df * vmax * vmax;
        // Σv² ≤ Σ(|x|/2^t + 1)² ≤ S/2^2t + 2·sqrt(d·S)/2^t + d for S = Σx² ≤ accept
        let limit = ((accept / (step * step) + 2.0 * (df * accept).sqrt() / step + df)
            * (1.0 + 1e-12))
            .ceil()
            + 1.0;
        let fine_bits = cmp_width(fine_max.max(limit + 1.0));
        if fine_bits > 62 {
            continue;
        }
        // Σx² < 2^2t·Σ(|v| + 1)² ≤ 2^2t·(T + 2·sqrt(d·T) + d)
        let certified = step * step * (limit + 2.0 * (df * limit).sqrt() + df) * (1.0 + 1e-12);
        let check = NormCheck {
            coarse,
            fine,
            coarse_bits,
            fine_bits,
        };
        return Some((check, limit as u64, certified));
    }
    None
}

impl Norm {
    /// A norm over rows of `d` with `eps`, for row sums of squares up to `sum_bound`.
    pub fn new(fx: FixedPoint, kind: NormKind, d: usize, eps: f64, sum_bound: f64) -> Result<Self> {
        let bad = |detail: String| MpcError::InvalidParameter { op: "norm", detail };
        if d == 0 || sum_bound.is_nan() || sum_bound <= 1.0 {
            return Err(bad(format!("d={d}, sum_bound={sum_bound}")));
        }
        let f = fx.frac_bits();
        let scale2 = 2f64.powi(2 * f as i32);
        // rows with Σx² ≤ sum_bound pass, with room for the squares' truncation (≤ 1 ulp each)
        let accept = sum_bound * scale2 + d as f64 * 2f64.powi(f as i32 + 1);
        let (check, fine_limit, certified) = plan_check(d, accept)
            .ok_or_else(|| bad(format!("no input check fits rows of d={d}")))?;
        // Row sums at scale 2f that compare in 62 bits are read untruncated.
        let truncate_squares = cmp_width(certified) > 62;
        if truncate_squares && certified >= 2f64.powi(63) {
            return Err(bad(format!(
                "sum_bound={sum_bound} too large at {f} fractional bits: squares of accepted \
                 rows must stay below 2^63 at scale 2f (certified bound {certified:e})"
            )));
        }
        let in_frac = if truncate_squares { f } else { 2 * f };
        let mut rsqrt = rsqrt_table(
            fx,
            in_frac,
            2f64.powi(-10),
            sum_bound,
            d as f64 * eps,
            (d as f64).sqrt(),
        )?;
        // The lookup's own range check must be exact for every row sum that passes the input
        // check (its default width covers twice the declared range).
        let largest = if truncate_squares {
            certified / 2f64.powi(f as i32) + d as f64 + 1.0
        } else {
            certified
        };
        let top = sum_bound * 2f64.powi(in_frac as i32) + 1.0;
        rsqrt.cmp_bits = rsqrt.cmp_bits.max(cmp_width(largest.max(top)));
        if rsqrt.cmp_bits > 62 {
            return Err(bad(format!(
                "sum_bound={sum_bound}: row sums need a {}-bit comparison",
                rsqrt.cmp_bits
            )));
        }
        Ok(Self {
            kind,
            d,
            rsqrt,
            fx,
            truncate_squares,
            sum_bound,
            check,
            fine_limit,
            certified,
        })
    }

    /// The largest `|x|` (reals) of a row that passes the input check: `sqrt` of the certified
    /// bound on its `Σx²` (slightly above `sqrt(sum_bound)`, see the module header).
    pub fn max_abs_input(&self) -> f64 {
        self.certified.sqrt() / self.fx.scale()
    }

    fn op_name(&self) -> &'static str {
        match self.kind {
            NormKind::Rms => "rmsnorm (row sum of squares)",
            NormKind::Layer => "layernorm (row sum of squared deviations)",
        }
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
    check_public(nm, gamma, beta)?;
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
    let Some(g) = gamma else {
        return norm_fused(p, nm, xc, beta, rows).await;
    };
    // round: x (masked by the norm material, for the squares and the input check) and
    // trunc(x·γ) together
    let (t, msg) = masked_input(p, nm, &xc, rows, false)?;
    let prod: Vec<u64> = xc
        .iter()
        .enumerate()
        .map(|(k, v)| v.wrapping_mul(g[k % d]))
        .collect();
    let xg = MaskPending::begin(p, &prod, &[f], 0, &[])?;
    let mut opened = open_groups(p, &[(&msg, 64), (xg.message(), 64)]).await?;
    let scaled = xg.finish(opened.pop().expect("two groups")).trunc(f)?;
    let e = opened.pop().expect("two groups");
    let NormTriple { a, a2, check, .. } = t;
    let inv = checked_rsqrt(p, nm, &e, &a, &a2, check, rows).await?;
    let inv_b: Vec<u64> = (0..rows * d).map(|k| inv[k / d]).collect();
    // |x·inv| ≤ sqrt(d) in reals, |γ| bounded by `check_public`: the product stays below 2^62
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

/// Public checks of γ and β: `x·γ` (scale 2f) must truncate exactly for every accepted `x`,
/// and the result `|x·γ/rms| + |β| ≤ sqrt(d)·max|γ| + max|β|` at scale `f + shift` must stay
/// below 2^62.
fn check_public(nm: &Norm, gamma: Option<&[u64]>, beta: Option<&[u64]>) -> Result<()> {
    let max_abs = |v: Option<&[u64]>| {
        v.map_or(0.0, |v| {
            v.iter()
                .map(|w| (*w as i64).unsigned_abs() as f64)
                .fold(0.0, f64::max)
        })
    };
    let (g, b) = (max_abs(gamma), max_abs(beta));
    let limit = 2f64.powi(62);
    let shift = 2f64.powi(nm.rsqrt.untruncated_frac() as i32);
    let gain = if gamma.is_some() { g } else { nm.fx.scale() };
    if nm.certified.sqrt() * g >= limit || ((nm.d as f64).sqrt() * gain + b) * shift * 1.01 >= limit
    {
        return Err(MpcError::InvalidParameter {
            op: "norm",
            detail: format!(
                "γ/β too large for rows of {}: max |γ| = {}, max |β| = {} (ring units)",
                nm.d, g, b
            ),
        });
    }
    Ok(())
}

/// The norm's triple for `rows` rows (`product`: with the squares' product shares, for the
/// fused path) and the input masked by it, `x − a`, ready to open.
fn masked_input<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    xc: &[u64],
    rows: usize,
    product: bool,
) -> Result<(NormTriple, Vec<u64>)> {
    let t = p.take_norm_triple(CorrRequest::NormTriple {
        rows,
        d: nm.d,
        product,
        check: nm.check,
    })?;
    let msg = xc
        .iter()
        .zip(&t.a)
        .map(|(x, a)| x.wrapping_sub(*a))
        .collect();
    Ok((t, msg))
}

/// The norm without γ (folded into the next projection by the caller): one mask serves the
/// squares, the input check and the product with the per-row rsqrt, so `x` is opened once
/// (8 bytes/elt) and the rsqrt once per row.
async fn norm_fused<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    xc: Vec<u64>,
    beta: Option<&[u64]>,
    rows: usize,
) -> Result<(Vec<u64>, u32)> {
    let d = nm.d;
    let p0 = p.is_p0();
    let (t, msg) = masked_input(p, nm, &xc, rows, true)?;
    let e = open(p, &msg, 64).await?;
    let NormTriple { a, a2, b, c, check } = t;
    let inv = checked_rsqrt(p, nm, &e, &a, &a2, check, rows).await?;
    let msg: Vec<u64> = inv
        .iter()
        .zip(&b)
        .map(|(v, b)| v.wrapping_sub(*b))
        .collect();
    let g = open(p, &msg, 64).await?;
    // x·inv = (e + a)(g + b) = e·g + e·b + a·g + a·b, per row
    let shift = nm.rsqrt.untruncated_frac();
    let y: Vec<u64> = (0..xc.len())
        .map(|i| {
            let r = i / d;
            let mut v = c[i]
                .wrapping_add(e[i].wrapping_mul(b[r]))
                .wrapping_add(a[i].wrapping_mul(g[r]));
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

/// From the opened `e = x − a`: the squares, their row sums (truncated when the norm says so)
/// and the rsqrt lookup of the sums, with the input check riding on the lookup's first two
/// rounds. Returns the rsqrt (scale `f + shift`) per row.
async fn checked_rsqrt<T: Transport>(
    p: &mut Party<T>,
    nm: &Norm,
    e: &[u64],
    a: &[u64],
    a2: &[u64],
    check: Box<NormCheckMaterial>,
    rows: usize,
) -> Result<Vec<u64>> {
    let (d, f) = (nm.d, nm.fx.frac_bits());
    let p0 = p.is_p0();
    // x² = e² + 2·e·a + a²
    let squares: Vec<u64> = (0..e.len())
        .map(|i| {
            let mut v = a2[i].wrapping_add(2u64.wrapping_mul(e[i]).wrapping_mul(a[i]));
            if p0 {
                v = v.wrapping_add(e[i].wrapping_mul(e[i]));
            }
            v
        })
        .collect();
    let mut rc = RowCheck::new(p, nm, check, e, rows)?;
    // the check certifies every square below 2^63 (scale 2f) when the row passes
    let squares = if nm.truncate_squares {
        trunc_nonnegative(p, &squares, f).await?
    } else {
        squares
    };
    let sums: Vec<u64> = squares
        .chunks(d)
        .map(|r| r.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        .collect();
    // scale u = out_frac + t
    eval_untruncated_with(p, &nm.rsqrt, &sums, &mut rc).await
}

/// The input check of one norm call (see the module header): the coarse and fine row sums,
/// opened masked with the rsqrt lookup's first round; the count of failed row tests, opened
/// with its second.
struct RowCheck {
    op: &'static str,
    sum_bound: f64,
    fine_limit: u64,
    rows: usize,
    p0: bool,
    pending: Option<[MaskPending; 2]>,
    msg: Vec<u64>,
}

impl RowCheck {
    /// The row sums `Σ u(u−1)` and `Σ v²` from the opened `e = x − a` (no communication).
    fn new<T: Transport>(
        p: &Party<T>,
        nm: &Norm,
        mat: Box<NormCheckMaterial>,
        e: &[u64],
        rows: usize,
    ) -> Result<Self> {
        let (d, ch) = (nm.d, nm.check);
        let p0 = p.is_p0();
        let NormCheckMaterial {
            mask,
            sq,
            rows: [mask_coarse, mask_fine],
        } = *mat;
        // `e = x + r` for the mask `r = −a`: the masked opening `c = x + r + 2^62` of `ops::trunc`
        let c: Vec<u64> = e.iter().map(|v| v.wrapping_add(OFFSET)).collect();
        let masked = Masked::from_opened(p, mask, c);
        // u = ⌊(x + 2^(coarse−1))/2^coarse⌋ (+1): the truncation of x − o for o = −2^(coarse−1)
        let off = (1u64 << (ch.coarse - 1)).wrapping_neg();
        let u = masked.trunc_offset(ch.coarse, off)?;
        let v = masked.trunc_offset(ch.fine, 0)?;
        // w = P(c − o) − M(c_hi): w² = P² − 2·P·M + M(c_hi)², with M(0)², M(1)² from the dealer
        let square = |w: &[u64], s: u32, o: u64, m2: &[Vec<u64>; 2]| -> Vec<u64> {
            w.iter()
                .zip(masked.opened())
                .enumerate()
                .map(|(i, (w, c))| {
                    let co = c.wrapping_sub(o);
                    let pp = public_part(co, s);
                    let m = if p0 {
                        pp.wrapping_sub(*w)
                    } else {
                        w.wrapping_neg()
                    };
                    let mut z = m2[(co >> 63) as usize][i]
                        .wrapping_sub(2u64.wrapping_mul(pp).wrapping_mul(m));
                    if p0 {
                        z = z.wrapping_add(pp.wrapping_mul(pp));
                    }
                    z
                })
                .collect()
        };
        let u2 = square(&u, ch.coarse, off, &sq[0]);
        let v2 = square(&v, ch.fine, 0, &sq[1]);
        let row_sum = |f: &dyn Fn(usize) -> u64| -> Vec<u64> {
            (0..rows)
                .map(|r| (r * d..(r + 1) * d).fold(0u64, |acc, i| acc.wrapping_add(f(i))))
                .collect()
        };
        let coarse_sums = row_sum(&|i| u2[i].wrapping_sub(u[i]));
        let fine_sums = row_sum(&|i| v2[i]);
        let pending = [
            MaskPending::with_material(p, &coarse_sums, mask_coarse),
            MaskPending::with_material(p, &fine_sums, mask_fine),
        ];
        let msg = [pending[0].message(), pending[1].message()].concat();
        Ok(Self {
            op: nm.op_name(),
            sum_bound: nm.sum_bound,
            fine_limit: nm.fine_limit,
            rows,
            p0,
            pending: Some(pending),
            msg,
        })
    }
}

impl Companion for RowCheck {
    fn first(&self) -> &[u64] {
        &self.msg
    }

    fn second(&mut self, mut opened: Vec<u64>) -> Result<Vec<u64>> {
        let [coarse, fine] = self.pending.take().ok_or(MpcError::InvalidParameter {
            op: "norm",
            detail: "input check opened twice".into(),
        })?;
        let fine_c = opened.split_off(self.rows);
        let coarse = coarse.finish(opened);
        let fine = fine.finish(fine_c);
        // passing: Σ u(u−1) < 1 and Σ v² < limit + 1
        let pass = |m: &Masked, t: u64| -> Result<u64> {
            Ok(m.less_than(t)?.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        };
        let passed = pass(&coarse, 1)?.wrapping_add(pass(&fine, self.fine_limit + 1)?);
        let total = if self.p0 { 2 * self.rows as u64 } else { 0 };
        Ok(vec![total.wrapping_sub(passed)])
    }

    fn verify(&self, opened: &[u64]) -> Result<()> {
        match opened.first() {
            Some(0) => Ok(()),
            Some(&count) => Err(MpcError::OutOfRange {
                op: self.op,
                count,
                min: 0.0,
                max: self.sum_bound,
            }),
            None => Err(MpcError::InvalidParameter {
                op: "norm",
                detail: "input check: nothing opened".into(),
            }),
        }
    }
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

    /// Runs a norm on ring inputs (rows × d) and returns the reconstructed output in reals, or
    /// the error (both parties fail alike: the count is opened to both).
    fn run_ring(
        nm: &Norm,
        x: &[u64],
        gamma: Option<&[f64]>,
        seed: u64,
    ) -> std::result::Result<Vec<f64>, MpcError> {
        let fx = FixedPoint::default();
        let mut prg = Prg::new(Seed::from_u64(seed), 0);
        let (x0, x1) = share(x, &mut prg);
        let g = gamma.map(|g| fx.encode_slice(g).unwrap());
        let g2 = g.as_deref();
        let run = run_pair(seed, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move { (norm_rows(&mut p, nm, &x, g2, None).await, p) }
        });
        let [r0, r1] = run.out;
        match (r0, r1) {
            (Ok(a), Ok(b)) => Ok(fx.decode_slice(&reconstruct(&a, &b))),
            (Err(e), Err(_)) => Err(e),
            _ => panic!("the parties disagree on the outcome"),
        }
    }

    /// Plaintext RMSNorm (γ = `gamma` or 1) of rows of `d`.
    fn reference(vals: &[f64], d: usize, gamma: Option<&[f64]>) -> Vec<f64> {
        let mut out = Vec::with_capacity(vals.len());
        for row in vals.chunks(d) {
            let rms = (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + 1e-5).sqrt();
            for (j, v) in row.iter().enumerate() {
                out.push(v / rms * gamma.map_or(1.0, |g| g[j]));
            }
        }
        out
    }

    fn small_rows(rows: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut prg = Prg::new(Seed::from_u64(seed), 1);
        (0..rows * d)
            .map(|_| (prg.next_u64() % 4_000) as f64 / 1000.0 - 2.0)
            .collect()
    }

    fn assert_close(got: &[f64], want: &[f64], what: &str) {
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 1e-3 * w.abs() + 1e-3,
                "{what}: element {k}: {g} vs {w}"
            );
        }
    }

    /// Inputs whose squares wrap the ring or overflow the square truncation (the bound the
    /// header used to assume, |x| < 2^15 at f = 16, and far beyond, up to arbitrary ring
    /// values) make the norm fail with an out-of-range error instead of returning a wrong
    /// result — with and without γ, with and without the squares' truncation.
    #[test]
    fn inputs_past_the_bound_fail_instead_of_a_wrong_output() {
        let fx = FixedPoint::default();
        let (rows, d) = (3, 48);
        let base = fx.encode_slice(&small_rows(rows, d, 3)).unwrap();
        let mut prg = Prg::new(Seed::from_u64(77), 0);
        let gam: Vec<f64> = (0..d).map(|j| 0.5 + j as f64 / d as f64).collect();
        for sum_bound in [1e6, 2e9] {
            let nm = Norm::new(fx, NormKind::Rms, d, 1e-5, sum_bound).unwrap();
            assert_eq!(nm.truncate_squares, sum_bound > 1e9);
            // reals whose square is past the row bound: 2^15 (the old per-element bound),
            // 46341 (its square passes 2^63 at scale 2f), 2^16 (its square is 2^64 ≡ 0), ...
            let mut bad: Vec<u64> = [32768.0, 46341.0, 65536.0, -65536.0, 1e6, -3e9, 2e12]
                .iter()
                .filter(|v| *v * *v > sum_bound)
                .map(|v| fx.encode(*v).unwrap())
                .collect();
            // ... and ring values of any size
            bad.extend([
                1u64 << 62,
                (1u64 << 62).wrapping_neg(),
                1 << 63,
                u64::MAX / 3,
            ]);
            bad.extend((0..4).map(|_| prg.next_u64()));
            for (k, v) in bad.iter().enumerate() {
                let mut x = base.clone();
                x[d + k % d] = *v; // in the middle row
                let gamma = (k % 2 == 1).then_some(gam.as_slice());
                match run_ring(&nm, &x, gamma, 90 + k as u64) {
                    Err(MpcError::OutOfRange { op, count, .. }) => {
                        assert!(op.starts_with("rmsnorm"), "{op}");
                        assert!((1..=2).contains(&count), "count {count}");
                    }
                    other => panic!(
                        "sum_bound {sum_bound}, input {:#x}: expected an out-of-range error, \
                         got {other:?}",
                        v
                    ),
                }
            }
        }
    }

    /// Around the declared bound: a row whose `Σx²` is just inside passes and matches the
    /// plaintext within the stated error; just outside fails. At sum_bound 2e9 this covers
    /// |x| = 40,000, past the old per-element bound 2^15 (whose square overflowed the
    /// truncation and gave a silently wrong result): it is now computed exactly.
    #[test]
    fn just_inside_passes_just_outside_fails() {
        let fx = FixedPoint::default();
        let (rows, d) = (2, 64);
        for (sum_bound, big) in [(2e9, 40_000.0), (1e9, 0.98 * 1e9f64.sqrt()), (1e6, 980.0)] {
            let nm = Norm::new(fx, NormKind::Rms, d, 1e-5, sum_bound).unwrap();
            let mut vals = small_rows(rows, d, 5);
            for sign in [1.0, -1.0] {
                vals[d + 7] = sign * big;
                let x = fx.encode_slice(&vals).unwrap();
                let got = run_ring(&nm, &x, None, 21).unwrap();
                assert_close(&got, &reference(&vals, d, None), "inside");
                let gam: Vec<f64> = (0..d).map(|j| 0.25 + j as f64 / 16.0).collect();
                let got = run_ring(&nm, &x, Some(&gam), 22).unwrap();
                assert_close(&got, &reference(&vals, d, Some(&gam)), "inside, with γ");
            }
            // just outside the row bound: Σx² ≈ 1.04·sum_bound
            vals[d + 7] = 1.02 * sum_bound.sqrt();
            let x = fx.encode_slice(&vals).unwrap();
            for gamma in [None, Some(vec![1.0; d])] {
                match run_ring(&nm, &x, gamma.as_deref(), 23) {
                    Err(MpcError::OutOfRange { op, count, max, .. }) => {
                        assert!(op.starts_with("rmsnorm"), "{op}");
                        assert_eq!((count, max), (1, sum_bound));
                    }
                    other => panic!("sum_bound {sum_bound}: expected an error, got {other:?}"),
                }
            }
        }
    }

    /// The planned check: the coarse test's row sums compare exactly for every ring input,
    /// the fine test's for every input that passes the coarse one, rows inside the declared
    /// bound pass the fine test, and rows that pass it are certified within a few percent of
    /// the bound (below 2^63 at scale 2f when the squares are truncated).
    #[test]
    fn the_planned_check_is_sound_and_tight() {
        let fx = FixedPoint::default();
        for d in [1usize, 48, 576, 768, 2048, 4096] {
            for sum_bound in [2.0, 1e4, 1e7, 2e9] {
                let nm = Norm::new(fx, NormKind::Rms, d, 1e-5, sum_bound).unwrap();
                let ch = nm.check;
                let scale2 = fx.scale() * fx.scale();
                assert!(ch.coarse_bits <= 62 && ch.fine_bits <= 62);
                // certified bound of passing rows vs the declared one
                let ratio = nm.certified / (sum_bound * scale2);
                if sum_bound >= 1e7 {
                    let tight = if sum_bound >= 1e9 { 1.03 } else { 1.2 };
                    assert!(ratio < tight, "d {d} sum_bound {sum_bound}: {ratio}");
                }
                if nm.truncate_squares {
                    assert!(nm.certified < 2f64.powi(63));
                }
                assert!(nm.max_abs_input() >= sum_bound.sqrt());
            }
        }
        // a declared bound whose rows cannot be certified below 2^63 is refused
        assert!(Norm::new(fx, NormKind::Rms, 768, 1e-5, 3e9).is_err());
    }

    /// Soundness over the whole ring, counted: 64 rows, each with one element of magnitude
    /// 2^k (k from 31, i.e. |x| = 2^15 at f = 16, to 63, random sign and low bits) among small
    /// ones, all of them across the coarse test's boundary region `[2^(s−1), 3·2^(s−1))` too:
    /// every row fails at least one of its two tests (the count lies in [rows, 2·rows]), for
    /// RMSNorm and LayerNorm.
    #[test]
    fn every_row_with_a_large_element_is_counted() {
        let fx = FixedPoint::default();
        let (rows, d) = (64, 48);
        let mut prg = Prg::new(Seed::from_u64(13), 0);
        let mut x = fx.encode_slice(&small_rows(rows, d, 7)).unwrap();
        for (r, row) in x.chunks_mut(d).enumerate() {
            let k = 31 + (r as u32 % 33);
            let mag = if k == 63 {
                prg.next_u64()
            } else {
                (1u64 << k) | (prg.next_u64() & ((1u64 << k) - 1))
            };
            let v = if prg.next_u64() & 1 == 1 {
                mag.wrapping_neg()
            } else {
                mag
            };
            row[(r * 7) % d] = v;
        }
        for kind in [NormKind::Rms, NormKind::Layer] {
            let nm = Norm::new(fx, kind, d, 1e-5, 1e8).unwrap();
            let (lo, hi) = (1u64 << (nm.check.coarse - 1), 3u64 << (nm.check.coarse - 1));
            // rows 0 and 1: their large element inside the coarse test's boundary region
            let mut x = x.clone();
            x[0] = lo + 12345;
            x[d + 7] = (hi - 1).wrapping_neg();
            match run_ring(&nm, &x, None, 31) {
                Err(MpcError::OutOfRange { count, .. }) => {
                    assert!((rows as u64..=2 * rows as u64).contains(&count), "{count}")
                }
                other => panic!("{kind:?}: expected an error, got {other:?}"),
            }
        }
    }
}

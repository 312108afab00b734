//! Piecewise-linear lookup ("PLI"): the engine behind exp, reciprocal, rsqrt, SiLU and GeLU.
//!
//! A function is tabulated on uniform segments `[A_j, B_j)`; segment j has `2^k_j` nodes spaced
//! `2^s_j` input ulps apart. For a shared input `X` the protocol computes
//! `Σ_j g_j·(T0_j[Y_j]·2^t + T1_j[Y_j]·z_j) + tails` where `g_j = [A_j ≤ X < B_j]`,
//! `Y_j = ⌊(X − A_j)/2^s_j⌋` (the cell), `z_j ∈ [0, 2^t)` the position inside the cell with `t`
//! bits, `T0` the node values and `T1` the node-to-node deltas (linear interpolation).
//!
//! Rounds (SIGMA-style FSS lookups, Gupta et al. PoPETs 2024, with interpolation added):
//! 1. one masked opening of `X` gives every `Y_j`, every `z_j` (truncations by `s_j` and
//!    `s_j − t` of the same mask) and every `g_j` (one DCF key, several thresholds);
//! 2. the lookups `T0_j[Y_j]`, `T1_j[Y_j]` (open `Y_j + α_j mod 2^k_j`, then a DPF full-domain
//!    evaluation: Boyle–Gilboa–Ishai CCS 2016) together with the Beaver products `g_j·z_j` and
//!    the identity tails `g·X`, batched in one round;
//! 3. the Beaver products `g_j·T0_j` and `T1_j·(g_j z_j)`, batched in one round;
//! 4. (optional) a truncation by `t` back to the output scale — callers that feed the result
//!    into a product skip it (softmax, norms), so the op costs 3 rounds there.
//!
//! Online bytes/elt/party for S segments: `8 + S·(⌈k/8⌉ + 16 + 32) [+16 per identity tail]
//! [+8 final truncation]`. Dealer bytes/elt: a mask (8 + 16 per segment, to P1) + one DCF key
//! (both parties) + S DPF keys (both parties) + 8 per Beaver product (to P1).
//! Signed one-segment lookups ([`eval_signed`], on the bit-output DPF) of an ungated table take
//! their input mask from the lookup bundle ([`SignedInput`]): the slope product `s·T1[Y]·z`
//! then opens only `s·T1[Y] − a` (8 bytes/elt instead of 16), because `z` is public up to
//! dealer-known terms and the cell truncation's borrow bit, whose product with `a` comes from
//! the same DCF key: one two-word key (payload `(1, a)`, [`crate::fss::dcf2`]) walked once
//! gives the borrow and `a·β`. Dealer bytes/elt of such a lookup of `k` index bits, cell shift
//! `s` and range check of `k + RANGE_MARGIN_BITS` bits, per party: one bit-output DPF key
//! (67 bytes at k = 10), one two-word DCF key (`33·s + 16`) and one comparison DCF key
//! (`25·(k + 2) + 8`), and to P1 13 words (8 bytes each: mask top bits and low parts, `a·M_z`,
//! the range check's top bit): SiLU (k = 10, s = 12) 787 bytes to P0 and 891 to P1 (with two
//! one-word keys at the borrow's point, 991 and 1095).
//! Gated one-segment tables whose tails are accurate near the segment's ends (SiLU at the
//! model's bounds, |x| ≤ 256) can be made cheaper for the dealer: coarse gates
//! ([`PiecewiseLinear::coarse_gates`]) compare without the mask's low bits (a DCF key of
//! `cmp_bits − 1 − k` levels instead of `cmp_bits − 1`, the comparison of Boyle et al.
//! applied to the high bits only; gates moved inside the segment by the `2^k`-ulp band where
//! either reading is right), and inexact cells ([`PiecewiseLinear::inexact_cells`]) drop the
//! borrow key (plain truncation reads the input's cell or the next; centred slopes keep both
//! readings within `max|f''|·h²/2`). SiLU gated at |x| ≤ 256: 292 bytes per element to P0 and
//! 420 to P1 (a comparison key of 8 levels, an 11-bit signed lookup, five triples) against
//! 1008 and 1136 with exact gates (26 levels) and cells (an 11-level borrow key).
//! Declared range: every op checks that its secret inputs lie in its declared range — two more
//! DCF evaluations on the round-1 opening give the count of inputs outside, opened with round 2
//! (8 bytes, no extra round); a nonzero count fails the op with [`MpcError::OutOfRange`] instead
//! of returning a silently wrong result. Only that count is revealed. A fused signed lookup
//! (SiLU) checks its exact cell index instead: its index mask is [`RANGE_MARGIN_BITS`] wider
//! than the table, the opened `Y + α` is compared with the first and last cells of the declared
//! range (two DCF walks of `bits + 2` levels instead of the input width's, 12 against 23 for
//! SiLU's 10-bit table), and the count opens with round 3; the accepted inputs are the declared
//! range rounded out to whole cells, all of which the table covers.
//! A caller's own check can ride on rounds 1 and 2 the same way ([`Companion`],
//! [`eval_untruncated_with`]): the norms open their input check's row sums with round 1 and its
//! count with round 2, checked before the lookup's own (see `ops::norm`).
//! Error: the interpolation error of the tables (computed by [`PiecewiseLinear::max_error`])
//! plus ≤ 2 output ulps of truncation and `2^-t` of a cell's delta for the position rounding.

use crate::channel::Transport;
use crate::correlation::{CorrRequest, SignedInput, SignedInputMaterial, SignedLutMaterial};
use crate::error::{MpcError, Result};
use crate::fixed::ValueRange;
use crate::fss::{bit_dpf_lookup_many, dpf_lookup, SignedTables};
use crate::ops::mul::MulPending;
use crate::ops::open::{open, open_groups};
use crate::ops::trunc::{less_than_opened, public_part, trunc, MaskPending, OFFSET};
use crate::party::Party;

/// Cells are located exactly (borrow-corrected truncation, one extra DCF key of `s` levels)
/// when the cell width is at most `2^MAX_EXACT_SHIFT` input ulps; wider cells (octave tables at
/// high input scales) accept the ±1 cell of plain truncation, i.e. extrapolation by one cell.
pub const MAX_EXACT_SHIFT: u32 = 24;

/// Extra bits of a fused signed lookup's index mask over the table's index bits: its
/// declared-range check on the cell index (see [`SignedInput`]) sees indices up to
/// `2^(bits + RANGE_MARGIN_BITS − 1)` cells from the accepted ones, i.e. inputs up to four
/// table widths outside the declared range are counted (as the input-level check sees inputs
/// up to twice the range's span outside it); farther ones alias.
pub const RANGE_MARGIN_BITS: u32 = 3;

/// What the op returns outside all segments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tail {
    /// zero
    Zero,
    /// a constant
    Constant(f64),
    /// the input itself (e.g. SiLU for large x)
    Identity,
}

/// One uniform segment of a table.
#[derive(Clone, Debug)]
pub struct Segment {
    /// first input covered (ring encoding at the input scale)
    pub start: i64,
    /// first input not covered
    pub end: i64,
    /// log2 of the node spacing in input ulps
    pub shift: u32,
    /// log2 of the number of nodes
    pub bits: u32,
    /// node values at the output scale
    pub t0: Vec<u64>,
    /// node-to-node deltas at the output scale
    pub t1: Vec<u64>,
    /// `t0` and `t1` prepared for signed lookups (bit-output DPF)
    pub signed: SignedTables,
}

/// A tabulated function ready for secure evaluation.
#[derive(Clone)]
pub struct PiecewiseLinear {
    /// name for errors
    pub name: &'static str,
    /// fractional bits of the input
    pub in_frac: u32,
    /// fractional bits of the (truncated) output
    pub out_frac: u32,
    /// bits of the in-cell position (extra output bits before the final truncation)
    pub t: u32,
    /// segments, in increasing order and contiguous
    pub segments: Vec<Segment>,
    /// below the first segment
    pub left: Tail,
    /// from the end of the last segment on
    pub right: Tail,
    /// declared input range
    pub range: ValueRange,
    /// comparison width for the segment tests
    pub cmp_bits: u32,
    /// false when one segment covers the whole declared range: no segment bits, no gating
    /// products and no tails (the range check guarantees every input is inside)
    pub gated: bool,
    /// cells up to `2^max_exact_shift` input ulps wide are located exactly
    pub max_exact_shift: u32,
    /// coarse gates (0 = exact): the segment tests and the declared-range check compare
    /// without the mask's `cmp_shift` low bits (see [`PiecewiseLinear::coarse_gates`])
    pub cmp_shift: u32,
    f: RealFn,
}

/// A real function shared between tables.
pub type RealFn = std::sync::Arc<dyn Fn(f64) -> f64 + Send + Sync>;

fn enc(v: f64, frac: u32) -> i64 {
    (v * (1u64 << frac) as f64).round() as i64
}

impl std::fmt::Debug for PiecewiseLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiecewiseLinear")
            .field("name", &self.name)
            .field("segments", &self.segments.len())
            .field("in_frac", &self.in_frac)
            .field("out_frac", &self.out_frac)
            .finish()
    }
}

impl PiecewiseLinear {
    /// Tabulates `f` on `segments` given as `(start, end, index bits)` in real units.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        name: &'static str,
        f: RealFn,
        segments: &[(f64, f64, u32)],
        in_frac: u32,
        out_frac: u32,
        t: u32,
        left: Tail,
        right: Tail,
        range: ValueRange,
    ) -> Result<Self> {
        let bad = |detail: String| MpcError::InvalidParameter { op: "lut", detail };
        if segments.is_empty() {
            return Err(bad(format!("{name}: no segment")));
        }
        if t == 0 || t > 24 || out_frac + t > 48 {
            return Err(bad(format!("{name}: position bits t={t} out of range")));
        }
        if out_frac + t < in_frac && (left == Tail::Identity || right == Tail::Identity) {
            return Err(bad(format!(
                "{name}: an identity tail needs out_frac + t >= in_frac"
            )));
        }
        let mut segs = Vec::new();
        for (i, &(a, b, k)) in segments.iter().enumerate() {
            if a.partial_cmp(&b) != Some(std::cmp::Ordering::Less) || !(2..=16).contains(&k) {
                return Err(bad(format!(
                    "{name}: bad segment {i}: [{a}, {b}) with {k} bits"
                )));
            }
            if i > 0 && segments[i - 1].1 != a {
                return Err(bad(format!(
                    "{name}: segments {} and {i} are not contiguous",
                    i - 1
                )));
            }
            let (start, end) = (enc(a, in_frac), enc(b, in_frac));
            let cells_needed = (end - start) as f64 / ((1u64 << k) - 2) as f64;
            let shift = cells_needed.log2().ceil().max(0.0) as u32;
            let step = (1i64 << shift) as f64 / (1u64 << in_frac) as f64;
            let out_scale = (1u64 << out_frac) as f64;
            let node = |j: i64| f(a + j as f64 * step);
            let t0: Vec<u64> = (0..(1i64 << k))
                .map(|j| (node(j) * out_scale).round() as i64 as u64)
                .collect();
            let t1: Vec<u64> = (0..(1i64 << k))
                .map(|j| {
                    let d = (node(j + 1) * out_scale).round() - (node(j) * out_scale).round();
                    d as i64 as u64
                })
                .collect();
            let signed = SignedTables::new(k, &t0, &t1);
            segs.push(Segment {
                start,
                end,
                shift,
                bits: k,
                t0,
                t1,
                signed,
            });
        }
        if segs.iter().any(|s| s.shift < 1) {
            return Err(bad(format!(
                "{name}: a segment is finer than one input ulp"
            )));
        }
        // comparison width: |X − threshold| < 2^(n−1) for all inputs in range and thresholds
        let lo = enc(range.min, in_frac).min(segs[0].start);
        let hi = enc(range.max, in_frac).max(segs.last().map(|s| s.end).unwrap_or(0));
        let span = (hi as i128 - lo as i128).unsigned_abs().max(2) as f64;
        let cmp_bits = span.log2().ceil() as u32 + 2;
        if cmp_bits > 62 {
            return Err(bad(format!("{name}: declared range too wide")));
        }
        let gated = !(segs.len() == 1
            && enc(range.min, in_frac) >= segs[0].start
            && enc(range.max, in_frac) < segs[0].end);
        Ok(Self {
            name,
            in_frac,
            out_frac,
            t,
            gated,
            segments: segs,
            left,
            right,
            range,
            cmp_bits,
            max_exact_shift: MAX_EXACT_SHIFT,
            cmp_shift: 0,
            f,
        })
    }

    /// Gates a one-segment table `[A, B)` with coarse comparisons ([`crate::ops::trunc`]:
    /// a DCF key of `cmp_bits − 1 − shift` levels instead of `cmp_bits − 1`), for functions
    /// whose tails are accurate near the segment's ends (SiLU: 0 and x). The gates move inside
    /// the segment: an input in `[A + 2^shift, B − 2^shift)` is read from the table, one below
    /// `A` or from `B` on takes its tail, and one in the bands `[A, A + 2^shift)`,
    /// `[B − 2^shift, B)` either (both are computed exactly: the table covers the bands);
    /// [`PiecewiseLinear::gate_error`] bounds what a tail costs there. The declared-range
    /// check accepts every input in the range and refuses every one more than `2^shift`
    /// ulps outside it (the tails are exact there too). Errors for ungated or multi-segment
    /// tables, or bands wider than half the segment.
    pub fn coarse_gates(mut self, shift: u32) -> Result<Self> {
        let seg = &self.segments[0];
        let bad = |detail: String| MpcError::InvalidParameter { op: "lut", detail };
        if !self.gated || self.segments.len() != 1 {
            return Err(bad(format!(
                "{}: coarse gates need a gated one-segment table",
                self.name
            )));
        }
        if shift == 0 || shift + 4 > self.cmp_bits || (seg.end - seg.start) < (4i64 << shift) {
            return Err(bad(format!(
                "{}: coarse gate shift {shift} does not fit the segment or the {}-bit comparisons",
                self.name, self.cmp_bits
            )));
        }
        self.cmp_shift = shift;
        Ok(self)
    }

    /// With coarse gates, the largest |tail − f| where an input may take its tail instead of
    /// the table (the bands `[A, A + 2^shift)` and `[B − 2^shift, B)`, sampled on `samples`
    /// points each); 0 with exact gates. Adds to [`PiecewiseLinear::max_error`].
    pub fn gate_error(&self, samples: usize) -> f64 {
        if self.cmp_shift == 0 {
            return 0.0;
        }
        let seg = &self.segments[0];
        let ulp = 1.0 / (1u64 << self.in_frac) as f64;
        let width = (1u64 << self.cmp_shift) as f64 * ulp;
        let (a, b) = (seg.start as f64 * ulp, seg.end as f64 * ulp);
        let tail = |t: Tail, x: f64| match t {
            Tail::Zero => 0.0,
            Tail::Constant(c) => c,
            Tail::Identity => x,
        };
        (0..samples)
            .flat_map(|i| {
                let d = width * i as f64 / samples as f64;
                [(self.left, a + d), (self.right, b - ulp - d)]
            })
            .map(|(t, x)| (tail(t, x) - (self.f)(x)).abs())
            .fold(0.0, f64::max)
    }

    /// Locates cells up to `2^shift` input ulps wide exactly (one DCF key of `shift` levels per
    /// element and distinct width) — for tables read at a high input scale whose inputs are few,
    /// e.g. exp on untruncated attention scores.
    pub fn exact_up_to(mut self, shift: u32) -> Self {
        self.max_exact_shift = shift.min(62);
        self
    }

    /// Locates cells with plain truncation (no borrow key: the cell read is the input's or the
    /// next one) and tabulates centred slopes, `T1[j] = (f(x_{j+1}) − f(x_{j−1}))/2`, so that a
    /// reading from either node is accurate: from node j over `δ ∈ [−h, h]` the error is
    /// `max|f''|·h²/2` (plus `|f'''|·h³/6`) instead of the exact cell's `max|f''|·h²/8` and the
    /// one-sided slopes' `max|f''|·h²` from the next node. At half the cell width the
    /// error is that of exact cells of full width, without their `s`-level DCF key
    /// ([`PiecewiseLinear::max_error`] measures both readings). For gated one-segment
    /// tables; errors otherwise.
    pub fn inexact_cells(mut self) -> Result<Self> {
        if !self.gated || self.segments.len() != 1 {
            return Err(MpcError::InvalidParameter {
                op: "lut",
                detail: format!(
                    "{}: inexact cells need a gated one-segment table",
                    self.name
                ),
            });
        }
        let seg = &mut self.segments[0];
        let ulp = 1.0 / (1u64 << self.in_frac) as f64;
        let step = (1i64 << seg.shift) as f64 * ulp;
        let a = seg.start as f64 * ulp;
        let out_scale = (1u64 << self.out_frac) as f64;
        let node = |j: i64| ((self.f)(a + j as f64 * step) * out_scale).round();
        seg.t1 = (0..(1i64 << seg.bits))
            .map(|j| (((node(j + 1) - node(j - 1)) / 2.0).round() as i64) as u64)
            .collect();
        seg.signed = SignedTables::new(seg.bits, &seg.t0, &seg.t1);
        self.max_exact_shift = 0;
        Ok(self)
    }

    /// The function being approximated.
    pub fn function(&self) -> &RealFn {
        &self.f
    }

    /// The value the protocol approximates at real `x` (table interpolation, tails), in reals.
    pub fn reference(&self, x: f64) -> f64 {
        self.reading(x, false)
    }

    /// [`PiecewiseLinear::reference`], read from the next cell's node when `next` (what a
    /// cell located by plain truncation may read: [`PiecewiseLinear::inexact_cells`]).
    fn reading(&self, x: f64, next: bool) -> f64 {
        let xi = enc(x, self.in_frac);
        let out_scale = (1u64 << self.out_frac) as f64;
        for s in &self.segments {
            if xi >= s.start && xi < s.end {
                let mut y = ((xi - s.start) >> s.shift) as usize;
                if next && s.shift > self.max_exact_shift {
                    y = (y + 1).min(s.t0.len() - 1);
                }
                let frac =
                    ((xi - s.start) - ((y as i64) << s.shift)) as f64 / (1i64 << s.shift) as f64;
                return ((s.t0[y] as i64) as f64 + frac * (s.t1[y] as i64) as f64) / out_scale;
            }
        }
        let tail = if xi < self.segments[0].start {
            self.left
        } else {
            self.right
        };
        match tail {
            Tail::Zero => 0.0,
            Tail::Constant(c) => c,
            Tail::Identity => x,
        }
    }

    /// Largest |table interpolation − f| over a fine grid of the declared range (a measured
    /// bound of the approximation error, excluding the ≤ 2-ulp protocol rounding); where cells
    /// are located by plain truncation, over both cells an input may read.
    pub fn max_error(&self, samples: usize) -> f64 {
        let (a, b) = (self.range.min, self.range.max);
        (0..=samples)
            .map(|i| {
                let x = a + (b - a) * i as f64 / samples as f64;
                let fx = (self.f)(x);
                (self.reading(x, false) - fx)
                    .abs()
                    .max((self.reading(x, true) - fx).abs())
            })
            .fold(0.0, f64::max)
    }

    fn exact_shifts(&self) -> Vec<u32> {
        let mut v = Vec::new();
        for s in &self.segments {
            if s.shift <= self.max_exact_shift && !v.contains(&s.shift) {
                v.push(s.shift);
            }
        }
        v
    }

    fn shifts(&self) -> Vec<u32> {
        let mut v = Vec::new();
        for s in &self.segments {
            for sh in [s.shift, s.shift.saturating_sub(self.t)] {
                if sh > 0 && !v.contains(&sh) {
                    v.push(sh);
                }
            }
        }
        v
    }
}

fn sub_vec(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

/// Secure evaluation, output at scale `out_frac + t` (3 rounds).
pub async fn eval_untruncated<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    x: &[u64],
) -> Result<Vec<u64>> {
    Ok(eval_core(p, table, x, None, None).await?.out)
}

/// A check that rides on a lookup's first two rounds instead of paying its own (see
/// [`eval_untruncated_with`]): [`Companion::first`] is opened with the lookup's masked input
/// (round 1); [`Companion::second`] turns what it opened into values opened with round 2; and
/// [`Companion::verify`] sees those before the lookup checks its own declared range, so that a
/// failed companion check is the error reported.
pub trait Companion {
    /// This party's shares to open with round 1.
    fn first(&self) -> &[u64];
    /// From the opened [`Companion::first`], this party's shares to open with round 2.
    fn second(&mut self, opened: Vec<u64>) -> Result<Vec<u64>>;
    /// Checks the opened [`Companion::second`].
    fn verify(&self, opened: &[u64]) -> Result<()>;
}

/// [`eval_untruncated`] with a `companion` check opened in its first two rounds (no round of
/// its own). Only for tables read with a plain (not signed) lookup.
pub async fn eval_untruncated_with<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    x: &[u64],
    companion: &mut (dyn Companion + Send),
) -> Result<Vec<u64>> {
    Ok(eval_core(p, table, x, None, Some(companion)).await?.out)
}

/// What a signed evaluation returns (all at scale `out_frac + t`, except the sign).
pub struct SignedOutput {
    /// shares of `s·U`, where `U` is the table part of the result and `s = ±1` per element
    pub su: Vec<u64>,
    /// shares of the tails (the identity tail's `[x ≥ B]·x`; zero when the table has none)
    pub tails: Vec<u64>,
    /// shares of the sign `s`
    pub sigma: Vec<u64>,
}

/// Signed secure evaluation (3 rounds) of a one-segment table with the bit-output DPF keys of
/// `mat` (taken by the caller, so that it can open the material's partner mask earlier): the
/// result is `s·U + tails` with a per-element sign `s = ±1` known to neither party. The caller
/// cancels `s` in a product it performs anyway (`(s·U)·(s·y) = U·y`); see `ops::swiglu`.
/// The DPF work is 46 AES calls per element at 11 index bits instead of 2046.
pub async fn eval_signed<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    x: &[u64],
    mat: SignedLutMaterial,
) -> Result<SignedOutput> {
    let r = eval_core(p, table, x, Some(mat), None).await?;
    Ok(SignedOutput {
        su: r.out,
        tails: r.tails,
        sigma: r.sigma,
    })
}

/// The request a signed evaluation of `n` inputs needs, with a partner truncation by
/// `partner_shift` (0 = none); errors unless the table has exactly one segment.
pub fn signed_request(
    table: &PiecewiseLinear,
    n: usize,
    partner_shift: u32,
) -> Result<CorrRequest> {
    if table.segments.len() != 1 {
        return Err(MpcError::InvalidParameter {
            op: "lut",
            detail: format!(
                "{}: signed lookups need one segment, the table has {}",
                table.name,
                table.segments.len()
            ),
        });
    }
    let seg = &table.segments[0];
    // ungated with an exactly located cell: the input mask comes in the bundle, fused with the
    // interpolation product (see `SignedInput`)
    let input = (!table.gated && seg.shift <= table.max_exact_shift).then_some(SignedInput {
        shift: seg.shift,
        t: table.t,
        range_bits: seg.bits + RANGE_MARGIN_BITS,
    });
    Ok(CorrRequest::SignedLut {
        n,
        bits: seg.bits,
        partner_shift,
        input,
    })
}

struct CoreOutput {
    out: Vec<u64>,
    tails: Vec<u64>,
    sigma: Vec<u64>,
}

enum Keys {
    Plain(Box<crate::correlation::LutMaterial>),
    Signed(Box<SignedLutMaterial>),
}

async fn eval_core<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    x: &[u64],
    mut signed: Option<SignedLutMaterial>,
    mut companion: Option<&mut (dyn Companion + Send)>,
) -> Result<CoreOutput> {
    let n = x.len();
    if let Some(m) = &signed {
        if table.segments.len() != 1 || m.bits != table.segments[0].bits || m.s.len() != n {
            return Err(MpcError::InvalidParameter {
                op: "lut",
                detail: format!(
                    "{}: signed material for {} lookups of {} bits does not fit {} inputs",
                    table.name,
                    m.s.len(),
                    m.bits,
                    n
                ),
            });
        }
    }
    let is_signed = signed.is_some();
    let nseg = table.segments.len();
    let t = table.t;
    let p0 = p.is_p0();
    let pid = p.id.index() as u8;
    // Round 1: one masked opening (with the bundle's own input mask when the slope product is
    // fused, see `SignedInput`).
    let fused = signed.as_mut().and_then(|m| m.input.take()).map(|b| *b);
    if fused.is_some() && table.gated {
        return Err(MpcError::InvalidParameter {
            op: "lut",
            detail: format!("{}: a fused input mask needs an ungated table", table.name),
        });
    }
    if companion.is_some() && (fused.is_some() || signed.is_some()) {
        return Err(MpcError::InvalidParameter {
            op: "lut",
            detail: format!("{}: a companion check needs a plain lookup", table.name),
        });
    }
    let mut companion_second = None;
    let (masked, fused) = match fused {
        Some(SignedInputMaterial {
            mask,
            a,
            am,
            roots,
            cws,
            range,
        }) => {
            let pending = MaskPending::with_material(p, x, mask);
            let c = open(p, pending.message(), 64).await?;
            (pending.finish(c), Some((a, am, roots, cws, range)))
        }
        None => {
            let pending = MaskPending::begin_coarse(
                p,
                x,
                &table.shifts(),
                table.cmp_bits,
                table.cmp_shift,
                &table.exact_shifts(),
            )?;
            match companion.as_deref_mut() {
                None => {
                    let c = open(p, pending.message(), 64).await?;
                    (pending.finish(c), None)
                }
                Some(comp) => {
                    let mut opened =
                        open_groups(p, &[(pending.message(), 64), (comp.first(), 64)]).await?;
                    companion_second = Some(comp.second(opened.pop().expect("two groups"))?);
                    (pending.finish(opened.pop().expect("two groups")), None)
                }
            }
        }
    };
    // Thresholds: the declared range's min and max + 1 ulp (the range check; a fused signed
    // lookup checks its cell index after round 2 instead), then — only when gated — every
    // segment boundary A_0..A_{S-1}, B_{S-1}. Ungated, the range check already places every
    // accepted input inside the one segment, so its bits would all be known.
    // Coarse gates (see `coarse_gates`; `[x < t]` is either value for x ∈ [t − band, t)):
    // the range check's upper threshold moves out by the band and the lower segment test in,
    // so that no accepted input is refused and no input outside the segment reads the table.
    let band = if table.cmp_shift > 0 {
        1i64 << table.cmp_shift
    } else {
        0
    };
    let mut ts = Vec::new();
    if fused.is_none() {
        ts.push(enc(table.range.min, table.in_frac) as u64);
        ts.push((enc(table.range.max, table.in_frac) + 1 + band) as u64);
    }
    if table.gated {
        // the first segment's test moves in by the band (coarse gates: one segment)
        ts.push((table.segments[0].start + band) as u64);
        ts.extend(table.segments[1..].iter().map(|s| s.start as u64));
        ts.push(table.segments[nseg - 1].end as u64);
    }
    let mut lt = if ts.is_empty() {
        Vec::new().into_iter()
    } else {
        masked.less_than_multi(&ts)?.into_iter()
    };
    // Declared-range check: count of inputs below min or above max, opened with round 2.
    let out_of_range = if fused.is_none() {
        let below = lt.next().expect("range threshold");
        let above = masked.complement(lt.next().expect("range threshold"));
        Some([below
            .iter()
            .chain(&above)
            .fold(0u64, |a, b| a.wrapping_add(*b))])
    } else {
        None
    };
    // gated only: [X < A_0], ..., [X < A_{S-1}], [X < B_{S-1}]
    let seg_lt: Vec<Vec<u64>> = lt.collect();
    // fused: shares of `a·β` for the cell truncation's borrow `β`
    let mut a_borrow = Vec::new();
    let mut g = Vec::with_capacity(nseg);
    let mut y = Vec::with_capacity(nseg);
    let mut z = Vec::with_capacity(nseg);
    for (j, s) in table.segments.iter().enumerate() {
        if table.gated {
            // [A_j ≤ X < A_{j+1}] = [X < A_{j+1}] − [X < A_j]
            g.push(sub_vec(&seg_lt[j + 1], &seg_lt[j]));
        }
        let yj = if let Some((_, _, roots, cws, _)) = &fused {
            // one walk of the two-word key: the cell's borrow and its product with `a`
            let (yj, ab) = masked.trunc_offset_exact_with(s.shift, s.start as u64, roots, cws)?;
            a_borrow = ab;
            yj
        } else if s.shift <= table.max_exact_shift {
            masked.trunc_offset_exact(s.shift, s.start as u64)?
        } else {
            masked.trunc_offset(s.shift, s.start as u64)?
        };
        let zj: Vec<u64> = if s.shift > t {
            let y2 = masked.trunc_offset(s.shift - t, s.start as u64)?;
            y2.iter()
                .zip(&yj)
                .map(|(a, b)| a.wrapping_sub(b << t))
                .collect()
        } else {
            // exact remainder, scaled up to t bits
            (0..n)
                .map(|i| {
                    let mut xa = x[i];
                    if p0 {
                        xa = xa.wrapping_sub(s.start as u64);
                    }
                    xa.wrapping_sub(yj[i] << s.shift) << (t - s.shift)
                })
                .collect()
        };
        y.push(yj);
        z.push(zj);
    }
    // Round 2: lookups + g·z + identity tails.
    let mut luts = Vec::with_capacity(nseg);
    let mut lut_msgs = Vec::with_capacity(nseg);
    // the opened index's width: the table's, or the range check's when fused
    let index_bits = |s: &Segment| fused.as_ref().map_or(s.bits, |f| f.4.bits);
    for (j, s) in table.segments.iter().enumerate() {
        let m = match signed.take() {
            Some(m) => Keys::Signed(Box::new(m)),
            None => Keys::Plain(Box::new(p.take_lut(CorrRequest::Lut { n, bits: s.bits })?)),
        };
        let shares = match &m {
            Keys::Plain(m) => &m.s,
            Keys::Signed(m) => &m.s,
        };
        let mask = (1u64 << index_bits(s)) - 1;
        lut_msgs.push(
            y[j].iter()
                .zip(shares)
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .collect::<Vec<u64>>(),
        );
        luts.push(m);
    }
    let mut gz = Vec::with_capacity(nseg);
    if table.gated {
        for j in 0..nseg {
            gz.push(MulPending::begin(p, &g[j], &z[j])?);
        }
    }
    // Tail bits (gated only): [X < A_0] and [X ≥ B_{S-1}].
    let tail_bits = if table.gated {
        vec![
            (table.left, seg_lt[0].clone()),
            (table.right, masked.complement(seg_lt[nseg].clone())),
        ]
    } else {
        Vec::new()
    };
    let scale_out = table.out_frac + t;
    let mut tails = Vec::new();
    for (tail, bit) in &tail_bits {
        if *tail == Tail::Identity {
            tails.push(MulPending::begin(p, bit, x)?);
        }
    }
    let mut groups: Vec<(&[u64], u32)> = Vec::new();
    for (j, s) in table.segments.iter().enumerate() {
        groups.push((&lut_msgs[j], index_bits(s)));
    }
    for m in &gz {
        groups.push((m.message(), 64));
    }
    for m in &tails {
        groups.push((m.message(), 64));
    }
    if let Some(c) = &companion_second {
        groups.push((c, 64));
    }
    if let Some(c) = &out_of_range {
        groups.push((c, 64));
    }
    let opened = open_groups(p, &groups).await?;
    if let Some(comp) = companion {
        let at = opened.len() - 1 - out_of_range.is_some() as usize;
        comp.verify(&opened[at])?;
    }
    let out_of_range_error = |count: u64| MpcError::OutOfRange {
        op: table.name,
        count,
        min: table.range.min,
        max: table.range.max,
    };
    if out_of_range.is_some() {
        let count = opened[opened.len() - 1][0];
        if count != 0 {
            return Err(out_of_range_error(count));
        }
    }
    // Fused: the range check on the exact cell index Y = ⌊(X − A)/2^s⌋, opened as
    // `Y + α mod 2^range_bits`: the accepted cells are those of the declared range (rounded out
    // to whole cells, all inside the table); the count is opened with round 3.
    let cell_count = fused.as_ref().map(|f| {
        let seg = &table.segments[0];
        let cell = |v: f64| ((enc(v, table.in_frac) - seg.start) >> seg.shift) as u64;
        let (lo, hi) = (cell(table.range.min), cell(table.range.max) + 1);
        let lt = less_than_opened(pid, &opened[0], &f.4, &[lo, hi]);
        let below: u64 = lt[0].iter().fold(0, |a, b| a.wrapping_add(*b));
        let under_hi: u64 = lt[1].iter().fold(0, |a, b| a.wrapping_add(*b));
        // [Y < lo] + [Y ≥ hi] = [Y < lo] + 1 − [Y < hi] (the 1 added by P0)
        let ones = if p0 { n as u64 } else { 0 };
        [below.wrapping_add(ones).wrapping_sub(under_hi)]
    });
    let mut t0 = Vec::with_capacity(nseg);
    let mut t1 = Vec::with_capacity(nseg);
    let mut sigma = Vec::new();
    for (j, s) in table.segments.iter().enumerate() {
        let mut a = vec![0u64; n];
        let mut b = vec![0u64; n];
        let mut out = [0u64; 2];
        match &luts[j] {
            Keys::Plain(m) => {
                for i in 0..n {
                    dpf_lookup(
                        pid,
                        m.roots[i],
                        &m.cws[i],
                        opened[j][i],
                        &[&s.t0, &s.t1],
                        &mut out,
                    );
                    a[i] = out[0];
                    b[i] = out[1];
                }
            }
            Keys::Signed(m) => {
                let [sa, sb, sg] =
                    bit_dpf_lookup_many(pid, &m.roots, &m.cws, &opened[j], &s.signed);
                (a, b, sigma) = (sa, sb, sg);
            }
        }
        t0.push(a);
        t1.push(b);
    }
    let gz: Vec<Vec<u64>> = if table.gated {
        gz.into_iter()
            .enumerate()
            .map(|(j, m)| m.finish(&opened[nseg + j]))
            .collect()
    } else {
        z
    };
    let tails: Vec<Vec<u64>> = tails
        .into_iter()
        .enumerate()
        .map(|(j, m)| m.finish(&opened[2 * nseg + j]))
        .collect();
    // Round 3: g·T0 and T1·gz.
    let mut prods = Vec::with_capacity(2 * nseg);
    let mut out = vec![0u64; n];
    for j in 0..nseg {
        if table.gated {
            prods.push((t, MulPending::begin(p, &g[j], &t0[j])?));
        } else {
            // one segment covers the declared range: T0 needs no gating
            for i in 0..n {
                out[i] = out[i].wrapping_add(t0[j][i] << t);
            }
        }
        if fused.is_none() {
            prods.push((0, MulPending::begin(p, &t1[j], &gz[j])?));
        }
    }
    // fused (one ungated segment): only the masked slope `s·T1 − a` is opened
    let slope_msg = fused.as_ref().map(|(a, ..)| sub_vec(&t1[0], a));
    let mut msgs: Vec<(&[u64], u32)> = prods.iter().map(|(_, m)| (m.message(), 64)).collect();
    if let Some(m) = &slope_msg {
        msgs.push((m, 64));
    }
    if let Some(c) = &cell_count {
        msgs.push((c, 64));
    }
    let opened = open_groups(p, &msgs).await?;
    if cell_count.is_some() {
        let count = opened[opened.len() - 1][0];
        if count != 0 {
            return Err(out_of_range_error(count));
        }
    }
    let n_prods = prods.len();
    for (j, (shl, m)) in prods.into_iter().enumerate() {
        let v = m.finish(&opened[j]);
        for i in 0..n {
            out[i] = out[i].wrapping_add(v[i] << shl);
        }
    }
    if let Some((a, am, ..)) = &fused {
        let seg = &table.segments[0];
        let (sh, start) = (seg.shift, seg.start as u64);
        let c: Vec<u64> = masked
            .opened()
            .iter()
            .map(|c| c.wrapping_sub(start))
            .collect();
        let v = &opened[n_prods];
        let z = &gz[0];
        for i in 0..n {
            // z = P_z(c) − M_z(c_hi) + 2^t·β;
            // s·T1·z = v·z + a·P_z − a·M_z(c_hi) + 2^t·a·β
            let pz = if sh > t {
                public_part(c[i], sh - t).wrapping_sub(public_part(c[i], sh) << t)
            } else {
                c[i].wrapping_sub(OFFSET)
                    .wrapping_sub(public_part(c[i], sh) << sh)
                    << (t - sh)
            };
            let prod = v[i]
                .wrapping_mul(z[i])
                .wrapping_add(a[i].wrapping_mul(pz))
                .wrapping_sub(am[(c[i] >> 63) as usize][i])
                .wrapping_add(a_borrow[i] << t);
            out[i] = out[i].wrapping_add(prod);
        }
    }
    // Tails (gated only: ungated, no accepted input lies outside the segment). Signed
    // evaluations return them apart: they carry no sign.
    let mut tail_sum = vec![0u64; n];
    let mut ti = tails.into_iter();
    for (tail, bit) in &tail_bits {
        match *tail {
            Tail::Zero => {}
            Tail::Constant(c) => {
                let cv = enc(c, scale_out) as u64;
                for i in 0..n {
                    tail_sum[i] = tail_sum[i].wrapping_add(bit[i].wrapping_mul(cv));
                }
            }
            Tail::Identity => {
                let v = ti.next().expect("tail product");
                let sh = scale_out - table.in_frac;
                for i in 0..n {
                    tail_sum[i] = tail_sum[i].wrapping_add(v[i] << sh);
                }
            }
        }
    }
    if !is_signed {
        for (o, t) in out.iter_mut().zip(&tail_sum) {
            *o = o.wrapping_add(*t);
        }
    }
    Ok(CoreOutput {
        out,
        tails: tail_sum,
        sigma,
    })
}

/// Secure evaluation, output at the party's fixed-point scale f (4 rounds): the untruncated
/// result (scale `out_frac + t`) truncated by `out_frac + t − f`.
pub async fn eval<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    x: &[u64],
) -> Result<Vec<u64>> {
    let u = eval_untruncated(p, table, x).await?;
    let shift = (table.out_frac + table.t).saturating_sub(p.fx.frac_bits());
    trunc(p, &u, shift).await
}

impl PiecewiseLinear {
    /// Fractional bits of the untruncated output of [`eval_untruncated`].
    pub fn untruncated_frac(&self) -> u32 {
        self.out_frac + self.t
    }
}

//! The material each kind of correlation gives a party, and — side by side, so the order of PRG
//! draws cannot drift apart — how the dealer generates it ([`generate`]) and how a party expands
//! it from its seed plus the explicit bytes ([`materialize`]).

use super::wire::{put_u64s, put_words, Reader};
use super::{CorrRequest, CorrelationError};
use crate::fss::{
    bit_dpf_gen, dcf2_gen, dcf_gen, dpf_gen, BitDpfKeys, Dcf2Keys, DcfKeys, DpfCorrection,
};
use crate::gemm::gemm_u64;
use crate::party::PartyId;
use crate::prg::Prg;
use crate::ring::RingTensor;
use std::collections::HashMap;

/// Elementwise Beaver triples: shares of `a`, `b` and `c = a·b`.
#[derive(Clone, Debug)]
pub struct MulTriples {
    /// shares of a
    pub a: Vec<u64>,
    /// shares of b
    pub b: Vec<u64>,
    /// shares of a·b
    pub c: Vec<u64>,
}

/// Square pairs: shares of `a` and `a²`.
#[derive(Clone, Debug)]
pub struct SquarePairs {
    /// shares of a
    pub a: Vec<u64>,
    /// shares of a²
    pub a2: Vec<u64>,
}

/// Normalisation material (see `CorrRequest::NormTriple`): shares of `a`, `a²`, per-row `b`
/// and `c = a·b_row` (both empty without the product), and the input's range-check material.
#[derive(Clone, Debug)]
pub struct NormTriple {
    /// shares of a (rows·d)
    pub a: Vec<u64>,
    /// shares of a² (rows·d)
    pub a2: Vec<u64>,
    /// shares of b (rows; empty without the product)
    pub b: Vec<u64>,
    /// shares of a·b_row (rows·d; empty without the product)
    pub c: Vec<u64>,
    /// the declared-range check of the input
    pub check: Box<NormCheckMaterial>,
}

/// Range-check material of a norm's input (see [`NormCheck`](super::NormCheck) and
/// `ops::norm`). The opened `e = x − a` is the masked opening `x + r` of the mask `r = −a`;
/// `mask` holds shares of `r`, its top bit and `(r mod 2^63) >> s` for the coarse and the fine
/// shift, so that `⌊(x − o)/2^s⌋ (+1) = P(c) − M_s(c_hi)` with `P` public and `M_s` known to the
/// dealer up to the public top bit `c_hi` of `c − o` (see `ops::trunc`); `sq` holds shares of
/// `M_s(0)²` and `M_s(1)²` for the squares of those values; `rows` holds one mask per row and
/// sum (coarse, fine) with comparison keys.
#[derive(Clone, Debug)]
pub struct NormCheckMaterial {
    /// the input mask `r = −a` with truncation material for the coarse and the fine shift
    pub mask: MaskMaterial,
    /// `[coarse, fine][c_hi]`: shares of `M_s(c_hi)²`
    pub sq: [[Vec<u64>; 2]; 2],
    /// per-row masks with comparison material for the coarse and the fine row sums
    pub rows: [MaskMaterial; 2],
}

/// A Beaver matrix triple.
#[derive(Clone, Debug)]
pub struct MatTriple {
    /// shares of A (m×k)
    pub a: RingTensor,
    /// shares of B (k×n)
    pub b: RingTensor,
    /// shares of C = A·B (m×n)
    pub c: RingTensor,
}

/// A triple against a registered weight mask: shares of `A` and `C = A·B_w`.
#[derive(Clone, Debug)]
pub struct WeightTriple {
    /// shares of A (m×k)
    pub a: RingTensor,
    /// shares of C (m×n)
    pub c: RingTensor,
}

/// A truncation mask fused with a weight triple (see `CorrRequest::TruncWeight`): with
/// `⌊x/2^s⌋ = P(c) − M`, `M = M_0 + c_hi∘Δ` elementwise (`M_0 = lo − r_hi·2^(63−s)`,
/// `Δ = r_hi·2^(64−s)`), it holds shares of `M_0·B` and of `E[i,k,j] = Δ_ik·B_kj`. `E` is a
/// multiple of `2^(64−s)`, so the dealer sends P1's share of `r_hi∘B mod 2^s` in `⌈s/8⌉` bytes
/// per entry (4 at s = 32, 3 at 24) and each party lifts its residue by `2^(64−s)`.
#[derive(Clone, Debug)]
pub struct TruncWeightMaterial {
    /// the truncation mask (one shift)
    pub mask: MaskMaterial,
    /// shares of `M_0·B` (m×n)
    pub m0b: Vec<u64>,
    /// shares of `E` (m×k×n, row-major in i, k, j)
    pub e: Vec<u64>,
}

/// Comparison material of a mask: a DCF key on bits `shift..bits − 1` of `r` (the low
/// `bits − 1` bits when `shift` is 0).
#[derive(Clone, Debug)]
pub struct CmpMaterial {
    /// signed comparison width n
    pub bits: u32,
    /// low bits of `r` the key leaves out (coarse comparisons, see `ops::trunc`); 0 = exact
    pub shift: u32,
    /// shares of bit `n−1` of r
    pub msb: Vec<u64>,
    /// this party's DCF root seeds
    pub roots: Vec<u128>,
    /// DCF correction words (α = ⌊(r mod 2^(n−1)) / 2^shift⌋, β = 1 − 2·bit_{n−1}(r))
    pub cws: DcfKeys,
}

/// Borrow material for exact truncation by `shift`: a DCF key for `[c mod 2^s < r mod 2^s]`.
#[derive(Clone, Debug)]
pub struct ExactMaterial {
    /// the shift s
    pub shift: u32,
    /// this party's DCF root seeds
    pub roots: Vec<u128>,
    /// DCF correction words (α = r mod 2^s, β = 1)
    pub cws: DcfKeys,
}

/// Mask material for `x + r` openings: truncation and (optionally) comparison.
#[derive(Clone, Debug)]
pub struct MaskMaterial {
    /// shares of r (uniform in Z_2^64)
    pub r: Vec<u64>,
    /// shares of msb(r) (bit 63) as a 0/1 ring value
    pub r_msb: Vec<u64>,
    /// per requested shift s: shares of `(r mod 2^63) >> s`
    pub lo_shifted: Vec<(u32, Vec<u64>)>,
    /// comparison material, when requested
    pub cmp: Option<CmpMaterial>,
    /// exact-truncation material per requested shift
    pub exact: Vec<ExactMaterial>,
}

/// Lookup material: DPF keys for one-hot vectors at secret masks `s` (mod 2^bits).
#[derive(Clone, Debug)]
pub struct LutMaterial {
    /// table index width
    pub bits: u32,
    /// shares of the mask s (mod 2^bits)
    pub s: Vec<u64>,
    /// this party's DPF root seeds
    pub roots: Vec<u128>,
    /// DPF correction words
    pub cws: Vec<DpfCorrection>,
}

/// The truncation mask of a signed lookup's partner values `y`, with shares of `s·M_c`, and a
/// mask `a` with `a·s`, `a·s·M_c` for the product of a signed value `u` with `s·⌊y/2^shift⌋`
/// (only `u − a` is opened), where
/// `⌊y/2^shift⌋ = P(c) − M_c` for the opened `c = y + r (+2^62)`, `P(c)` public and `c_hi` its top
/// bit (see `ops::trunc`); `M_0 = lo − r_hi·2^(63−shift)`, `M_1 = lo + r_hi·2^(63−shift)`.
#[derive(Clone, Debug)]
pub struct PartnerMask {
    /// the truncation mask (one shift, no comparison)
    pub mask: MaskMaterial,
    /// shares of `s·M_0` and `s·M_1`
    pub sm: [Vec<u64>; 2],
    /// shares of a mask `a` for the signed value that multiplies the partner
    pub a: Vec<u64>,
    /// shares of `a·s`
    pub a_s: Vec<u64>,
    /// shares of `a·s·M_0` and `a·s·M_1`
    pub a_sm: [Vec<u64>; 2],
}

/// Signed lookup material: bit-output DPF keys at secret masks `s` (mod 2^bits; the masks are
/// `range_bits` wide when the input is fused, see [`SignedInput`](super::SignedInput)).
#[derive(Clone, Debug)]
pub struct SignedLutMaterial {
    /// table index width
    pub bits: u32,
    /// shares of the index mask (mod 2^bits, or 2^range_bits with a fused input)
    pub s: Vec<u64>,
    /// this party's DPF root seeds
    pub roots: Vec<u128>,
    /// bit-DPF correction words
    pub cws: BitDpfKeys,
    /// the partner truncation, when requested
    pub partner: Option<Box<PartnerMask>>,
    /// the lookup's own input mask with its fused interpolation product, when requested
    pub input: Option<Box<SignedInputMaterial>>,
}

/// See [`SignedInput`](super::SignedInput): the input mask, the slope's mask `a`, shares of
/// `a·M_z(c_hi)` for both top bits, and one two-word DCF key (payload `(1, a)`) giving shares of
/// the exact cell truncation's borrow `β` and of `a·β` from one walk.
#[derive(Clone, Debug)]
pub struct SignedInputMaterial {
    /// the input mask (cell and remainder shifts; no comparison, and no exact-truncation key of
    /// its own: the borrow is word 0 of `cws`)
    pub mask: MaskMaterial,
    /// shares of the slope's mask a
    pub a: Vec<u64>,
    /// shares of `a·M_z(0)` and `a·M_z(1)`
    pub am: [Vec<u64>; 2],
    /// this party's root seeds of the two-word DCF keys
    pub roots: Vec<u128>,
    /// two-word DCF correction words (α = r mod 2^shift, payload (1, a): the borrow
    /// `[c mod 2^shift < r mod 2^shift]` and its product with `a`)
    pub cws: Dcf2Keys,
    /// comparison material on the index mask (`range_bits` wide) for the range check on the
    /// cell index
    pub range: CmpMaterial,
}

/// The dealer-known part `M_z(c_hi)` of a signed lookup's remainder for mask `r` (see
/// [`SignedInput`](super::SignedInput)).
pub(crate) fn remainder_mask(inp: &super::SignedInput, r: u64, c_hi: u64) -> u64 {
    let m = |s: u32| trunc_mask(r, s, c_hi);
    let (s, t) = (inp.shift, inp.t);
    if s > t {
        m(s - t).wrapping_sub(m(s) << t)
    } else {
        r.wrapping_sub(m(s) << s) << (t - s)
    }
}

/// Expanded material of one bundle.
#[derive(Clone, Debug)]
pub enum Material {
    /// see [`MulTriples`]
    Mul(MulTriples),
    /// see [`SquarePairs`]
    Square(SquarePairs),
    /// see [`MatTriple`]
    Mat(MatTriple),
    /// shares of a weight mask B
    WeightMask(RingTensor),
    /// see [`WeightTriple`]
    Weight(WeightTriple),
    /// see [`MaskMaterial`]
    Mask(MaskMaterial),
    /// see [`LutMaterial`]
    Lut(LutMaterial),
    /// see [`SignedLutMaterial`]
    SignedLut(SignedLutMaterial),
    /// see [`TruncWeightMaterial`]
    TruncWeight(TruncWeightMaterial),
    /// see [`NormTriple`]
    Norm(NormTriple),
}

impl Material {
    /// The kind of material, for error messages (never the shares themselves).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Material::Mul(_) => "beaver triples",
            Material::Square(_) => "square pairs",
            Material::Mat(_) => "matrix triple",
            Material::WeightMask(_) => "weight mask",
            Material::Weight(_) => "weight triple",
            Material::Mask(_) => "mask",
            Material::Lut(_) => "lookup keys",
            Material::SignedLut(_) => "signed lookup keys",
            Material::TruncWeight(_) => "truncation-weight triple",
            Material::Norm(_) => "norm triple",
        }
    }
}

fn tensor(prg: &mut Prg, shape: &[usize]) -> RingTensor {
    let n = shape.iter().product();
    RingTensor::from_vec(shape, prg.ring_vec(n)).expect("shape product")
}

fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

/// Masks `(r mod 2^63) >> s`.
fn lo_shift(r: u64, s: u32) -> u64 {
    (r & (u64::MAX >> 1)) >> s
}

/// The dealer-known part of a truncation by `s` of a value masked with `r`, given the top bit
/// `c_hi` of the opened value: `M_c = lo_s(r) ∓ r_hi·2^(63−s)` (minus for `c_hi = 0`), as in
/// `ops::trunc`.
fn trunc_mask(r: u64, s: u32, c_hi: u64) -> u64 {
    let hi = (r >> 63).wrapping_shl(63 - s);
    if c_hi == 0 {
        lo_shift(r, s).wrapping_sub(hi)
    } else {
        lo_shift(r, s).wrapping_add(hi)
    }
}

/// `2^s − 1`: a truncation-weight triple's `E` is shared as residues mod `2^s` (`s ≤ 62`).
fn residue_mask(s: u32) -> u64 {
    (1u64 << s) - 1
}

/// Bytes per residue mod `2^s` of a truncation-weight triple's `E` (4 at s = 32, 3 at 24,
/// instead of 8).
fn e_residue_width(s: u32) -> usize {
    s.div_ceil(8) as usize
}

fn roots(prg: &mut Prg, n: usize) -> Vec<u128> {
    (0..n).map(|_| prg.next_u128()).collect()
}

/// Generates mask material (see [`MaskMaterial`]) into the explicit streams; returns the mask.
#[allow(clippy::too_many_arguments)]
fn gen_mask(
    n: usize,
    shifts: &[u32],
    cmp_bits: u32,
    cmp_shift: u32,
    exact: &[u32],
    s0: &mut Prg,
    s1: &mut Prg,
    e0: &mut Vec<u8>,
    e1: &mut Vec<u8>,
) -> Vec<u64> {
    let r0 = s0.ring_vec(n);
    let msb0 = s0.ring_vec(n);
    let lo0: Vec<Vec<u64>> = shifts.iter().map(|_| s0.ring_vec(n)).collect();
    let r1 = s1.ring_vec(n);
    let r = add(&r0, &r1);
    let msb: Vec<u64> = r.iter().map(|x| x >> 63).collect();
    put_u64s(e1, &sub(&msb, &msb0));
    for (s, l0) in shifts.iter().zip(&lo0) {
        let lo: Vec<u64> = r.iter().map(|&x| lo_shift(x, *s)).collect();
        put_u64s(e1, &sub(&lo, l0));
    }
    if cmp_bits > 0 {
        gen_cmp(&r, cmp_bits, cmp_shift, s0, s1, e0, e1);
    }
    for s in exact {
        let roots0 = roots(s0, n);
        let roots1 = roots(s1, n);
        for i in 0..n {
            let cw = dcf_gen(*s, r[i] & ((1u64 << s) - 1), 1, roots0[i], roots1[i]);
            cw.to_bytes(e0);
            cw.to_bytes(e1);
        }
    }
    r
}

/// Comparison material on masks `r` for `bits`-bit signed comparisons (see [`CmpMaterial`]):
/// shares of bit `bits − 1` of each mask (P1's explicitly) and a DCF key on its bits
/// `shift..bits − 1` (`bits − 1 − shift` levels) with payload `1 − 2·bit` (both parties).
fn gen_cmp(
    r: &[u64],
    bits: u32,
    shift: u32,
    s0: &mut Prg,
    s1: &mut Prg,
    e0: &mut Vec<u8>,
    e1: &mut Vec<u8>,
) {
    let n = r.len();
    let cm0 = s0.ring_vec(n);
    let roots0 = roots(s0, n);
    let roots1 = roots(s1, n);
    let cm: Vec<u64> = r.iter().map(|x| (x >> (bits - 1)) & 1).collect();
    put_u64s(e1, &sub(&cm, &cm0));
    let low_mask = if bits - 1 == 64 {
        u64::MAX
    } else {
        (1u64 << (bits - 1)) - 1
    };
    for i in 0..n {
        let beta = 1u64.wrapping_sub(2u64.wrapping_mul(cm[i]));
        let cw = dcf_gen(
            bits - 1 - shift,
            (r[i] & low_mask) >> shift,
            beta,
            roots0[i],
            roots1[i],
        );
        cw.to_bytes(e0);
        cw.to_bytes(e1);
    }
}

/// Range-check material of a norm's input (see [`NormCheckMaterial`]) for the mask `a` of its
/// opening: P1's shares of the top bit of `r = −a`, of its low parts for both shifts and of
/// the squared truncation masks, then one comparison mask per row for each row sum.
fn gen_norm_check(
    a: &[u64],
    rows: usize,
    check: &super::NormCheck,
    s0: &mut Prg,
    s1: &mut Prg,
    e0: &mut Vec<u8>,
    e1: &mut Vec<u8>,
) {
    let n = a.len();
    let r: Vec<u64> = a.iter().map(|x| x.wrapping_neg()).collect();
    let shifts = [check.coarse, check.fine];
    let msb0 = s0.ring_vec(n);
    let msb: Vec<u64> = r.iter().map(|x| x >> 63).collect();
    put_u64s(e1, &sub(&msb, &msb0));
    for s in shifts {
        let lo0 = s0.ring_vec(n);
        let lo: Vec<u64> = r.iter().map(|&x| lo_shift(x, s)).collect();
        put_u64s(e1, &sub(&lo, &lo0));
    }
    for s in shifts {
        for c_hi in 0..2 {
            let sq0 = s0.ring_vec(n);
            let sq: Vec<u64> = r
                .iter()
                .map(|&x| {
                    let m = trunc_mask(x, s, c_hi);
                    m.wrapping_mul(m)
                })
                .collect();
            put_u64s(e1, &sub(&sq, &sq0));
        }
    }
    for bits in [check.coarse_bits, check.fine_bits] {
        gen_mask(rows, &[], bits, 0, &[], s0, s1, e0, e1);
    }
}

/// Expands a norm's range-check material (the party side of [`gen_norm_check`]).
fn read_norm_check(
    p0: bool,
    a: &[u64],
    rows: usize,
    check: &super::NormCheck,
    prg: &mut Prg,
    rd: &mut Reader,
) -> Result<NormCheckMaterial, CorrelationError> {
    let n = a.len();
    let words = |prg: &mut Prg, rd: &mut Reader| -> Result<Vec<u64>, CorrelationError> {
        if p0 {
            Ok(prg.ring_vec(n))
        } else {
            rd.u64s(n)
        }
    };
    let r_msb = words(prg, rd)?;
    let lo_shifted = vec![
        (check.coarse, words(prg, rd)?),
        (check.fine, words(prg, rd)?),
    ];
    let sq = [
        [words(prg, rd)?, words(prg, rd)?],
        [words(prg, rd)?, words(prg, rd)?],
    ];
    let mut row_mask = |bits: u32| read_mask(p0, rows, &[], bits, 0, &[], prg, rd);
    let rows = [row_mask(check.coarse_bits)?, row_mask(check.fine_bits)?];
    Ok(NormCheckMaterial {
        mask: MaskMaterial {
            r: a.iter().map(|x| x.wrapping_neg()).collect(),
            r_msb,
            lo_shifted,
            cmp: None,
            exact: Vec::new(),
        },
        sq,
        rows,
    })
}

/// Expands comparison material (the party side of [`gen_cmp`]).
fn read_cmp(
    p0: bool,
    n: usize,
    bits: u32,
    shift: u32,
    prg: &mut Prg,
    rd: &mut Reader,
) -> Result<CmpMaterial, CorrelationError> {
    let msb = if p0 { prg.ring_vec(n) } else { Vec::new() };
    let roots = roots(prg, n);
    let msb = if p0 { msb } else { rd.u64s(n)? };
    let cws = dcfs(rd, n, bits - 1 - shift)?;
    Ok(CmpMaterial {
        bits,
        shift,
        msb,
        roots,
        cws,
    })
}

/// Expands mask material (the party side of [`gen_mask`]).
#[allow(clippy::too_many_arguments)]
fn read_mask(
    p0: bool,
    n: usize,
    shifts: &[u32],
    cmp_bits: u32,
    cmp_shift: u32,
    exact: &[u32],
    prg: &mut Prg,
    rd: &mut Reader,
) -> Result<MaskMaterial, CorrelationError> {
    let r = prg.ring_vec(n);
    let (r_msb, lo_shifted) = if p0 {
        let msb = prg.ring_vec(n);
        let lo = shifts.iter().map(|s| (*s, prg.ring_vec(n))).collect();
        (msb, lo)
    } else {
        let msb = rd.u64s(n)?;
        let mut lo = Vec::new();
        for s in shifts {
            lo.push((*s, rd.u64s(n)?));
        }
        (msb, lo)
    };
    let cmp = if cmp_bits > 0 {
        Some(read_cmp(p0, n, cmp_bits, cmp_shift, prg, rd)?)
    } else {
        None
    };
    let mut ex = Vec::with_capacity(exact.len());
    for s in exact {
        let roots = roots(prg, n);
        let cws = dcfs(rd, n, *s)?;
        ex.push(ExactMaterial {
            shift: *s,
            roots,
            cws,
        });
    }
    Ok(MaskMaterial {
        r,
        r_msb,
        lo_shifted,
        cmp,
        exact: ex,
    })
}

/// Dealer side: generates bundle contents. `s0`/`s1` are the parties' seeded streams for this
/// bundle id; `weights` holds the masks of registered private weights. Returns the explicit
/// bytes for party 0 and party 1.
pub fn generate(
    req: &CorrRequest,
    s0: &mut Prg,
    s1: &mut Prg,
    weights: &mut HashMap<u64, RingTensor>,
) -> Result<(Vec<u8>, Vec<u8>), CorrelationError> {
    req.validate()?;
    let mut e0 = Vec::new();
    let mut e1 = Vec::new();
    match req {
        CorrRequest::MulTriples { n } => {
            let (a0, b0, c0) = (s0.ring_vec(*n), s0.ring_vec(*n), s0.ring_vec(*n));
            let (a1, b1) = (s1.ring_vec(*n), s1.ring_vec(*n));
            let c: Vec<u64> = add(&a0, &a1)
                .iter()
                .zip(add(&b0, &b1))
                .map(|(x, y)| x.wrapping_mul(y))
                .collect();
            put_u64s(&mut e1, &sub(&c, &c0));
        }
        CorrRequest::NormTriple {
            rows,
            d,
            product,
            check,
        } => {
            let n = rows * d;
            let (a0, q0) = (s0.ring_vec(n), s0.ring_vec(n));
            let (b0, c0) = if *product {
                (s0.ring_vec(*rows), s0.ring_vec(n))
            } else {
                (Vec::new(), Vec::new())
            };
            let a1 = s1.ring_vec(n);
            let b1 = if *product {
                s1.ring_vec(*rows)
            } else {
                Vec::new()
            };
            let a = add(&a0, &a1);
            let q: Vec<u64> = a.iter().map(|x| x.wrapping_mul(*x)).collect();
            put_u64s(&mut e1, &sub(&q, &q0));
            if *product {
                let b = add(&b0, &b1);
                let c: Vec<u64> = (0..n).map(|i| a[i].wrapping_mul(b[i / d])).collect();
                put_u64s(&mut e1, &sub(&c, &c0));
            }
            gen_norm_check(&a, *rows, check, s0, s1, &mut e0, &mut e1);
        }
        CorrRequest::SquarePairs { n } => {
            let (a0, q0) = (s0.ring_vec(*n), s0.ring_vec(*n));
            let a1 = s1.ring_vec(*n);
            let q: Vec<u64> = add(&a0, &a1).iter().map(|x| x.wrapping_mul(*x)).collect();
            put_u64s(&mut e1, &sub(&q, &q0));
        }
        CorrRequest::MatTriple { m, k, n } => {
            let (a0, b0, c0) = (s0.ring_vec(m * k), s0.ring_vec(k * n), s0.ring_vec(m * n));
            let (a1, b1) = (s1.ring_vec(m * k), s1.ring_vec(k * n));
            let c = gemm_u64(*m, *k, *n, &add(&a0, &a1), &add(&b0, &b1));
            put_u64s(&mut e1, &sub(&c, &c0));
        }
        CorrRequest::WeightMask { weight, k, n } => {
            let b0 = s0.ring_vec(k * n);
            let b1 = s1.ring_vec(k * n);
            // refuse a second mask before touching the registered one: the first mask is the
            // one `W − B` was opened with, and every later triple must use it
            if weights.contains_key(weight) {
                return Err(CorrelationError::InvalidRequest {
                    detail: format!("weight {weight} was already masked in this session"),
                });
            }
            let b = RingTensor::from_vec(&[*k, *n], add(&b0, &b1)).expect("shape");
            weights.insert(*weight, b);
        }
        CorrRequest::WeightTriple { weight, m, k, n } => {
            let b = weights
                .get(weight)
                .ok_or_else(|| CorrelationError::InvalidRequest {
                    detail: format!("weight {weight} has no mask yet"),
                })?;
            if b.shape() != [*k, *n] {
                return Err(CorrelationError::InvalidRequest {
                    detail: format!("weight {weight} mask is {:?}, not [{k}, {n}]", b.shape()),
                });
            }
            let (a0, c0) = (s0.ring_vec(m * k), s0.ring_vec(m * n));
            let a1 = s1.ring_vec(m * k);
            let c = gemm_u64(*m, *k, *n, &add(&a0, &a1), b.data());
            put_u64s(&mut e1, &sub(&c, &c0));
        }
        CorrRequest::TruncWeight {
            weight,
            m,
            k,
            n,
            shift,
        } => {
            let b = weights
                .get(weight)
                .ok_or_else(|| CorrelationError::InvalidRequest {
                    detail: format!("weight {weight} has no mask yet"),
                })?;
            if b.shape() != [*k, *n] {
                return Err(CorrelationError::InvalidRequest {
                    detail: format!("weight {weight} mask is {:?}, not [{k}, {n}]", b.shape()),
                });
            }
            let mk = m * k;
            let (r0, msb0, lo0) = (s0.ring_vec(mk), s0.ring_vec(mk), s0.ring_vec(mk));
            let (c0, e0) = (s0.ring_vec(m * n), s0.ring_vec(mk * n));
            let r = add(&r0, &s1.ring_vec(mk));
            let msb: Vec<u64> = r.iter().map(|x| x >> 63).collect();
            let lo: Vec<u64> = r.iter().map(|&x| lo_shift(x, *shift)).collect();
            let m0: Vec<u64> = r.iter().map(|&x| trunc_mask(x, *shift, 0)).collect();
            let c = gemm_u64(*m, *k, *n, &m0, b.data());
            // E = 2^(64−s)·(r_hi∘B) only matters mod 2^64, i.e. r_hi∘B mod 2^s: its shares
            // travel as residues mod 2^s in ⌈s/8⌉ bytes (see `e_residue_width`)
            let low = residue_mask(*shift);
            let mut e = vec![0u64; mk * n];
            for (ik, row) in e.chunks_exact_mut(*n).enumerate() {
                if msb[ik] == 1 {
                    let kk = ik % k;
                    for (v, w) in row.iter_mut().zip(&b.data()[kk * n..(kk + 1) * n]) {
                        *v = *w;
                    }
                }
            }
            let e1s: Vec<u64> = sub(&e, &e0).into_iter().map(|v| v & low).collect();
            put_u64s(&mut e1, &sub(&msb, &msb0));
            put_u64s(&mut e1, &sub(&lo, &lo0));
            put_u64s(&mut e1, &sub(&c, &c0));
            put_words(&mut e1, &e1s, e_residue_width(*shift));
        }
        CorrRequest::Mask {
            n,
            shifts,
            cmp_bits,
            cmp_shift,
            exact,
        } => {
            gen_mask(
                *n, shifts, *cmp_bits, *cmp_shift, exact, s0, s1, &mut e0, &mut e1,
            );
        }
        CorrRequest::Lut { n, bits } => {
            let m = (1u64 << bits) - 1;
            let sh0 = s0.ring_vec(*n);
            let roots0 = roots(s0, *n);
            let sh1 = s1.ring_vec(*n);
            let roots1 = roots(s1, *n);
            for i in 0..*n {
                let alpha = sh0[i].wrapping_add(sh1[i]) & m;
                let cw = dpf_gen(*bits, alpha, roots0[i], roots1[i]);
                cw.to_bytes(&mut e0);
                cw.to_bytes(&mut e1);
            }
        }
        CorrRequest::SignedLut {
            n,
            bits,
            partner_shift,
            input,
        } => {
            let m = (1u64 << bits) - 1;
            // the index mask: `bits` bits, or `range_bits` when the range check runs on the
            // cell index (the lookup reads the low `bits`)
            let width = input.as_ref().map_or(*bits, |i| i.range_bits);
            let sh0 = s0.ring_vec(*n);
            let roots0 = roots(s0, *n);
            let sh1 = s1.ring_vec(*n);
            let roots1 = roots(s1, *n);
            let alphas: Vec<u64> = (0..*n)
                .map(|i| sh0[i].wrapping_add(sh1[i]) & ((1u64 << width) - 1))
                .collect();
            let mut signs = Vec::with_capacity(*n);
            for i in 0..*n {
                let alpha = alphas[i] & m;
                let (cw, positive) = bit_dpf_gen(*bits, alpha, roots0[i], roots1[i]);
                signs.push(if positive { 1u64 } else { u64::MAX });
                cw.to_bytes(&mut e0);
                cw.to_bytes(&mut e1);
            }
            if *partner_shift > 0 {
                let sh = *partner_shift;
                let (r0, msb0, lo0) = (s0.ring_vec(*n), s0.ring_vec(*n), s0.ring_vec(*n));
                let (sm00, sm10) = (s0.ring_vec(*n), s0.ring_vec(*n));
                let r = add(&r0, &s1.ring_vec(*n));
                let msb: Vec<u64> = r.iter().map(|x| x >> 63).collect();
                let lo: Vec<u64> = r.iter().map(|&x| lo_shift(x, sh)).collect();
                let sm = |c_hi: u64| -> Vec<u64> {
                    (0..*n)
                        .map(|i| signs[i].wrapping_mul(trunc_mask(r[i], sh, c_hi)))
                        .collect()
                };
                let (sm0, sm1) = (sm(0), sm(1));
                put_u64s(&mut e1, &sub(&msb, &msb0));
                put_u64s(&mut e1, &sub(&lo, &lo0));
                put_u64s(&mut e1, &sub(&sm0, &sm00));
                put_u64s(&mut e1, &sub(&sm1, &sm10));
                // mask of the signed product operand, with its products by s and s·M_c
                let (a0, as0, asm00, asm10) = (
                    s0.ring_vec(*n),
                    s0.ring_vec(*n),
                    s0.ring_vec(*n),
                    s0.ring_vec(*n),
                );
                let a = add(&a0, &s1.ring_vec(*n));
                let a_s: Vec<u64> = (0..*n).map(|i| a[i].wrapping_mul(signs[i])).collect();
                let asm0: Vec<u64> = (0..*n).map(|i| a[i].wrapping_mul(sm0[i])).collect();
                let asm1: Vec<u64> = (0..*n).map(|i| a[i].wrapping_mul(sm1[i])).collect();
                put_u64s(&mut e1, &sub(&a_s, &as0));
                put_u64s(&mut e1, &sub(&asm0, &asm00));
                put_u64s(&mut e1, &sub(&asm1, &asm10));
            }
            if let Some(inp) = input {
                // the exact cell truncation's borrow rides on the two-word key below
                let r = gen_mask(*n, &inp.shifts(), 0, 0, &[], s0, s1, &mut e0, &mut e1);
                let a = add(&s0.ring_vec(*n), &s1.ring_vec(*n));
                let (am00, am10) = (s0.ring_vec(*n), s0.ring_vec(*n));
                let am0: Vec<u64> = (0..*n)
                    .map(|i| a[i].wrapping_mul(remainder_mask(inp, r[i], 0)))
                    .collect();
                let am1: Vec<u64> = (0..*n)
                    .map(|i| a[i].wrapping_mul(remainder_mask(inp, r[i], 1)))
                    .collect();
                put_u64s(&mut e1, &sub(&am0, &am00));
                put_u64s(&mut e1, &sub(&am1, &am10));
                let (roots0, roots1) = (roots(s0, *n), roots(s1, *n));
                let low = (1u64 << inp.shift) - 1;
                for i in 0..*n {
                    let cw = dcf2_gen(inp.shift, r[i] & low, [1, a[i]], roots0[i], roots1[i]);
                    cw.to_bytes(&mut e0);
                    cw.to_bytes(&mut e1);
                }
                gen_cmp(&alphas, inp.range_bits, 0, s0, s1, &mut e0, &mut e1);
            }
        }
    }
    Ok((e0, e1))
}

/// Decodes keys with `decode` (a scheme's batch decoder: keys and bytes used) from the reader's
/// rest; `what` names them in the error.
fn flat_keys<K>(
    rd: &mut Reader,
    what: &str,
    decode: impl FnOnce(&[u8]) -> Result<(K, usize), crate::fss::FssError>,
) -> Result<K, CorrelationError> {
    let (keys, used) = decode(rd.rest()).map_err(|e| CorrelationError::Malformed {
        detail: format!("{what}: {e}"),
    })?;
    rd.advance(used)?;
    Ok(keys)
}

fn dcfs(rd: &mut Reader, n: usize, bits: u32) -> Result<DcfKeys, CorrelationError> {
    flat_keys(rd, "dcf keys", |b| DcfKeys::from_bytes(bits, n, b))
}

fn dcf2s(rd: &mut Reader, n: usize, bits: u32) -> Result<Dcf2Keys, CorrelationError> {
    flat_keys(rd, "two-word dcf keys", |b| {
        Dcf2Keys::from_bytes(bits, n, b)
    })
}

fn dpfs(rd: &mut Reader, n: usize, bits: u32) -> Result<Vec<DpfCorrection>, CorrelationError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (cw, used) = DpfCorrection::from_bytes(bits, rd.rest()).map_err(|e| {
            CorrelationError::Malformed {
                detail: format!("dpf key: {e}"),
            }
        })?;
        rd.advance(used)?;
        out.push(cw);
    }
    Ok(out)
}

/// Party side: expands bundle material from the party's seeded stream and the explicit bytes.
pub fn materialize(
    party: PartyId,
    req: &CorrRequest,
    prg: &mut Prg,
    explicit: &[u8],
) -> Result<Material, CorrelationError> {
    // a request off the wire may be malformed (e.g. a comparison shift past its width)
    req.validate()?;
    let mut rd = Reader::new(explicit);
    let p0 = party == PartyId::P0;
    let m = match req {
        CorrRequest::MulTriples { n } => {
            let a = prg.ring_vec(*n);
            let b = prg.ring_vec(*n);
            let c = if p0 { prg.ring_vec(*n) } else { rd.u64s(*n)? };
            Material::Mul(MulTriples { a, b, c })
        }
        CorrRequest::NormTriple {
            rows,
            d,
            product,
            check,
        } => {
            let n = rows * d;
            let (pn, pr) = if *product { (n, *rows) } else { (0, 0) };
            let (a, a2, b, c) = if p0 {
                let [a, a2, b, c] = [n, n, pr, pn].map(|len| prg.ring_vec(len));
                (a, a2, b, c)
            } else {
                let (a, b) = (prg.ring_vec(n), prg.ring_vec(pr));
                let (a2, c) = (rd.u64s(n)?, rd.u64s(pn)?);
                (a, a2, b, c)
            };
            let check = Box::new(read_norm_check(p0, &a, *rows, check, prg, &mut rd)?);
            Material::Norm(NormTriple { a, a2, b, c, check })
        }
        CorrRequest::SquarePairs { n } => {
            let a = prg.ring_vec(*n);
            let a2 = if p0 { prg.ring_vec(*n) } else { rd.u64s(*n)? };
            Material::Square(SquarePairs { a, a2 })
        }
        CorrRequest::MatTriple { m, k, n } => {
            let a = tensor(prg, &[*m, *k]);
            let b = tensor(prg, &[*k, *n]);
            let c = if p0 {
                tensor(prg, &[*m, *n])
            } else {
                RingTensor::from_vec(&[*m, *n], rd.u64s(m * n)?).expect("shape")
            };
            Material::Mat(MatTriple { a, b, c })
        }
        CorrRequest::WeightMask { k, n, .. } => Material::WeightMask(tensor(prg, &[*k, *n])),
        CorrRequest::WeightTriple { m, k, n, .. } => {
            let a = tensor(prg, &[*m, *k]);
            let c = if p0 {
                tensor(prg, &[*m, *n])
            } else {
                RingTensor::from_vec(&[*m, *n], rd.u64s(m * n)?).expect("shape")
            };
            Material::Weight(WeightTriple { a, c })
        }
        CorrRequest::TruncWeight { m, k, n, shift, .. } => {
            let mk = m * k;
            let r = prg.ring_vec(mk);
            let [r_msb, lo, m0b, e] = if p0 {
                [mk, mk, m * n, mk * n].map(|len| prg.ring_vec(len))
            } else {
                [
                    rd.u64s(mk)?,
                    rd.u64s(mk)?,
                    rd.u64s(m * n)?,
                    rd.words(mk * n, e_residue_width(*shift))?,
                ]
            };
            // shares of r_hi∘B mod 2^s, lifted to shares of E = 2^(64−s)·(r_hi∘B)
            let (low, unit) = (residue_mask(*shift), 1u64 << (64 - shift));
            let e: Vec<u64> = e
                .into_iter()
                .map(|v| (v & low).wrapping_mul(unit))
                .collect();
            Material::TruncWeight(TruncWeightMaterial {
                mask: MaskMaterial {
                    r,
                    r_msb,
                    lo_shifted: vec![(*shift, lo)],
                    cmp: None,
                    exact: Vec::new(),
                },
                m0b,
                e,
            })
        }
        CorrRequest::Mask {
            n,
            shifts,
            cmp_bits,
            cmp_shift,
            exact,
        } => Material::Mask(read_mask(
            p0, *n, shifts, *cmp_bits, *cmp_shift, exact, prg, &mut rd,
        )?),
        CorrRequest::Lut { n, bits } => {
            let s = prg.ring_vec(*n);
            let roots = roots(prg, *n);
            let cws = dpfs(&mut rd, *n, *bits)?;
            Material::Lut(LutMaterial {
                bits: *bits,
                s,
                roots,
                cws,
            })
        }
        CorrRequest::SignedLut {
            n,
            bits,
            partner_shift,
            input,
        } => {
            let s = prg.ring_vec(*n);
            let roots = roots(prg, *n);
            let (cws, used) = BitDpfKeys::from_bytes(*bits, *n, rd.rest()).map_err(|e| {
                CorrelationError::Malformed {
                    detail: format!("bit-dpf keys: {e}"),
                }
            })?;
            rd.advance(used)?;
            let partner = if *partner_shift > 0 {
                let r = prg.ring_vec(*n);
                let [r_msb, lo, sm0, sm1] = if p0 {
                    [(); 4].map(|_| prg.ring_vec(*n))
                } else {
                    [rd.u64s(*n)?, rd.u64s(*n)?, rd.u64s(*n)?, rd.u64s(*n)?]
                };
                let a = prg.ring_vec(*n);
                let [a_s, asm0, asm1] = if p0 {
                    [(); 3].map(|_| prg.ring_vec(*n))
                } else {
                    [rd.u64s(*n)?, rd.u64s(*n)?, rd.u64s(*n)?]
                };
                Some(Box::new(PartnerMask {
                    mask: MaskMaterial {
                        r,
                        r_msb,
                        lo_shifted: vec![(*partner_shift, lo)],
                        cmp: None,
                        exact: Vec::new(),
                    },
                    sm: [sm0, sm1],
                    a,
                    a_s,
                    a_sm: [asm0, asm1],
                }))
            } else {
                None
            };
            let input = match input {
                Some(inp) => {
                    let mask = read_mask(p0, *n, &inp.shifts(), 0, 0, &[], prg, &mut rd)?;
                    let a = prg.ring_vec(*n);
                    let am = if p0 {
                        [prg.ring_vec(*n), prg.ring_vec(*n)]
                    } else {
                        [rd.u64s(*n)?, rd.u64s(*n)?]
                    };
                    let a_roots = self::roots(prg, *n);
                    let cws = dcf2s(&mut rd, *n, inp.shift)?;
                    let range = read_cmp(p0, *n, inp.range_bits, 0, prg, &mut rd)?;
                    Some(Box::new(SignedInputMaterial {
                        mask,
                        a,
                        am,
                        roots: a_roots,
                        cws,
                        range,
                    }))
                }
                None => None,
            };
            Material::SignedLut(SignedLutMaterial {
                bits: *bits,
                s,
                roots,
                cws,
                partner,
                input,
            })
        }
    };
    rd.finish()?;
    Ok(m)
}

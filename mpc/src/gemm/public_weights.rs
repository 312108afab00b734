//! Products `X·W` of secret-shared activations X (any `u64`) with a **public** weight matrix W
//! whose entries are small signed fixed-point numbers, prepared once ([`PublicWeights`]).
//!
//! # Method
//! A public weight in fixed point with f ≤ 30 fractional bits fits a signed 32-bit integer for
//! any real weight of magnitude below 2^(31−f) (2^15 at f = 16). With the offset
//! `w' = w + 2^31 ∈ [0, 2^32)` and the split `x = x_lo + x_hi·2^20` (`x_lo < 2^20`,
//! `x_hi < 2^44`),
//!
//! `x·w ≡ x_lo·w' + (x_hi·w' mod 2^44)·2^20 − 2^31·x  (mod 2^64)`.
//!
//! `x_lo·w' < 2^52` is exact in a 52-bit multiplier, and only the low 44 bits of `x_hi·w'` are
//! needed, so both products are single AVX-512 IFMA instructions (`vpmadd52luq`, which also
//! adds into the accumulator): two instructions per eight products, against the three-µop
//! `vpmullq` plus an add (or two AVX2 multiplies plus two adds per *four* products) of the
//! general ring GEMM in [`super`]. The `−2^31·Σ_p x_ip` correction is one scalar per row.
//!
//! W is packed at construction into panels of 16 columns (two vectors per depth step), so the
//! product streams it contiguously; X is split into its two limbs once per product.
//! Where the CPU lacks AVX-512F + IFMA, or an entry does not fit in 32 signed bits, the
//! product falls back to [`super::gemm_u64_into`] on the row-major weights: same result.

use rayon::prelude::*;

/// Columns per packed panel (two AVX-512 vectors of eight `u64`).
const NR: usize = 16;
/// Rows per micro-kernel call.
const MR: usize = 4;
/// Depth of one k-block: a packed panel block (`KC × NR` words, 32 KiB) stays in L1.
const KC: usize = 256;
/// Bits of x in the low limb.
const LO_BITS: u32 = 20;
/// Offset making a signed 32-bit weight non-negative.
const OFFSET: u64 = 1 << 31;
/// Below this many multiply-adds a product runs on the calling thread.
const PAR_MIN_WORK: usize = 1 << 18;

/// A public `k × n` weight matrix over Z_2^64, prepared for `X·W` with any `m × k` X.
///
/// It serialises as the row-major matrix (`k`, `n`, `data`) and is prepared again when read,
/// for the CPU that reads it; reading checks that `data` has `k·n` entries.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RowMajor", into = "RowMajor")]
pub struct PublicWeights {
    k: usize,
    n: usize,
    layout: Layout,
}

#[derive(Clone, Debug)]
enum Layout {
    /// Row-major weights, multiplied by the general ring GEMM.
    Plain(Vec<u64>),
    /// Offset weights `w + 2^31` in panels of [`NR`] columns (depth-major inside a panel, the
    /// last panel zero-padded), for the IFMA kernel.
    #[cfg(target_arch = "x86_64")]
    Ifma(Vec<u64>),
}

/// The serialised form of [`PublicWeights`].
#[derive(serde::Serialize, serde::Deserialize)]
struct RowMajor {
    k: usize,
    n: usize,
    data: Vec<u64>,
}

impl TryFrom<RowMajor> for PublicWeights {
    type Error = String;

    fn try_from(r: RowMajor) -> Result<Self, String> {
        match r.k.checked_mul(r.n) {
            Some(len) if len == r.data.len() => Ok(Self::new(r.k, r.n, &r.data)),
            _ => Err(format!(
                "public weights of {}×{} with {} entries",
                r.k,
                r.n,
                r.data.len()
            )),
        }
    }
}

impl From<PublicWeights> for RowMajor {
    fn from(w: PublicWeights) -> Self {
        let data = w.to_row_major();
        RowMajor {
            k: w.k,
            n: w.n,
            data,
        }
    }
}

/// Whether this CPU runs the IFMA kernel.
#[cfg(target_arch = "x86_64")]
fn ifma_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512ifma")
}

/// Whether a ring element, read as a signed 64-bit integer, fits in 32 signed bits.
#[cfg(target_arch = "x86_64")]
fn fits_i32(w: u64) -> bool {
    i32::try_from(w as i64).is_ok()
}

impl PublicWeights {
    /// Prepares a row-major `k × n` matrix `w` (`w.len() == k·n`, checked by `debug_assert!`;
    /// callers hold it as a checked [`crate::ring::RingTensor`]).
    pub fn new(k: usize, n: usize, w: &[u64]) -> Self {
        debug_assert_eq!(w.len(), k * n, "PublicWeights::new: w is not k×n");
        let w = &w[..k * n];
        let layout = match () {
            #[cfg(target_arch = "x86_64")]
            _ if k > 0 && n > 0 && ifma_available() && w.iter().all(|&v| fits_i32(v)) => {
                Layout::Ifma(pack(k, n, w))
            }
            _ => Layout::Plain(w.to_vec()),
        };
        Self { k, n, layout }
    }

    /// Rows of W (the inner dimension of `X·W`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of W.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether products run on the IFMA kernel (false: the general ring GEMM).
    pub fn uses_ifma(&self) -> bool {
        !matches!(self.layout, Layout::Plain(_))
    }

    /// The weights as the row-major `k × n` matrix they were made from.
    pub fn to_row_major(&self) -> Vec<u64> {
        match &self.layout {
            Layout::Plain(v) => v.clone(),
            #[cfg(target_arch = "x86_64")]
            Layout::Ifma(packed) => {
                let (k, n) = (self.k, self.n);
                let mut out = vec![0u64; k * n];
                for (q, panel) in packed.chunks_exact(k * NR).enumerate() {
                    let j0 = q * NR;
                    let cols = NR.min(n - j0);
                    for (p, src) in panel.chunks_exact(NR).enumerate() {
                        for (t, &v) in src.iter().take(cols).enumerate() {
                            // v = w + 2^31 in [0, 2^32): back to the signed ring element.
                            out[p * n + j0 + t] = (v as i64 - OFFSET as i64) as u64;
                        }
                    }
                }
                out
            }
        }
    }

    /// Bytes held (the prepared weights).
    pub fn heap_bytes(&self) -> usize {
        match &self.layout {
            Layout::Plain(v) => 8 * v.len(),
            #[cfg(target_arch = "x86_64")]
            Layout::Ifma(v) => 8 * v.len(),
        }
    }

    /// `X·W` for a row-major `m × k` X (`x.len() == m·k`, checked by `debug_assert!`).
    pub fn matmul(&self, m: usize, x: &[u64]) -> Vec<u64> {
        let mut c = vec![0u64; m * self.n];
        self.matmul_into(m, x, &mut c);
        c
    }

    /// `C += X·W` into a row-major `m × n` buffer.
    pub fn matmul_into(&self, m: usize, x: &[u64], c: &mut [u64]) {
        let (k, n) = (self.k, self.n);
        debug_assert_eq!(x.len(), m * k, "PublicWeights::matmul_into: x is not m×k");
        debug_assert_eq!(c.len(), m * n, "PublicWeights::matmul_into: c is not m×n");
        match &self.layout {
            Layout::Plain(w) => super::gemm_u64_into(m, k, n, x, w, c),
            #[cfg(target_arch = "x86_64")]
            Layout::Ifma(packed) => ifma_product(m, k, n, &x[..m * k], packed, &mut c[..m * n]),
        }
    }
}

/// Packs row-major `w` (entries fitting i32) into offset panels of [`NR`] columns.
#[cfg(target_arch = "x86_64")]
fn pack(k: usize, n: usize, w: &[u64]) -> Vec<u64> {
    let panels = n.div_ceil(NR);
    let mut out = vec![0u64; panels * k * NR];
    for (q, panel) in out.chunks_exact_mut(k * NR).enumerate() {
        let j0 = q * NR;
        let cols = NR.min(n - j0);
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            for (t, d) in dst.iter_mut().take(cols).enumerate() {
                *d = w[p * n + j0 + t].wrapping_add(OFFSET) & 0xFFFF_FFFF;
            }
        }
    }
    out
}

/// X split into limbs, row-major `m × k` each, and `2^31·Σ_p x_ip` per row.
#[cfg(target_arch = "x86_64")]
struct SplitX {
    lo: Vec<u64>,
    hi: Vec<u64>,
    correction: Vec<u64>,
}

#[cfg(target_arch = "x86_64")]
fn split_x(m: usize, k: usize, x: &[u64]) -> SplitX {
    let lo = x.iter().map(|&v| v & ((1 << LO_BITS) - 1)).collect();
    let hi = x.iter().map(|&v| v >> LO_BITS).collect();
    let correction = (0..m)
        .map(|i| {
            x[i * k..(i + 1) * k]
                .iter()
                .fold(0u64, |s, &v| s.wrapping_add(v))
                .wrapping_mul(OFFSET)
        })
        .collect();
    SplitX { lo, hi, correction }
}

/// `C += X·W` with the IFMA kernel; `packed` from [`pack`].
#[cfg(target_arch = "x86_64")]
fn ifma_product(m: usize, k: usize, n: usize, x: &[u64], packed: &[u64], c: &mut [u64]) {
    if m == 0 || n == 0 {
        return;
    }
    let sx = split_x(m, k, x);
    let panels = n.div_ceil(NR);
    let threads = rayon::current_num_threads();
    if m * k * n < PAR_MIN_WORK || threads <= 1 || panels < 2 {
        panel_range(m, k, n, &sx, packed, 0..panels, c, 0, n);
        return;
    }
    let per_task = panels.div_ceil(2 * threads).max(1);
    let ranges: Vec<std::ops::Range<usize>> = (0..panels)
        .step_by(per_task)
        .map(|q| q..(q + per_task).min(panels))
        .collect();
    let parts: Vec<(usize, usize, Vec<u64>)> = ranges
        .into_par_iter()
        .map(|r| {
            let j0 = r.start * NR;
            let j1 = (r.end * NR).min(n);
            let mut out = vec![0u64; m * (j1 - j0)];
            panel_range(m, k, n, &sx, packed, r, &mut out, j0, j1 - j0);
            (j0, j1, out)
        })
        .collect();
    for (j0, j1, out) in parts {
        super::add_block(c, n, 0, j0..j1, &out);
    }
}

/// Adds the product's columns of panels `qs` into `out`, whose column 0 is C's column `j_base`
/// and whose rows are `ldo` words apart.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn panel_range(
    m: usize,
    k: usize,
    n: usize,
    sx: &SplitX,
    packed: &[u64],
    qs: std::ops::Range<usize>,
    out: &mut [u64],
    j_base: usize,
    ldo: usize,
) {
    assert!(packed.len() >= qs.end * k * NR && sx.lo.len() >= m * k && sx.hi.len() >= m * k);
    assert!(out.len() >= m * ldo);
    let mut acc = vec![[0u64; NR]; m];
    for q in qs {
        let j0 = q * NR;
        let cols = NR.min(n - j0);
        let panel = &packed[q * k * NR..(q + 1) * k * NR];
        // Per k-block, the block of the panel (KC × NR words) stays in L1 for every row group.
        acc.iter_mut().for_each(|row| *row = [0u64; NR]);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            for i in (0..m).step_by(MR) {
                let r = MR.min(m - i);
                let rows = &mut acc[i..i + r];
                // SAFETY: IFMA was detected when the weights were packed; the kernel reads
                // rows i..i+r, columns p0..p0+kc of the limbs and depth steps p0..p0+kc of the
                // panel, all in bounds (asserted above).
                unsafe {
                    let a_off = i * k + p0;
                    let b = panel.as_ptr().add(p0 * NR);
                    match r {
                        1 => ifma::kernel::<1>(kc, sx, a_off, k, b, rows),
                        2 => ifma::kernel::<2>(kc, sx, a_off, k, b, rows),
                        3 => ifma::kernel::<3>(kc, sx, a_off, k, b, rows),
                        _ => ifma::kernel::<4>(kc, sx, a_off, k, b, rows),
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let corr = sx.correction[i];
            let o = i * ldo + (j0 - j_base);
            for (d, &v) in out[o..o + cols].iter_mut().zip(row) {
                *d = d.wrapping_add(v.wrapping_sub(corr));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod ifma {
    //! The AVX-512 IFMA micro-kernel: `R × 16` products, low and high limbs of X accumulated
    //! apart with `vpmadd52luq` and combined once per k-block.
    use super::{SplitX, LO_BITS, NR};
    use std::arch::x86_64::*;

    /// Adds `Σ_p x[i][p]·w'[p][·]` (without the offset correction) for rows `i < R` of the limb
    /// matrices starting at `a_off` (row stride `lda`) and `kc` depth steps of the panel `b`
    /// into `acc`.
    ///
    /// # Safety
    /// AVX-512F and IFMA must be available; `a_off + (R-1)·lda + kc` must be within the limb
    /// matrices, `b` must point at `kc·NR` readable words and `acc` must have `R` rows.
    #[target_feature(enable = "avx512f,avx512ifma")]
    pub(super) unsafe fn kernel<const R: usize>(
        kc: usize,
        sx: &SplitX,
        a_off: usize,
        lda: usize,
        b: *const u64,
        acc: &mut [[u64; NR]],
    ) {
        assert!(acc.len() >= R);
        let z = _mm512_setzero_si512();
        let mut lo0 = [z; R];
        let mut lo1 = [z; R];
        let mut hi0 = [z; R];
        let mut hi1 = [z; R];
        let lp = sx.lo.as_ptr().add(a_off);
        let hp = sx.hi.as_ptr().add(a_off);
        for p in 0..kc {
            let b0 = _mm512_loadu_si512(b.add(p * NR) as *const __m512i);
            let b1 = _mm512_loadu_si512(b.add(p * NR + 8) as *const __m512i);
            for i in 0..R {
                let xl = _mm512_set1_epi64(*lp.add(i * lda + p) as i64);
                let xh = _mm512_set1_epi64(*hp.add(i * lda + p) as i64);
                lo0[i] = _mm512_madd52lo_epu64(lo0[i], xl, b0);
                lo1[i] = _mm512_madd52lo_epu64(lo1[i], xl, b1);
                hi0[i] = _mm512_madd52lo_epu64(hi0[i], xh, b0);
                hi1[i] = _mm512_madd52lo_epu64(hi1[i], xh, b1);
            }
        }
        for i in 0..R {
            let v0 = _mm512_add_epi64(lo0[i], _mm512_slli_epi64::<LO_BITS>(hi0[i]));
            let v1 = _mm512_add_epi64(lo1[i], _mm512_slli_epi64::<LO_BITS>(hi1[i]));
            let d = acc[i].as_mut_ptr();
            let s0 = _mm512_add_epi64(_mm512_loadu_si512(d as *const __m512i), v0);
            let s1 = _mm512_add_epi64(_mm512_loadu_si512(d.add(8) as *const __m512i), v1);
            _mm512_storeu_si512(d as *mut __m512i, s0);
            _mm512_storeu_si512(d.add(8) as *mut __m512i, s1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::gemm_u64;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random weights: signed values of up to `bits` bits (as ring elements), with the extremes
    /// of the i32 range mixed in when `bits == 32`.
    fn weights(len: usize, bits: u32, rng: &mut StdRng) -> Vec<u64> {
        (0..len)
            .map(|i| {
                if bits >= 64 {
                    rng.gen()
                } else if bits == 32 && i % 7 == 0 {
                    [i32::MIN as i64, i32::MAX as i64, -1][i % 3] as u64
                } else {
                    let half = 1i64 << (bits - 1);
                    rng.gen_range(-half..half) as u64
                }
            })
            .collect()
    }

    fn check(m: usize, k: usize, n: usize, bits: u32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let x: Vec<u64> = (0..m * k).map(|_| rng.gen()).collect();
        let w = weights(k * n, bits, &mut rng);
        let c0: Vec<u64> = (0..m * n).map(|_| rng.gen()).collect();
        let want = gemm_u64(m, k, n, &x, &w);
        let pw = PublicWeights::new(k, n, &w);
        assert_eq!(pw.matmul(m, &x), want, "{m}x{k}x{n} bits {bits}");
        let mut c = c0.clone();
        pw.matmul_into(m, &x, &mut c);
        for ((got, base), add) in c.iter().zip(&c0).zip(&want) {
            assert_eq!(*got, base.wrapping_add(*add), "into {m}x{k}x{n}");
        }
    }

    #[test]
    fn small_weights_use_ifma_where_the_cpu_has_it() {
        let mut rng = StdRng::seed_from_u64(1);
        let w = weights(64, 20, &mut rng);
        #[cfg(target_arch = "x86_64")]
        let cpu_has_ifma = ifma_available();
        #[cfg(not(target_arch = "x86_64"))]
        let cpu_has_ifma = false;
        assert_eq!(PublicWeights::new(8, 8, &w).uses_ifma(), cpu_has_ifma);
        let mut big = w.clone();
        big[5] = 1 << 40;
        assert!(!PublicWeights::new(8, 8, &big).uses_ifma());
    }

    #[test]
    fn matches_the_ring_gemm_on_edge_shapes_and_i32_extremes() {
        let dims = [0usize, 1, 3, 4, 5, 15, 16, 17, 33];
        let mut seed = 0;
        for &m in &dims {
            for &k in &dims {
                for &n in &dims {
                    seed += 1;
                    check(m, k, n, 32, seed);
                }
            }
        }
    }

    #[test]
    fn matches_the_ring_gemm_across_blocks_and_threads() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        for (i, &(m, k, n)) in [(32, 300, 70), (5, 513, 40), (33, 257, 129), (1, 768, 64)]
            .iter()
            .enumerate()
        {
            check(m, k, n, 18, 100 + i as u64);
            pool.install(|| check(m, k, n, 32, 200 + i as u64));
        }
    }

    #[test]
    fn serialises_as_the_row_major_matrix_and_rejects_a_wrong_length() {
        let mut rng = StdRng::seed_from_u64(3);
        for bits in [20, 32, 64] {
            let w = weights(13 * 21, bits, &mut rng);
            let pw = PublicWeights::new(13, 21, &w);
            assert_eq!(pw.to_row_major(), w);
            let bytes = serde_json::to_vec(&pw).expect("serialise");
            let back: PublicWeights = serde_json::from_slice(&bytes).expect("read back");
            assert_eq!(
                (back.k(), back.n(), back.to_row_major()),
                (13, 21, w.clone())
            );
        }
        let bad = serde_json::json!({"k": 3, "n": 4, "data": [1, 2, 3]});
        let err = serde_json::from_value::<PublicWeights>(bad).expect_err("wrong length");
        assert!(err.to_string().contains("3×4 with 3 entries"), "{err}");
        let huge = serde_json::json!({"k": usize::MAX, "n": 2, "data": []});
        assert!(serde_json::from_value::<PublicWeights>(huge).is_err());
    }

    #[test]
    fn weights_beyond_32_bits_fall_back_to_the_same_product() {
        check(7, 40, 19, 48, 9);
        check(7, 40, 19, 64, 10);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_shapes(m in 0usize..12, k in 0usize..40, n in 0usize..40, bits in 1u32..=32, seed in any::<u64>()) {
            check(m, k, n, bits, seed);
        }
    }
}

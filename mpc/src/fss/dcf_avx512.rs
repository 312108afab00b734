//! The batched DCF evaluation of [`super::dcf`] (Boyle et al., Eurocrypt 2021, Fig. 1: the
//! evaluation follows one path, 2 fixed-key AES calls per level) on AVX-512F + VAES.
//!
//! Sixteen (key, point) walks advance level by level, four 128-bit nodes per 512-bit register.
//! The fixed-key AES rounds run on those registers (eight of them: each walk's child block and
//! value block), so nodes never go through memory between levels; a level's correction words for
//! four walks are two 256-bit loads per pair of walks and two permutes; the node update, the
//! choice of the value word and the accumulation are masked vector operations. The arithmetic
//! is the portable walk's word for word; a test checks both on random keys.

use super::dcf::{DcfLevel, WalkBatch, LANES};
use super::prg::{aes_round_keys, TWEAK_VALUE};
use std::arch::x86_64::*;

/// Registers of four nodes.
const GROUPS: usize = LANES / 4;

/// The AES round keys when this CPU runs [`eval_flat`] (AVX-512F, VAES and AES-NI), else `None`.
pub(super) fn available() -> Option<&'static [u128; 11]> {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("vaes") {
        aes_round_keys()
    } else {
        None
    }
}

/// Same contract as the portable walk in [`super::dcf`]: key `i` (root `roots[i]`, levels
/// `levels[i·n .. (i+1)·n]`, final word `last[i]`) at points `xs[i·per .. (i+1)·per]`, shares
/// written to the same positions of `out`.
///
/// # Safety
/// AVX-512F, VAES and AES-NI must be available (`rk` from [`available`]); the caller has checked
/// `party < 2`, `per > 0`, `roots.len() == last.len()`, `xs.len() == last.len()·per ==
/// out.len()` and `levels.len() == n·last.len()`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,vaes,aes")]
pub(super) unsafe fn eval_flat(
    rk: &[u128; 11],
    party: u8,
    n: usize,
    roots: &[u128],
    levels: &[DcfLevel],
    last: &[u64],
    per: usize,
    xs: &[u64],
    out: &mut [u64],
) {
    debug_assert_eq!(std::mem::size_of::<DcfLevel>(), 32);
    debug_assert_eq!(levels.len(), n * last.len());
    const { assert!(TWEAK_VALUE == 2) };
    let mut k = [_mm512_setzero_si512(); 11];
    for (r, key) in k.iter_mut().zip(rk) {
        *r = _mm512_broadcast_i32x4(_mm_loadu_si128(key as *const u128 as *const __m128i));
    }
    // Per 128-bit node: the low word, then the high word (`_mm512_set_epi64` lists e7..e0).
    let one_lo = _mm512_set_epi64(0, 1, 0, 1, 0, 1, 0, 1);
    let not_one = _mm512_set_epi64(-1, -2, -1, -2, -1, -2, -1, -2);
    let tweak = _mm512_set_epi64(0, 2, 0, 2, 0, 2, 0, 2);
    // Two loaded pairs of levels [seed_a, value_a ctrl_a, seed_b, value_b ctrl_b] → four seeds,
    // and four (value, ctrl) words.
    let idx_seed = _mm512_set_epi64(13, 12, 9, 8, 5, 4, 1, 0);
    let idx_vc = _mm512_set_epi64(15, 14, 11, 10, 7, 6, 3, 2);
    let zero = _mm512_setzero_si512();
    let total = xs.len();
    let mut start = 0;
    while start < total {
        let mut batch = WalkBatch::new(party, n, roots, levels, per, xs, start);
        let mut node = [zero; GROUPS];
        let mut xv = [zero; GROUPS];
        let mut acc = [zero; GROUPS];
        for g in 0..GROUPS {
            node[g] = _mm512_loadu_si512(batch.node.as_ptr().add(4 * g) as *const __m512i);
            xv[g] = _mm512_loadu_si512(batch.x.as_ptr().add(8 * g) as *const __m512i);
        }
        for i in 0..n {
            let shift = _mm512_set1_epi64((n - 1 - i) as i64);
            let mut bits = [zero; GROUPS];
            let mut seeds = [zero; GROUPS];
            let mut vcs = [zero; GROUPS];
            let mut blk = [zero; 2 * GROUPS];
            for g in 0..GROUPS {
                let s = _mm512_and_si512(node[g], not_one);
                // the path bit of each walk, in bit 0 of its node's low word
                bits[g] = _mm512_and_si512(_mm512_srlv_epi64(xv[g], shift), one_lo);
                blk[g] = _mm512_or_si512(s, bits[g]);
                blk[GROUPS + g] = _mm512_xor_si512(s, tweak);
                let lv = |j: usize| batch.levels[4 * g + j].add(i) as *const __m256i;
                let a01 = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(lv(0))),
                    _mm256_loadu_si256(lv(1)),
                );
                let a23 = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(lv(2))),
                    _mm256_loadu_si256(lv(3)),
                );
                seeds[g] = _mm512_permutex2var_epi64(a01, idx_seed, a23);
                vcs[g] = _mm512_permutex2var_epi64(a01, idx_vc, a23);
            }
            // MMO: AES_k(b) ⊕ b for the child blocks and the value blocks.
            let mut e = [zero; 2 * GROUPS];
            for (d, b) in e.iter_mut().zip(&blk) {
                *d = _mm512_xor_si512(*b, k[0]);
            }
            for key in &k[1..10] {
                for d in e.iter_mut() {
                    *d = _mm512_aesenc_epi128(*d, *key);
                }
            }
            for (d, b) in e.iter_mut().zip(&blk) {
                *d = _mm512_xor_si512(_mm512_aesenclast_epi128(*d, k[10]), *b);
            }
            for g in 0..GROUPS {
                let child = e[g];
                let vblk = e[GROUPS + g];
                // value word: the low word of the value block on a 0 bit, the high word on a 1
                let bit_set = _mm512_test_epi64_mask(bits[g], bits[g]);
                let v = _mm512_mask_blend_epi64(
                    bit_set,
                    vblk,
                    _mm512_shuffle_epi32::<0b0100_1110>(vblk),
                );
                // t: the parent's control bit (low words), spread over both words of the node
                let t = _mm512_test_epi64_mask(node[g], one_lo);
                let t_both = t | (t << 1);
                // seed correction | control correction of the taken side
                let ctrl_lo = _mm512_shuffle_epi32::<0b0100_1110>(vcs[g]);
                let cbit = _mm512_and_si512(_mm512_srlv_epi64(ctrl_lo, bits[g]), one_lo);
                let cw = _mm512_or_si512(seeds[g], cbit);
                node[g] = _mm512_mask_xor_epi64(child, t_both, child, cw);
                acc[g] = _mm512_add_epi64(acc[g], v);
                acc[g] = _mm512_mask_add_epi64(acc[g], t, acc[g], vcs[g]);
            }
        }
        for g in 0..GROUPS {
            _mm512_storeu_si512(batch.node.as_mut_ptr().add(4 * g) as *mut __m512i, node[g]);
            _mm512_storeu_si512(batch.acc.as_mut_ptr().add(8 * g) as *mut __m512i, acc[g]);
        }
        batch.finish(party, last, &mut out[start..]);
        start += batch.m;
    }
}

#[cfg(test)]
mod tests {
    use super::super::dcf::tests::random_walks;
    use super::*;

    /// Random keys of several widths at points around α, at the domain's ends and at random,
    /// with ragged last batches: the AVX-512 walk gives the portable walk's shares.
    #[test]
    fn the_avx512_walk_equals_the_portable_walk() {
        let Some(rk) = available() else {
            eprintln!("skipped: this CPU has no AVX-512F + VAES");
            return;
        };
        random_walks(&|party, n_bits, roots, levels, last, per, xs, out| {
            // SAFETY: `available` returned the round keys; the lengths agree (built by
            // `random_walks`).
            unsafe {
                eval_flat(
                    rk,
                    party,
                    n_bits as usize,
                    roots,
                    levels,
                    last,
                    per,
                    xs,
                    out,
                )
            }
        });
    }
}

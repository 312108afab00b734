//! The batched DCF evaluation of [`super::dcf`] (Boyle et al., Eurocrypt 2021, Fig. 1: the
//! evaluation follows one path, 2 fixed-key AES calls per level) on AVX-512F + VAES.
//!
//! Sixteen (key, point) walks advance level by level, four 128-bit nodes per 512-bit register.
//! The fixed-key AES rounds run on those registers (eight of them: each walk's child block and
//! value block), so nodes never go through memory between levels; a level's correction words for
//! four walks are two 256-bit loads per pair of walks and two permutes; the node update, the
//! choice of the value word and the accumulation are masked vector operations. The arithmetic
//! is the portable walk's word for word; a test checks both on random keys.
//!
//! A two-word payload ([`super::dcf2`]) takes one more value block per walk and level (twelve
//! AES registers), its second value correction words four scalar loads per register, and a
//! second accumulator.

use super::dcf::{Level, WalkBatch, LANES};
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
/// `levels[i·n .. (i+1)·n]`, final word(s) `last[i]`) at points `xs[i·per .. (i+1)·per]`, word
/// `w` of the shares written to the same positions of `outs[w]`.
///
/// # Safety
/// AVX-512F, VAES and AES-NI must be available (`rk` from [`available`]); the caller has checked
/// `party < 2`, `per > 0`, `roots.len() == last.len()`, `xs.len() == last.len()·per ==
/// outs[w].len()` for each of the `L::WORDS` outputs, and `levels.len() == n·last.len()`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,vaes,aes")]
pub(super) unsafe fn eval_flat<L: Level>(
    rk: &[u128; 11],
    party: u8,
    n: usize,
    roots: &[u128],
    levels: &[L],
    last: &[L::Last],
    per: usize,
    xs: &[u64],
    outs: &mut [&mut [u64]],
) {
    debug_assert!(std::mem::size_of::<L>() >= 32);
    debug_assert_eq!(levels.len(), n * last.len());
    const { assert!(TWEAK_VALUE == 2) };
    // AES blocks per walk: the child block, one value block per word
    let nb = (1 + L::WORDS) * GROUPS;
    let mut k = [_mm512_setzero_si512(); 11];
    for (r, key) in k.iter_mut().zip(rk) {
        *r = _mm512_broadcast_i32x4(_mm_loadu_si128(key as *const u128 as *const __m128i));
    }
    // Per 128-bit node: the low word, then the high word (`_mm512_set_epi64` lists e7..e0).
    let one_lo = _mm512_set_epi64(0, 1, 0, 1, 0, 1, 0, 1);
    let not_one = _mm512_set_epi64(-1, -2, -1, -2, -1, -2, -1, -2);
    let tweak = _mm512_set_epi64(0, 2, 0, 2, 0, 2, 0, 2);
    let tweak1 = _mm512_set_epi64(0, 3, 0, 3, 0, 3, 0, 3);
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
        let mut acc1 = [zero; GROUPS];
        for g in 0..GROUPS {
            node[g] = _mm512_loadu_si512(batch.node.as_ptr().add(4 * g) as *const __m512i);
            xv[g] = _mm512_loadu_si512(batch.x.as_ptr().add(8 * g) as *const __m512i);
        }
        for i in 0..n {
            let shift = _mm512_set1_epi64((n - 1 - i) as i64);
            let mut bits = [zero; GROUPS];
            let mut seeds = [zero; GROUPS];
            let mut vcs = [zero; GROUPS];
            let mut extra = [zero; GROUPS];
            let mut blk = [zero; 3 * GROUPS];
            for g in 0..GROUPS {
                let s = _mm512_and_si512(node[g], not_one);
                // the path bit of each walk, in bit 0 of its node's low word
                bits[g] = _mm512_and_si512(_mm512_srlv_epi64(xv[g], shift), one_lo);
                blk[g] = _mm512_or_si512(s, bits[g]);
                blk[GROUPS + g] = _mm512_xor_si512(s, tweak);
                if L::WORDS == 2 {
                    blk[2 * GROUPS + g] = _mm512_xor_si512(s, tweak1);
                    // second value correction words, in the low word of each node
                    let x = |j: usize| (*batch.levels[4 * g + j].add(i)).value(1) as i64;
                    extra[g] = _mm512_set_epi64(0, x(3), 0, x(2), 0, x(1), 0, x(0));
                }
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
            let mut e = [zero; 3 * GROUPS];
            for (d, b) in e[..nb].iter_mut().zip(&blk) {
                *d = _mm512_xor_si512(*b, k[0]);
            }
            for key in &k[1..10] {
                for d in e[..nb].iter_mut() {
                    *d = _mm512_aesenc_epi128(*d, *key);
                }
            }
            for (d, b) in e[..nb].iter_mut().zip(&blk) {
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
                if L::WORDS == 2 {
                    let vblk = e[2 * GROUPS + g];
                    let swapped = _mm512_shuffle_epi32::<0b0100_1110>(vblk);
                    let v = _mm512_mask_blend_epi64(bit_set, vblk, swapped);
                    acc1[g] = _mm512_add_epi64(acc1[g], v);
                    acc1[g] = _mm512_mask_add_epi64(acc1[g], t, acc1[g], extra[g]);
                }
            }
        }
        for g in 0..GROUPS {
            _mm512_storeu_si512(batch.node.as_mut_ptr().add(4 * g) as *mut __m512i, node[g]);
            _mm512_storeu_si512(batch.acc[0].as_mut_ptr().add(8 * g) as *mut __m512i, acc[g]);
            _mm512_storeu_si512(
                batch.acc[1].as_mut_ptr().add(8 * g) as *mut __m512i,
                acc1[g],
            );
        }
        batch.finish(party, last, outs, start);
        start += batch.m;
    }
}

#[cfg(test)]
mod tests {
    use super::super::dcf::tests::{random_walks, AnyWalk};
    use super::*;

    struct Avx512(&'static [u128; 11]);

    impl AnyWalk for Avx512 {
        fn walk<L: Level>(
            &self,
            party: u8,
            n_bits: u32,
            roots: &[u128],
            levels: &[L],
            last: &[L::Last],
            per: usize,
            xs: &[u64],
            outs: &mut [&mut [u64]],
        ) {
            let n = n_bits as usize;
            // SAFETY: `available` returned the round keys; the lengths agree (built by
            // `random_walks`).
            unsafe { eval_flat(self.0, party, n, roots, levels, last, per, xs, outs) }
        }
    }

    /// Random one-word and two-word keys of several widths at points around α, at the
    /// domain's ends and at random, with ragged last batches: this walk gives the portable
    /// walk's shares.
    #[test]
    fn the_avx512_walk_equals_the_portable_walk() {
        let Some(rk) = available() else {
            eprintln!("skipped: this CPU has no AVX-512F + VAES");
            return;
        };
        random_walks(&Avx512(rk));
    }
}

//! The batched DCF evaluation of [`super::dcf`] (Boyle et al., Eurocrypt 2021, Fig. 1) on AVX2 +
//! VAES, for CPUs without AVX-512 (e.g. AMD Zen 3): [`super::dcf_avx512`]'s walk with two
//! 128-bit nodes per 256-bit register and vector compares in place of mask registers.
//!
//! Sixteen walks advance level by level; the fixed-key AES rounds run on the registers that
//! hold the nodes (sixteen: each walk's child block and value block), a level's correction
//! words are one 256-bit load per walk (seed, then value and control bits) split by two
//! lane permutes per pair of walks. The arithmetic is the portable walk's word for word; a test
//! checks both on random keys. A two-word payload ([`super::dcf2`]) adds a value block per
//! walk and level and a second accumulator, as in the AVX-512 walk.

use super::dcf::{Level, WalkBatch, LANES};
use super::prg::{aes_round_keys, TWEAK_VALUE};
use std::arch::x86_64::*;

/// Registers of two nodes.
const GROUPS: usize = LANES / 2;

/// The AES round keys when this CPU runs [`eval_flat`] (AVX2, VAES and AES-NI), else `None`.
pub(super) fn available() -> Option<&'static [u128; 11]> {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("vaes") {
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
/// AVX2, VAES and AES-NI must be available (`rk` from [`available`]); the caller has checked
/// `party < 2`, `per > 0`, `roots.len() == last.len()`, `xs.len() == last.len()·per ==
/// outs[w].len()` for each of the `L::WORDS` outputs, and `levels.len() == n·last.len()`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,vaes,aes")]
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
    let mut k = [_mm256_setzero_si256(); 11];
    for (r, key) in k.iter_mut().zip(rk) {
        *r = _mm256_broadcastsi128_si256(_mm_loadu_si128(key as *const u128 as *const __m128i));
    }
    // Per 128-bit node: the low word, then the high word (`_mm256_set_epi64x` lists e3..e0).
    let one_lo = _mm256_set_epi64x(0, 1, 0, 1);
    let not_one = _mm256_set_epi64x(-1, -2, -1, -2);
    let tweak = _mm256_set_epi64x(0, 2, 0, 2);
    let tweak1 = _mm256_set_epi64x(0, 3, 0, 3);
    let zero = _mm256_setzero_si256();
    let total = xs.len();
    let mut start = 0;
    while start < total {
        let mut batch = WalkBatch::new(party, n, roots, levels, per, xs, start);
        let mut node = [zero; GROUPS];
        let mut xv = [zero; GROUPS];
        let mut acc = [zero; GROUPS];
        let mut acc1 = [zero; GROUPS];
        for g in 0..GROUPS {
            node[g] = _mm256_loadu_si256(batch.node.as_ptr().add(2 * g) as *const __m256i);
            xv[g] = _mm256_loadu_si256(batch.x.as_ptr().add(4 * g) as *const __m256i);
        }
        for i in 0..n {
            let shift = _mm_cvtsi64_si128((n - 1 - i) as i64);
            let mut bits = [zero; GROUPS];
            let mut blk = [zero; 3 * GROUPS];
            for g in 0..GROUPS {
                let s = _mm256_and_si256(node[g], not_one);
                // the path bit of each walk, in bit 0 of its node's low word
                bits[g] = _mm256_and_si256(_mm256_srl_epi64(xv[g], shift), one_lo);
                blk[g] = _mm256_or_si256(s, bits[g]);
                blk[GROUPS + g] = _mm256_xor_si256(s, tweak);
                if L::WORDS == 2 {
                    blk[2 * GROUPS + g] = _mm256_xor_si256(s, tweak1);
                }
            }
            // MMO: AES_k(b) ⊕ b for the child blocks and the value blocks.
            let mut e = [zero; 3 * GROUPS];
            for (d, b) in e[..nb].iter_mut().zip(&blk) {
                *d = _mm256_xor_si256(*b, k[0]);
            }
            for key in &k[1..10] {
                for d in e[..nb].iter_mut() {
                    *d = _mm256_aesenc_epi128(*d, *key);
                }
            }
            for (d, b) in e[..nb].iter_mut().zip(&blk) {
                *d = _mm256_xor_si256(_mm256_aesenclast_epi128(*d, k[10]), *b);
            }
            for g in 0..GROUPS {
                let l0 = _mm256_loadu_si256(batch.levels[2 * g].add(i) as *const __m256i);
                let l1 = _mm256_loadu_si256(batch.levels[2 * g + 1].add(i) as *const __m256i);
                let seeds = _mm256_permute2x128_si256::<0x20>(l0, l1);
                let vcs = _mm256_permute2x128_si256::<0x31>(l0, l1);
                let child = e[g];
                let vblk = e[GROUPS + g];
                // value word: the low word of the value block on a 0 bit, the high word on a 1
                // (only the low word of each node's accumulator is read)
                let bit_set = _mm256_cmpeq_epi64(bits[g], one_lo);
                let swapped = _mm256_shuffle_epi32::<0b0100_1110>(vblk);
                let v = _mm256_blendv_epi8(vblk, swapped, bit_set);
                // t: the parent's control bit, as a mask of the low word, then of both words
                let t = _mm256_cmpeq_epi64(_mm256_and_si256(node[g], one_lo), one_lo);
                let t_both = _mm256_shuffle_epi32::<0b0100_0100>(t);
                // seed correction | control correction of the taken side
                let ctrl_lo = _mm256_shuffle_epi32::<0b0100_1110>(vcs);
                let cbit = _mm256_and_si256(_mm256_srlv_epi64(ctrl_lo, bits[g]), one_lo);
                let cw = _mm256_or_si256(seeds, cbit);
                node[g] = _mm256_xor_si256(child, _mm256_and_si256(cw, t_both));
                acc[g] = _mm256_add_epi64(acc[g], v);
                acc[g] = _mm256_add_epi64(acc[g], _mm256_and_si256(vcs, t));
                if L::WORDS == 2 {
                    // second value word and its correction words (low word of each node)
                    let vblk = e[2 * GROUPS + g];
                    let swapped = _mm256_shuffle_epi32::<0b0100_1110>(vblk);
                    let v = _mm256_blendv_epi8(vblk, swapped, bit_set);
                    let x = |j: usize| (*batch.levels[2 * g + j].add(i)).value(1) as i64;
                    let extra = _mm256_set_epi64x(0, x(1), 0, x(0));
                    acc1[g] = _mm256_add_epi64(acc1[g], v);
                    acc1[g] = _mm256_add_epi64(acc1[g], _mm256_and_si256(extra, t));
                }
            }
        }
        for g in 0..GROUPS {
            _mm256_storeu_si256(batch.node.as_mut_ptr().add(2 * g) as *mut __m256i, node[g]);
            _mm256_storeu_si256(batch.acc[0].as_mut_ptr().add(4 * g) as *mut __m256i, acc[g]);
            _mm256_storeu_si256(
                batch.acc[1].as_mut_ptr().add(4 * g) as *mut __m256i,
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

    struct Avx2(&'static [u128; 11]);

    impl AnyWalk for Avx2 {
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
    fn the_avx2_walk_equals_the_portable_walk() {
        let Some(rk) = available() else {
            eprintln!("skipped: this CPU has no AVX2 + VAES");
            return;
        };
        random_walks(&Avx2(rk));
    }
}

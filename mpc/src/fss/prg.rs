//! Fixed-key AES-128 length-doubling PRG in Matyas–Meyer–Oseas (MMO) mode for the FSS trees.
//!
//! `G_i(s) = AES_k(s ⊕ i) ⊕ (s ⊕ i)` with a fixed public key `k` and a small tweak `i`. This is the
//! usual instantiation of the tree PRG of DPF/DCF implementations (fixed-key AES modelled as a
//! correlation-robust / random permutation); the key is public, so no key schedule is ever run on
//! secret data. The trees call `encrypt_u128` with many blocks at a time: on x86-64 with AES-NI
//! it runs the rounds of 8 blocks (16 with VAES, two per instruction) interleaved on the
//! intrinsics, with the round keys expanded once, so the AES units stay busy; elsewhere the `aes`
//! crate encrypts. A unit test checks both against the `aes` crate (itself checked against
//! FIPS-197). The VAES intrinsics need Rust 1.89 (the workspace's `rust-version`).
//!
//! Seeds inside the trees carry their control bit in bit 0: the PRG always clears that bit before
//! expanding, and the child seeds it returns have bit 0 cleared (the bit becomes the child's control
//! bit). Tweaks: 0 → left child, 1 → right child, 2 → the two 64-bit value words (DCF only).

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::{Aes128, Block};
use std::sync::OnceLock;

/// The fixed public AES-128 key: the first 128 fractional bits of π (a nothing-up-my-sleeve number).
pub const FIXED_KEY: [u8; 16] = 0x243F_6A88_85A3_08D3_1319_8A2E_0370_7344u128.to_be_bytes();

/// Tweak of the left child block.
pub(crate) const TWEAK_LEFT: u128 = 0;
/// Tweak of the right child block.
pub(crate) const TWEAK_RIGHT: u128 = 1;
/// Tweak of the value block (DCF).
pub(crate) const TWEAK_VALUE: u128 = 2;

/// Blocks per internal batch of [`expand_many`] (a multiple of 8, AES-NI's pipeline width).
const BATCH_BLOCKS: usize = 48;

fn cipher() -> &'static Aes128 {
    static CIPHER: OnceLock<Aes128> = OnceLock::new();
    CIPHER.get_or_init(|| Aes128::new(&FIXED_KEY.into()))
}

/// A u128 as an AES block (little-endian).
#[inline(always)]
pub(crate) fn to_block(x: u128) -> Block {
    Block::from(x.to_le_bytes())
}

/// An AES block as a u128 (little-endian).
#[inline(always)]
pub(crate) fn from_block(b: &Block) -> u128 {
    u128::from_le_bytes((*b).into())
}

/// Encrypts `blocks` in place under the fixed key, all in one batched call. The caller XORs the
/// inputs back in to complete MMO.
#[inline]
pub(crate) fn encrypt(blocks: &mut [Block]) {
    cipher().encrypt_blocks(blocks);
}

/// Encrypts every `u128` of `blocks` in place under the fixed key, each read as a little-endian
/// AES block (the same block [`to_block`] makes of it). With AES-NI (checked once at run time)
/// the 10 rounds of up to 8 blocks are interleaved, or of 16 with VAES (two blocks per
/// instruction), so that the AES units never wait on a round's latency; elsewhere the `aes`
/// crate encrypts them.
#[inline]
pub(crate) fn encrypt_u128(blocks: &mut [u128]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(ni) = aes_ni::get() {
        ni.encrypt(blocks);
        return;
    }
    encrypt_u128_portable(blocks);
}

/// The expanded AES-128 round keys of [`FIXED_KEY`] (FIPS-197 §5.2) where the CPU has AES-NI,
/// for walks that run the rounds on their own registers (see [`super::dcf_avx512`]).
#[cfg(target_arch = "x86_64")]
pub(crate) fn aes_round_keys() -> Option<&'static [u128; 11]> {
    aes_ni::get().map(|ni| &ni.round_keys)
}

/// [`encrypt_u128`] through the `aes` crate (any CPU).
fn encrypt_u128_portable(blocks: &mut [u128]) {
    let mut buf = [Block::default(); BATCH_BLOCKS];
    for chunk in blocks.chunks_mut(BATCH_BLOCKS) {
        let b = &mut buf[..chunk.len()];
        for (d, &x) in b.iter_mut().zip(chunk.iter()) {
            *d = to_block(x);
        }
        encrypt(b);
        for (x, d) in chunk.iter_mut().zip(b.iter()) {
            *x = from_block(d);
        }
    }
}

/// The fixed-key AES-128 encryption on AES-NI (and VAES where present) intrinsics.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)] // block j sits at pointer offset j
mod aes_ni {
    use super::FIXED_KEY;
    use core::arch::x86_64::*;
    use std::sync::OnceLock;

    /// The expanded round keys of [`FIXED_KEY`] and the widest unit this CPU has.
    pub(super) struct AesNi {
        pub(super) round_keys: [u128; 11],
        vaes: bool,
    }

    /// The AES-NI encryptor when the CPU has AES-NI (detected once), else `None`.
    pub(super) fn get() -> Option<&'static AesNi> {
        static NI: OnceLock<Option<AesNi>> = OnceLock::new();
        NI.get_or_init(|| {
            if !(is_x86_feature_detected!("aes") && is_x86_feature_detected!("sse2")) {
                return None;
            }
            // SAFETY: AES-NI and SSE2 are present (checked above).
            let round_keys = unsafe { expand_key(u128::from_le_bytes(FIXED_KEY)) };
            let vaes = is_x86_feature_detected!("vaes") && is_x86_feature_detected!("avx2");
            Some(AesNi { round_keys, vaes })
        })
        .as_ref()
    }

    impl AesNi {
        /// Encrypts every block of `blocks` in place.
        pub(super) fn encrypt(&self, blocks: &mut [u128]) {
            // SAFETY: an `AesNi` exists only where AES-NI and SSE2 were detected, and `vaes`
            // is set only where VAES and AVX2 were.
            unsafe {
                if self.vaes {
                    encrypt_vaes(&self.round_keys, blocks);
                } else {
                    encrypt_ni(&self.round_keys, blocks);
                }
            }
        }
    }

    /// [`encrypt_ni`] for the tests (also where the CPU has VAES).
    #[cfg(test)]
    pub(super) unsafe fn encrypt_ni_for_tests(ni: &AesNi, blocks: &mut [u128]) {
        encrypt_ni(&ni.round_keys, blocks)
    }

    /// One step of the AES-128 key schedule (FIPS-197 §5.2) with round constant `RCON`.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn next_key<const RCON: i32>(k: __m128i) -> __m128i {
        let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<RCON>(k));
        let mut k = k;
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
        _mm_xor_si128(k, t)
    }

    /// The 11 round keys of an AES-128 key given as a little-endian `u128`.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn expand_key(key: u128) -> [u128; 11] {
        let mut k = [_mm_setzero_si128(); 11];
        k[0] = _mm_loadu_si128(&key as *const u128 as *const __m128i);
        k[1] = next_key::<0x01>(k[0]);
        k[2] = next_key::<0x02>(k[1]);
        k[3] = next_key::<0x04>(k[2]);
        k[4] = next_key::<0x08>(k[3]);
        k[5] = next_key::<0x10>(k[4]);
        k[6] = next_key::<0x20>(k[5]);
        k[7] = next_key::<0x40>(k[6]);
        k[8] = next_key::<0x80>(k[7]);
        k[9] = next_key::<0x1b>(k[8]);
        k[10] = next_key::<0x36>(k[9]);
        let mut out = [0u128; 11];
        for (o, r) in out.iter_mut().zip(k) {
            _mm_storeu_si128(o as *mut u128 as *mut __m128i, r);
        }
        out
    }

    /// Encrypts `blocks` with AES-NI, 8 blocks' rounds interleaved.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn encrypt_ni(rk: &[u128; 11], blocks: &mut [u128]) {
        let mut k = [_mm_setzero_si128(); 11];
        for (r, key) in k.iter_mut().zip(rk) {
            *r = _mm_loadu_si128(key as *const u128 as *const __m128i);
        }
        let mut chunks = blocks.chunks_exact_mut(8);
        for c in &mut chunks {
            let p = c.as_mut_ptr() as *mut __m128i;
            let mut b = [_mm_setzero_si128(); 8];
            for j in 0..8 {
                b[j] = _mm_xor_si128(_mm_loadu_si128(p.add(j)), k[0]);
            }
            for key in &k[1..10] {
                for x in b.iter_mut() {
                    *x = _mm_aesenc_si128(*x, *key);
                }
            }
            for j in 0..8 {
                _mm_storeu_si128(p.add(j), _mm_aesenclast_si128(b[j], k[10]));
            }
        }
        for x in chunks.into_remainder() {
            let p = x as *mut u128 as *mut __m128i;
            let mut b = _mm_xor_si128(_mm_loadu_si128(p), k[0]);
            for key in &k[1..10] {
                b = _mm_aesenc_si128(b, *key);
            }
            _mm_storeu_si128(p, _mm_aesenclast_si128(b, k[10]));
        }
    }

    /// Encrypts `blocks` with VAES, two blocks per 256-bit register, 16 blocks' rounds
    /// interleaved; an odd or short tail goes through [`encrypt_ni`].
    #[target_feature(enable = "aes,sse2,avx2,vaes")]
    unsafe fn encrypt_vaes(rk: &[u128; 11], blocks: &mut [u128]) {
        let mut k = [_mm256_setzero_si256(); 11];
        for (r, key) in k.iter_mut().zip(rk) {
            *r = _mm256_broadcastsi128_si256(_mm_loadu_si128(key as *const u128 as *const __m128i));
        }
        let mut chunks = blocks.chunks_exact_mut(16);
        for c in &mut chunks {
            let p = c.as_mut_ptr() as *mut __m256i;
            let mut b = [_mm256_setzero_si256(); 8];
            for j in 0..8 {
                b[j] = _mm256_xor_si256(_mm256_loadu_si256(p.add(j)), k[0]);
            }
            for key in &k[1..10] {
                for x in b.iter_mut() {
                    *x = _mm256_aesenc_epi128(*x, *key);
                }
            }
            for j in 0..8 {
                _mm256_storeu_si256(p.add(j), _mm256_aesenclast_epi128(b[j], k[10]));
            }
        }
        encrypt_ni(rk, chunks.into_remainder());
    }
}

/// One MMO evaluation: `AES_k(x) ⊕ x` (one AES call).
pub fn mmo(x: u128) -> u128 {
    let mut b = [x];
    encrypt_u128(&mut b);
    b[0] ^ x
}

/// What one tree level needs from a node's seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LevelExpansion {
    /// left child seed (bit 0 cleared)
    pub seed_left: u128,
    /// left child control bit
    pub t_left: bool,
    /// right child seed (bit 0 cleared)
    pub seed_right: u128,
    /// right child control bit
    pub t_right: bool,
    /// left value word (DCF; 0 when values were not requested)
    pub value_left: u64,
    /// right value word (DCF; 0 when values were not requested)
    pub value_right: u64,
}

/// Expands one seed (its bit 0 is ignored): two child seeds with their control bits and, when
/// `with_values`, two 64-bit value words. Costs 2 AES calls, or 3 with values.
pub fn expand(seed: u128, with_values: bool) -> LevelExpansion {
    let mut out = [LevelExpansion::default()];
    expand_many(&[seed], with_values, &mut out);
    out[0]
}

/// [`expand`] for several seeds at once, with the AES calls of all of them batched.
///
/// # Panics
/// If `out` is shorter than `seeds`.
pub fn expand_many(seeds: &[u128], with_values: bool, out: &mut [LevelExpansion]) {
    assert!(out.len() >= seeds.len(), "expand_many: output too short");
    let per = if with_values { 3 } else { 2 };
    let chunk = BATCH_BLOCKS / per;
    let mut buf = [0u128; BATCH_BLOCKS];
    for (sc, oc) in seeds.chunks(chunk).zip(out.chunks_mut(chunk)) {
        let blocks = &mut buf[..sc.len() * per];
        for (k, &s) in sc.iter().enumerate() {
            let s = s & !1;
            blocks[per * k] = s ^ TWEAK_LEFT;
            blocks[per * k + 1] = s ^ TWEAK_RIGHT;
            if with_values {
                blocks[per * k + 2] = s ^ TWEAK_VALUE;
            }
        }
        encrypt_u128(blocks);
        for (k, (&s, o)) in sc.iter().zip(oc.iter_mut()).enumerate() {
            let s = s & !1;
            let l = blocks[per * k] ^ s ^ TWEAK_LEFT;
            let r = blocks[per * k + 1] ^ s ^ TWEAK_RIGHT;
            let (vl, vr) = if with_values {
                let v = blocks[per * k + 2] ^ s ^ TWEAK_VALUE;
                (v as u64, (v >> 64) as u64)
            } else {
                (0, 0)
            };
            *o = LevelExpansion {
                seed_left: l & !1,
                t_left: l & 1 == 1,
                seed_right: r & !1,
                t_right: r & 1 == 1,
                value_left: vl,
                value_right: vr,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn aes_matches_fips197_vector() {
        // FIPS-197 Appendix C.1 checks the AES backend the `aes` crate selected.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let pt: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let c = Aes128::new(&key.into());
        let mut b = Block::from(pt);
        c.encrypt_block(&mut b);
        let want = 0x69c4e0d86a7b0430d8cdb78070b4c55au128.to_be_bytes();
        assert_eq!(b.as_slice(), &want);
    }

    #[test]
    fn fast_encryption_matches_the_aes_crate() {
        // every length up to three VAES chunks, so that full chunks and tails of both paths run
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for len in 0..50 {
            let xs: Vec<u128> = (0..len).map(|_| rng.gen()).collect();
            let mut fast = xs.clone();
            encrypt_u128(&mut fast);
            let mut portable = xs.clone();
            encrypt_u128_portable(&mut portable);
            for (i, &x) in xs.iter().enumerate() {
                let mut b = [to_block(x)];
                cipher().encrypt_blocks(&mut b);
                assert_eq!(
                    portable[i],
                    from_block(&b[0]),
                    "portable, block {i} of {len}"
                );
                assert_eq!(fast[i], from_block(&b[0]), "fast, block {i} of {len}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(ni) = aes_ni::get() {
            // the AES-NI path alone as well, where the CPU would take VAES
            let xs: Vec<u128> = (0..37).map(|_| rng.gen()).collect();
            let mut a = xs.clone();
            let mut b = xs.clone();
            // SAFETY: `get` returned Some, so AES-NI and SSE2 are present.
            unsafe { aes_ni::encrypt_ni_for_tests(ni, &mut a) };
            encrypt_u128_portable(&mut b);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn batched_matches_single_and_mmo() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let seeds: Vec<u128> = (0..100).map(|_| rng.gen()).collect();
        for with_values in [false, true] {
            let mut out = vec![LevelExpansion::default(); seeds.len()];
            expand_many(&seeds, with_values, &mut out);
            for (&s, o) in seeds.iter().zip(&out) {
                assert_eq!(*o, expand(s, with_values));
                let s0 = s & !1;
                let l = mmo(s0);
                let r = mmo(s0 ^ 1);
                assert_eq!(o.seed_left, l & !1);
                assert_eq!(o.t_left, l & 1 == 1);
                assert_eq!(o.seed_right, r & !1);
                assert_eq!(o.t_right, r & 1 == 1);
                if with_values {
                    let v = mmo(s0 ^ 2);
                    assert_eq!((o.value_left, o.value_right), (v as u64, (v >> 64) as u64));
                } else {
                    assert_eq!((o.value_left, o.value_right), (0, 0));
                }
                // bit 0 of the input seed is ignored
                assert_eq!(*o, expand(s ^ 1, with_values));
            }
        }
    }

    #[test]
    fn outputs_look_balanced() {
        // Children differ from each other and from the seed, and control bits are not constant.
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut ones = 0usize;
        let trials = 2000;
        for _ in 0..trials {
            let s: u128 = rng.gen();
            let e = expand(s, true);
            assert_ne!(e.seed_left, e.seed_right);
            assert_ne!(e.seed_left, s & !1);
            ones += e.t_left as usize + e.t_right as usize;
        }
        let f = ones as f64 / (2 * trials) as f64;
        assert!((0.45..0.55).contains(&f), "control-bit frequency {f}");
    }
}

//! Fixed-key AES-128 length-doubling PRG in Matyas–Meyer–Oseas (MMO) mode for the FSS trees.
//!
//! `G_i(s) = AES_k(s ⊕ i) ⊕ (s ⊕ i)` with a fixed public key `k` and a small tweak `i`. This is the
//! usual instantiation of the tree PRG of DPF/DCF implementations (fixed-key AES modelled as a
//! correlation-robust / random permutation); the key is public, so no key schedule is ever run on
//! secret data. The `aes` crate picks AES-NI at run time; every caller here hands it several blocks
//! per call ([`BlockEncrypt::encrypt_blocks`]) so that the hardware pipeline stays full.
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

/// One MMO evaluation: `AES_k(x) ⊕ x` (one AES call).
pub fn mmo(x: u128) -> u128 {
    let mut b = [to_block(x)];
    encrypt(&mut b);
    from_block(&b[0]) ^ x
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
    let mut buf = [Block::default(); BATCH_BLOCKS];
    for (sc, oc) in seeds.chunks(chunk).zip(out.chunks_mut(chunk)) {
        let blocks = &mut buf[..sc.len() * per];
        for (k, &s) in sc.iter().enumerate() {
            let s = s & !1;
            blocks[per * k] = to_block(s ^ TWEAK_LEFT);
            blocks[per * k + 1] = to_block(s ^ TWEAK_RIGHT);
            if with_values {
                blocks[per * k + 2] = to_block(s ^ TWEAK_VALUE);
            }
        }
        encrypt(blocks);
        for (k, (&s, o)) in sc.iter().zip(oc.iter_mut()).enumerate() {
            let s = s & !1;
            let l = from_block(&blocks[per * k]) ^ s ^ TWEAK_LEFT;
            let r = from_block(&blocks[per * k + 1]) ^ s ^ TWEAK_RIGHT;
            let (vl, vr) = if with_values {
                let v = from_block(&blocks[per * k + 2]) ^ s ^ TWEAK_VALUE;
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

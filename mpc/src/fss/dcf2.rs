//! Distributed comparison function with a two-word payload: the DCF of Boyle, Chandran, Gilboa,
//! Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing for Mixed-Mode and Fixed-Point Secure
//! Computation", Eurocrypt 2021 (Fig. 1), over the output group `G = Z_2^64 × Z_2^64`.
//!
//! The shared function is `f_{α,β}(x) = β = (β_0, β_1)` if `x < α` else `(0, 0)` (unsigned,
//! strict), word by word. It replaces two one-word keys ([`super::dcf`]) at the **same** point
//! `α`: the tree (seed and control-bit correction words) is shared, and only the value
//! correction words double. Fig. 1 holds for any group `G` given a PRG whose value outputs are
//! elements of `G`: per level each value word takes its own fixed-key AES block (tweak
//! `TWEAK_VALUE` for word 0, `TWEAK_VALUE + 1` for word 1; the left child's word in the block's
//! low half, the right child's in its high half), so every value correction word is masked by a
//! fresh PRG output exactly as in the one-word construction. `Convert` at the leaves maps a
//! seed to `G` through its value block (the seed's 127 pseudorandom bits cannot fill 128).
//!
//! Costs: evaluation `3n + 1` AES calls per point (two one-word keys: `4n`); key generation
//! `8n + 2`; correction words per level a 128-bit seed word, two 64-bit value words and one
//! byte of control bits, plus a final pair: **`33·n + 16` bytes** (two one-word keys:
//! `50·n + 16`). At `n = 12`: 412 bytes against 616.
//!
//! The signed lookup's fused input mask uses it (see `correlation::SignedInput`): payload
//! `(1, a)` at `α = r mod 2^s` gives the exact cell truncation's borrow and its product with
//! the slope's mask `a` from one walk.

use super::dcf::{check_gen, eval_flat, gen_words, Level, DCF_MAX_BITS};
use super::flat::{FlatKeys, Layout};
use super::FssError;

/// Correction words of one tree level of a two-word key (opaque: decoded from an encoding).
///
/// `repr(C)`: its first 32 bytes are laid out as a one-word level (seed, value word 0,
/// control bits), which the SIMD walks load as one 256-bit word; value word 1 follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Dcf2Level {
    /// seed correction word (bit 0 always 0)
    seed: u128,
    /// value correction word of payload word 0
    value: u64,
    /// control-bit correction words: bit 0 left, bit 1 right
    ctrl: u64,
    /// value correction word of payload word 1
    value1: u64,
}

const _: () = {
    assert!(std::mem::offset_of!(Dcf2Level, value) == 16);
    assert!(std::mem::offset_of!(Dcf2Level, ctrl) == 24);
    assert!(std::mem::offset_of!(Dcf2Level, value1) == 32);
};

impl Level for Dcf2Level {
    const WORDS: usize = 2;
    type Last = [u64; 2];
    #[inline(always)]
    fn seed(&self) -> u128 {
        self.seed
    }
    #[inline(always)]
    fn ctrl(&self) -> u64 {
        self.ctrl
    }
    #[inline(always)]
    fn value(&self, w: usize) -> u64 {
        if w == 0 {
            self.value
        } else {
            self.value1
        }
    }
    #[inline(always)]
    fn last_word(last: &[u64; 2], w: usize) -> u64 {
        last[w]
    }
}

/// Correction words shared by both keys of one two-word DCF instance.
///
/// A party's key is its root seed together with this value; see [`dcf2_gen`] and
/// [`dcf2_eval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dcf2Correction {
    /// input width `n` in bits (1 ..= 64)
    pub n_bits: u32,
    levels: Vec<Dcf2Level>,
    last: [u64; 2],
}

/// Dealer side: given both parties' root seeds (the caller draws them from PRGs), build the
/// correction words of `f(x) = beta if x < alpha else (0, 0)` on `n_bits`-bit unsigned inputs,
/// `beta` a pair of words.
///
/// Costs `8·n_bits + 2` AES calls.
///
/// # Panics
/// If `n_bits` is not in `1..=64` or `alpha >= 2^n_bits`.
pub fn dcf2_gen(
    n_bits: u32,
    alpha: u64,
    beta: [u64; 2],
    root0: u128,
    root1: u128,
) -> Dcf2Correction {
    check_gen("dcf2_gen", n_bits, alpha);
    let (levels, last) = gen_words::<2>(n_bits, alpha, beta, root0, root1);
    Dcf2Correction {
        n_bits,
        levels: levels
            .into_iter()
            .map(|(seed, [value, value1], ctrl)| Dcf2Level {
                seed,
                value,
                ctrl,
                value1,
            })
            .collect(),
        last,
    }
}

/// Party side (`party` = 0 or 1): this party's shares of both words of `f(x)`; the shares of
/// the two parties add (wrapping, word by word) to `f(x)`. Only the low `n_bits` bits of `x`
/// are used. Costs `3·n_bits + 1` AES calls.
///
/// # Panics
/// If `party > 1`.
pub fn dcf2_eval(party: u8, root: u128, cw: &Dcf2Correction, x: u64) -> [u64; 2] {
    let (mut o0, mut o1) = ([0u64], [0u64]);
    eval_flat(
        party,
        cw.n_bits,
        &[root],
        &cw.levels,
        std::slice::from_ref(&cw.last),
        1,
        &[x],
        &mut [&mut o0[..], &mut o1[..]],
    );
    [o0[0], o1[0]]
}

/// Evaluates many two-word keys of the same width, each at `per` points: key `i` (root
/// `roots[i]`, words `keys[i]`) at `xs[i·per .. (i+1)·per]`, the shares of word 0 written to the
/// same positions of `out0`, those of word 1 to `out1`. One walk per point gives both words:
/// the batched walks of [`super::dcf::dcf_eval_keys`] with one more AES block per level.
///
/// # Panics
/// If `party > 1` or the lengths disagree.
pub fn dcf2_eval_keys(
    party: u8,
    roots: &[u128],
    keys: &Dcf2Keys,
    per: usize,
    xs: &[u64],
    out0: &mut [u64],
    out1: &mut [u64],
) {
    assert_eq!(roots.len(), keys.len(), "dcf2_eval_keys: one root per key");
    eval_flat(
        party,
        keys.n_bits(),
        roots,
        &keys.levels,
        &keys.last,
        per,
        xs,
        &mut [out0, out1],
    );
}

/// Correction words of many two-word DCF keys of one width, stored flat (see [`super::flat`]).
pub type Dcf2Keys = FlatKeys<Dcf2Level, [u64; 2]>;

/// Bytes of one encoded level: seed word, two value words, control byte.
const RECORD: usize = 33;

impl Dcf2Keys {
    /// No keys yet, of width `n_bits` (room for `keys` of them).
    ///
    /// # Panics
    /// If `n_bits` is not in `1..=64`.
    pub fn with_capacity(n_bits: u32, keys: usize) -> Self {
        assert!(
            (1..=DCF_MAX_BITS).contains(&n_bits),
            "Dcf2Keys: n_bits = {n_bits} outside 1..={DCF_MAX_BITS}"
        );
        Self::with_depth(n_bits, n_bits as usize, keys)
    }

    /// Appends one key's correction words.
    ///
    /// # Panics
    /// If its width differs.
    pub fn push(&mut self, cw: &Dcf2Correction) {
        self.push_key(cw.n_bits, &cw.levels, cw.last);
    }

    /// Key `i`'s correction words on their own (tests and reference checks).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn key(&self, i: usize) -> Dcf2Correction {
        Dcf2Correction {
            n_bits: self.n_bits(),
            levels: self.levels_of(i).to_vec(),
            last: self.last[i],
        }
    }

    /// Decodes `count` consecutive key encodings (see [`Dcf2Correction::to_bytes`]) of width
    /// `n_bits` from the start of `bytes`; returns them and the bytes consumed. Rejects what
    /// [`Dcf2Correction::from_bytes`] rejects.
    pub fn from_bytes(n_bits: u32, count: usize, bytes: &[u8]) -> Result<(Self, usize), FssError> {
        let layout = Layout {
            depth: n_bits as usize,
            record: RECORD,
            word: 16,
        };
        let width = (n_bits, DCF_MAX_BITS);
        Self::decode(width, &layout, count, bytes, level_from_bytes, |w| {
            [u64_at(w, 0), u64_at(w, 8)]
        })
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// One 33-byte level record; rejects a seed word with bit 0 set or a control byte above 3.
fn level_from_bytes(rec: &[u8]) -> Result<Dcf2Level, FssError> {
    let seed = u128::from_le_bytes(rec[..16].try_into().expect("16 bytes"));
    let ctrl = rec[32];
    if seed & 1 != 0 {
        return Err(FssError::Malformed("seed correction word has bit 0 set"));
    }
    if ctrl > 3 {
        return Err(FssError::Malformed("control-bit byte above 3"));
    }
    Ok(Dcf2Level {
        seed,
        value: u64_at(rec, 16),
        ctrl: ctrl as u64,
        value1: u64_at(rec, 24),
    })
}

impl Dcf2Correction {
    /// Encoded size in bytes for a valid `n_bits`: `33·n_bits + 16` (per level a 16-byte seed
    /// word, two 8-byte value words and one byte holding both control-bit words; then the two
    /// 8-byte final words).
    pub fn encoded_len(n_bits: u32) -> usize {
        RECORD * n_bits as usize + 16
    }

    /// Appends the encoding (little-endian words; see [`Dcf2Correction::encoded_len`]) to `out`.
    pub fn to_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(Self::encoded_len(self.levels.len() as u32));
        for lv in &self.levels {
            out.extend_from_slice(&lv.seed.to_le_bytes());
            out.extend_from_slice(&lv.value.to_le_bytes());
            out.extend_from_slice(&lv.value1.to_le_bytes());
            out.push(lv.ctrl as u8);
        }
        out.extend_from_slice(&self.last[0].to_le_bytes());
        out.extend_from_slice(&self.last[1].to_le_bytes());
    }

    /// Decodes correction words for width `n_bits` from the start of `bytes`; returns them and
    /// the number of bytes consumed (trailing bytes are left alone). Rejects an invalid width,
    /// truncated input and non-canonical encodings (seed word with bit 0 set, control byte
    /// above 3).
    pub fn from_bytes(n_bits: u32, bytes: &[u8]) -> Result<(Self, usize), FssError> {
        let (keys, need) = Dcf2Keys::from_bytes(n_bits, 1, bytes)?;
        let (levels, last) = keys.into_single();
        Ok((
            Self {
                n_bits,
                levels,
                last,
            },
            need,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::dcf::{dcf_eval_keys, dcf_gen, domain_mask, DcfCorrection, DcfKeys};
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// `f(x)` of the definition, word by word.
    fn want(x: u64, alpha: u64, beta: [u64; 2]) -> [u64; 2] {
        if x < alpha {
            beta
        } else {
            [0, 0]
        }
    }

    /// Both parties' batched shares of keys `(α, β)` at their points, added word by word.
    fn reconstruct_batched(
        n: u32,
        defs: &[(u64, [u64; 2], u128, u128)],
        per: usize,
        xs: &[u64],
    ) -> Vec<[u64; 2]> {
        let mut flat = Dcf2Keys::with_capacity(n, defs.len());
        let mut roots = [Vec::new(), Vec::new()];
        for &(alpha, beta, r0, r1) in defs {
            flat.push(&dcf2_gen(n, alpha, beta, r0, r1));
            roots[0].push(r0);
            roots[1].push(r1);
        }
        let mut sh = [
            [vec![0u64; xs.len()], vec![0u64; xs.len()]],
            Default::default(),
        ];
        sh[1] = sh[0].clone();
        for party in 0..2u8 {
            let p = party as usize;
            let [o0, o1] = &mut sh[p];
            dcf2_eval_keys(party, &roots[p], &flat, per, xs, o0, o1);
        }
        (0..xs.len())
            .map(|i| {
                [
                    sh[0][0][i].wrapping_add(sh[1][0][i]),
                    sh[0][1][i].wrapping_add(sh[1][1][i]),
                ]
            })
            .collect()
    }

    /// Every width 1..=64, α at 0, 1, 2^n − 1 and random, each at 0, 2^n − 1, α, α ± 1, α with
    /// high bits set above the domain, and random points, in ragged batches (walked by the
    /// batched SIMD or portable walk): shares add up to `β` below α and `(0, 0)` elsewhere,
    /// word by word; [`dcf2_eval`] gives the same shares one point at a time.
    #[test]
    fn every_width_reconstructs_the_definition() {
        let mut rng = StdRng::seed_from_u64(0xdcf2);
        for n in 1..=64u32 {
            let mask = domain_mask(n);
            let alphas = [
                0,
                1 & mask,
                mask,
                rng.gen::<u64>() & mask,
                rng.gen::<u64>() & mask,
            ];
            let per = 9;
            let mut defs = Vec::new();
            let mut xs = Vec::new();
            for &alpha in &alphas {
                let beta = [rng.gen(), rng.gen()];
                defs.push((alpha, beta, rng.gen(), rng.gen()));
                let high = if n < 64 { rng.gen::<u64>() & !mask } else { 0 };
                xs.extend([
                    0,
                    mask,
                    alpha,
                    alpha.wrapping_sub(1) & mask,
                    alpha.wrapping_add(1) & mask,
                    alpha | high,
                    (alpha.wrapping_sub(1) & mask) | high,
                    rng.gen::<u64>() & mask,
                    rng.gen(),
                ]);
            }
            let got = reconstruct_batched(n, &defs, per, &xs);
            for (i, x) in xs.iter().enumerate() {
                let (alpha, beta, r0, r1) = defs[i / per];
                assert_eq!(
                    got[i],
                    want(x & mask, alpha, beta),
                    "n={n} alpha={alpha:#x} x={x:#x}"
                );
                let cw = dcf2_gen(n, alpha, beta, r0, r1);
                let [a0, a1] = dcf2_eval(0, r0, &cw, *x);
                let [b0, b1] = dcf2_eval(1, r1, &cw, *x);
                assert_eq!([a0.wrapping_add(b0), a1.wrapping_add(b1)], got[i]);
            }
        }
    }

    #[test]
    fn exhaustive_small_domains() {
        let mut rng = StdRng::seed_from_u64(21);
        for n in 1u32..=5 {
            let xs: Vec<u64> = (0..1u64 << n).collect();
            let defs: Vec<_> = (0..1u64 << n)
                .map(|alpha| (alpha, [rng.gen(), rng.gen()], rng.gen(), rng.gen()))
                .collect();
            // every key at every point of the domain
            let all: Vec<u64> = defs.iter().flat_map(|_| xs.iter().copied()).collect();
            let got = reconstruct_batched(n, &defs, xs.len(), &all);
            for (i, x) in all.iter().enumerate() {
                let (alpha, beta, ..) = defs[i / xs.len()];
                assert_eq!(got[i], want(*x, alpha, beta), "n={n} alpha={alpha} x={x}");
            }
        }
    }

    /// The payload `(1, a)` of the signed lookup: word 0 is the one-word key's comparison bit,
    /// word 1 its product with `a`, and each word's shares equal in distribution those of a
    /// one-word key (checked here on the reconstruction: both are the definition).
    #[test]
    fn borrow_and_product_as_two_one_word_keys() {
        let mut rng = StdRng::seed_from_u64(22);
        let n = 12;
        let mut defs = Vec::new();
        let mut one = [DcfKeys::with_capacity(n, 64), DcfKeys::with_capacity(n, 64)];
        let mut roots1 = [Vec::new(), Vec::new()];
        for _ in 0..64 {
            let alpha = rng.gen::<u64>() & 0xfff;
            let a: u64 = rng.gen();
            let (r0, r1) = (rng.gen(), rng.gen());
            defs.push((alpha, [1, a], r0, r1));
            for (w, beta) in [1, a].into_iter().enumerate() {
                let (q0, q1): (u128, u128) = (rng.gen(), rng.gen());
                one[w].push(&dcf_gen(n, alpha, beta, q0, q1));
                roots1[w].push([q0, q1]);
            }
        }
        let xs: Vec<u64> = (0..64).map(|_| rng.gen::<u64>() & 0xfff).collect();
        let got = reconstruct_batched(n, &defs, 1, &xs);
        for w in 0..2 {
            let mut s = [vec![0u64; 64], vec![0u64; 64]];
            for party in 0..2 {
                let r: Vec<u128> = roots1[w].iter().map(|q| q[party]).collect();
                dcf_eval_keys(party as u8, &r, &one[w], 1, &xs, &mut s[party]);
            }
            for i in 0..64 {
                assert_eq!(
                    got[i][w],
                    s[0][i].wrapping_add(s[1][i]),
                    "word {w} point {i}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "alpha does not fit")]
    fn gen_rejects_alpha_outside_domain() {
        dcf2_gen(4, 16, [1, 2], 1, 2);
    }

    #[test]
    fn serialization_round_trip() {
        let mut rng = StdRng::seed_from_u64(23);
        for n in [1u32, 7, 12, 16, 32, 64] {
            let alpha = rng.gen::<u64>() & domain_mask(n);
            let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
            let cw = dcf2_gen(n, alpha, [rng.gen(), rng.gen()], r0, r1);
            let mut bytes = vec![];
            cw.to_bytes(&mut bytes);
            assert_eq!(bytes.len(), Dcf2Correction::encoded_len(n));
            bytes.extend_from_slice(&[0xee; 5]); // trailing data stays unread
            let (back, used) = Dcf2Correction::from_bytes(n, &bytes).unwrap();
            assert_eq!(used, Dcf2Correction::encoded_len(n));
            assert_eq!(back, cw);
            let x = rng.gen::<u64>() & domain_mask(n);
            assert_eq!(dcf2_eval(0, r0, &back, x), dcf2_eval(0, r0, &cw, x));
            // every truncation is an error, never a panic
            for cut in 0..used {
                assert_eq!(
                    Dcf2Correction::from_bytes(n, &bytes[..cut]),
                    Err(FssError::Truncated {
                        needed: used,
                        got: cut
                    })
                );
            }
        }
        // 12 levels: 412 bytes, against 616 for two one-word keys
        assert_eq!(Dcf2Correction::encoded_len(12), 412);
        assert_eq!(2 * DcfCorrection::encoded_len(12), 616);
        assert_eq!(Dcf2Correction::encoded_len(64), 2128);
    }

    #[test]
    fn flat_keys_decode_what_single_keys_encode_and_reject_bad_input() {
        let mut rng = StdRng::seed_from_u64(24);
        let n = 13u32;
        let cws: Vec<Dcf2Correction> = (0..5)
            .map(|_| {
                let alpha = rng.gen::<u64>() & 0x1fff;
                dcf2_gen(n, alpha, [rng.gen(), rng.gen()], rng.gen(), rng.gen())
            })
            .collect();
        let mut bytes = Vec::new();
        let mut pushed = Dcf2Keys::with_capacity(n, cws.len());
        for cw in &cws {
            cw.to_bytes(&mut bytes);
            pushed.push(cw);
        }
        let (flat, used) = Dcf2Keys::from_bytes(n, cws.len(), &bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(flat, pushed);
        for (i, cw) in cws.iter().enumerate() {
            assert_eq!(&flat.key(i), cw);
        }
        let len = Dcf2Correction::encoded_len(n);
        // a non-canonical record in a later key is found: control byte, seed bit 0
        let mut bad = bytes.clone();
        bad[3 * len + RECORD + 32] = 4;
        assert_eq!(
            Dcf2Keys::from_bytes(n, cws.len(), &bad),
            Err(FssError::Malformed("control-bit byte above 3"))
        );
        let mut bad = bytes.clone();
        bad[2 * len + 5 * RECORD] |= 1;
        assert_eq!(
            Dcf2Keys::from_bytes(n, cws.len(), &bad),
            Err(FssError::Malformed("seed correction word has bit 0 set"))
        );
        for w in [0u32, 65, u32::MAX] {
            assert!(matches!(
                Dcf2Keys::from_bytes(w, 1, &bytes),
                Err(FssError::InvalidDomain { .. })
            ));
        }
        assert!(matches!(
            Dcf2Keys::from_bytes(n, usize::MAX, &bytes),
            Err(FssError::Truncated { .. })
        ));
        assert!(Dcf2Keys::from_bytes(n, 0, &[]).unwrap().0.is_empty());
    }

    /// Bit frequencies of the encoded correction words over many keys (fresh random roots):
    /// every bit that is not structurally constant is close to balanced whatever α and β are.
    /// The XOR of a level's two value words is balanced too: value words masked by the same PRG
    /// output (word 1 derived from word 0's block) differ by a function of `β` and fail this.
    #[test]
    fn correction_words_look_random_for_any_alpha_and_payload() {
        let mut rng = StdRng::seed_from_u64(25);
        let n = 12u32;
        let keys = 400; // sd of a frequency = 0.025; the band below is 8 sd wide on each side
        let len = Dcf2Correction::encoded_len(n);
        for (alpha, beta) in [
            (0u64, [1u64, 0]),
            (0xfff, [1, u64::MAX]),
            (0x800, [0, 0]),
            (0x123, [1, 0x8000_0000_0000_0000]),
        ] {
            let mut ones = vec![0usize; 8 * len];
            // bits of `value ^ value1` per level: the two words' masks are independent
            let mut xor_ones = vec![0usize; 64 * n as usize];
            for _ in 0..keys {
                let mut b = vec![];
                let cw = dcf2_gen(n, alpha, beta, rng.gen(), rng.gen());
                cw.to_bytes(&mut b);
                for (i, byte) in b.iter().enumerate() {
                    for j in 0..8 {
                        ones[8 * i + j] += ((byte >> j) & 1) as usize;
                    }
                }
                for (l, lv) in cw.levels.iter().enumerate() {
                    for j in 0..64 {
                        xor_ones[64 * l + j] += (((lv.value ^ lv.value1) >> j) & 1) as usize;
                    }
                }
            }
            for (bit, &c) in xor_ones.iter().enumerate() {
                let p = c as f64 / keys as f64;
                assert!(
                    (0.3..=0.7).contains(&p),
                    "alpha={alpha:#x} beta={beta:?}: level {} bit {}: the value words are correlated ({p})",
                    bit / 64,
                    bit % 64
                );
            }
            for (bit, &c) in ones.iter().enumerate() {
                let p = c as f64 / keys as f64;
                let byte = bit / 8;
                let constant = byte < RECORD * n as usize
                    && ((byte % RECORD == 0 && bit % 8 == 0) // seed word bit 0
                        || (byte % RECORD == 32 && bit % 8 >= 2)); // unused control bits
                if constant {
                    assert_eq!(p, 0.0, "bit {bit} should be 0");
                } else {
                    assert!(
                        (0.3..=0.7).contains(&p),
                        "alpha={alpha:#x} beta={beta:?}: bit {bit} of the key is biased ({p})"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn prop_dcf2_correct(n in 1u32..=64, alpha: u64, b0: u64, b1: u64, r0: u128, r1: u128, xs in proptest::collection::vec(any::<u64>(), 1..20)) {
            let mask = domain_mask(n);
            let alpha = alpha & mask;
            let cw = dcf2_gen(n, alpha, [b0, b1], r0, r1);
            let mut pts: Vec<u64> = xs.iter().map(|x| x & mask).collect();
            pts.extend([alpha, alpha.wrapping_sub(1) & mask, alpha.wrapping_add(1) & mask]);
            for x in pts {
                let [a0, a1] = dcf2_eval(0, r0, &cw, x);
                let [c0, c1] = dcf2_eval(1, r1, &cw, x);
                prop_assert_eq!([a0.wrapping_add(c0), a1.wrapping_add(c1)], want(x, alpha, [b0, b1]));
            }
        }
    }
}

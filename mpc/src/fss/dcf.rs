//! Distributed comparison function (DCF) of Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar, Rathee,
//! "Function Secret Sharing for Mixed-Mode and Fixed-Point Secure Computation", Eurocrypt 2021
//! (Fig. 1, the DCF construction behind their Fig. 3 gates), over the output group Z_2^64.
//!
//! The shared function is `f_{α,β}(x) = β` if `x < α` else `0` (unsigned, strict), for `n`-bit
//! inputs, bits taken most significant first. A key of party `b` is its root seed (drawn by the
//! caller, e.g. from a PRG seed the dealer shares with that party) plus a [`DcfCorrection`] that is
//! the same for both parties.
//!
//! Per level the tree PRG yields two child seeds, two control bits and two 64-bit value words (three
//! AES calls at key generation, for each party). Evaluation follows one path and needs only the
//! chosen child block and the value block: **2 AES calls per level, `2n` per evaluation**.
//! Correction words: per level a 128-bit seed word, a 64-bit value word and the two control-bit words
//! packed into one byte, plus a final 64-bit word: **`25·n + 8` bytes**.

use super::flat::{FlatKeys, Layout};
use super::prg::{encrypt_u128, TWEAK_LEFT, TWEAK_RIGHT, TWEAK_VALUE};
use super::FssError;

/// Largest supported input width in bits.
pub const DCF_MAX_BITS: u32 = 64;

/// Walks advanced together by every batched walk (2 AES blocks each per level, 3 for a
/// two-word payload).
pub(super) const LANES: usize = 16;

/// Correction words of one tree level (opaque: decoded from a key's encoding).
///
/// `repr(C)` without padding (32 bytes: seed, value, ctrl): the AVX-512 walk
/// ([`super::dcf_avx512`]) loads a level as one 256-bit word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DcfLevel {
    /// seed correction word (bit 0 always 0)
    pub(super) seed: u128,
    /// value correction word
    pub(super) value: u64,
    /// control-bit correction words: bit 0 left, bit 1 right (a whole word, so that the
    /// struct has no padding bytes)
    pub(super) ctrl: u64,
}

/// A tree level's correction words for a payload of [`Level::WORDS`] 64-bit words: the
/// one-word [`DcfLevel`] and the two-word [`super::dcf2::Dcf2Level`]. The batched walks (the
/// portable one here, [`super::dcf_avx512`], [`super::dcf_avx2`]) are written once over it.
/// Both records begin with `DcfLevel`'s 32 bytes (seed, value word 0, control bits), which the
/// SIMD walks load as one 256-bit word; a second value word follows at byte 32.
pub(super) trait Level: Copy + Default {
    /// payload words (1 or 2)
    const WORDS: usize;
    /// the key's final correction word(s)
    type Last: Copy;
    /// seed correction word (bit 0 always 0)
    fn seed(&self) -> u128;
    /// control-bit correction words: bit 0 left, bit 1 right
    fn ctrl(&self) -> u64;
    /// value correction word `w` (`w < WORDS`)
    fn value(&self, w: usize) -> u64;
    /// final correction word `w` of a key
    fn last_word(last: &Self::Last, w: usize) -> u64;
}

impl Level for DcfLevel {
    const WORDS: usize = 1;
    type Last = u64;
    #[inline(always)]
    fn seed(&self) -> u128 {
        self.seed
    }
    #[inline(always)]
    fn ctrl(&self) -> u64 {
        self.ctrl
    }
    #[inline(always)]
    fn value(&self, _w: usize) -> u64 {
        self.value
    }
    #[inline(always)]
    fn last_word(last: &u64, _w: usize) -> u64 {
        *last
    }
}

/// Correction words shared by both keys of one DCF instance.
///
/// A party's key is its root seed together with this value; see [`dcf_gen`] and [`dcf_eval`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DcfCorrection {
    /// input width `n` in bits (1 ..= 64)
    pub n_bits: u32,
    levels: Vec<DcfLevel>,
    last: u64,
}

#[inline(always)]
pub(super) fn neg_if(x: u64, cond: bool) -> u64 {
    if cond {
        x.wrapping_neg()
    } else {
        x
    }
}

#[inline(always)]
pub(super) fn domain_mask(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// The tweak of value block `w` (`TWEAK_VALUE + w`): each payload word of a level takes its
/// own 128-bit PRG output (left word low, right word high).
#[inline(always)]
pub(super) fn value_tweak(w: usize) -> u128 {
    TWEAK_VALUE + w as u128
}

/// `Convert` of the paper at the leaves, for `words` payload words: one word is the high half of
/// the leaf seed (as in the one-word scheme); two words are the two halves of the leaf seed's
/// value block (one more AES call: the seed's 127 pseudorandom bits cannot fill 128).
pub(super) fn convert_leaves(nodes: &[u128], words: usize, out: &mut [[u64; 2]]) {
    if words == 1 {
        for (o, s) in out.iter_mut().zip(nodes) {
            o[0] = (s >> 64) as u64;
        }
        return;
    }
    let mut blocks = [0u128; LANES];
    for (chunk, outs) in nodes.chunks(LANES).zip(out.chunks_mut(LANES)) {
        let b = &mut blocks[..chunk.len()];
        for (d, s) in b.iter_mut().zip(chunk) {
            *d = (s & !1) ^ value_tweak(0);
        }
        encrypt_u128(b);
        for ((o, d), s) in outs.iter_mut().zip(b.iter()).zip(chunk) {
            let v = d ^ (s & !1) ^ value_tweak(0);
            *o = [v as u64, (v >> 64) as u64];
        }
    }
}

/// The correction words of one level for a payload of `W` words: seed, values, control bits.
pub(super) type GenLevel<const W: usize> = (u128, [u64; W], u64);

/// Dealer side of the DCF of Boyle et al. (Eurocrypt 2021, Fig. 1) over `G = (Z_2^64)^W`: the
/// levels' correction words and the final one for `f(x) = beta if x < alpha else 0`. Per level
/// and party the PRG gives two child seeds with their control bits and `W` value blocks (tweaks
/// `TWEAK_VALUE + w`, each word its own PRG output): `(2 + W)·2·n` AES calls, plus 2 at the
/// leaves when `W = 2`. The arguments are checked by the callers.
pub(super) fn gen_words<const W: usize>(
    n_bits: u32,
    alpha: u64,
    beta: [u64; W],
    root0: u128,
    root1: u128,
) -> (Vec<GenLevel<W>>, [u64; W]) {
    let n = n_bits as usize;
    let per = 2 + W;
    // Nodes carry their control bit in bit 0: party 0 starts with t = 0, party 1 with t = 1.
    let mut node = [root0 & !1, (root1 & !1) | 1];
    let mut v_alpha = [0u64; W];
    let mut levels = Vec::with_capacity(n);
    let mut blocks = [0u128; 8];
    for i in 0..n {
        let a = (alpha >> (n - 1 - i)) & 1 == 1;
        for b in 0..2 {
            let s = node[b] & !1;
            blocks[per * b] = s ^ TWEAK_LEFT;
            blocks[per * b + 1] = s ^ TWEAK_RIGHT;
            for w in 0..W {
                blocks[per * b + 2 + w] = s ^ value_tweak(w);
            }
        }
        encrypt_u128(&mut blocks[..2 * per]);
        // (seed, control bit, values) of each party's child on side `right`
        let side = |b: usize, right: bool| {
            let s = node[b] & !1;
            let tw = if right { TWEAK_RIGHT } else { TWEAK_LEFT };
            let c = blocks[per * b + right as usize] ^ s ^ tw;
            let v: [u64; W] = std::array::from_fn(|w| {
                let blk = blocks[per * b + 2 + w] ^ s ^ value_tweak(w);
                (blk >> (64 * right as u32)) as u64
            });
            (c & !1, c & 1 == 1, v)
        };
        let t1 = node[1] & 1 == 1;
        let (lose0, lose1) = (side(0, !a), side(1, !a));
        let (keep0, keep1) = (side(0, a), side(1, a));
        let s_cw = lose0.0 ^ lose1.0;
        let mut v_cw = [0u64; W];
        for w in 0..W {
            v_cw[w] = neg_if(
                lose1.2[w].wrapping_sub(lose0.2[w]).wrapping_sub(v_alpha[w]),
                t1,
            );
            if a {
                // Lose = L: points leaving the path to the left are below alpha.
                v_cw[w] = v_cw[w].wrapping_add(neg_if(beta[w], t1));
            }
            v_alpha[w] = v_alpha[w]
                .wrapping_sub(keep1.2[w])
                .wrapping_add(keep0.2[w])
                .wrapping_add(neg_if(v_cw[w], t1));
        }
        let t_l = side(0, false).1 ^ side(1, false).1 ^ a ^ true;
        let t_r = side(0, true).1 ^ side(1, true).1 ^ a;
        let t_keep = if a { t_r } else { t_l };
        for (b, keep) in [keep0, keep1].into_iter().enumerate() {
            let t = node[b] & 1;
            let cw = s_cw | t_keep as u128;
            node[b] = (keep.0 | keep.1 as u128) ^ (0u128.wrapping_sub(t) & cw);
        }
        levels.push((s_cw, v_cw, t_l as u64 | (t_r as u64) << 1));
    }
    let mut conv = [[0u64; 2]; 2];
    convert_leaves(&node, W, &mut conv);
    let t1 = node[1] & 1 == 1;
    let last = std::array::from_fn(|w| {
        neg_if(
            conv[1][w].wrapping_sub(conv[0][w]).wrapping_sub(v_alpha[w]),
            t1,
        )
    });
    (levels, last)
}

/// Checks the width and the point of a key generation (see [`dcf_gen`]'s panics).
pub(super) fn check_gen(what: &str, n_bits: u32, alpha: u64) {
    assert!(
        (1..=DCF_MAX_BITS).contains(&n_bits),
        "{what}: n_bits = {n_bits} outside 1..={DCF_MAX_BITS}"
    );
    assert!(
        alpha <= domain_mask(n_bits),
        "{what}: alpha does not fit in {n_bits} bits"
    );
}

/// Dealer side: given both parties' root seeds (the caller draws them from PRGs), build the
/// correction words of `f(x) = beta if x < alpha else 0` on `n_bits`-bit unsigned inputs.
///
/// Costs `6·n_bits` AES calls.
///
/// # Panics
/// If `n_bits` is not in `1..=64` or `alpha >= 2^n_bits`.
pub fn dcf_gen(n_bits: u32, alpha: u64, beta: u64, root0: u128, root1: u128) -> DcfCorrection {
    check_gen("dcf_gen", n_bits, alpha);
    let (levels, [last]) = gen_words::<1>(n_bits, alpha, [beta], root0, root1);
    DcfCorrection {
        n_bits,
        levels: levels
            .into_iter()
            .map(|(seed, [value], ctrl)| DcfLevel { seed, value, ctrl })
            .collect(),
        last,
    }
}

/// Party side (`party` = 0 or 1): this party's share of `f(x)`; the shares of the two parties add
/// (wrapping) to `f(x)`. Only the low `n_bits` bits of `x` are used. Costs `2·n_bits` AES calls.
///
/// # Panics
/// If `party > 1`.
pub fn dcf_eval(party: u8, root: u128, cw: &DcfCorrection, x: u64) -> u64 {
    let mut out = [0u64];
    dcf_eval_many(party, root, cw, &[x], &mut out);
    out[0]
}

/// Evaluates one key at several points (`out[i]` = share of `f(xs[i])`), batching the AES calls of
/// up to 16 points per level. Only the low `n_bits` bits of each point are used.
///
/// # Panics
/// If `party > 1` or `out.len() != xs.len()`.
pub fn dcf_eval_many(party: u8, root: u128, cw: &DcfCorrection, xs: &[u64], out: &mut [u64]) {
    assert_eq!(xs.len(), out.len(), "dcf_eval_many: length mismatch");
    if xs.is_empty() {
        return;
    }
    eval_flat(
        party,
        cw.n_bits,
        &[root],
        &cw.levels,
        std::slice::from_ref(&cw.last),
        xs.len(),
        xs,
        &mut [out],
    );
}

/// Evaluates many keys of the same width, each at `per` points: key `i` (root `roots[i]`,
/// words `keys[i]`) at `xs[i·per .. (i+1)·per]`, shares written to the same positions of `out`.
/// The walks of up to 16 (key, point) pairs advance level by level together, so every AES call
/// carries 32 blocks (the single-key [`dcf_eval_many`] batches only the points of one key).
///
/// # Panics
/// If `party > 1` or the lengths disagree.
pub fn dcf_eval_keys(
    party: u8,
    roots: &[u128],
    keys: &DcfKeys,
    per: usize,
    xs: &[u64],
    out: &mut [u64],
) {
    assert_eq!(roots.len(), keys.len(), "dcf_eval_keys: one root per key");
    eval_flat(
        party,
        keys.n_bits(),
        roots,
        &keys.levels,
        &keys.last,
        per,
        xs,
        &mut [out],
    );
}

/// The batched walk over flat correction words of a payload of `L::WORDS` words: key `i`'s
/// levels are `levels[i·n .. (i+1)·n]` (`n = n_bits`), its final word(s) `last[i]`; word `w` of
/// the shares goes to `outs[w]`. Runs on AVX-512F + VAES ([`super::dcf_avx512`]), else AVX2 +
/// VAES ([`super::dcf_avx2`]), else the portable walk; on the Xeon of 2026-12-01, 16 384–65 536
/// one-word keys of 12 and 23 bits: 5.7–8.5 ns per walk and level against 8.3–10.8 (AVX2) and
/// 13.9–17.9 (portable).
///
/// # Panics
/// If `party > 1`, `per == 0` or the lengths disagree.
#[allow(clippy::too_many_arguments)]
pub(super) fn eval_flat<L: Level>(
    party: u8,
    n_bits: u32,
    roots: &[u128],
    levels: &[L],
    last: &[L::Last],
    per: usize,
    xs: &[u64],
    outs: &mut [&mut [u64]],
) {
    assert!(party < 2, "dcf_eval: party must be 0 or 1, got {party}");
    assert!(per > 0, "dcf_eval_keys: no point per key");
    assert_eq!(roots.len(), last.len(), "dcf_eval_keys: one root per key");
    assert_eq!(xs.len(), last.len() * per, "dcf_eval_keys: points per key");
    assert_eq!(outs.len(), L::WORDS, "dcf_eval_keys: one output per word");
    for out in outs.iter() {
        assert_eq!(xs.len(), out.len(), "dcf_eval_keys: length mismatch");
    }
    let n = n_bits as usize;
    assert_eq!(
        levels.len(),
        n * last.len(),
        "dcf_eval_keys: levels per key"
    );
    #[cfg(target_arch = "x86_64")]
    if let Some(rk) = super::dcf_avx512::available() {
        // SAFETY: `available` checked AVX-512F, VAES and AES-NI; the lengths were checked above.
        unsafe { super::dcf_avx512::eval_flat(rk, party, n, roots, levels, last, per, xs, outs) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(rk) = super::dcf_avx2::available() {
        // SAFETY: `available` checked AVX2, VAES and AES-NI; the lengths were checked above.
        unsafe { super::dcf_avx2::eval_flat(rk, party, n, roots, levels, last, per, xs, outs) };
        return;
    }
    eval_flat_portable(party, n_bits, roots, levels, last, per, xs, outs);
}

/// [`eval_flat`] on any CPU (AES through [`encrypt_u128`]); arguments as checked there.
#[allow(clippy::too_many_arguments)]
pub(super) fn eval_flat_portable<L: Level>(
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
    // blocks per walk and level: the child block, then one value block per word
    let nb = 1 + L::WORDS;
    let mut blocks = [0u128; 3 * LANES];
    let total = xs.len();
    let mut start = 0;
    while start < total {
        let mut batch = WalkBatch::new(party, n, roots, levels, per, xs, start);
        let m = batch.m;
        let mut lvs = [L::default(); LANES];
        for i in 0..n {
            let shift = n - 1 - i;
            for k in 0..m {
                let s = batch.node[k] & !1;
                let bit = ((batch.x[2 * k] >> shift) & 1) as u128;
                blocks[nb * k] = s | bit;
                for w in 0..L::WORDS {
                    blocks[nb * k + 1 + w] = s ^ value_tweak(w);
                }
                // read the level's correction words before the AES call, so that the loads
                // overlap the encryption
                lvs[k] = levels[batch.key[k] * n + i];
            }
            encrypt_u128(&mut blocks[..nb * m]);
            for k in 0..m {
                let lv = &lvs[k];
                let s = batch.node[k] & !1;
                let t = batch.node[k] & 1;
                let bit = ((batch.x[2 * k] >> shift) & 1) as u128;
                let child = blocks[nb * k] ^ s ^ bit;
                for w in 0..L::WORDS {
                    let vblk = blocks[nb * k + 1 + w] ^ s ^ value_tweak(w);
                    let v = (vblk >> (64 * bit)) as u64;
                    batch.acc[w][2 * k] = batch.acc[w][2 * k]
                        .wrapping_add(v)
                        .wrapping_add((t as u64).wrapping_mul(lv.value(w)));
                }
                let cw_mask = lv.seed() | ((lv.ctrl() as u128 >> bit) & 1);
                batch.node[k] = child ^ (0u128.wrapping_sub(t) & cw_mask);
            }
        }
        batch.finish(party, last, outs, start);
        start += m;
    }
}

/// One batch of [`LANES`] walks, as every walk (portable, AVX2, AVX-512) sets it up and the
/// SIMD walks load it into registers and store it back: lanes past `m` repeat the batch's first
/// key at point 0, and their results are dropped.
pub(super) struct WalkBatch<L> {
    /// walks in the batch (`1..=LANES`)
    pub m: usize,
    /// key of each lane
    pub key: [usize; LANES],
    /// each lane's node (root with the party's control bit, then the walk's current node)
    pub node: [u128; LANES],
    /// each lane's point in the low word of a 128-bit slot (high words 0)
    pub x: [u64; 2 * LANES],
    /// each lane's value sum of word 0 and word 1 in the low word of a 128-bit slot
    pub acc: [[u64; 2 * LANES]; 2],
    /// first level of each lane's key
    pub levels: [*const L; LANES],
}

impl<L: Level> WalkBatch<L> {
    /// The batch of walks `start ..` (at most [`LANES`]); asks for the correction words of
    /// this batch (when it is the first) and of the next one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        party: u8,
        n: usize,
        roots: &[u128],
        levels: &[L],
        per: usize,
        xs: &[u64],
        start: usize,
    ) -> Self {
        let total = xs.len();
        let m = (total - start).min(LANES);
        let mut b = Self {
            m,
            key: [0; LANES],
            node: [0; LANES],
            x: [0; 2 * LANES],
            acc: [[0; 2 * LANES]; 2],
            levels: [levels.as_ptr(); LANES],
        };
        for j in 0..LANES {
            let kk = if j < m { start + j } else { start } / per;
            b.key[j] = kk;
            b.node[j] = (roots[kk] & !1) | party as u128;
            b.levels[j] = levels[kk * n..].as_ptr();
            if j < m {
                b.x[2 * j] = xs[start + j];
            }
        }
        if start == 0 {
            prefetch_batch(levels, n, per, 0, total);
        }
        // the next batch's correction words arrive while this one walks
        prefetch_batch(levels, n, per, start + LANES, total);
        b
    }

    /// Writes the shares of the batch's `m` walks to `outs[w][start..start + m]` from the final
    /// nodes and sums.
    pub(super) fn finish(
        &self,
        party: u8,
        last: &[L::Last],
        outs: &mut [&mut [u64]],
        start: usize,
    ) {
        let mut conv = [[0u64; 2]; LANES];
        convert_leaves(&self.node[..self.m], L::WORDS, &mut conv);
        for (w, out) in outs.iter_mut().enumerate().take(L::WORDS) {
            for (j, o) in out[start..start + self.m].iter_mut().enumerate() {
                let t = (self.node[j] & 1) as u64;
                let v = self.acc[w][2 * j]
                    .wrapping_add(conv[j][w])
                    .wrapping_add(t.wrapping_mul(L::last_word(&last[self.key[j]], w)));
                *o = neg_if(v, party == 1);
            }
        }
    }
}

/// Asks the CPU to bring every level of the keys of walks `start .. start + LANES` (of `total`,
/// `per` walks per key) into the cache: a batch reads all of its keys' levels, which lie far
/// apart in a bundle. One prefetch per cache line.
#[inline]
fn prefetch_batch<L>(levels: &[L], n: usize, per: usize, start: usize, total: usize) {
    if start >= total {
        return;
    }
    let first = start / per;
    let last = (total.min(start + LANES) - 1) / per;
    let step = (64 / std::mem::size_of::<L>()).max(1);
    for at in (first * n..(last + 1) * n).step_by(step) {
        prefetch(levels, at);
    }
}

/// Asks the CPU to bring `levels[at]` into the cache (no effect past the end or off x86-64).
#[inline(always)]
fn prefetch<L>(levels: &[L], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(lv) = levels.get(at) {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch never faults, and SSE is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(lv as *const L as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (levels, at);
}

/// Correction words of many DCF keys of one width, stored flat (see [`super::flat`]).
pub type DcfKeys = FlatKeys<DcfLevel, u64>;

impl DcfKeys {
    /// No keys yet, of width `n_bits` (room for `keys` of them).
    ///
    /// # Panics
    /// If `n_bits` is not in `1..=64`.
    pub fn with_capacity(n_bits: u32, keys: usize) -> Self {
        assert!(
            (1..=DCF_MAX_BITS).contains(&n_bits),
            "DcfKeys: n_bits = {n_bits} outside 1..={DCF_MAX_BITS}"
        );
        Self::with_depth(n_bits, n_bits as usize, keys)
    }

    /// Appends one key's correction words.
    ///
    /// # Panics
    /// If its width differs.
    pub fn push(&mut self, cw: &DcfCorrection) {
        self.push_key(cw.n_bits, &cw.levels, cw.last);
    }

    /// Key `i`'s correction words on their own (tests and reference checks).
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn key(&self, i: usize) -> DcfCorrection {
        DcfCorrection {
            n_bits: self.n_bits(),
            levels: self.levels_of(i).to_vec(),
            last: self.last[i],
        }
    }

    /// Decodes `count` consecutive key encodings (see [`DcfCorrection::to_bytes`]) of width
    /// `n_bits` from the start of `bytes`; returns them and the bytes consumed. Rejects what
    /// [`DcfCorrection::from_bytes`] rejects.
    pub fn from_bytes(n_bits: u32, count: usize, bytes: &[u8]) -> Result<(Self, usize), FssError> {
        let layout = Layout {
            depth: n_bits as usize,
            record: 25,
            word: 8,
        };
        let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
        let width = (n_bits, DCF_MAX_BITS);
        Self::decode(width, &layout, count, bytes, level_from_bytes, word)
    }
}

/// One 25-byte level record; rejects a seed word with bit 0 set or a control byte above 3.
fn level_from_bytes(rec: &[u8]) -> Result<DcfLevel, FssError> {
    let seed = u128::from_le_bytes(rec[..16].try_into().expect("16 bytes"));
    let value = u64::from_le_bytes(rec[16..24].try_into().expect("8 bytes"));
    let ctrl = rec[24];
    if seed & 1 != 0 {
        return Err(FssError::Malformed("seed correction word has bit 0 set"));
    }
    if ctrl > 3 {
        return Err(FssError::Malformed("control-bit byte above 3"));
    }
    Ok(DcfLevel {
        seed,
        value,
        ctrl: ctrl as u64,
    })
}

impl DcfCorrection {
    /// Encoded size in bytes for a valid `n_bits`: `25·n_bits + 8` (per level a 16-byte seed word,
    /// an 8-byte value word and one byte holding both control-bit words; then the 8-byte final word).
    pub fn encoded_len(n_bits: u32) -> usize {
        25 * n_bits as usize + 8
    }

    /// Appends the encoding (little-endian words; see [`DcfCorrection::encoded_len`]) to `out`.
    pub fn to_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(Self::encoded_len(self.levels.len() as u32));
        for lv in &self.levels {
            out.extend_from_slice(&lv.seed.to_le_bytes());
            out.extend_from_slice(&lv.value.to_le_bytes());
            out.push(lv.ctrl as u8);
        }
        out.extend_from_slice(&self.last.to_le_bytes());
    }

    /// Decodes correction words for width `n_bits` from the start of `bytes`; returns them and the
    /// number of bytes consumed (trailing bytes are left alone). Rejects an invalid width, truncated
    /// input and non-canonical encodings (seed word with bit 0 set, control byte above 3).
    pub fn from_bytes(n_bits: u32, bytes: &[u8]) -> Result<(Self, usize), FssError> {
        let (keys, need) = DcfKeys::from_bytes(n_bits, 1, bytes)?;
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
mod batch_tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Many keys walked together ([`dcf_eval_keys`], the batched SIMD or portable walk) give,
    /// once both parties' shares are added, the DCF's definition `β·[x < α]` on the low `n`
    /// bits of `x` — not merely what another evaluation path returns. Seeded random keys of 1
    /// to 64 bits in ragged batches (not multiples of the 16 lanes), each at its edge points
    /// (α, α ± 1, the domain's ends, α with high bits set above the domain) and random ones.
    #[test]
    fn batched_keys_reconstruct_the_definition() {
        let mut rng = StdRng::seed_from_u64(17);
        for (n, keys, per) in [
            (1u32, 3usize, 8usize),
            (11, 5, 8),
            (23, 37, 8),
            (40, 16, 9),
            (63, 7, 8),
            (64, 19, 8),
        ] {
            let mask = domain_mask(n);
            let mut roots = [Vec::new(), Vec::new()];
            let mut flat = DcfKeys::with_capacity(n, keys);
            let mut defs = Vec::new();
            let mut xs = Vec::new();
            for k in 0..keys {
                // α at the domain's ends for the first keys, random after
                let alpha = match k {
                    0 => 0,
                    1 => mask,
                    _ => rng.gen::<u64>() & mask,
                };
                let beta: u64 = rng.gen();
                let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
                flat.push(&dcf_gen(n, alpha, beta, r0, r1));
                roots[0].push(r0);
                roots[1].push(r1);
                defs.push((alpha, beta));
                let high = if n < 64 { rng.gen::<u64>() & !mask } else { 0 };
                let edges = [
                    alpha,
                    alpha.wrapping_sub(1) & mask,
                    alpha.wrapping_add(1) & mask,
                    0,
                    mask,
                    alpha | high,
                    alpha.wrapping_sub(1) & mask | high,
                ];
                xs.extend(
                    (0..per).map(|q| edges.get(q).copied().unwrap_or_else(|| rng.gen::<u64>())),
                );
            }
            let mut shares = [vec![0u64; xs.len()], vec![0u64; xs.len()]];
            for party in 0..2u8 {
                let p = party as usize;
                dcf_eval_keys(party, &roots[p], &flat, per, &xs, &mut shares[p]);
            }
            for (i, x) in xs.iter().enumerate() {
                let (alpha, beta) = defs[i / per];
                let want = if x & mask < alpha { beta } else { 0 };
                assert_eq!(
                    shares[0][i].wrapping_add(shares[1][i]),
                    want,
                    "n={n} key {} point {x:#x} alpha {alpha:#x}",
                    i / per
                );
            }
        }
    }

    #[test]
    fn flat_keys_decode_what_single_keys_encode() {
        let mut rng = StdRng::seed_from_u64(18);
        let n = 13u32;
        let cws: Vec<DcfCorrection> = (0..5)
            .map(|_| {
                dcf_gen(
                    n,
                    rng.gen::<u64>() & 0x1fff,
                    rng.gen(),
                    rng.gen(),
                    rng.gen(),
                )
            })
            .collect();
        let mut bytes = Vec::new();
        let mut pushed = DcfKeys::with_capacity(n, cws.len());
        for cw in &cws {
            cw.to_bytes(&mut bytes);
            pushed.push(cw);
        }
        bytes.push(0xee); // trailing data stays unread
        let (flat, used) = DcfKeys::from_bytes(n, cws.len(), &bytes).unwrap();
        assert_eq!(used, cws.len() * DcfCorrection::encoded_len(n));
        assert_eq!(flat, pushed);
        assert_eq!((flat.len(), flat.n_bits()), (5, n));
        for (i, cw) in cws.iter().enumerate() {
            assert_eq!(&flat.key(i), cw);
        }
        // a cut anywhere is an error naming the whole batch's length, never a panic
        for cut in [0, 1, used / 2, used - 1] {
            assert_eq!(
                DcfKeys::from_bytes(n, cws.len(), &bytes[..cut]),
                Err(FssError::Truncated {
                    needed: used,
                    got: cut
                })
            );
        }
        // a non-canonical record in a later key is found
        let mut bad = bytes.clone();
        bad[3 * DcfCorrection::encoded_len(n) + 24] = 9;
        assert_eq!(
            DcfKeys::from_bytes(n, cws.len(), &bad),
            Err(FssError::Malformed("control-bit byte above 3"))
        );
        assert!(matches!(
            DcfKeys::from_bytes(0, 1, &bytes),
            Err(FssError::InvalidDomain { .. })
        ));
        assert!(matches!(
            DcfKeys::from_bytes(n, usize::MAX, &bytes),
            Err(FssError::Truncated { .. })
        ));
        assert!(DcfKeys::from_bytes(n, 0, &[]).unwrap().0.is_empty());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A batched walk under test (the SIMD walks implement it for any level type).
    pub(in crate::fss) trait AnyWalk {
        /// `(party, n_bits, roots, levels, last, per, xs, outs)` as [`eval_flat`] takes them.
        #[allow(clippy::too_many_arguments)]
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
        );
    }

    /// Random one-word and two-word keys of several widths (1 to 64 bits), each at several
    /// points (α, α − 1, the domain's ends, random), in batches with ragged ends: `walk` must
    /// give the portable walk's shares for both parties, word by word.
    pub(in crate::fss) fn random_walks(walk: &impl AnyWalk) {
        random_walks_of::<DcfLevel>(walk, &|n, alpha, beta, r0, r1, flat| {
            let k = dcf_gen(n, alpha, beta[0], r0, r1);
            flat.push_key(n, &k.levels, k.last);
        });
        random_walks_of::<super::super::dcf2::Dcf2Level>(walk, &|n, alpha, beta, r0, r1, flat| {
            flat.push(&super::super::dcf2::dcf2_gen(n, alpha, beta, r0, r1));
        });
    }

    /// Appends a key `(n_bits, α, β, root0, root1)` of one level type to flat storage.
    type PushKey<'a, L> =
        dyn Fn(u32, u64, [u64; 2], u128, u128, &mut FlatKeys<L, <L as Level>::Last>) + 'a;

    fn random_walks_of<L: Level>(walk: &impl AnyWalk, push: &PushKey<'_, L>) {
        let mut rng = StdRng::seed_from_u64(7);
        for &(n_bits, keys, per) in &[(1u32, 3usize, 5usize), (12, 7, 3), (23, 5, 16), (64, 4, 9)] {
            let dmask = domain_mask(n_bits);
            let mut flat = FlatKeys::<L, L::Last>::with_depth(n_bits, n_bits as usize, keys);
            let mut roots = [Vec::new(), Vec::new()];
            let mut xs = Vec::new();
            for _ in 0..keys {
                let alpha = rng.gen::<u64>() & dmask;
                let r0: u128 = rng.gen();
                let r1: u128 = rng.gen();
                push(n_bits, alpha, rng.gen(), r0, r1, &mut flat);
                roots[0].push(r0);
                roots[1].push(r1);
                for q in 0..per {
                    xs.push(match q % 4 {
                        0 => alpha,
                        1 => alpha.wrapping_sub(1) & dmask,
                        2 => [0, dmask][q % 2],
                        _ => rng.gen::<u64>() & dmask,
                    });
                }
            }
            let (levels, last) = (&flat.levels[..], &flat.last[..]);
            let len = xs.len();
            for party in 0..2u8 {
                let r = &roots[party as usize];
                let mut want = [vec![0u64; len], vec![0u64; len]];
                let [w0, w1] = &mut want;
                let mut w = [&mut w0[..], &mut w1[..]];
                eval_flat_portable(party, n_bits, r, levels, last, per, &xs, &mut w[..L::WORDS]);
                let mut got = [vec![0u64; len], vec![0u64; len]];
                let [g0, g1] = &mut got;
                let mut g = [&mut g0[..], &mut g1[..]];
                walk.walk(party, n_bits, r, levels, last, per, &xs, &mut g[..L::WORDS]);
                assert_eq!(got, want, "{} words, n = {n_bits}, party {party}", L::WORDS);
            }
        }
    }

    fn reconstruct(cw: &DcfCorrection, r0: u128, r1: u128, x: u64) -> u64 {
        dcf_eval(0, r0, cw, x).wrapping_add(dcf_eval(1, r1, cw, x))
    }

    fn check_points(n: u32, alpha: u64, beta: u64, r0: u128, r1: u128, xs: &[u64]) {
        let cw = dcf_gen(n, alpha, beta, r0, r1);
        assert_eq!(cw.levels.len(), n as usize);
        let mut s0 = vec![0; xs.len()];
        let mut s1 = vec![0; xs.len()];
        dcf_eval_many(0, r0, &cw, xs, &mut s0);
        dcf_eval_many(1, r1, &cw, xs, &mut s1);
        for (i, &x) in xs.iter().enumerate() {
            let want = if x < alpha { beta } else { 0 };
            assert_eq!(
                s0[i].wrapping_add(s1[i]),
                want,
                "n={n} alpha={alpha} x={x} beta={beta}"
            );
            assert_eq!(s0[i], dcf_eval(0, r0, &cw, x));
            assert_eq!(s1[i], dcf_eval(1, r1, &cw, x));
        }
    }

    #[test]
    fn correct_on_edges_and_random_points() {
        let mut rng = StdRng::seed_from_u64(0xdcf);
        for n in [1u32, 2, 5, 16, 31, 63, 64] {
            let mask = domain_mask(n);
            for _ in 0..20 {
                let alpha = rng.gen::<u64>() & mask;
                let beta: u64 = rng.gen();
                let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
                let mut xs = vec![0, mask, alpha, alpha.wrapping_add(1) & mask];
                xs.push(alpha.wrapping_sub(1) & mask);
                xs.extend((0..40).map(|_| rng.gen::<u64>() & mask));
                // points near alpha on both sides
                xs.extend((0..10).map(|d| alpha.wrapping_sub(d) & mask));
                xs.extend((0..10).map(|d| alpha.wrapping_add(d) & mask));
                check_points(n, alpha, beta, r0, r1, &xs);
            }
            // alpha at the domain ends
            for alpha in [0, 1 & mask, mask] {
                let xs = [0, 1 & mask, mask, mask.wrapping_sub(1) & mask];
                check_points(n, alpha, rng.gen(), rng.gen(), rng.gen(), &xs);
            }
        }
    }

    #[test]
    fn exhaustive_small_domains() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in 1u32..=5 {
            let xs: Vec<u64> = (0..1u64 << n).collect();
            for alpha in 0..1u64 << n {
                check_points(n, alpha, rng.gen(), rng.gen(), rng.gen(), &xs);
            }
        }
    }

    #[test]
    fn high_bits_of_x_are_ignored() {
        let mut rng = StdRng::seed_from_u64(2);
        let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
        let cw = dcf_gen(10, 300, 7, r0, r1);
        for x in [0u64, 299, 300, 1023] {
            let hi = x | (0xabcd << 10);
            assert_eq!(reconstruct(&cw, r0, r1, hi), reconstruct(&cw, r0, r1, x));
        }
    }

    #[test]
    #[should_panic(expected = "alpha does not fit")]
    fn gen_rejects_alpha_outside_domain() {
        dcf_gen(4, 16, 1, 1, 2);
    }

    #[test]
    fn serialization_round_trip() {
        let mut rng = StdRng::seed_from_u64(3);
        for n in [1u32, 7, 16, 32, 64] {
            let alpha = rng.gen::<u64>() & domain_mask(n);
            let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
            let cw = dcf_gen(n, alpha, rng.gen(), r0, r1);
            let mut bytes = vec![];
            cw.to_bytes(&mut bytes);
            assert_eq!(bytes.len(), DcfCorrection::encoded_len(n));
            bytes.extend_from_slice(&[0xee; 5]); // trailing data stays unread
            let (back, used) = DcfCorrection::from_bytes(n, &bytes).unwrap();
            assert_eq!(used, DcfCorrection::encoded_len(n));
            assert_eq!(back, cw);
            let x = rng.gen::<u64>() & domain_mask(n);
            assert_eq!(dcf_eval(0, r0, &back, x), dcf_eval(0, r0, &cw, x));
            // every truncation is an error, never a panic
            for cut in 0..used {
                assert_eq!(
                    DcfCorrection::from_bytes(n, &bytes[..cut]),
                    Err(FssError::Truncated {
                        needed: used,
                        got: cut
                    })
                );
            }
        }
        assert_eq!(DcfCorrection::encoded_len(16), 408);
        assert_eq!(DcfCorrection::encoded_len(32), 808);
        assert_eq!(DcfCorrection::encoded_len(64), 1608);
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let bytes = vec![0u8; 4096];
        for n in [0u32, 65, u32::MAX] {
            assert!(matches!(
                DcfCorrection::from_bytes(n, &bytes),
                Err(FssError::InvalidDomain { .. })
            ));
        }
        let cw = dcf_gen(3, 5, 9, 11, 12);
        let mut good = vec![];
        cw.to_bytes(&mut good);
        let mut bad = good.clone();
        bad[0] |= 1; // seed word bit 0
        assert!(matches!(
            DcfCorrection::from_bytes(3, &bad),
            Err(FssError::Malformed(_))
        ));
        let mut bad = good.clone();
        bad[24] = 4; // control byte
        assert!(matches!(
            DcfCorrection::from_bytes(3, &bad),
            Err(FssError::Malformed(_))
        ));
        assert!(DcfCorrection::from_bytes(3, &good).is_ok());
    }

    /// Bit frequencies over many keys (fresh random roots) of the encoded correction words: every bit
    /// that is not structurally constant must be close to balanced, whatever alpha is. A key that
    /// leaks alpha (or beta) through a fixed bit — e.g. a control-bit word equal to a bit of alpha,
    /// or a value word not masked by the other party's PRG output — fails this.
    fn bit_frequencies(n: u32, alpha: u64, beta: u64, rng: &mut StdRng, keys: usize) -> Vec<f64> {
        let len = DcfCorrection::encoded_len(n);
        let mut ones = vec![0usize; 8 * len];
        for _ in 0..keys {
            let cw = dcf_gen(n, alpha, beta, rng.gen(), rng.gen());
            let mut b = vec![];
            cw.to_bytes(&mut b);
            for (i, byte) in b.iter().enumerate() {
                for j in 0..8 {
                    ones[8 * i + j] += ((byte >> j) & 1) as usize;
                }
            }
        }
        ones.iter().map(|&c| c as f64 / keys as f64).collect()
    }

    #[test]
    fn correction_words_look_random_for_any_alpha() {
        let mut rng = StdRng::seed_from_u64(4);
        let n = 16u32;
        let keys = 400; // sd of a frequency = 0.025; the band below is 8 sd wide on each side
        for (alpha, beta) in [(0u64, 1u64), (0xffff, 1), (0x8000, u64::MAX), (0x1234, 0)] {
            let f = bit_frequencies(n, alpha, beta, &mut rng, keys);
            for (bit, &p) in f.iter().enumerate() {
                let byte = bit / 8;
                let in_level = byte < 25 * n as usize;
                let constant = in_level
                    && ((byte % 25 == 0 && bit % 8 == 0) // seed word bit 0
                        || (byte % 25 == 24 && bit % 8 >= 2)); // unused control-byte bits
                if constant {
                    assert_eq!(p, 0.0, "bit {bit} should be 0");
                } else {
                    assert!(
                        (0.3..=0.7).contains(&p),
                        "alpha={alpha:#x}: bit {bit} of the key is biased ({p})"
                    );
                }
            }
        }
    }

    #[test]
    fn correction_words_depend_on_alpha_and_roots() {
        // Same roots, different alphas: the correction words differ (from the first level where the
        // alphas differ on) — the roots themselves are inputs and cannot depend on alpha.
        let mut rng = StdRng::seed_from_u64(5);
        let (r0, r1): (u128, u128) = (rng.gen(), rng.gen());
        let a = dcf_gen(16, 0x00ff, 1, r0, r1);
        let b = dcf_gen(16, 0xff00, 1, r0, r1);
        assert_ne!(a.levels[0], b.levels[0]);
        assert_ne!(a.last, b.last);
        // Different roots, same alpha: different correction words.
        let c = dcf_gen(16, 0x00ff, 1, rng.gen(), rng.gen());
        assert!(a
            .levels
            .iter()
            .zip(&c.levels)
            .all(|(x, y)| x.seed != y.seed));
        // A single share is not the value itself: party 0's shares at points below alpha are spread.
        let cw = dcf_gen(16, 0xffff, 5, r0, r1);
        let shares: std::collections::HashSet<u64> =
            (0..64).map(|x| dcf_eval(0, r0, &cw, x)).collect();
        assert_eq!(shares.len(), 64);
    }

    #[test]
    fn one_party_shares_are_unbiased() {
        // Party 0's share's low bit, over fresh keys, does not tell x < alpha from x >= alpha.
        let mut rng = StdRng::seed_from_u64(6);
        let trials = 2000;
        for below in [true, false] {
            let mut ones = 0;
            for _ in 0..trials {
                let alpha = rng.gen::<u64>() & 0xfff;
                let r0: u128 = rng.gen();
                let cw = dcf_gen(12, alpha.max(1), 1, r0, rng.gen());
                let x = if below { 0 } else { 0xfff };
                ones += dcf_eval(0, r0, &cw, x) & 1;
            }
            let p = ones as f64 / trials as f64;
            assert!((0.44..0.56).contains(&p), "below={below}: {p}");
        }
    }

    proptest! {
        #[test]
        fn prop_dcf_correct(n in 1u32..=64, alpha: u64, beta: u64, r0: u128, r1: u128, xs in proptest::collection::vec(any::<u64>(), 1..20)) {
            let mask = domain_mask(n);
            let alpha = alpha & mask;
            let cw = dcf_gen(n, alpha, beta, r0, r1);
            let mut pts: Vec<u64> = xs.iter().map(|x| x & mask).collect();
            pts.push(alpha);
            pts.push(alpha.wrapping_sub(1) & mask);
            for x in pts {
                let want = if x < alpha { beta } else { 0 };
                prop_assert_eq!(reconstruct(&cw, r0, r1, x), want);
            }
        }
    }
}

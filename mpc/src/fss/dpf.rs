//! Distributed point function (DPF) of Boyle, Gilboa, Ishai, "Function Secret Sharing: Improvements
//! and Extensions", CCS 2016, with output group Z_2^64, payload 1 and full-domain evaluation.
//!
//! Tree: the `n − ℓ` top levels (`ℓ = min(n, 2)`) are the BGI seed tree (per level a 128-bit seed
//! correction word and two control-bit correction words, packed into one byte). Early termination:
//! a node at depth `n − ℓ` does not get seed children; instead the PRG expands its seed into
//! `2^(ℓ−1)` 128-bit leaves, each holding two u64 outputs, and one final correction word of `2^ℓ`
//! u64s (a vector in (Z_2^64)^(2^ℓ), the payload placed at `α mod 2^ℓ`) is added under the node's
//! control bit, exactly like BGI's final correction word (`CW = (−1)^{t_1}·(e_α − V_0 + V_1)`).
//! The leaves are PRG outputs (not raw seeds, whose bit 0 is the control bit), so every bit of the
//! final correction word is masked by the other party's PRG output.
//!
//! Costs: full-domain evaluation `2^n − 2` AES calls for `n ≥ 2` (1 for `n = 1`), level by level
//! with all AES calls of a level batched; key generation `4n − 4` (2 for `n = 1`). Correction words:
//! **`17·(n − 2) + 32` bytes** for `n ≥ 2` (16 for `n = 1`).

use super::prg::{self, encrypt_u128};
use super::FssError;
use std::cell::RefCell;

/// Largest supported domain width in bits.
pub const DPF_MAX_BITS: u32 = 24;

/// log2 of the outputs per terminal node (two 128-bit leaves of two u64 each).
const LEAF_LOG: u32 = 2;

/// Levels expanded breadth-first in one piece; deeper trees are split into subtrees of this depth,
/// so the node and block buffers stay under 100 KiB (in L2) whatever `n` is.
const SUB_DEPTH: usize = 10;

/// Correction words of one seed level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpfLevel {
    /// seed correction word (bit 0 always 0)
    pub(crate) seed: u128,
    /// control-bit correction words: bit 0 left, bit 1 right
    pub(crate) ctrl: u8,
}

/// Correction words shared by both keys of one DPF instance.
///
/// A party's key is its root seed together with this value; see [`dpf_gen`] and
/// [`dpf_eval_full`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DpfCorrection {
    /// domain width `n` in bits (1 ..= 24); the domain has `2^n` points
    pub n_bits: u32,
    levels: Vec<DpfLevel>,
    /// final correction word, `2^min(n, 2)` words
    last: Vec<u64>,
}

impl DpfCorrection {
    /// Points in the domain.
    fn domain(&self) -> usize {
        self.last.len() << self.levels.len()
    }
}

/// Reusable buffers for DPF evaluation (no allocation once warmed up).
///
/// [`dpf_lookup`] and [`dpf_eval_full`] keep one per thread; [`dpf_lookup_with_scratch`] takes one
/// from the caller.
#[derive(Default)]
pub struct DpfScratch {
    top: Vec<u128>,
    nodes: Vec<u128>,
    spare: Vec<u128>,
    blocks: Vec<u128>,
    blocks2: Vec<u128>,
    share: Vec<u64>,
}

impl DpfScratch {
    /// Empty buffers; they grow on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

thread_local! {
    static SCRATCH: RefCell<DpfScratch> = RefCell::new(DpfScratch::new());
}

#[inline(always)]
fn neg_if(x: u64, cond: bool) -> u64 {
    if cond {
        x.wrapping_neg()
    } else {
        x
    }
}

fn leaf_log(n_bits: u32) -> u32 {
    n_bits.min(LEAF_LOG)
}

/// The `words` u64 outputs of a terminal node's seed (bit 0 ignored): `words / 2` MMO blocks.
fn leaf_words(node: u128, words: usize) -> Vec<u64> {
    let s = node & !1;
    let mut out = Vec::with_capacity(words);
    for j in 0..words / 2 {
        let v = prg::mmo(s ^ j as u128);
        out.push(v as u64);
        out.push((v >> 64) as u64);
    }
    out
}

/// The BGI seed tree of a point function, shared by [`dpf_gen`] and the bit-output DPF: walks
/// the `depth` levels along the path `path` (its `depth` low bits, most significant first) and
/// returns the per-level correction words and both parties' terminal nodes on that path
/// (`seed | t`, party 0 starting with t = 0 and party 1 with t = 1).
pub(crate) fn seed_tree_gen(
    path: u64,
    depth: usize,
    root0: u128,
    root1: u128,
) -> (Vec<DpfLevel>, [u128; 2]) {
    let mut node = [root0 & !1, (root1 & !1) | 1];
    let mut levels = Vec::with_capacity(depth);
    let mut exp = [prg::LevelExpansion::default(); 2];
    for i in 0..depth {
        let a = (path >> (depth - 1 - i)) & 1 == 1;
        prg::expand_many(&node, false, &mut exp);
        let s_cw = if a {
            exp[0].seed_left ^ exp[1].seed_left
        } else {
            exp[0].seed_right ^ exp[1].seed_right
        };
        let t_l = exp[0].t_left ^ exp[1].t_left ^ a ^ true;
        let t_r = exp[0].t_right ^ exp[1].t_right ^ a;
        let t_keep = if a { t_r } else { t_l };
        for (b, e) in exp.iter().enumerate() {
            let keep = if a {
                e.seed_right | e.t_right as u128
            } else {
                e.seed_left | e.t_left as u128
            };
            let t = node[b] & 1;
            node[b] = keep ^ (0u128.wrapping_sub(t) & (s_cw | t_keep as u128));
        }
        levels.push(DpfLevel {
            seed: s_cw,
            ctrl: t_l as u8 | (t_r as u8) << 1,
        });
    }
    (levels, node)
}

/// Dealer side: given both parties' root seeds (the caller draws them from PRGs), build the
/// correction words of the point function `e_alpha` (1 at `alpha`, 0 elsewhere) on `2^n_bits`
/// points.
///
/// # Panics
/// If `n_bits` is not in `1..=24` or `alpha >= 2^n_bits`.
pub fn dpf_gen(n_bits: u32, alpha: u64, root0: u128, root1: u128) -> DpfCorrection {
    assert!(
        (1..=DPF_MAX_BITS).contains(&n_bits),
        "dpf_gen: n_bits = {n_bits} outside 1..={DPF_MAX_BITS}"
    );
    assert!(
        alpha < 1u64 << n_bits,
        "dpf_gen: alpha does not fit in {n_bits} bits"
    );
    let n = n_bits as usize;
    let ll = leaf_log(n_bits) as usize;
    let (levels, node) = seed_tree_gen(alpha >> ll, n - ll, root0, root1);
    let words = 1usize << ll;
    let v0 = leaf_words(node[0], words);
    let v1 = leaf_words(node[1], words);
    let w = (alpha as usize) & (words - 1);
    let t1 = node[1] & 1 == 1;
    let last = (0..words)
        .map(|j| {
            neg_if(
                ((j == w) as u64).wrapping_sub(v0[j]).wrapping_add(v1[j]),
                t1,
            )
        })
        .collect();
    DpfCorrection {
        n_bits,
        levels,
        last,
    }
}

/// Appends the seed-tree correction words (17 bytes per level: seed word, control byte).
pub(crate) fn levels_to_bytes(levels: &[DpfLevel], out: &mut Vec<u8>) {
    for lv in levels {
        out.extend_from_slice(&lv.seed.to_le_bytes());
        out.push(lv.ctrl);
    }
}

/// Decodes 17-byte level records (the whole slice); rejects non-canonical encodings (seed word
/// with bit 0 set, control byte above 3).
pub(crate) fn levels_from_bytes(bytes: &[u8]) -> Result<Vec<DpfLevel>, FssError> {
    bytes.chunks_exact(17).map(level_from_bytes).collect()
}

/// One 17-byte level record; rejects a seed word with bit 0 set or a control byte above 3.
pub(crate) fn level_from_bytes(rec: &[u8]) -> Result<DpfLevel, FssError> {
    let seed = u128::from_le_bytes(rec[..16].try_into().expect("16 bytes"));
    let ctrl = rec[16];
    if seed & 1 != 0 {
        return Err(FssError::Malformed("seed correction word has bit 0 set"));
    }
    if ctrl > 3 {
        return Err(FssError::Malformed("control-bit byte above 3"));
    }
    Ok(DpfLevel { seed, ctrl })
}

/// Grows `v` to at least `n` elements (never shrinks, so warmed-up buffers are not refilled).
#[inline]
fn grow<T: Clone>(v: &mut Vec<T>, n: usize, fill: T) {
    if v.len() < n {
        v.resize(n, fill);
    }
}

/// Node and block buffers of one breadth-first expansion.
struct Level<'a> {
    nodes: &'a mut Vec<u128>,
    spare: &'a mut Vec<u128>,
    blocks: &'a mut Vec<u128>,
    blocks2: &'a mut Vec<u128>,
}

impl Level<'_> {
    /// Expands `root` (packed `seed | t`) through `levels`. On return `nodes[..m]` is the last level
    /// (`m` returned) and `blocks[..2m]` holds each node's MMO inputs `(s, s | 1)`, not yet
    /// encrypted: the next level's children, or a terminal node's two leaf blocks. Filling the next
    /// level's blocks while combining the current one saves a pass over the level.
    fn expand(&mut self, root: u128, levels: &[DpfLevel]) -> usize {
        let m_max = 1usize << levels.len();
        grow(self.nodes, m_max, 0);
        grow(self.spare, m_max, 0);
        grow(self.blocks, 2 * m_max, 0u128);
        grow(self.blocks2, 2 * m_max, 0u128);
        self.nodes[0] = root;
        self.blocks[0] = root & !1;
        self.blocks[1] = root | 1;
        let mut m = 1;
        for lv in levels {
            encrypt_u128(&mut self.blocks[..2 * m]);
            let cw_l = lv.seed | (lv.ctrl & 1) as u128;
            let cw_r = lv.seed | ((lv.ctrl >> 1) & 1) as u128;
            let parents = &self.nodes[..m];
            let enc = &self.blocks[..2 * m];
            let children = &mut self.spare[..2 * m];
            let next = &mut self.blocks2[..4 * m];
            for (((&node, e), c), nx) in parents
                .iter()
                .zip(enc.chunks_exact(2))
                .zip(children.chunks_exact_mut(2))
                .zip(next.chunks_exact_mut(4))
            {
                let s = node & !1;
                let tm = 0u128.wrapping_sub(node & 1);
                let c0 = e[0] ^ s ^ (tm & cw_l);
                let c1 = e[1] ^ s ^ 1 ^ (tm & cw_r);
                c[0] = c0;
                c[1] = c1;
                nx[0] = c0 & !1;
                nx[1] = c0 | 1;
                nx[2] = c1 & !1;
                nx[3] = c1 | 1;
            }
            std::mem::swap(self.nodes, self.spare);
            std::mem::swap(self.blocks, self.blocks2);
            m *= 2;
        }
        m
    }

    /// Terminal layer after [`Level::expand`] returned `m`: encrypts the leaf blocks and writes the
    /// four outputs of each node to `out` (negated when `neg`).
    fn leaves(&mut self, m: usize, last: &[u64], neg: bool, out: &mut [u64]) {
        let last: &[u64; 4] = last.try_into().expect("four final words");
        let out = &mut out[..4 * m];
        encrypt_u128(&mut self.blocks[..2 * m]);
        let enc = &self.blocks[..2 * m];
        let nodes = &self.nodes[..m];
        // (x ^ nm) − nm is x or −x
        let nm = 0u64.wrapping_sub(neg as u64);
        for ((o, e), &node) in out.chunks_exact_mut(4).zip(enc.chunks_exact(2)).zip(nodes) {
            let s = node & !1;
            let tm = 0u64.wrapping_sub((node & 1) as u64);
            let v0 = e[0] ^ s;
            let v1 = e[1] ^ s ^ 1;
            let w = [v0 as u64, (v0 >> 64) as u64, v1 as u64, (v1 >> 64) as u64];
            for j in 0..4 {
                o[j] = (w[j].wrapping_add(tm & last[j]) ^ nm).wrapping_sub(nm);
            }
        }
    }
}

/// Full-domain evaluation into `out`; the shares are negated for party 1 only when `signed`
/// (otherwise the caller applies the party's sign itself).
fn eval_full_into(
    scratch: &mut DpfScratch,
    party: u8,
    root: u128,
    cw: &DpfCorrection,
    signed: bool,
    out: &mut [u64],
) {
    assert!(party < 2, "dpf: party must be 0 or 1, got {party}");
    assert_eq!(
        out.len(),
        cw.domain(),
        "dpf: output length must be 2^n_bits"
    );
    let neg = signed && party == 1;
    let root = (root & !1) | party as u128;
    if cw.last.len() == 2 {
        // n = 1: the root is the terminal node, with a single leaf block.
        let s = root & !1;
        let tm = 0u64.wrapping_sub(party as u64);
        let v = prg::mmo(s);
        for (j, o) in out.iter_mut().enumerate() {
            *o = neg_if(((v >> (64 * j)) as u64).wrapping_add(tm & cw.last[j]), neg);
        }
        return;
    }
    let DpfScratch {
        top,
        nodes,
        spare,
        blocks,
        blocks2,
        ..
    } = scratch;
    let mut lvl = Level {
        nodes,
        spare,
        blocks,
        blocks2,
    };
    let depth = cw.levels.len();
    let split = depth.saturating_sub(SUB_DEPTH);
    if split == 0 {
        let m = lvl.expand(root, &cw.levels);
        lvl.leaves(m, &cw.last, neg, out);
        return;
    }
    let m_top = lvl.expand(root, &cw.levels[..split]);
    top.clear();
    top.extend_from_slice(&lvl.nodes[..m_top]);
    let chunk = out.len() >> split;
    for (&sub_root, oc) in top.iter().zip(out.chunks_mut(chunk)) {
        let m = lvl.expand(sub_root, &cw.levels[split..]);
        lvl.leaves(m, &cw.last, neg, oc);
    }
}

/// Full-domain evaluation: writes this party's shares of the one-hot vector `e_alpha` of length
/// `2^n_bits` to `out` (wrapping u64; the two parties' shares add to 1 at `alpha`, 0 elsewhere).
/// Costs `2^n − 2` AES calls (`n ≥ 2`), batched per tree level.
///
/// # Panics
/// If `party > 1` or `out.len() != 2^n_bits`.
pub fn dpf_eval_full(party: u8, root: u128, cw: &DpfCorrection, out: &mut [u64]) {
    SCRATCH.with_borrow_mut(|s| eval_full_into(s, party, root, cw, true, out));
}

/// Σ_j e[j]·t[(c − j) mod N] (wrapping), for `c < N = e.len() = t.len()`.
fn rotated_dot(e: &[u64], t: &[u64], c: usize) -> u64 {
    #[inline(always)]
    fn dot_rev(a: &[u64], b: &[u64]) -> u64 {
        // Four independent accumulators keep the multiplier busy.
        let mut acc = [0u64; 4];
        let mut ai = a.chunks_exact(4);
        let mut bi = b.rchunks_exact(4);
        for (x, y) in (&mut ai).zip(&mut bi) {
            for k in 0..4 {
                acc[k] = acc[k].wrapping_add(x[k].wrapping_mul(y[3 - k]));
            }
        }
        let tail = ai
            .remainder()
            .iter()
            .zip(bi.remainder().iter().rev())
            .fold(0u64, |s, (x, y)| s.wrapping_add(x.wrapping_mul(*y)));
        acc.iter().fold(tail, |s, &x| s.wrapping_add(x))
    }
    let (e_lo, e_hi) = e.split_at(c + 1);
    let (t_lo, t_hi) = t.split_at(c + 1);
    // j ≤ c reads t[c − j]; j > c reads t[N + c − j]
    dot_rev(e_lo, t_lo).wrapping_add(dot_rev(e_hi, t_hi))
}

/// Masked table lookup: given the public opened value `c = (y + alpha) mod 2^n`, writes to `out[k]`
/// this party's share of `tables[k][y]`, `y = (c − alpha) mod 2^n`, i.e.
/// `Σ_j e_alpha[j]·tables[k][(c − j) mod 2^n]` (wrapping). Uses a per-thread scratch buffer.
///
/// # Panics
/// If `party > 1`, `out.len() != tables.len()` or a table's length is not `2^n_bits`.
pub fn dpf_lookup(
    party: u8,
    root: u128,
    cw: &DpfCorrection,
    c: u64,
    tables: &[&[u64]],
    out: &mut [u64],
) {
    SCRATCH.with_borrow_mut(|s| dpf_lookup_with_scratch(s, party, root, cw, c, tables, out));
}

/// [`dpf_lookup`] with caller-provided buffers.
///
/// # Panics
/// As [`dpf_lookup`].
pub fn dpf_lookup_with_scratch(
    scratch: &mut DpfScratch,
    party: u8,
    root: u128,
    cw: &DpfCorrection,
    c: u64,
    tables: &[&[u64]],
    out: &mut [u64],
) {
    let size = cw.domain();
    assert_eq!(out.len(), tables.len(), "dpf_lookup: one output per table");
    for t in tables {
        assert_eq!(t.len(), size, "dpf_lookup: table length must be 2^n_bits");
    }
    let mut share = std::mem::take(&mut scratch.share);
    grow(&mut share, size, 0);
    // Unsigned shares; party 1's sign is applied once to each dot product.
    eval_full_into(scratch, party, root, cw, false, &mut share[..size]);
    let c = (c as usize) & (size - 1);
    for (o, t) in out.iter_mut().zip(tables) {
        *o = neg_if(rotated_dot(&share[..size], t, c), party == 1);
    }
    scratch.share = share;
}

impl DpfCorrection {
    /// Encoded size in bytes for a valid `n_bits`: `17·(n − ℓ) + 8·2^ℓ` with `ℓ = min(n, 2)`, i.e.
    /// `17·n − 2` for `n ≥ 2` (per seed level a 16-byte seed word and one byte holding both
    /// control-bit words; then the final words).
    pub fn encoded_len(n_bits: u32) -> usize {
        let ll = leaf_log(n_bits);
        17 * (n_bits - ll) as usize + (8usize << ll)
    }

    /// Appends the encoding (little-endian words; see [`DpfCorrection::encoded_len`]) to `out`.
    pub fn to_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(17 * self.levels.len() + 8 * self.last.len());
        levels_to_bytes(&self.levels, out);
        for w in &self.last {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    /// Decodes correction words for width `n_bits` from the start of `bytes`; returns them and the
    /// number of bytes consumed (trailing bytes are left alone). Rejects an invalid width, truncated
    /// input and non-canonical encodings (seed word with bit 0 set, control byte above 3).
    pub fn from_bytes(n_bits: u32, bytes: &[u8]) -> Result<(Self, usize), FssError> {
        let need = super::check_key_len(n_bits, DPF_MAX_BITS, Self::encoded_len, bytes.len())?;
        let ll = leaf_log(n_bits);
        let depth = (n_bits - ll) as usize;
        let (lv_bytes, last_bytes) = bytes[..need].split_at(17 * depth);
        let levels = levels_from_bytes(lv_bytes)?;
        let last = last_bytes
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
            .collect();
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
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn full(n: u32, alpha: u64, r0: u128, r1: u128) -> (DpfCorrection, Vec<u64>, Vec<u64>) {
        let cw = dpf_gen(n, alpha, r0, r1);
        let mut s0 = vec![0; 1 << n];
        let mut s1 = vec![0; 1 << n];
        dpf_eval_full(0, r0, &cw, &mut s0);
        dpf_eval_full(1, r1, &cw, &mut s1);
        (cw, s0, s1)
    }

    fn assert_one_hot(n: u32, alpha: u64, s0: &[u64], s1: &[u64]) {
        for (j, (a, b)) in s0.iter().zip(s1).enumerate() {
            let want = (j as u64 == alpha) as u64;
            assert_eq!(a.wrapping_add(*b), want, "n={n} alpha={alpha} j={j}");
        }
    }

    #[test]
    fn full_domain_is_one_hot() {
        let mut rng = StdRng::seed_from_u64(0xd9f);
        for n in [1u32, 2, 3, 8, 12, 15, 16] {
            let mask = (1u64 << n) - 1;
            let mut alphas = vec![0, mask, mask / 2, (mask / 2 + 1) & mask];
            alphas.extend((0..4).map(|_| rng.gen::<u64>() & mask));
            for alpha in alphas {
                let (r0, r1) = (rng.gen(), rng.gen());
                let (_, s0, s1) = full(n, alpha, r0, r1);
                assert_one_hot(n, alpha, &s0, &s1);
                // a share alone is dense
                assert!(s0.iter().filter(|&&v| v == 0).count() <= 1);
            }
        }
    }

    #[test]
    fn exhaustive_small_domains() {
        let mut rng = StdRng::seed_from_u64(1);
        for n in 1u32..=5 {
            for alpha in 0..1u64 << n {
                let (r0, r1) = (rng.gen(), rng.gen());
                let (_, s0, s1) = full(n, alpha, r0, r1);
                assert_one_hot(n, alpha, &s0, &s1);
            }
        }
    }

    #[test]
    fn lookup_matches_table() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut scratch = DpfScratch::new();
        for n in [1u32, 3, 8, 10, 12, 13, 3] {
            let size = 1usize << n;
            let mask = (size - 1) as u64;
            let t0: Vec<u64> = (0..size).map(|_| rng.gen()).collect();
            let t1: Vec<u64> = (0..size).map(|_| rng.gen()).collect();
            for _ in 0..8 {
                let alpha = rng.gen::<u64>() & mask;
                let (r0, r1) = (rng.gen(), rng.gen());
                let cw = dpf_gen(n, alpha, r0, r1);
                let mut cs = vec![0, mask, alpha, rng.gen::<u64>() & mask];
                cs.push(rng.gen()); // bits above n are ignored
                for c in cs {
                    let mut o0 = [0u64; 2];
                    let mut o1 = [0u64; 2];
                    dpf_lookup(0, r0, &cw, c, &[&t0, &t1], &mut o0);
                    dpf_lookup_with_scratch(&mut scratch, 1, r1, &cw, c, &[&t0, &t1], &mut o1);
                    let y = (c.wrapping_sub(alpha) & mask) as usize;
                    assert_eq!(o0[0].wrapping_add(o1[0]), t0[y], "n={n} c={c}");
                    assert_eq!(o0[1].wrapping_add(o1[1]), t1[y], "n={n} c={c}");
                    // thread-local and caller scratch agree
                    let mut o0b = [0u64; 2];
                    dpf_lookup_with_scratch(&mut scratch, 0, r0, &cw, c, &[&t0, &t1], &mut o0b);
                    assert_eq!(o0, o0b);
                }
            }
        }
    }

    #[test]
    fn lookup_matches_naive_rotation() {
        let mut rng = StdRng::seed_from_u64(3);
        for len in [1usize, 2, 4, 8, 16, 64] {
            let e: Vec<u64> = (0..len).map(|_| rng.gen()).collect();
            let t: Vec<u64> = (0..len).map(|_| rng.gen()).collect();
            for c in 0..len {
                let naive = (0..len).fold(0u64, |s, j| {
                    s.wrapping_add(e[j].wrapping_mul(t[(c + len - j) % len]))
                });
                assert_eq!(rotated_dot(&e, &t, c), naive);
            }
        }
    }

    #[test]
    fn serialization_round_trip() {
        let mut rng = StdRng::seed_from_u64(4);
        for n in [1u32, 2, 3, 10, 12, 24] {
            let alpha = rng.gen::<u64>() & ((1 << n) - 1);
            let (r0, r1) = (rng.gen(), rng.gen());
            let cw = dpf_gen(n, alpha, r0, r1);
            let mut bytes = vec![];
            cw.to_bytes(&mut bytes);
            assert_eq!(bytes.len(), DpfCorrection::encoded_len(n));
            bytes.extend_from_slice(&[0x5a; 3]);
            let (back, used) = DpfCorrection::from_bytes(n, &bytes).unwrap();
            assert_eq!(used, DpfCorrection::encoded_len(n));
            assert_eq!(back, cw);
            for cut in 0..used {
                assert_eq!(
                    DpfCorrection::from_bytes(n, &bytes[..cut]),
                    Err(FssError::Truncated {
                        needed: used,
                        got: cut
                    })
                );
            }
            if n <= 12 {
                let mut a = vec![0; 1 << n];
                let mut b = vec![0; 1 << n];
                dpf_eval_full(0, r0, &cw, &mut a);
                dpf_eval_full(0, r0, &back, &mut b);
                assert_eq!(a, b);
            }
        }
        assert_eq!(DpfCorrection::encoded_len(1), 16);
        assert_eq!(DpfCorrection::encoded_len(10), 168);
        assert_eq!(DpfCorrection::encoded_len(12), 202);
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let bytes = vec![0u8; 4096];
        for n in [0u32, 25, u32::MAX] {
            assert!(matches!(
                DpfCorrection::from_bytes(n, &bytes),
                Err(FssError::InvalidDomain { .. })
            ));
        }
        let cw = dpf_gen(5, 9, 11, 12);
        let mut good = vec![];
        cw.to_bytes(&mut good);
        let mut bad = good.clone();
        bad[17] |= 1; // second level's seed word bit 0
        assert!(matches!(
            DpfCorrection::from_bytes(5, &bad),
            Err(FssError::Malformed(_))
        ));
        let mut bad = good.clone();
        bad[16] = 0x80; // first level's control byte
        assert!(matches!(
            DpfCorrection::from_bytes(5, &bad),
            Err(FssError::Malformed(_))
        ));
        assert!(DpfCorrection::from_bytes(5, &good).is_ok());
    }

    #[test]
    #[should_panic(expected = "output length")]
    fn eval_rejects_wrong_output_length() {
        let cw = dpf_gen(4, 3, 1, 2);
        let mut out = vec![0; 15];
        dpf_eval_full(0, 1, &cw, &mut out);
    }

    #[test]
    fn correction_words_look_random_for_any_alpha() {
        // Every non-constant bit of the encoded key is close to balanced over fresh roots, for
        // alphas of every residue mod 4 (the terminal leaf position). Using a terminal node's raw
        // seed (bit 0 = control bit) as its output would put alpha's low bits into the final
        // correction word's bit 0 and fail here; so would control-bit words equal to alpha's bits.
        let mut rng = StdRng::seed_from_u64(5);
        let n = 10u32;
        let len = DpfCorrection::encoded_len(n);
        let keys = 400; // sd 0.025; band is 8 sd each side
        for alpha in [0u64, 1, 2, 3, 0x3ff, 0x200, 0x155] {
            let mut ones = vec![0usize; 8 * len];
            for _ in 0..keys {
                let cw = dpf_gen(n, alpha, rng.gen(), rng.gen());
                let mut b = vec![];
                cw.to_bytes(&mut b);
                for (i, byte) in b.iter().enumerate() {
                    for j in 0..8 {
                        ones[8 * i + j] += ((byte >> j) & 1) as usize;
                    }
                }
            }
            for (bit, &c) in ones.iter().enumerate() {
                let p = c as f64 / keys as f64;
                let byte = bit / 8;
                let constant = byte < 17 * (n as usize - 2)
                    && ((byte % 17 == 0 && bit % 8 == 0) || (byte % 17 == 16 && bit % 8 >= 2));
                if constant {
                    assert_eq!(p, 0.0, "bit {bit} should be 0");
                } else {
                    assert!(
                        (0.3..=0.7).contains(&p),
                        "alpha={alpha}: key bit {bit} biased ({p})"
                    );
                }
            }
        }
    }

    #[test]
    fn single_share_hides_alpha() {
        // Party 0's share at alpha and at another point: low bits equally balanced over fresh keys.
        let mut rng = StdRng::seed_from_u64(6);
        let n = 6u32;
        let trials = 2000;
        let mut at_alpha = 0u64;
        let mut elsewhere = 0u64;
        let mut s = vec![0u64; 1 << n];
        for _ in 0..trials {
            let alpha = rng.gen::<u64>() & 63;
            let r0: u128 = rng.gen();
            let cw = dpf_gen(n, alpha, r0, rng.gen());
            dpf_eval_full(0, r0, &cw, &mut s);
            at_alpha += s[alpha as usize] & 1;
            elsewhere += s[(alpha as usize + 1) & 63] & 1;
        }
        for c in [at_alpha, elsewhere] {
            let p = c as f64 / trials as f64;
            assert!((0.44..0.56).contains(&p), "{p}");
        }
        // same roots, different alpha: different correction words
        let a = dpf_gen(8, 0x0f, 1, 2);
        let b = dpf_gen(8, 0xf0, 1, 2);
        assert_ne!(a.levels[0], b.levels[0]);
        assert_ne!(a.last, b.last);
    }

    proptest! {
        #[test]
        fn prop_lookup(n in 1u32..=9, alpha: u64, c: u64, r0: u128, r1: u128, seed: u64) {
            let size = 1usize << n;
            let mask = (size - 1) as u64;
            let alpha = alpha & mask;
            let mut rng = StdRng::seed_from_u64(seed);
            let t: Vec<u64> = (0..size).map(|_| rng.gen()).collect();
            let cw = dpf_gen(n, alpha, r0, r1);
            let mut o0 = [0u64];
            let mut o1 = [0u64];
            dpf_lookup(0, r0, &cw, c, &[&t], &mut o0);
            dpf_lookup(1, r1, &cw, c, &[&t], &mut o1);
            let y = (c.wrapping_sub(alpha) & mask) as usize;
            prop_assert_eq!(o0[0].wrapping_add(o1[0]), t[y]);
        }
    }
}

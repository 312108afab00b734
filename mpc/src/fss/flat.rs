//! Flat storage of many FSS keys of one width: the correction-word levels of every key in one
//! buffer (key `i`'s levels are `levels[i·depth .. (i+1)·depth]`) and the final words in
//! another. A bundle of thousands of keys is decoded into two allocations instead of one per
//! key: allocating and freeing per-key levels was a quarter of the online time
//! ([`super::DcfKeys`], [`super::BitDpfKeys`]).

use super::FssError;

/// Correction words of many keys of one width (see the module header); `L` is the scheme's
/// level record, `W` its final word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatKeys<L, W> {
    n_bits: u32,
    depth: usize,
    pub(crate) levels: Vec<L>,
    pub(crate) last: Vec<W>,
}

/// How one scheme's key encoding splits: `depth` level records of `record` bytes, then a
/// final word of `word` bytes.
pub(crate) struct Layout {
    pub depth: usize,
    pub record: usize,
    pub word: usize,
}

impl<L: Copy, W: Copy> FlatKeys<L, W> {
    /// No keys yet, of width `n_bits` with `depth` levels each (room for `keys`).
    pub(crate) fn with_depth(n_bits: u32, depth: usize, keys: usize) -> Self {
        Self {
            n_bits,
            depth,
            levels: Vec::with_capacity(keys * depth),
            last: Vec::with_capacity(keys),
        }
    }

    /// Input (domain) width in bits.
    pub fn n_bits(&self) -> u32 {
        self.n_bits
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Appends one key of this width.
    pub(crate) fn push_key(&mut self, n_bits: u32, levels: &[L], last: W) {
        assert_eq!(n_bits, self.n_bits, "flat FSS keys: width mismatch");
        assert_eq!(levels.len(), self.depth, "flat FSS keys: levels per key");
        self.levels.extend_from_slice(levels);
        self.last.push(last);
    }

    /// Key `i`'s levels.
    pub(crate) fn levels_of(&self, i: usize) -> &[L] {
        self.levels_of_keys(i..i + 1)
    }

    /// The levels of keys `range`, one after the other.
    pub(crate) fn levels_of_keys(&self, range: std::ops::Range<usize>) -> &[L] {
        &self.levels[range.start * self.depth..range.end * self.depth]
    }

    /// The levels and final word of a store of exactly one key (single-key decoders).
    ///
    /// # Panics
    /// If it holds another number of keys.
    pub(crate) fn into_single(self) -> (Vec<L>, W) {
        assert_eq!(self.last.len(), 1, "flat FSS keys: one key expected");
        (self.levels, self.last[0])
    }

    /// Decodes `count` consecutive keys of width `n_bits` (at most `max`) laid out as `layout`
    /// from the start of `bytes`; returns them and the bytes consumed. `level` decodes one
    /// record (rejecting non-canonical ones), `word` the final word. Rejects a width outside
    /// `1..=max` and input shorter than the `count` keys.
    pub(crate) fn decode(
        (n_bits, max): (u32, u32),
        layout: &Layout,
        count: usize,
        bytes: &[u8],
        level: impl Fn(&[u8]) -> Result<L, FssError>,
        word: impl Fn(&[u8]) -> W,
    ) -> Result<(Self, usize), FssError> {
        let levels = layout.depth * layout.record;
        let one = levels + layout.word;
        let need = super::check_key_len(n_bits, max, |_| one.saturating_mul(count), bytes.len())?;
        let mut keys = Self::with_depth(n_bits, layout.depth, count);
        for key in bytes[..need].chunks_exact(one) {
            let (lv, last) = key.split_at(levels);
            for rec in lv.chunks_exact(layout.record) {
                keys.levels.push(level(rec)?);
            }
            keys.last.push(word(last));
        }
        Ok((keys, need))
    }
}

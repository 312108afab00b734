//! Training and evaluation windows over a token stream, in a resumable order.
//!
//! A corpus is one token stream (documents joined by the end-of-sequence id). It is cut into
//! non-overlapping windows of `seq_len + 1` tokens at stride `seq_len`: the first `seq_len` are
//! the input, the last `seq_len` the next-token targets. Training visits the windows epoch by
//! epoch, each epoch in a permutation drawn from `StdRng::seed_from_u64(seed + epoch)`. The
//! order is therefore a pure function of `(seed, number of sequences consumed)`: a checkpoint
//! only needs that count (the "data cursor") to resume exactly, no generator state.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{ModelError, Result};

/// A token stream cut into next-token windows.
#[derive(Debug, Clone)]
pub struct TokenWindows {
    tokens: Vec<u32>,
    seq_len: usize,
}

impl TokenWindows {
    /// Windows of `seq_len` inputs (+1 target) over `tokens`; at least one must fit.
    pub fn new(tokens: Vec<u32>, seq_len: usize) -> Result<Self> {
        if seq_len == 0 {
            return Err(ModelError::input("seq_len must be > 0"));
        }
        if tokens.len() < seq_len + 1 {
            return Err(ModelError::input(format!(
                "the corpus has {} tokens, fewer than one window of {}",
                tokens.len(),
                seq_len + 1
            )));
        }
        Ok(Self { tokens, seq_len })
    }

    /// Input length of a window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        (self.tokens.len() - 1) / self.seq_len
    }

    /// Always false (a window always fits, checked by [`TokenWindows::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens in the stream.
    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Window `i`: `seq_len + 1` tokens.
    pub fn window(&self, i: usize) -> &[u32] {
        let start = i * self.seq_len;
        &self.tokens[start..start + self.seq_len + 1]
    }

    /// The window visited as the `k`-th training sequence (0-based, across epochs).
    pub fn training_window(&self, seed: u64, k: usize) -> usize {
        let n = self.len();
        let epoch = (k / n) as u64;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed.wrapping_add(epoch)));
        order[k % n]
    }

    /// `count` windows spread evenly over the stream (all of them when `count >= len`), for
    /// evaluation: a fixed, order-free sample.
    pub fn evenly_spaced(&self, count: usize) -> Vec<usize> {
        let n = self.len();
        if count >= n {
            return (0..n).collect();
        }
        (0..count).map(|i| i * n / count).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_stream_and_the_order_is_a_function_of_the_cursor() {
        let w = TokenWindows::new((0..101).collect(), 10).expect("fits");
        assert_eq!(w.len(), 10);
        assert_eq!(w.window(9), &(90..101).collect::<Vec<u32>>()[..]);
        let epoch0: Vec<usize> = (0..10).map(|k| w.training_window(3, k)).collect();
        let mut sorted = epoch0.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (0..10).collect::<Vec<_>>(),
            "an epoch is a permutation"
        );
        let epoch1: Vec<usize> = (10..20).map(|k| w.training_window(3, k)).collect();
        assert_ne!(epoch0, epoch1, "epochs are reshuffled");
        assert_eq!(w.training_window(3, 13), epoch1[3]);
        assert_eq!(w.evenly_spaced(4), vec![0, 2, 5, 7]);
        assert!(TokenWindows::new(vec![1; 10], 10).is_err());
    }
}

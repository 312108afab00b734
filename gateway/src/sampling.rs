//! Sampling at the client, which holds the logits: temperature, top-k and top-p (nucleus)
//! with a seeded generator. Temperature 0 is greedy: the first largest logit, the rule of
//! `marill generate` (`argmax_last`), so a greedy request equals that command's text.
//!
//! The order of the filters is the common one (Hugging Face's, vLLM's): the top-k logits are
//! kept, softmax with the temperature over them, then the smallest set of most probable tokens
//! whose mass reaches top-p; one token is drawn from that set, renormalised. A seed makes the
//! draw reproducible for the same build and logits; without one the generator is seeded from
//! the OS.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use thiserror::Error;

/// Sampling failures (logits a real model never produces).
#[derive(Debug, Error, PartialEq)]
pub enum SamplingError {
    /// No logits at all.
    #[error("no logits to sample from")]
    Empty,
    /// A NaN or infinite logit.
    #[error("logit {index} is not finite ({value})")]
    NotFinite {
        /// its token id
        index: usize,
        /// its value
        value: f32,
    },
}

/// The parameters of one request (already validated: temperature in [0, 2], top_p in (0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy
    pub temperature: f32,
    /// nucleus mass (1 = all)
    pub top_p: f32,
    /// most likely tokens kept (0 = all)
    pub top_k: usize,
    /// seed of the draw (None: from the OS)
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    /// OpenAI's defaults: temperature 1, top_p 1; no top-k.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
        }
    }
}

/// Draws tokens for one generation.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// The first index of the largest value (ties go to the lowest id, as `argmax_last` does).
pub fn argmax(logits: &[f32]) -> Result<usize, SamplingError> {
    check(logits)?;
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    Ok(best)
}

fn check(logits: &[f32]) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::Empty);
    }
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SamplingError::NotFinite { index, value });
    }
    Ok(())
}

/// The tokens a draw may pick with their renormalised probabilities, most likely first
/// (temperature > 0): the top-k logits, then the smallest prefix whose mass reaches top-p.
pub fn candidates(logits: &[f32], p: &SamplingParams) -> Result<Vec<(usize, f64)>, SamplingError> {
    check(logits)?;
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    // descending by logit, ties by id (a stable sort keeps the lower id first)
    idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if p.top_k > 0 {
        idx.truncate(p.top_k);
    }
    let t = f64::from(p.temperature);
    let top = f64::from(logits[idx[0]]);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| ((f64::from(logits[i]) - top) / t).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut kept = Vec::with_capacity(idx.len());
    let mut mass = 0.0;
    for (&i, w) in idx.iter().zip(&weights) {
        let prob = w / total;
        kept.push((i, prob));
        mass += prob;
        if mass >= f64::from(p.top_p) {
            break;
        }
    }
    let kept_mass: f64 = kept.iter().map(|(_, q)| q).sum();
    Ok(kept.into_iter().map(|(i, q)| (i, q / kept_mass)).collect())
}

impl Sampler {
    /// A sampler for one generation.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Self { params, rng }
    }

    /// The next token of `logits` (one row, the vocabulary wide).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SamplingError> {
        let i = if self.params.temperature == 0.0 {
            argmax(logits)?
        } else {
            let c = candidates(logits, &self.params)?;
            let mut u: f64 = self.rng.gen::<f64>();
            let mut pick = c[c.len() - 1].0;
            for (i, q) in &c {
                if u < *q {
                    pick = *i;
                    break;
                }
                u -= q;
            }
            pick
        };
        Ok(i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p,
            top_k,
            seed: Some(seed),
        }
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        let mut s = Sampler::new(params(0.0, 0.1, 1, 3));
        assert_eq!(s.sample(&[0.5, 2.0, 2.0, -1.0]), Ok(1));
        assert_eq!(argmax(&[3.0, 3.0]), Ok(0));
    }

    #[test]
    fn bad_logits_are_errors_not_panics() {
        let mut s = Sampler::new(params(1.0, 1.0, 0, 1));
        assert_eq!(s.sample(&[]), Err(SamplingError::Empty));
        assert!(matches!(
            s.sample(&[0.0, f32::NAN]),
            Err(SamplingError::NotFinite { index: 1, .. })
        ));
    }

    #[test]
    fn a_seed_repeats_the_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, 0.9, 20, seed));
            (0..20)
                .map(|_| s.sample(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
    }

    #[test]
    fn the_draw_follows_the_probabilities() {
        // logits ln(1), ln(3): token 1 three times as likely
        let logits = [0.0f32, 3f32.ln()];
        let mut s = Sampler::new(params(1.0, 1.0, 0, 11));
        let ones = (0..4000)
            .filter(|_| s.sample(&logits).unwrap() == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000");
    }

    proptest! {
        #[test]
        fn temperature_zero_is_argmax(
            logits in prop::collection::vec(-30.0f32..30.0, 1..200),
            top_p in 0.01f32..=1.0,
            top_k in 0usize..10,
            seed in any::<u64>(),
        ) {
            let mut s = Sampler::new(params(0.0, top_p, top_k, seed));
            prop_assert_eq!(s.sample(&logits).unwrap() as usize, argmax(&logits).unwrap());
        }

        #[test]
        fn top_k_never_picks_outside_the_k_largest(
            logits in prop::collection::vec(-30.0f32..30.0, 1..200),
            top_k in 1usize..20,
            temperature in 0.05f32..2.0,
            seed in any::<u64>(),
        ) {
            let mut sorted = logits.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[(top_k - 1).min(sorted.len() - 1)];
            let mut s = Sampler::new(params(temperature, 1.0, top_k, seed));
            for _ in 0..5 {
                let i = s.sample(&logits).unwrap() as usize;
                prop_assert!(logits[i] >= kth, "picked {} below the k-th {}", logits[i], kth);
            }
        }

        #[test]
        fn top_p_never_picks_outside_the_nucleus(
            logits in prop::collection::vec(-10.0f32..10.0, 1..200),
            top_p in 0.01f32..=1.0,
            temperature in 0.05f32..2.0,
            seed in any::<u64>(),
        ) {
            // softmax over all, independently of the sampler
            let t = f64::from(temperature);
            let top = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let w: Vec<f64> = logits.iter().map(|&l| ((l as f64 - top) / t).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut s = Sampler::new(params(temperature, top_p, 0, seed));
            for _ in 0..5 {
                let i = s.sample(&logits).unwrap() as usize;
                // the mass of the strictly more likely tokens is below top_p: i is in the
                // smallest most-likely set reaching top_p
                let above: f64 = (0..logits.len())
                    .filter(|&j| logits[j] > logits[i])
                    .map(|j| w[j] / total)
                    .sum();
                prop_assert!(above < f64::from(top_p) + 1e-9, "mass above {} >= top_p {}", above, top_p);
            }
        }

        #[test]
        fn candidates_are_a_distribution(
            logits in prop::collection::vec(-30.0f32..30.0, 1..100),
            top_p in 0.01f32..=1.0,
            top_k in 0usize..30,
            temperature in 0.05f32..2.0,
        ) {
            let c = candidates(&logits, &params(temperature, top_p, top_k, 0)).unwrap();
            prop_assert!(!c.is_empty());
            if top_k > 0 { prop_assert!(c.len() <= top_k); }
            let sum: f64 = c.iter().map(|(_, q)| q).sum();
            prop_assert!((sum - 1.0).abs() < 1e-9);
        }
    }
}

//! # marill-suffix — the private suffix of a Marill model under 2PC
//!
//! A Marill model splits a Llama-family decoder into a public prefix (run by the client in
//! plaintext) and a private suffix of decoder layers run by the provider and helper workers
//! with the [`marill_mpc`] protocols. This crate holds:
//! - [`config`]: the suffix shape and its Marill transforms (LoRA targets and rank, head
//!   merging factor, whether base weights are private), validated;
//! - [`weights`]: plaintext suffix weights (x·W convention), seeded random generation;
//! - [`plain`]: the f64 plaintext reference of exactly the computation done securely;
//! - [`secure`]: one party's secure executor (weight preparation, one-time weight masking,
//!   prefill and token-by-token decoding with a secret-shared KV cache).
//!
//! The final RMSNorm runs under MPC; the client receives shares of the normalised hidden state
//! and applies the frozen public LM head itself. This reveals nothing beyond the logits: the
//! normalised state is `logits = h_norm · W_headᵀ` with a public `W_head` of full column rank
//! (vocabulary ≫ width), so the logits determine `h_norm`.
#![deny(missing_docs)]

pub mod config;
pub mod plain;
pub mod secure;
pub mod weights;

pub use config::{SuffixConfig, SuffixError, Target};
pub use weights::{LayerWeights, Mat, SuffixWeights};

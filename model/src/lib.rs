//! Marill's plaintext model crate: Llama-family decoders on candle (CPU, f32).
//!
//! - [`config`]: two-stage configuration (raw HF `config.json` or GGUF metadata -> validated
//!   [`ModelConfig`]).
//! - [`weights`] and [`load`]: HF directories (`config.json`, `*.safetensors`, `tokenizer.json`)
//!   and GGUF files (dequantised to f32, tokenizer rebuilt from the embedded vocabulary).
//! - [`llama`]: the decoder, split into [`Llama::embed`], [`Llama::forward_layers`] (any layer
//!   range, with a [`KvCache`]) and [`Llama::final_norm_and_head`], plus greedy generation.
//! - [`spec`] and [`lora`]: the Marill public/private split (layer freezing, unmerged LoRA on
//!   private layers, head merging), validated against a model.
//! - [`train`]: Marill fine-tuning (LoRA on the private layers, head merging or pruning,
//!   AdamW, checkpoints, export, held-out evaluation).
//! - [`suffix`]: the private suffix of a Marill model as the secure executor's configuration and
//!   weights ([`suffix::suffix_of`]).
//! - [`options`]: what a process needs to load a Marill model ([`ModelOptions`]).
//! - [`tiny`]: seeded tiny random models written in the real formats, for tests.
//!
//! This crate hands the private suffix's weights and shapes to the secure executor
//! (`marill-suffix`, over the MPC library); they never call into this crate.

#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod llama;
pub mod load;
pub mod lora;
pub mod options;
pub mod spec;
pub mod suffix;
pub mod tiny;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::{HfLlamaConfig, ModelConfig};
pub use error::{ModelError, Result};
pub use llama::{KvCache, Llama};
pub use load::LoadedModel;
pub use lora::{LoraAdapters, LoraInit, LoraPair};
pub use options::{Adapters, ModelOptions};
pub use spec::{LoraSpec, MarillSpec, PublicLayers, ResolvedSpec, SpecError, Target};
pub use tokenizer::TextTokenizer;

#[cfg(test)]
mod tests {
    /// The executor shares models across threads.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Llama>();
        check::<crate::LoadedModel>();
        check::<crate::KvCache>();
        check::<crate::LoraAdapters>();
        check::<crate::ModelError>();
    }
}

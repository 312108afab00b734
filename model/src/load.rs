//! Loading a model and its tokenizer from disk.
//!
//! Two sources, one decoder:
//! - an HF-style directory: `config.json`, one or more `*.safetensors`, `tokenizer.json`;
//! - a GGUF file (`general.architecture = llama`): weights dequantised to f32, Q/K rows
//!   un-permuted to HF layout (see [`crate::weights`]), tokenizer rebuilt from the embedded
//!   vocabulary and merges (see [`crate::tokenizer`]).
//!
//! Both end in [`Llama::load`] on an HF-named [`TensorStore`], so every check (shapes, unused
//! tensors) is shared.

use std::path::Path;

use candle_core::Device;

use crate::config::{HfLlamaConfig, ModelConfig};
use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::tokenizer::TextTokenizer;
use crate::weights::{read_safetensors, safetensors_files, GgufFile, TensorStore};

/// A model with its tokenizer.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The decoder.
    pub model: Llama,
    /// The tokenizer.
    pub tokenizer: TextTokenizer,
}

impl LoadedModel {
    /// Loads a directory (HF layout) or a `.gguf` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if path.is_dir() {
            Self::load_dir(path, device)
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            Self::load_gguf(path, device)
        } else {
            Err(ModelError::io(
                path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected a model directory or a .gguf file",
                ),
            ))
        }
    }

    /// Loads `config.json`, `*.safetensors` and `tokenizer.json` from a directory.
    pub fn load_dir(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = HfLlamaConfig::from_file(&dir.join("config.json"))?.resolve()?;
        let tensors = read_safetensors(&safetensors_files(dir)?, device)?;
        let model = Llama::load(&TensorStore::new(tensors), &cfg, device)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?
            .with_chat_template(TextTokenizer::chat_template_of_dir(dir)?);
        check_vocab(&cfg, &tokenizer)?;
        Ok(Self { model, tokenizer })
    }

    /// Loads a llama GGUF file, dequantised to f32.
    pub fn load_gguf(path: &Path, device: &Device) -> Result<Self> {
        let mut file = GgufFile::open(path)?;
        let cfg =
            ModelConfig::from_gguf_metadata(file.metadata(), file.has_tensor("output.weight"))?;
        let tokenizer = TextTokenizer::from_gguf_metadata(file.metadata())?;
        check_vocab(&cfg, &tokenizer)?;
        let tensors = file.llama_tensors(cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, device)?;
        let model = Llama::load(&TensorStore::new(tensors), &cfg, device)?;
        Ok(Self { model, tokenizer })
    }

    /// The model's end-of-sequence ids.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.model.config().eos_token_ids
    }

    /// Greedy completion of `prompt`: the decoded new text (special tokens dropped), stopping at
    /// an end-of-sequence id or after `max_new_tokens`.
    pub fn generate_text(&self, prompt: &str, max_new_tokens: usize) -> Result<String> {
        let ids = self.tokenizer.encode(prompt)?;
        let new = self
            .model
            .generate(&ids, max_new_tokens, self.eos_token_ids())?;
        self.tokenizer.decode(&new)
    }
}

/// The tokenizer must not produce ids the embedding lacks.
fn check_vocab(cfg: &ModelConfig, tokenizer: &TextTokenizer) -> Result<()> {
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(ModelError::config(
            "vocab_size",
            format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
        ));
    }
    Ok(())
}

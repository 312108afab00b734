//! Errors of the model crate.
//!
//! Every fallible path (loading files, validating configs and specs, running the decoder on
//! caller-supplied inputs) returns [`ModelError`]; nothing in this crate panics on bad input.

use std::path::PathBuf;

use crate::spec::SpecError;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// An error from loading, validating or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("io error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("invalid json in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A model configuration field is missing or out of range.
    #[error("invalid model config: {field}: {reason}")]
    Config {
        /// The field (HF `config.json` name or GGUF metadata key).
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A checkpoint lacks a tensor the model needs.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The tensor name, in HF checkpoint naming.
        name: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("tensor {name} has shape {got:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A GGUF file is malformed or describes an unsupported model.
    #[error("gguf: {0}")]
    Gguf(String),
    /// A tokenizer could not be built, loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A LoRA adapter file or adapter set is invalid.
    #[error("lora: {0}")]
    Lora(String),
    /// A Marill spec is invalid for the model.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A caller-supplied input (tokens, hidden states, positions, layer ranges) is invalid.
    #[error("invalid input: {0}")]
    Input(String),
    /// Training (optimizer, checkpoint, export) failed or was given inconsistent state.
    #[error("train: {0}")]
    Train(String),
    /// The tensor library reported an error.
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// The private suffix's configuration or weights do not fit together.
    #[error(transparent)]
    Suffix(#[from] marill_suffix::SuffixError),
}

impl ModelError {
    /// Shorthand for a [`ModelError::Config`].
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for a [`ModelError::Input`].
    pub(crate) fn input(reason: impl Into<String>) -> Self {
        Self::Input(reason.into())
    }

    /// Shorthand for a [`ModelError::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a [`ModelError::Json`].
    pub(crate) fn json(path: impl Into<PathBuf>, source: serde_json::Error) -> Self {
        Self::Json {
            path: path.into(),
            source,
        }
    }
}

//! Shape and Marill transforms of a private suffix, validated.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of suffix configuration, weights and execution.
#[derive(Debug, Error)]
pub enum SuffixError {
    /// The configuration is inconsistent.
    #[error("invalid suffix configuration: {0}")]
    Config(String),
    /// Weights do not match the configuration.
    #[error("weights do not match the configuration: {0}")]
    Weights(String),
    /// A protocol failed.
    #[error(transparent)]
    Mpc(#[from] marill_mpc::MpcError),
    /// Input of the wrong shape or range.
    #[error("invalid input: {0}")]
    Input(String),
}

impl SuffixError {
    /// The error's public category: what may leave the workers (see
    /// [`marill_mpc::FailureKind`]); the detail stays at debug level inside them.
    pub fn kind(&self) -> marill_mpc::FailureKind {
        match self {
            SuffixError::Mpc(e) => e.kind(),
            SuffixError::Config(_) | SuffixError::Weights(_) | SuffixError::Input(_) => {
                marill_mpc::FailureKind::BadInput
            }
        }
    }
}

/// A projection that LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Target {
    /// attention query
    Q,
    /// attention key
    K,
    /// attention value
    V,
    /// attention output
    O,
    /// MLP gate
    Gate,
    /// MLP up
    Up,
    /// MLP down
    Down,
}

impl Target {
    /// All targets.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// Parses `q,k,v,o,gate,up,down` names (also `q_proj` etc.).
    pub fn parse(s: &str) -> Result<Self, SuffixError> {
        let t = s.trim().trim_end_matches("_proj");
        Ok(match t {
            "q" => Target::Q,
            "k" => Target::K,
            "v" => Target::V,
            "o" => Target::O,
            "gate" => Target::Gate,
            "up" => Target::Up,
            "down" => Target::Down,
            other => {
                return Err(SuffixError::Config(format!(
                    "unknown LoRA target {other:?} (expected q, k, v, o, gate, up, down)"
                )))
            }
        })
    }
}

/// Low-rank adapters on some projections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// rank r
    pub rank: usize,
    /// adapted projections
    pub targets: Vec<Target>,
}

/// A private suffix: shape plus Marill transforms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SuffixConfig {
    /// model width d
    pub d_model: usize,
    /// query heads
    pub n_heads: usize,
    /// key/value heads (grouped-query attention)
    pub n_kv_heads: usize,
    /// width of one (original) head
    pub head_dim: usize,
    /// MLP hidden width
    pub d_ff: usize,
    /// number of private layers
    pub n_layers: usize,
    /// index of the first private layer in the full model (for RoPE positions it does not
    /// matter; kept for weight naming)
    pub first_layer: usize,
    /// head merging factor m (1 = none)
    pub head_merge: usize,
    /// LoRA adapters (base weights public) or None
    pub lora: Option<LoraConfig>,
    /// base weights are private (fine-tuned full rank); otherwise public (frozen)
    pub private_base: bool,
    /// RMSNorm epsilon
    pub rms_eps: f64,
    /// RoPE base
    pub rope_theta: f64,
    /// longest sequence (prompt + generated) the executor accepts
    pub max_seq: usize,
    /// declared bound on |attention score| (after scaling)
    pub score_bound: f64,
    /// declared bound on |MLP gate input|
    pub act_bound: f64,
    /// declared bound on a row's sum of squares entering RMSNorm
    pub norm_sum_bound: f64,
}

impl SuffixConfig {
    /// The synthetic shape used to compare frameworks: d = 768, 12 heads, MLP 2048.
    pub fn synthetic(n_layers: usize) -> Self {
        Self {
            d_model: 768,
            n_heads: 12,
            n_kv_heads: 12,
            head_dim: 64,
            d_ff: 2048,
            n_layers,
            first_layer: 0,
            head_merge: 1,
            lora: None,
            private_base: true,
            rms_eps: 1e-5,
            rope_theta: 10000.0,
            max_seq: 256,
            score_bound: 64.0,
            act_bound: 31.0,
            norm_sum_bound: 1e7,
        }
    }

    /// Width of all query heads.
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads.
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Number of merged heads (softmaxes per query row).
    pub fn merged_heads(&self) -> usize {
        self.n_heads / self.head_merge
    }

    /// True when `t` carries a LoRA adapter.
    pub fn has_lora(&self, t: Target) -> bool {
        self.lora.as_ref().is_some_and(|l| l.targets.contains(&t))
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), SuffixError> {
        let bad = |s: String| Err(SuffixError::Config(s));
        if self.d_model == 0 || self.n_heads == 0 || self.head_dim == 0 || self.d_ff == 0 {
            return bad("widths and head counts must be positive".into());
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if self.n_kv_heads == 0 || !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "n_kv_heads {} must divide n_heads {}",
                self.n_kv_heads, self.n_heads
            ));
        }
        if self.head_merge == 0 || !self.n_heads.is_multiple_of(self.head_merge) {
            return bad(format!(
                "head merging factor {} must divide the number of heads {}",
                self.head_merge, self.n_heads
            ));
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                return bad("LoRA rank must be positive".into());
            }
            if l.targets.is_empty() {
                return bad("LoRA needs at least one target".into());
            }
            if self.private_base {
                return bad(
                    "LoRA adapters sit on frozen public base weights; use private_base = false"
                        .into(),
                );
            }
        }
        if self.max_seq < 2 {
            return bad("max_seq must be at least 2".into());
        }
        Ok(())
    }
}

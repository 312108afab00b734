//! The Marill public/private split of a model, as a validated spec.
//!
//! A [`MarillSpec`] says how a fine-tuned model is laid out for private inference:
//!
//! - **Layer freezing**: the first `n_public` decoder layers (and the token embedding) are the
//!   public base weights and run at the client in plaintext; layers `n_public..n_layers` are
//!   private. Given as a count or as a fraction `LF`, resolved to `round(LF * n_layers)` (half
//!   away from zero).
//! - **LoRA** (optional): in every private layer each targeted projection computes
//!   `x·W + (alpha/rank)·(x·A)·B` with the public base `W` and private, *unmerged* `A`, `B`
//!   (see [`crate::lora`]). LoRA never applies to public layers: those must stay exactly the base
//!   model the client holds. Without LoRA the private layers are fully fine-tuned: all their
//!   weights are private (the "full-rank" setting).
//! - **Head merging** (`head_merge = m`, 1 = none): in private layers, groups of `m` adjacent
//!   query heads attend as one head of width `m·d_head` (one softmax per merged head). Public
//!   layers keep the base attention, again because the client runs them as the base model. See
//!   [`crate::llama::Attention`] for the exact maths (RoPE per sub-block, GQA expansion, scale).
//!
//! [`MarillSpec::resolve`] checks a spec against a [`ModelConfig`] and returns a
//! [`ResolvedSpec`], or a [`SpecError`] naming the offending value.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;

/// A projection of a decoder layer that LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl Target {
    /// All targets, in checkpoint order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The HF module name (`q_proj`, ..., `down_proj`).
    pub fn module_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The parent module in HF naming (`self_attn` or `mlp`).
    pub fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            Target::Gate | Target::Up | Target::Down => "mlp",
        }
    }

    /// Parses an HF module name (`q_proj`, ...).
    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }

    /// `(in_features, out_features)` of this projection for a model.
    pub fn dims(self, cfg: &ModelConfig) -> (usize, usize) {
        match self {
            Target::Q => (cfg.hidden_size, cfg.q_width()),
            Target::K | Target::V => (cfg.hidden_size, cfg.kv_width()),
            Target::O => (cfg.q_width(), cfg.hidden_size),
            Target::Gate | Target::Up => (cfg.hidden_size, cfg.intermediate_size),
            Target::Down => (cfg.intermediate_size, cfg.hidden_size),
        }
    }

    /// The short name (`q`, `k`, `v`, `o`, `gate`, `up`, `down`).
    pub fn short_name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

impl FromStr for Target {
    type Err = SpecError;

    /// Accepts short names (`q`) and module names (`q_proj`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.short_name() == s || t.module_name() == s)
            .ok_or_else(|| SpecError::UnknownTarget(s.to_string()))
    }
}

/// How many leading layers are public.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublicLayers {
    /// Exactly this many.
    Count(usize),
    /// A fraction `LF` in `[0, 1]`, resolved to `round(LF * n_layers)` (half away from zero).
    Fraction(f64),
}

/// LoRA settings of a Marill spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Adapter rank `r` (> 0).
    pub rank: usize,
    /// Scaling numerator: the adapter output is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Adapted projections (non-empty, no duplicates).
    pub targets: Vec<Target>,
}

impl LoraSpec {
    /// The multiplier `alpha / rank` applied to `(x·A)·B`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Whether `target` is adapted.
    pub fn has_target(&self, target: Target) -> bool {
        self.targets.contains(&target)
    }
}

/// The Marill configuration of a model: layer freezing, LoRA, head merging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarillSpec {
    /// Leading public layers.
    pub public_layers: PublicLayers,
    /// LoRA on the private layers; `None` means the private layers are fully fine-tuned.
    pub lora: Option<LoraSpec>,
    /// Head-merging factor `m` (1 = no merging); must divide the number of query heads.
    pub head_merge: usize,
}

impl Default for MarillSpec {
    fn default() -> Self {
        Self::all_private_full_rank()
    }
}

impl MarillSpec {
    /// The baseline: every layer private, full-rank (no LoRA), no head merging.
    pub fn all_private_full_rank() -> Self {
        Self {
            public_layers: PublicLayers::Count(0),
            lora: None,
            head_merge: 1,
        }
    }

    /// Checks the spec against a model and resolves the public-layer count.
    pub fn resolve(&self, cfg: &ModelConfig) -> Result<ResolvedSpec, SpecError> {
        let n_layers = cfg.n_layers;
        let n_public = match self.public_layers {
            PublicLayers::Count(n) => n,
            PublicLayers::Fraction(lf) => {
                if !(lf.is_finite() && (0.0..=1.0).contains(&lf)) {
                    return Err(SpecError::FractionOutOfRange(lf));
                }
                (lf * n_layers as f64).round() as usize
            }
        };
        if n_public > n_layers {
            return Err(SpecError::TooManyPublicLayers { n_public, n_layers });
        }
        let has_private = n_public < n_layers;
        if self.head_merge == 0 {
            return Err(SpecError::HeadMergeZero);
        }
        if !cfg.n_heads.is_multiple_of(self.head_merge) {
            return Err(SpecError::HeadMergeNotDivisor {
                m: self.head_merge,
                n_heads: cfg.n_heads,
            });
        }
        if self.head_merge > 1 && !has_private {
            return Err(SpecError::HeadMergeWithoutPrivateLayers { m: self.head_merge });
        }
        let lora = match &self.lora {
            None => None,
            Some(lora) => {
                if !has_private {
                    return Err(SpecError::LoraWithoutPrivateLayers);
                }
                if lora.rank == 0 {
                    return Err(SpecError::LoraRankZero);
                }
                if !(lora.alpha.is_finite() && lora.alpha > 0.0) {
                    return Err(SpecError::LoraAlphaInvalid(lora.alpha));
                }
                if lora.targets.is_empty() {
                    return Err(SpecError::LoraNoTargets);
                }
                let mut targets = lora.targets.clone();
                targets.sort();
                if let Some(w) = targets.windows(2).find(|w| w[0] == w[1]) {
                    return Err(SpecError::LoraDuplicateTarget(w[0]));
                }
                for &target in &targets {
                    let (d_in, d_out) = target.dims(cfg);
                    let max = d_in.min(d_out);
                    if lora.rank > max {
                        return Err(SpecError::LoraRankTooLarge {
                            rank: lora.rank,
                            target,
                            max,
                        });
                    }
                }
                Some(LoraSpec {
                    rank: lora.rank,
                    alpha: lora.alpha,
                    targets,
                })
            }
        };
        Ok(ResolvedSpec {
            n_layers,
            n_public,
            lora,
            head_merge: self.head_merge,
            n_heads: cfg.n_heads,
        })
    }
}

/// A [`MarillSpec`] checked against a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedSpec {
    n_layers: usize,
    n_public: usize,
    lora: Option<LoraSpec>,
    head_merge: usize,
    n_heads: usize,
}

impl ResolvedSpec {
    /// Number of decoder layers of the model.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// Number of leading public layers.
    pub fn n_public(&self) -> usize {
        self.n_public
    }

    /// The public layers, `0..n_public`.
    pub fn public_layers(&self) -> Range<usize> {
        0..self.n_public
    }

    /// The private layers, `n_public..n_layers`.
    pub fn private_layers(&self) -> Range<usize> {
        self.n_public..self.n_layers
    }

    /// Whether `layer` is private.
    pub fn is_private(&self, layer: usize) -> bool {
        self.private_layers().contains(&layer)
    }

    /// LoRA settings (targets sorted), or `None` for full-rank private layers.
    pub fn lora(&self) -> Option<&LoraSpec> {
        self.lora.as_ref()
    }

    /// The head-merging factor `m`.
    pub fn head_merge(&self) -> usize {
        self.head_merge
    }

    /// Attention heads of a private layer after merging (`n_heads / m`).
    pub fn merged_heads(&self) -> usize {
        self.n_heads / self.head_merge
    }
}

/// Why a Marill spec (or an adapter set for it) was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// The layer-freezing fraction is not in `[0, 1]`.
    #[error("marill spec: layer-freezing fraction must be in [0, 1], got {0}")]
    FractionOutOfRange(f64),
    /// More public layers than the model has.
    #[error("marill spec: n_public = {n_public} exceeds the model's {n_layers} layers")]
    TooManyPublicLayers {
        /// Requested public layers.
        n_public: usize,
        /// Layers of the model.
        n_layers: usize,
    },
    /// `head_merge` is 0.
    #[error("marill spec: head_merge must be >= 1 (1 = no merging), got 0")]
    HeadMergeZero,
    /// `head_merge` does not divide the number of query heads.
    #[error("marill spec: head_merge m = {m} must divide the number of query heads ({n_heads})")]
    HeadMergeNotDivisor {
        /// Requested merge factor.
        m: usize,
        /// Query heads of the model.
        n_heads: usize,
    },
    /// Head merging requested but every layer is public.
    #[error(
        "marill spec: head_merge m = {m} applies to private layers, but every layer is public"
    )]
    HeadMergeWithoutPrivateLayers {
        /// Requested merge factor.
        m: usize,
    },
    /// LoRA requested but every layer is public.
    #[error("marill spec: lora applies to private layers only, but every layer is public")]
    LoraWithoutPrivateLayers,
    /// LoRA rank is 0.
    #[error("marill spec: lora rank must be > 0")]
    LoraRankZero,
    /// LoRA rank exceeds a projection's smaller side.
    #[error("marill spec: lora rank {rank} exceeds min(in, out) = {max} of target {target}")]
    LoraRankTooLarge {
        /// Requested rank.
        rank: usize,
        /// The projection.
        target: Target,
        /// Its `min(in, out)`.
        max: usize,
    },
    /// LoRA alpha is not finite and positive.
    #[error("marill spec: lora alpha must be finite and > 0, got {0}")]
    LoraAlphaInvalid(f64),
    /// LoRA has no targets.
    #[error("marill spec: lora needs at least one target (q, k, v, o, gate, up, down)")]
    LoraNoTargets,
    /// A LoRA target is listed twice.
    #[error("marill spec: lora target {0} is listed twice")]
    LoraDuplicateTarget(Target),
    /// An unknown target name.
    #[error("marill spec: unknown lora target {0:?} (expected one of q, k, v, o, gate, up, down)")]
    UnknownTarget(String),
    /// An adapter sits on a public layer.
    #[error(
        "marill spec: lora adapter on layer {layer}, but layers 0..{n_public} are public and must stay the base weights"
    )]
    LoraOnPublicLayer {
        /// The adapter's layer.
        layer: usize,
        /// Public layers of the spec.
        n_public: usize,
    },
    /// An adapter's target is not among the spec's targets.
    #[error(
        "marill spec: lora adapter on layer {layer} targets {target}, which the spec does not list"
    )]
    LoraTargetNotInSpec {
        /// The adapter's layer.
        layer: usize,
        /// Its target.
        target: Target,
    },
    /// Adapters given without LoRA in the spec, or the reverse.
    #[error("marill spec: {0}")]
    LoraMismatch(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig {
            vocab_size: 100,
            hidden_size: 48,
            intermediate_size: 96,
            n_layers: 6,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    fn lora(rank: usize, targets: &[Target]) -> Option<LoraSpec> {
        Some(LoraSpec {
            rank,
            alpha: 16.0,
            targets: targets.to_vec(),
        })
    }

    fn spec(public_layers: PublicLayers, lora: Option<LoraSpec>, head_merge: usize) -> MarillSpec {
        MarillSpec {
            public_layers,
            lora,
            head_merge,
        }
    }

    #[test]
    fn resolves_counts_and_fractions() {
        let r = spec(
            PublicLayers::Fraction(0.5),
            lora(4, &[Target::V, Target::Q]),
            3,
        )
        .resolve(&cfg())
        .expect("valid");
        assert_eq!(r.n_public(), 3);
        assert_eq!(r.private_layers(), 3..6);
        assert!(!r.is_private(2) && r.is_private(3));
        assert_eq!(r.merged_heads(), 2);
        assert_eq!(
            r.lora().map(|l| l.targets.clone()),
            Some(vec![Target::Q, Target::V])
        );
        assert_eq!(r.lora().map(LoraSpec::scale), Some(4.0));

        // round(0.75 * 6) = round(4.5) = 5 (half away from zero).
        let r = spec(PublicLayers::Fraction(0.75), None, 1)
            .resolve(&cfg())
            .expect("valid");
        assert_eq!(r.n_public(), 5);

        let base = MarillSpec::all_private_full_rank()
            .resolve(&cfg())
            .expect("valid");
        assert_eq!(base.n_public(), 0);
        assert_eq!(base.private_layers(), 0..6);
        assert!(base.lora().is_none());
        assert_eq!(base.head_merge(), 1);

        // All public, nothing private: valid without LoRA/HM.
        let r = spec(PublicLayers::Count(6), None, 1)
            .resolve(&cfg())
            .expect("valid");
        assert!(r.private_layers().is_empty());
    }

    fn err(s: MarillSpec) -> String {
        s.resolve(&cfg()).expect_err("must be rejected").to_string()
    }

    #[test]
    fn rejects_invalid_specs_with_clear_errors() {
        assert_eq!(
            err(spec(PublicLayers::Count(7), None, 1)),
            "marill spec: n_public = 7 exceeds the model's 6 layers"
        );
        assert_eq!(
            err(spec(PublicLayers::Fraction(1.5), None, 1)),
            "marill spec: layer-freezing fraction must be in [0, 1], got 1.5"
        );
        assert!(err(spec(PublicLayers::Fraction(f64::NAN), None, 1)).contains("got NaN"));
        assert_eq!(
            err(spec(PublicLayers::Count(0), None, 4)),
            "marill spec: head_merge m = 4 must divide the number of query heads (6)"
        );
        assert!(err(spec(PublicLayers::Count(0), None, 0)).contains("head_merge must be >= 1"));
        assert!(err(spec(PublicLayers::Count(6), None, 2)).contains("every layer is public"));
        assert_eq!(
            err(spec(PublicLayers::Count(6), lora(4, &[Target::Q]), 1)),
            "marill spec: lora applies to private layers only, but every layer is public"
        );
        assert_eq!(
            err(spec(PublicLayers::Count(2), lora(0, &[Target::Q]), 1)),
            "marill spec: lora rank must be > 0"
        );
        assert!(err(spec(PublicLayers::Count(2), lora(4, &[]), 1)).contains("at least one target"));
        assert_eq!(
            err(spec(
                PublicLayers::Count(2),
                lora(4, &[Target::Q, Target::Q]),
                1
            )),
            "marill spec: lora target q is listed twice"
        );
        assert_eq!(
            err(spec(PublicLayers::Count(2), lora(17, &[Target::K]), 1)),
            "marill spec: lora rank 17 exceeds min(in, out) = 16 of target k"
        );
        let mut bad_alpha = spec(PublicLayers::Count(2), lora(4, &[Target::Q]), 1);
        if let Some(l) = bad_alpha.lora.as_mut() {
            l.alpha = -1.0;
        }
        assert!(err(bad_alpha).contains("alpha must be finite and > 0, got -1"));
    }

    #[test]
    fn targets_parse_and_serialize() {
        assert_eq!("q".parse::<Target>(), Ok(Target::Q));
        assert_eq!("down_proj".parse::<Target>(), Ok(Target::Down));
        let e = "qkv".parse::<Target>().expect_err("unknown");
        assert!(e.to_string().contains("unknown lora target \"qkv\""));
        let s = spec(PublicLayers::Fraction(0.5), lora(8, &[Target::Gate]), 3);
        let json = serde_json::to_string(&s).expect("serialize");
        assert!(json.contains("\"gate\"") && json.contains("\"fraction\":0.5"));
        let back: MarillSpec = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
    }
}

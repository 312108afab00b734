//! Model configuration, in two stages.
//!
//! Stage one is the raw form a checkpoint ships: Hugging Face `config.json` ([`HfLlamaConfig`],
//! the `LlamaConfig` fields, most of them optional as in the wild) or the `llama.*` metadata keys
//! of a GGUF file. Stage two is the resolved [`ModelConfig`]: every default applied, every field
//! checked (positive sizes, heads dividing evenly, even head width for rotary embedding, finite
//! epsilon and base), so the decoder never has to re-check them. Unsupported features that would
//! silently change the maths (rope scaling, biases, activations other than SiLU) are rejected with
//! an error rather than ignored.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Default RoPE base when a checkpoint does not state one (the Llama-1/2 value).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;
/// Default context length when a checkpoint does not state one.
pub const DEFAULT_MAX_POSITION_EMBEDDINGS: usize = 2048;

/// `eos_token_id` in HF configs is either one id or a list of ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EosTokenIds {
    /// A single end-of-sequence id.
    One(u32),
    /// Several end-of-sequence ids.
    Many(Vec<u32>),
}

impl EosTokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// The raw Hugging Face `config.json` of a Llama-family model (stage one).
///
/// Only the fields this crate understands are read; unknown fields are ignored. Use
/// [`HfLlamaConfig::resolve`] to obtain a validated [`ModelConfig`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HfLlamaConfig {
    /// `architectures`, e.g. `["LlamaForCausalLM"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// `model_type`, e.g. `"llama"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
    /// Width of the residual stream.
    pub hidden_size: Option<usize>,
    /// Width of the MLP's inner layer.
    pub intermediate_size: Option<usize>,
    /// Number of decoder layers.
    pub num_hidden_layers: Option<usize>,
    /// Number of query heads.
    pub num_attention_heads: Option<usize>,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: Option<f64>,
    /// RoPE base frequency; defaults to [`DEFAULT_ROPE_THETA`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling; only `null` (absent) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// Vocabulary size.
    pub vocab_size: Option<usize>,
    /// Whether the LM head shares the token embedding matrix; defaults to `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// Context length; defaults to [`DEFAULT_MAX_POSITION_EMBEDDINGS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    /// MLP activation; only `"silu"` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Bias on the attention projections; only `false` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Bias on the MLP projections; only `false` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// Beginning-of-sequence token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token id(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<EosTokenIds>,
    /// Weight dtype of the checkpoint (informational; weights are converted to f32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
}

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| ModelError::config(field, "missing"))
}

impl HfLlamaConfig {
    /// Reads a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))
    }

    /// Resolves defaults and validates (stage two).
    pub fn resolve(&self) -> Result<ModelConfig> {
        if let Some(model_type) = &self.model_type {
            if model_type != "llama" {
                return Err(ModelError::config(
                    "model_type",
                    format!("unsupported model type {model_type:?}, only \"llama\" is supported"),
                ));
            }
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(ModelError::config(
                    "hidden_act",
                    format!("unsupported activation {act:?}, only \"silu\" is supported"),
                ));
            }
        }
        if let Some(scaling) = &self.rope_scaling {
            if !scaling.is_null() {
                return Err(ModelError::config(
                    "rope_scaling",
                    format!("rope scaling is not supported (got {scaling})"),
                ));
            }
        }
        if self.attention_bias == Some(true) {
            return Err(ModelError::config(
                "attention_bias",
                "attention projection biases are not supported",
            ));
        }
        if self.mlp_bias == Some(true) {
            return Err(ModelError::config(
                "mlp_bias",
                "mlp projection biases are not supported",
            ));
        }
        let hidden_size = required(self.hidden_size, "hidden_size")?;
        let n_heads = required(self.num_attention_heads, "num_attention_heads")?;
        let head_dim = match self.head_dim {
            Some(d) => d,
            None => {
                if n_heads == 0 || !hidden_size.is_multiple_of(n_heads) {
                    return Err(ModelError::config(
                        "num_attention_heads",
                        format!(
                            "must divide hidden_size {hidden_size} when head_dim is not given, got {n_heads}"
                        ),
                    ));
                }
                hidden_size / n_heads
            }
        };
        let cfg = ModelConfig {
            vocab_size: required(self.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size: required(self.intermediate_size, "intermediate_size")?,
            n_layers: required(self.num_hidden_layers, "num_hidden_layers")?,
            n_heads,
            n_kv_heads: self.num_key_value_heads.unwrap_or(n_heads),
            head_dim,
            rms_norm_eps: required(self.rms_norm_eps, "rms_norm_eps")?,
            rope_theta: self.rope_theta.unwrap_or(DEFAULT_ROPE_THETA),
            max_position_embeddings: self
                .max_position_embeddings
                .unwrap_or(DEFAULT_MAX_POSITION_EMBEDDINGS),
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            bos_token_id: self.bos_token_id,
            eos_token_ids: self
                .eos_token_id
                .as_ref()
                .map(EosTokenIds::to_vec)
                .unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A resolved, validated Llama-family model configuration (stage two).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's inner layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Per-head width (even).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Longest supported sequence (positions are checked against it).
    pub max_position_embeddings: usize,
    /// Whether the LM head is the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token id, if known.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token ids (may be empty).
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    /// Checks every invariant the decoder relies on.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.n_layers),
            ("num_attention_heads", self.n_heads),
            ("num_key_value_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ModelError::config(field, "must be positive, got 0"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(ModelError::config(
                "num_key_value_heads",
                format!(
                    "must divide num_attention_heads {}, got {}",
                    self.n_heads, self.n_kv_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(ModelError::config(
                "head_dim",
                format!("must be even for rotary embedding, got {}", self.head_dim),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(ModelError::config(
                "rms_norm_eps",
                format!("must be finite and positive, got {}", self.rms_norm_eps),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ModelError::config(
                "rope_theta",
                format!("must be finite and positive, got {}", self.rope_theta),
            ));
        }
        if let Some(bos) = self.bos_token_id {
            if bos as usize >= self.vocab_size {
                return Err(ModelError::config(
                    "bos_token_id",
                    format!("{bos} is outside the vocabulary of {}", self.vocab_size),
                ));
            }
        }
        if let Some(eos) = self
            .eos_token_ids
            .iter()
            .find(|&&id| id as usize >= self.vocab_size)
        {
            return Err(ModelError::config(
                "eos_token_id",
                format!("{eos} is outside the vocabulary of {}", self.vocab_size),
            ));
        }
        Ok(())
    }

    /// Query heads per key/value head.
    pub fn kv_groups(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Output width of `q_proj` (`n_heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Output width of `k_proj` and `v_proj` (`n_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// The HF `config.json` form of this config (round-trips through [`HfLlamaConfig::resolve`]).
    pub fn to_hf(&self) -> HfLlamaConfig {
        HfLlamaConfig {
            architectures: Some(vec!["LlamaForCausalLM".to_string()]),
            model_type: Some("llama".to_string()),
            hidden_size: Some(self.hidden_size),
            intermediate_size: Some(self.intermediate_size),
            num_hidden_layers: Some(self.n_layers),
            num_attention_heads: Some(self.n_heads),
            num_key_value_heads: Some(self.n_kv_heads),
            head_dim: Some(self.head_dim),
            rms_norm_eps: Some(self.rms_norm_eps),
            rope_theta: Some(self.rope_theta),
            rope_scaling: None,
            vocab_size: Some(self.vocab_size),
            tie_word_embeddings: Some(self.tie_word_embeddings),
            max_position_embeddings: Some(self.max_position_embeddings),
            hidden_act: Some("silu".to_string()),
            attention_bias: Some(false),
            mlp_bias: Some(false),
            bos_token_id: self.bos_token_id,
            eos_token_id: match self.eos_token_ids.as_slice() {
                [] => None,
                [one] => Some(EosTokenIds::One(*one)),
                many => Some(EosTokenIds::Many(many.to_vec())),
            },
            torch_dtype: Some("float32".to_string()),
        }
    }

    /// Resolves a config from GGUF metadata (`general.architecture` must be `llama`).
    ///
    /// `vocab_size` comes from `llama.vocab_size`, else the length of `tokenizer.ggml.tokens`;
    /// `tie_word_embeddings` from whether the file has an `output.weight` tensor (passed in by
    /// the caller, which sees the tensor list).
    pub fn from_gguf_metadata(
        metadata: &HashMap<String, gguf_file::Value>,
        has_output_weight: bool,
    ) -> Result<Self> {
        let arch = gguf_string(metadata, "general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::config(
                "general.architecture",
                format!("unsupported architecture {arch:?}, only \"llama\" is supported"),
            ));
        }
        let hidden_size = gguf_usize(metadata, "llama.embedding_length")?;
        let n_heads = gguf_usize(metadata, "llama.attention.head_count")?;
        let n_kv_heads = match metadata.get("llama.attention.head_count_kv") {
            Some(_) => gguf_usize(metadata, "llama.attention.head_count_kv")?,
            None => n_heads,
        };
        let head_dim = match metadata.get("llama.attention.key_length") {
            Some(_) => gguf_usize(metadata, "llama.attention.key_length")?,
            None => {
                if n_heads == 0 || !hidden_size.is_multiple_of(n_heads) {
                    return Err(ModelError::config(
                        "llama.attention.head_count",
                        format!("must divide llama.embedding_length {hidden_size}, got {n_heads}"),
                    ));
                }
                hidden_size / n_heads
            }
        };
        if let Some(rot) = metadata.get("llama.rope.dimension_count") {
            let rot = gguf_value_u64(rot, "llama.rope.dimension_count")?;
            if rot != head_dim as u64 {
                return Err(ModelError::config(
                    "llama.rope.dimension_count",
                    format!("partial rotary embedding is not supported ({rot} of {head_dim})"),
                ));
            }
        }
        if metadata.contains_key("llama.rope.scaling.type") {
            let kind = gguf_string(metadata, "llama.rope.scaling.type")?;
            if kind != "none" {
                return Err(ModelError::config(
                    "llama.rope.scaling.type",
                    format!("rope scaling is not supported (got {kind:?})"),
                ));
            }
        }
        let vocab_size = match metadata.get("llama.vocab_size") {
            Some(_) => gguf_usize(metadata, "llama.vocab_size")?,
            None => match metadata.get("tokenizer.ggml.tokens") {
                Some(gguf_file::Value::Array(tokens)) => tokens.len(),
                _ => {
                    return Err(ModelError::config(
                        "llama.vocab_size",
                        "missing, and no tokenizer.ggml.tokens to count",
                    ))
                }
            },
        };
        let rope_theta = match metadata.get("llama.rope.freq_base") {
            Some(v) => gguf_value_f64(v, "llama.rope.freq_base")?,
            None => DEFAULT_ROPE_THETA,
        };
        let max_position_embeddings = match metadata.get("llama.context_length") {
            Some(_) => gguf_usize(metadata, "llama.context_length")?,
            None => DEFAULT_MAX_POSITION_EMBEDDINGS,
        };
        let optional_id = |key: &str| -> Result<Option<u32>> {
            match metadata.get(key) {
                Some(v) => {
                    let id = gguf_value_u64(v, key)?;
                    u32::try_from(id)
                        .map(Some)
                        .map_err(|_| ModelError::config(key, format!("{id} does not fit in u32")))
                }
                None => Ok(None),
            }
        };
        let cfg = ModelConfig {
            vocab_size,
            hidden_size,
            intermediate_size: gguf_usize(metadata, "llama.feed_forward_length")?,
            n_layers: gguf_usize(metadata, "llama.block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_norm_eps: gguf_value_f64(
                metadata
                    .get("llama.attention.layer_norm_rms_epsilon")
                    .ok_or_else(|| {
                        ModelError::config("llama.attention.layer_norm_rms_epsilon", "missing")
                    })?,
                "llama.attention.layer_norm_rms_epsilon",
            )?,
            rope_theta,
            max_position_embeddings,
            tie_word_embeddings: !has_output_weight,
            bos_token_id: optional_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: optional_id("tokenizer.ggml.eos_token_id")?
                .into_iter()
                .collect(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads an integer GGUF value of any integer type as `u64` (negative values are rejected).
pub(crate) fn gguf_value_u64(value: &gguf_file::Value, key: &str) -> Result<u64> {
    use gguf_file::Value as V;
    let signed = |v: i64| {
        u64::try_from(v).map_err(|_| ModelError::config(key, format!("must be >= 0, got {v}")))
    };
    match value {
        V::U8(v) => Ok(u64::from(*v)),
        V::U16(v) => Ok(u64::from(*v)),
        V::U32(v) => Ok(u64::from(*v)),
        V::U64(v) => Ok(*v),
        V::I8(v) => signed(i64::from(*v)),
        V::I16(v) => signed(i64::from(*v)),
        V::I32(v) => signed(i64::from(*v)),
        V::I64(v) => signed(*v),
        other => Err(ModelError::config(
            key,
            format!("expected an integer, got {:?}", other.value_type()),
        )),
    }
}

fn gguf_value_f64(value: &gguf_file::Value, key: &str) -> Result<f64> {
    match value {
        gguf_file::Value::F32(v) => Ok(f64::from(*v)),
        gguf_file::Value::F64(v) => Ok(*v),
        other => gguf_value_u64(other, key).map(|v| v as f64),
    }
}

fn gguf_usize(metadata: &HashMap<String, gguf_file::Value>, key: &str) -> Result<usize> {
    let value = metadata
        .get(key)
        .ok_or_else(|| ModelError::config(key, "missing"))?;
    let v = gguf_value_u64(value, key)?;
    usize::try_from(v).map_err(|_| ModelError::config(key, format!("{v} does not fit in usize")))
}

pub(crate) fn gguf_string<'a>(
    metadata: &'a HashMap<String, gguf_file::Value>,
    key: &str,
) -> Result<&'a str> {
    match metadata.get(key) {
        Some(gguf_file::Value::String(s)) => Ok(s.as_str()),
        Some(other) => Err(ModelError::config(
            key,
            format!("expected a string, got {:?}", other.value_type()),
        )),
        None => Err(ModelError::config(key, "missing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smol_like() -> HfLlamaConfig {
        serde_json::from_str(
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,
            "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
            "num_key_value_heads":3,"rms_norm_eps":1e-5,"rope_theta":100000.0,
            "rope_scaling":null,"vocab_size":49152,"tie_word_embeddings":true,
            "max_position_embeddings":8192,"hidden_act":"silu","bos_token_id":1,
            "eos_token_id":2,"some_unknown_field":[1,2,3]}"#,
        )
        .expect("valid json")
    }

    #[test]
    fn resolves_smollm2_like_config() {
        let cfg = smol_like().resolve().expect("valid config");
        assert_eq!(cfg.head_dim, 64);
        assert_eq!(cfg.kv_groups(), 3);
        assert!(cfg.tie_word_embeddings);
        assert_eq!(cfg.eos_token_ids, vec![2]);
        assert_eq!(cfg.to_hf().resolve().expect("round trip"), cfg);
    }

    #[test]
    fn defaults_apply() {
        let mut raw = smol_like();
        raw.num_key_value_heads = None;
        raw.rope_theta = None;
        raw.tie_word_embeddings = None;
        raw.max_position_embeddings = None;
        let cfg = raw.resolve().expect("valid config");
        assert_eq!(cfg.n_kv_heads, 9);
        assert_eq!(cfg.rope_theta, DEFAULT_ROPE_THETA);
        assert!(!cfg.tie_word_embeddings);
        assert_eq!(cfg.max_position_embeddings, DEFAULT_MAX_POSITION_EMBEDDINGS);
    }

    fn err_of(raw: HfLlamaConfig) -> String {
        raw.resolve().expect_err("must be rejected").to_string()
    }

    #[test]
    fn rejects_bad_configs_with_clear_errors() {
        let mut raw = smol_like();
        raw.hidden_size = None;
        assert_eq!(err_of(raw), "invalid model config: hidden_size: missing");

        let mut raw = smol_like();
        raw.num_key_value_heads = Some(2);
        assert!(err_of(raw).contains("num_key_value_heads: must divide num_attention_heads 9"));

        let mut raw = smol_like();
        raw.num_attention_heads = Some(7);
        assert!(err_of(raw).contains("must divide hidden_size 576"));

        let mut raw = smol_like();
        raw.rms_norm_eps = Some(-1.0);
        assert!(err_of(raw).contains("rms_norm_eps: must be finite and positive"));

        let mut raw = smol_like();
        raw.rope_scaling = Some(serde_json::json!({"type": "linear", "factor": 2.0}));
        assert!(err_of(raw).contains("rope scaling is not supported"));

        let mut raw = smol_like();
        raw.hidden_act = Some("gelu".into());
        assert!(err_of(raw).contains("only \"silu\""));

        let mut raw = smol_like();
        raw.head_dim = Some(63);
        assert!(err_of(raw).contains("head_dim: must be even"));

        let mut raw = smol_like();
        raw.num_hidden_layers = Some(0);
        assert!(err_of(raw).contains("num_hidden_layers: must be positive"));

        let mut raw = smol_like();
        raw.eos_token_id = Some(EosTokenIds::Many(vec![2, 50_000]));
        assert!(err_of(raw).contains("eos_token_id: 50000 is outside the vocabulary"));

        let mut raw = smol_like();
        raw.model_type = Some("gemma".into());
        assert!(err_of(raw).contains("unsupported model type"));
    }

    #[test]
    fn gguf_metadata_resolves_and_rejects() {
        use gguf_file::Value as V;
        let mut md: HashMap<String, V> = [
            ("general.architecture", V::String("llama".into())),
            ("llama.embedding_length", V::U32(576)),
            ("llama.feed_forward_length", V::U32(1536)),
            ("llama.block_count", V::U32(30)),
            ("llama.attention.head_count", V::U32(9)),
            ("llama.attention.head_count_kv", V::U32(3)),
            ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
            ("llama.rope.freq_base", V::F32(100_000.0)),
            ("llama.rope.dimension_count", V::U32(64)),
            ("llama.context_length", V::U32(8192)),
            ("llama.vocab_size", V::U32(49152)),
            ("tokenizer.ggml.bos_token_id", V::U32(1)),
            ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cfg = ModelConfig::from_gguf_metadata(&md, false).expect("valid metadata");
        let mut expected = smol_like().resolve().expect("valid");
        // GGUF stores the epsilon as f32.
        expected.rms_norm_eps = f64::from(1e-5f32);
        assert_eq!(cfg, expected);

        md.insert("llama.rope.dimension_count".into(), V::U32(32));
        let err = ModelConfig::from_gguf_metadata(&md, false).expect_err("partial rope");
        assert!(err.to_string().contains("partial rotary embedding"));
        md.insert("llama.rope.dimension_count".into(), V::U32(64));

        md.insert("llama.block_count".into(), V::String("thirty".into()));
        let err = ModelConfig::from_gguf_metadata(&md, false).expect_err("bad type");
        assert!(err
            .to_string()
            .contains("llama.block_count: expected an integer"));

        md.insert("general.architecture".into(), V::String("gemma3".into()));
        let err = ModelConfig::from_gguf_metadata(&md, false).expect_err("bad arch");
        assert!(err.to_string().contains("unsupported architecture"));
    }
}

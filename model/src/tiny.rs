//! Tiny random Llama models for tests, written in the same formats as real checkpoints.
//!
//! [`write_tiny_model`] writes `config.json`, `model.safetensors` and `tokenizer.json` to a
//! directory; [`write_tiny_gguf`] writes the same model as an f32 GGUF file, with Q/K rows in
//! llama.cpp's permuted order and the tokenizer embedded as `tokenizer.ggml.*` metadata. Tests
//! load both through [`crate::LoadedModel::load`], i.e. the code path of real models.
//!
//! Weights are uniform with variance `1/in` for projections and 1 for the embedding; norm gains
//! are `1 ± 0.1`, all from a seeded [`StdRng`], so a seed always gives the same model. The
//! tokenizer is a byte-level BPE over the 256 GPT-2 byte symbols, a few merges and
//! `<|endoftext|>` as end-of-sequence.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::tokenizer::{byte_level_bpe, byte_to_unicode, PreTokenizerKind, TextTokenizer};
use crate::weights::{hf_to_gguf_name, permute_qk_rows};

/// The end-of-sequence token of the tiny tokenizer.
pub const TINY_EOS: &str = "<|endoftext|>";

const TINY_MERGES: [(&str, &str); 8] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("a", "n"),
];

/// Shape and seed of a tiny model.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyOptions {
    /// RNG seed for the weights.
    pub seed: u64,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Tie the LM head to the embedding.
    pub tie_word_embeddings: bool,
    /// Context length.
    pub max_position_embeddings: usize,
    /// RoPE base.
    pub rope_theta: f64,
}

impl Default for TinyOptions {
    /// 4 layers, hidden 32, 4 query heads of width 8 over 2 key/value heads, MLP 64, tied head.
    fn default() -> Self {
        Self {
            seed: 0,
            hidden_size: 32,
            intermediate_size: 64,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 2,
            tie_word_embeddings: true,
            max_position_embeddings: 256,
            rope_theta: 10_000.0,
        }
    }
}

/// The tiny tokenizer's vocabulary (id = index) and merges.
pub fn tiny_vocab() -> (Vec<String>, Vec<(String, String)>) {
    let mut tokens: Vec<String> = byte_to_unicode().iter().map(|c| c.to_string()).collect();
    let merges: Vec<(String, String)> = TINY_MERGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    tokens.push(TINY_EOS.to_string());
    (tokens, merges)
}

/// The tiny byte-level BPE tokenizer.
pub fn tiny_tokenizer() -> Result<TextTokenizer> {
    let (tokens, merges) = tiny_vocab();
    let eos = (tokens.len() - 1) as u32;
    let inner = byte_level_bpe(&tokens, merges, &[eos], PreTokenizerKind::Gpt2)?;
    Ok(TextTokenizer::new(inner, None, false))
}

/// The config of a tiny model (vocabulary of [`tiny_vocab`]).
pub fn tiny_config(opts: &TinyOptions) -> Result<ModelConfig> {
    let vocab_size = tiny_vocab().0.len();
    if opts.n_heads == 0 || !opts.hidden_size.is_multiple_of(opts.n_heads) {
        return Err(ModelError::config(
            "num_attention_heads",
            format!(
                "must divide hidden_size {}, got {}",
                opts.hidden_size, opts.n_heads
            ),
        ));
    }
    let cfg = ModelConfig {
        vocab_size,
        hidden_size: opts.hidden_size,
        intermediate_size: opts.intermediate_size,
        n_layers: opts.n_layers,
        n_heads: opts.n_heads,
        n_kv_heads: opts.n_kv_heads,
        head_dim: opts.hidden_size / opts.n_heads,
        rms_norm_eps: 1e-5,
        rope_theta: opts.rope_theta,
        max_position_embeddings: opts.max_position_embeddings,
        tie_word_embeddings: opts.tie_word_embeddings,
        bos_token_id: None,
        eos_token_ids: vec![(vocab_size - 1) as u32],
    };
    cfg.validate()?;
    Ok(cfg)
}

fn uniform(rng: &mut StdRng, shape: &[usize], std: f32, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let a = std * 3f32.sqrt();
    let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-a..=a)).collect();
    Ok(Tensor::from_vec(data, shape, device)?)
}

fn gains(rng: &mut StdRng, n: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..n).map(|_| 1.0 + rng.gen_range(-0.1f32..=0.1)).collect();
    Ok(Tensor::from_vec(data, n, device)?)
}

/// Seeded random weights of a tiny model, keyed by HF name, in HF layout.
pub fn tiny_weights(
    cfg: &ModelConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (v, h, i) = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size);
    let mut w = HashMap::new();
    let proj = |rng: &mut StdRng, d_out: usize, d_in: usize| {
        uniform(rng, &[d_out, d_in], 1.0 / (d_in as f32).sqrt(), device)
    };
    w.insert(
        "model.embed_tokens.weight".to_string(),
        uniform(&mut rng, &[v, h], 1.0, device)?,
    );
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        let entries = [
            ("input_layernorm.weight", gains(&mut rng, h, device)?),
            ("self_attn.q_proj.weight", proj(&mut rng, cfg.q_width(), h)?),
            (
                "self_attn.k_proj.weight",
                proj(&mut rng, cfg.kv_width(), h)?,
            ),
            (
                "self_attn.v_proj.weight",
                proj(&mut rng, cfg.kv_width(), h)?,
            ),
            ("self_attn.o_proj.weight", proj(&mut rng, h, cfg.q_width())?),
            (
                "post_attention_layernorm.weight",
                gains(&mut rng, h, device)?,
            ),
            ("mlp.gate_proj.weight", proj(&mut rng, i, h)?),
            ("mlp.up_proj.weight", proj(&mut rng, i, h)?),
            ("mlp.down_proj.weight", proj(&mut rng, h, i)?),
        ];
        for (name, t) in entries {
            w.insert(format!("{p}.{name}"), t);
        }
    }
    w.insert("model.norm.weight".to_string(), gains(&mut rng, h, device)?);
    if !cfg.tie_word_embeddings {
        w.insert(
            "lm_head.weight".to_string(),
            uniform(&mut rng, &[v, h], 1.0 / (h as f32).sqrt(), device)?,
        );
    }
    Ok(w)
}

/// Writes a tiny model as `config.json`, `model.safetensors`, `tokenizer.json` into `dir`.
pub fn write_tiny_model(dir: &Path, opts: &TinyOptions) -> Result<ModelConfig> {
    let cfg = tiny_config(opts)?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let cfg_path = dir.join("config.json");
    let json =
        serde_json::to_string_pretty(&cfg.to_hf()).map_err(|e| ModelError::json(&cfg_path, e))?;
    std::fs::write(&cfg_path, json).map_err(|e| ModelError::io(&cfg_path, e))?;
    let weights = tiny_weights(&cfg, opts.seed, &Device::Cpu)?;
    let st_path = dir.join("model.safetensors");
    candle_core::safetensors::save(&weights, &st_path)
        .map_err(|e| ModelError::io(&st_path, std::io::Error::other(e.to_string())))?;
    tiny_tokenizer()?.save(&dir.join("tokenizer.json"))?;
    Ok(cfg)
}

/// Writes the same tiny model (same seed, same weights) as an f32 GGUF file in llama.cpp's
/// layout: GGUF tensor names, Q/K rows permuted for interleaved RoPE, tokenizer as metadata.
pub fn write_tiny_gguf(path: &Path, opts: &TinyOptions) -> Result<ModelConfig> {
    use gguf_file::Value as V;
    let cfg = tiny_config(opts)?;
    let weights = tiny_weights(&cfg, opts.seed, &Device::Cpu)?;
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    for name in names {
        let gguf = hf_to_gguf_name(name)
            .ok_or_else(|| ModelError::Gguf(format!("no gguf name for {name}")))?;
        let mut t = weights[name].clone();
        if name.ends_with("q_proj.weight") {
            t = permute_qk_rows(&t, cfg.n_heads, cfg.head_dim)?;
        } else if name.ends_with("k_proj.weight") {
            t = permute_qk_rows(&t, cfg.n_kv_heads, cfg.head_dim)?;
        }
        tensors.push((gguf, QTensor::quantize(&t, GgmlDType::F32)?));
    }
    let (tokens, merges) = tiny_vocab();
    let eos = (tokens.len() - 1) as u32;
    let u32_of = |n: usize| {
        u32::try_from(n).map_err(|_| ModelError::Gguf(format!("{n} does not fit in u32")))
    };
    let metadata: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        ("llama.embedding_length", V::U32(u32_of(cfg.hidden_size)?)),
        (
            "llama.feed_forward_length",
            V::U32(u32_of(cfg.intermediate_size)?),
        ),
        ("llama.block_count", V::U32(u32_of(cfg.n_layers)?)),
        ("llama.attention.head_count", V::U32(u32_of(cfg.n_heads)?)),
        (
            "llama.attention.head_count_kv",
            V::U32(u32_of(cfg.n_kv_heads)?),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            V::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base", V::F32(cfg.rope_theta as f32)),
        ("llama.rope.dimension_count", V::U32(u32_of(cfg.head_dim)?)),
        (
            "llama.context_length",
            V::U32(u32_of(cfg.max_position_embeddings)?),
        ),
        ("tokenizer.ggml.model", V::String("gpt2".into())),
        ("tokenizer.ggml.pre", V::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            V::Array(tokens.iter().map(|t| V::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.merges",
            V::Array(
                merges
                    .iter()
                    .map(|(a, b)| V::String(format!("{a} {b}")))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Array(
                (0..tokens.len())
                    .map(|i| V::I32(if i as u32 == eos { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.eos_token_id", V::U32(eos)),
        ("tokenizer.ggml.add_bos_token", V::Bool(false)),
    ];
    let md_refs: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    gguf_file::write(&mut file, &md_refs, &t_refs)
        .map_err(|e| ModelError::Gguf(format!("{}: {e}", path.display())))?;
    Ok(cfg)
}

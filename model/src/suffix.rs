//! From a loaded candle model with a Marill spec to the private suffix's configuration and
//! plaintext weights, the input of the secure executor (`marill-suffix`): HF `(out, in)`
//! weights become `x·W` matrices, LoRA `alpha/rank` is folded into `B`.

use crate::{Llama, ModelError, Result, Target as MTarget};
use candle_core::Tensor;
use marill_suffix::config::LoraConfig;
use marill_suffix::weights::Lora;
use marill_suffix::{LayerWeights, Mat, SuffixConfig, SuffixWeights, Target};
use std::collections::BTreeMap;

/// Declared value ranges of the secure suffix (calibrated on SmolLM2; an input outside fails the
/// inference with an out-of-range error instead of a wrong answer).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// |attention score| after scaling
    pub score: f64,
    /// |MLP gate pre-activation|
    pub act: f64,
    /// row sum of squares entering an RMSNorm
    pub norm_sum: f64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            score: 128.0,
            act: 256.0,
            norm_sum: 2e9,
        }
    }
}

/// The suffix crate's name for a model target. The two enums stay apart (the suffix crate runs
/// at the workers without candle); the match is exhaustive both ways, so a projection added to
/// one side and not the other fails to compile here instead of at run time.
fn target(t: MTarget) -> Target {
    match t {
        MTarget::Q => Target::Q,
        MTarget::K => Target::K,
        MTarget::V => Target::V,
        MTarget::O => Target::O,
        MTarget::Gate => Target::Gate,
        MTarget::Up => Target::Up,
        MTarget::Down => Target::Down,
    }
}

/// [`target`] backwards (used by the test that both sides name every projection alike).
#[cfg(test)]
fn model_target(t: Target) -> MTarget {
    match t {
        Target::Q => MTarget::Q,
        Target::K => MTarget::K,
        Target::V => MTarget::V,
        Target::O => MTarget::O,
        Target::Gate => MTarget::Gate,
        Target::Up => MTarget::Up,
        Target::Down => MTarget::Down,
    }
}

fn transposed(w: &Tensor, scale: f32) -> Result<Mat> {
    let (out, inp) = w.dims2()?;
    let v: Vec<Vec<f32>> = w.to_vec2()?;
    let mut data = vec![0f32; out * inp];
    for (o, row) in v.iter().enumerate() {
        for (i, x) in row.iter().enumerate() {
            data[i * out + o] = x * scale;
        }
    }
    Ok(Mat::new(inp, out, data)?)
}

/// The longest sequence (prompt + generated tokens) served by default: the workers' `--max-seq`
/// and `marill generate`'s, so that every command runs the same protocol (the softmax's
/// reciprocal table and the last key bucket follow it).
pub const DEFAULT_MAX_SEQ: usize = 256;

/// The private suffix of `model` (which must carry a Marill spec) as configuration and weights.
pub fn suffix_of(
    model: &Llama,
    bounds: Bounds,
    max_seq: usize,
) -> Result<(SuffixConfig, SuffixWeights)> {
    let mc = model.config();
    let spec = model
        .marill_spec()
        .ok_or_else(|| ModelError::input("the model has no Marill spec"))?;
    if model.head_prune() > 1 {
        return Err(ModelError::input(
            "a head-pruned model (the plaintext baseline of marill tune) has no secure suffix",
        ));
    }
    let n_public = spec.n_public();
    let lora = spec.lora().map(|l| LoraConfig {
        rank: l.rank,
        targets: l.targets.iter().map(|t| target(*t)).collect(),
    });
    let cfg = SuffixConfig {
        d_model: mc.hidden_size,
        n_heads: mc.n_heads,
        n_kv_heads: mc.n_kv_heads,
        head_dim: mc.head_dim,
        d_ff: mc.intermediate_size,
        n_layers: mc.n_layers - n_public,
        first_layer: n_public,
        head_merge: spec.head_merge(),
        private_base: lora.is_none(),
        lora,
        rms_eps: mc.rms_norm_eps,
        rope_theta: mc.rope_theta,
        max_seq,
        score_bound: bounds.score,
        act_bound: bounds.act,
        norm_sum_bound: bounds.norm_sum,
    };
    let mut layers = Vec::new();
    for layer in &model.layers()[n_public..] {
        let proj = |t: MTarget| transposed(layer.projection(t).weight(), 1.0);
        let mut adapters = BTreeMap::new();
        for t in MTarget::ALL {
            if let Some((pair, scale)) = layer.projection(t).lora() {
                adapters.insert(
                    target(t),
                    Lora {
                        a: transposed(&pair.a, 1.0)?,
                        b: transposed(&pair.b, scale as f32)?,
                    },
                );
            }
        }
        layers.push(LayerWeights {
            attn_norm: layer.input_layernorm().weight().to_vec1()?,
            wq: proj(MTarget::Q)?,
            wk: proj(MTarget::K)?,
            wv: proj(MTarget::V)?,
            wo: proj(MTarget::O)?,
            mlp_norm: layer.post_attention_layernorm().weight().to_vec1()?,
            w_gate: proj(MTarget::Gate)?,
            w_up: proj(MTarget::Up)?,
            w_down: proj(MTarget::Down)?,
            lora: adapters,
        });
    }
    let w = SuffixWeights {
        layers,
        final_norm: model.norm().weight().to_vec1()?,
    };
    w.check(&cfg)?;
    Ok((cfg, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_crates_name_every_projection_alike() {
        assert_eq!(MTarget::ALL.len(), Target::ALL.len());
        for t in MTarget::ALL {
            let s = target(t);
            assert_eq!(model_target(s), t);
            assert_eq!(Target::parse(t.short_name()).expect("short name"), s);
            assert_eq!(Target::parse(t.module_name()).expect("module name"), s);
        }
    }
}

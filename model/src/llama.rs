//! An f32 Llama decoder on candle (CPU), split-friendly.
//!
//! Modules mirror the checkpoint names (`model.embed_tokens`, `model.layers.N.input_layernorm`,
//! `model.layers.N.self_attn.{q,k,v,o}_proj`, `model.layers.N.post_attention_layernorm`,
//! `model.layers.N.mlp.{gate,up,down}_proj`, `model.norm`, `lm_head`) and every weight keeps the
//! HF `(out, in)` layout, so a projection computes `x·Wᵀ`.
//!
//! The forward pass is exposed in pieces so a caller can run a public prefix in one place and the
//! private suffix in another:
//! [`Llama::embed`] -> [`Llama::forward_layers`] (any layer range, any number of times) ->
//! [`Llama::final_norm_and_head`]. [`Llama::forward`] chains them and [`Llama::generate`] decodes
//! greedily with a [`KvCache`].
//!
//! Hidden states are `(batch, seq, hidden_size)` f32 tensors. Positions are absolute: a call that
//! feeds `t` tokens at position `pos` must find exactly `pos` cached entries in every layer it
//! runs (checked), so prefix and suffix stay aligned.

use std::ops::Range;

use candle_core::{DType, Device, Tensor, D};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::lora::{LoraAdapters, LoraPair};
use crate::spec::{MarillSpec, ResolvedSpec, Target};
use crate::weights::TensorStore;

/// A linear projection `y = x·Wᵀ` with an optional unmerged LoRA adapter
/// `+ scale·(x·Aᵀ)·Bᵀ`.
#[derive(Debug, Clone)]
pub struct Projection {
    weight: Tensor,
    lora: Option<(LoraPair, f64)>,
}

impl Projection {
    fn load(store: &TensorStore, name: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Self {
            weight: store.get(&format!("{name}.weight"), &[d_out, d_in])?,
            lora: None,
        })
    }

    /// The base weight, `(out, in)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The adapter and its scale `alpha/rank`, if adapted.
    pub fn lora(&self) -> Option<(&LoraPair, f64)> {
        self.lora.as_ref().map(|(p, s)| (p, *s))
    }

    /// Applies the projection to `(.., in)`, giving `(.., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (d_out, d_in) = self.weight.dims2()?;
        let Some((&last, lead)) = dims.split_last() else {
            return Err(ModelError::input(
                "projection input must have at least 1 dim",
            ));
        };
        if last != d_in {
            return Err(ModelError::input(format!(
                "projection expects last dim {d_in}, got {last}"
            )));
        }
        let rows: usize = lead.iter().product();
        let x2 = x.reshape((rows, d_in))?;
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some((pair, scale)) = &self.lora {
            let delta = x2.matmul(&pair.a.t()?)?.matmul(&pair.b.t()?)?;
            y = (y + (delta * *scale)?)?;
        }
        let mut out_dims = lead.to_vec();
        out_dims.push(d_out);
        Ok(y.reshape(out_dims)?)
    }
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
    grad_ops: bool,
}

impl RmsNorm {
    fn load(store: &TensorStore, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: store.get(&format!("{name}.weight"), &[size])?,
            eps,
            grad_ops: false,
        })
    }

    /// The gain vector.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The epsilon.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Normalises over the last dim (with differentiable primitives in training mode, see
    /// [`Llama::with_grad_ops`]).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.grad_ops {
            return Ok(candle_nn::ops::rms_norm_slow(
                x,
                &self.weight,
                self.eps as f32,
            )?);
        }
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps as f32,
        )?)
    }
}

/// Rotary embedding tables (HF "rotate-half" convention: dim `i` pairs with `i + d/2`).
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    theta: f64,
}

impl Rope {
    /// Tables for a head width and base.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        Self { head_dim, theta }
    }

    /// `(cos, sin)`, each `(t, head_dim/2)`, for positions `pos..pos+t`; frequency
    /// `i` is `theta^(-2i/head_dim)`. Computed in f64, stored as f32.
    pub fn cos_sin(&self, pos: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in pos..pos + t {
            for i in 0..half {
                let inv_freq = self.theta.powf(-(2.0 * i as f64) / self.head_dim as f64);
                let angle = p as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, half), device)?,
            Tensor::from_vec(sin, (t, half), device)?,
        ))
    }

    /// Rotates `(b, heads, t, head_dim)` with tables from [`Rope::cos_sin`].
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?)
    }
}

/// Per-layer key/value cache: post-RoPE keys and values per key/value head,
/// `(b, n_kv_heads, seq, head_dim)`. Head merging does not change it.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for a model with `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
        }
    }

    /// Number of layers the cache covers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Cached positions of a layer (0 when empty or out of range).
    pub fn seq_len(&self, layer: usize) -> usize {
        self.layers
            .get(layer)
            .and_then(|e| e.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// The cached `(keys, values)` of a layer.
    pub fn get(&self, layer: usize) -> Option<(&Tensor, &Tensor)> {
        self.layers
            .get(layer)
            .and_then(|e| e.as_ref())
            .map(|(k, v)| (k, v))
    }

    /// Empties every layer.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|e| *e = None);
    }
}

/// Grouped-query self-attention, with optional head merging.
///
/// With `m = head_merge`:
/// 1. `q`, `k`, `v` are projected and split into the original heads of width `d = head_dim`;
/// 2. RoPE is applied to `q` and `k` **per original head**, i.e. per `d`-wide sub-block of a merged
///    head, exactly as in the base model (so position information is the base model's);
/// 3. keys/values are appended to the cache (unmerged, one per key/value head: the cache width is
///    unchanged by merging), then expanded to one per query head (`repeat_kv`: query head `i`
///    uses key/value head `i / (n_heads / n_kv_heads)`);
/// 4. adjacent groups of `m` query heads, and the same groups of the expanded key/value heads,
///    are concatenated into `n_heads/m` heads of width `m·d`. A merged head's score is therefore
///    the sum of its `m` sub-heads' dot products, with **one softmax per merged head**, and its
///    output (probabilities times the concatenated values) splits back into the `m` sub-heads;
/// 5. the scale is `1/sqrt(m·d)`: the standard scale for a head of width `m·d`. A merged score
///    sums `m` sub-head dot products, so its variance is `m` times a sub-head's; dividing by
///    `sqrt(m·d)` keeps the softmax temperature of the base model at initialisation of the
///    fine-tuning instead of sharpening it `sqrt(m)`-fold. For `m = 1` it is `1/sqrt(d)`, so
///    HM = 1 is the original model exactly.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Projection,
    k_proj: Projection,
    v_proj: Projection,
    o_proj: Projection,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    head_merge: usize,
    head_prune: usize,
    grad_ops: bool,
}

impl Attention {
    fn load(store: &TensorStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            q_proj: Projection::load(store, &format!("{name}.q_proj"), h, cfg.q_width())?,
            k_proj: Projection::load(store, &format!("{name}.k_proj"), h, cfg.kv_width())?,
            v_proj: Projection::load(store, &format!("{name}.v_proj"), h, cfg.kv_width())?,
            o_proj: Projection::load(store, &format!("{name}.o_proj"), cfg.q_width(), h)?,
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            head_merge: 1,
            head_prune: 1,
            grad_ops: false,
        })
    }

    /// `q_proj`.
    pub fn q_proj(&self) -> &Projection {
        &self.q_proj
    }

    /// `k_proj`.
    pub fn k_proj(&self) -> &Projection {
        &self.k_proj
    }

    /// `v_proj`.
    pub fn v_proj(&self) -> &Projection {
        &self.v_proj
    }

    /// `o_proj`.
    pub fn o_proj(&self) -> &Projection {
        &self.o_proj
    }

    /// The head-merging factor of this layer (1 = none).
    pub fn head_merge(&self) -> usize {
        self.head_merge
    }

    /// The head-pruning factor of this layer (1 = none; see [`Llama::with_head_pruning`]).
    pub fn head_prune(&self) -> usize {
        self.head_prune
    }

    /// `(b, h, t, d)` -> `(b, h/m, t, d)` with `m = head_prune`: the first head of every
    /// adjacent group of `m` heads is kept.
    fn keep_pruned(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.head_prune;
        if m == 1 {
            return Ok(x.clone());
        }
        let (b, h, t, d) = x.dims4()?;
        Ok(x.reshape((b, h / m, m, t, d))?
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .contiguous()?)
    }

    /// Inverse of [`Attention::keep_pruned`]: the dropped heads' outputs are zeros (the same as
    /// deleting their columns of `o_proj`).
    fn unprune(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.head_prune;
        if m == 1 {
            return Ok(x.clone());
        }
        let (b, hm, t, d) = x.dims4()?;
        let zeros = Tensor::zeros((b, hm, m - 1, t, d), x.dtype(), x.device())?;
        Ok(Tensor::cat(&[&x.unsqueeze(2)?, &zeros], 2)?.reshape((b, hm * m, t, d))?)
    }

    /// The softmax scale `1/sqrt(head_merge · head_dim)`.
    pub fn softmax_scale(&self) -> f64 {
        1.0 / ((self.head_merge * self.head_dim) as f64).sqrt()
    }

    /// `(b, h, t, d)` -> `(b, h/m, t, m·d)`: adjacent groups of `m` heads concatenated.
    fn merge(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.head_merge;
        if m == 1 {
            return Ok(x.clone());
        }
        let (b, h, t, d) = x.dims4()?;
        Ok(x.reshape((b, h / m, m, t, d))?
            .transpose(2, 3)?
            .contiguous()?
            .reshape((b, h / m, t, m * d))?)
    }

    /// Inverse of [`Attention::merge`].
    fn unmerge(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.head_merge;
        if m == 1 {
            return Ok(x.clone());
        }
        let (b, hm, t, md) = x.dims4()?;
        let d = md / m;
        Ok(x.reshape((b, hm, t, m, d))?
            .transpose(2, 3)?
            .contiguous()?
            .reshape((b, hm * m, t, d))?)
    }

    fn repeat_kv(&self, x: &Tensor) -> Result<Tensor> {
        let groups = self.n_heads / self.n_kv_heads;
        if groups == 1 {
            return Ok(x.clone());
        }
        let (b, kv, t, d) = x.dims4()?;
        Ok(x.unsqueeze(2)?
            .expand((b, kv, groups, t, d))?
            .contiguous()?
            .reshape((b, kv * groups, t, d))?)
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x)?
            .reshape((b, t, h, d))?
            .transpose(1, 2)?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((b, t, kv, d))?
            .transpose(1, 2)?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((b, t, kv, d))?
            .transpose(1, 2)?;
        let (q, k) = if self.grad_ops {
            (
                candle_nn::rotary_emb::rope_slow(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_slow(&k, cos, sin)?,
            )
        } else {
            (Rope::apply(&q, cos, sin)?, Rope::apply(&k, cos, sin)?)
        };
        let v = v.contiguous()?;
        let (k, v) = match cache.as_ref() {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        let k_all = self.merge(&self.keep_pruned(&self.repeat_kv(&k)?)?)?;
        let v_all = self.merge(&self.keep_pruned(&self.repeat_kv(&v)?)?)?;
        let q = self.merge(&self.keep_pruned(&q)?)?;
        let scores = (q.matmul(&k_all.t()?)? * self.softmax_scale())?;
        let scores = match mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let probs = if self.grad_ops {
            candle_nn::ops::softmax(&scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = self.unprune(&self.unmerge(&probs.matmul(&v_all)?)?)?;
        let out = out.transpose(1, 2)?.reshape((b, t, h * d))?;
        let out = self.o_proj.forward(&out)?;
        *cache = Some((k, v));
        Ok(out)
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_proj: Projection,
    up_proj: Projection,
    down_proj: Projection,
}

impl Mlp {
    fn load(store: &TensorStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Projection::load(store, &format!("{name}.gate_proj"), h, i)?,
            up_proj: Projection::load(store, &format!("{name}.up_proj"), h, i)?,
            down_proj: Projection::load(store, &format!("{name}.down_proj"), i, h)?,
        })
    }

    /// `gate_proj`.
    pub fn gate_proj(&self) -> &Projection {
        &self.gate_proj
    }

    /// `up_proj`.
    pub fn up_proj(&self) -> &Projection {
        &self.up_proj
    }

    /// `down_proj`.
    pub fn down_proj(&self) -> &Projection {
        &self.down_proj
    }

    /// Applies the MLP.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.gate_proj.forward(x)?)?;
        let up = self.up_proj.forward(x)?;
        self.down_proj.forward(&(gate * up)?)
    }
}

/// One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn load(store: &TensorStore, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::load(store, &format!("{name}.input_layernorm"), h, eps)?,
            self_attn: Attention::load(store, &format!("{name}.self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(
                store,
                &format!("{name}.post_attention_layernorm"),
                h,
                eps,
            )?,
            mlp: Mlp::load(store, &format!("{name}.mlp"), cfg)?,
        })
    }

    /// `input_layernorm`.
    pub fn input_layernorm(&self) -> &RmsNorm {
        &self.input_layernorm
    }

    /// `self_attn`.
    pub fn self_attn(&self) -> &Attention {
        &self.self_attn
    }

    /// `post_attention_layernorm`.
    pub fn post_attention_layernorm(&self) -> &RmsNorm {
        &self.post_attention_layernorm
    }

    /// `mlp`.
    pub fn mlp(&self) -> &Mlp {
        &self.mlp
    }

    /// The projection adapted by `target`.
    pub fn projection(&self, target: Target) -> &Projection {
        match target {
            Target::Q => &self.self_attn.q_proj,
            Target::K => &self.self_attn.k_proj,
            Target::V => &self.self_attn.v_proj,
            Target::O => &self.self_attn.o_proj,
            Target::Gate => &self.mlp.gate_proj,
            Target::Up => &self.mlp.up_proj,
            Target::Down => &self.mlp.down_proj,
        }
    }

    fn projection_mut(&mut self, target: Target) -> &mut Projection {
        match target {
            Target::Q => &mut self.self_attn.q_proj,
            Target::K => &mut self.self_attn.k_proj,
            Target::V => &mut self.self_attn.v_proj,
            Target::O => &mut self.self_attn.o_proj,
            Target::Gate => &mut self.mlp.gate_proj,
            Target::Up => &mut self.mlp.up_proj,
            Target::Down => &mut self.mlp.down_proj,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let x = (x + self.self_attn.forward(&h, cos, sin, mask, cache)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        Ok((&x + self.mlp.forward(&h)?)?)
    }
}

/// A Llama-family causal LM.
#[derive(Debug, Clone)]
pub struct Llama {
    cfg: ModelConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: Rope,
    device: Device,
    spec: Option<ResolvedSpec>,
}

impl Llama {
    /// Builds the model from HF-named tensors, checking every shape. Tensors the model does not
    /// use are an error (a bias or an unknown module would otherwise be silently dropped), except
    /// `lm_head.weight` of a tied model and `*.rotary_emb.inv_freq`.
    pub fn load(store: &TensorStore, cfg: &ModelConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let embed_tokens = store.get("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..cfg.n_layers)
            .map(|i| DecoderLayer::load(store, &format!("model.layers.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(store, "model.norm", h, cfg.rms_norm_eps)?;
        let lm_head = if cfg.tie_word_embeddings {
            store.ignore("lm_head.weight");
            embed_tokens.clone()
        } else {
            store.get("lm_head.weight", &[v, h])?
        };
        for i in 0..cfg.n_layers {
            store.ignore(&format!("model.layers.{i}.self_attn.rotary_emb.inv_freq"));
        }
        let unused = store.unused();
        if !unused.is_empty() {
            return Err(ModelError::Input(format!(
                "checkpoint has tensors the llama decoder does not use: {}",
                unused.join(", ")
            )));
        }
        Ok(Self {
            rope: Rope::new(cfg.head_dim, cfg.rope_theta),
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            device: device.clone(),
            spec: None,
        })
    }

    /// The resolved config.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Token embedding matrix, `(vocab, hidden)`.
    pub fn embed_tokens(&self) -> &Tensor {
        &self.embed_tokens
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Final norm.
    pub fn norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// LM head, `(vocab, hidden)` (the embedding matrix when tied).
    pub fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }

    /// The rotary tables.
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    /// The Marill spec applied by [`Llama::with_marill`], if any.
    pub fn marill_spec(&self) -> Option<&ResolvedSpec> {
        self.spec.as_ref()
    }

    /// A new, empty cache for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.n_layers)
    }

    /// The model as laid out by a Marill spec: head merging on the private layers and, when the
    /// spec has LoRA, the given adapters attached (unmerged) to private layers. Public layers stay
    /// the base model. `adapters` must be given exactly when the spec has LoRA. The base model
    /// must not already carry a spec.
    pub fn with_marill(&self, spec: &MarillSpec, adapters: Option<&LoraAdapters>) -> Result<Self> {
        if self.spec.is_some() {
            return Err(ModelError::input(
                "with_marill must be called on the base model, this one already has a spec",
            ));
        }
        let resolved = spec.resolve(&self.cfg)?;
        match (resolved.lora(), adapters) {
            (Some(_), None) => {
                return Err(crate::spec::SpecError::LoraMismatch(
                    "the spec has lora but no adapters were given (use LoraAdapters::init with LoraInit::ZeroB for a fresh start)".into(),
                )
                .into())
            }
            (_, Some(a)) => a.validate(&self.cfg, &resolved)?,
            (None, None) => {}
        }
        let mut out = self.clone();
        for layer in resolved.private_layers() {
            out.layers[layer].self_attn.head_merge = resolved.head_merge();
        }
        if let Some(adapters) = adapters {
            let scale = adapters.scale();
            for (&(layer, target), pair) in adapters.iter() {
                out.layers[layer].projection_mut(target).lora = Some((pair.clone(), scale));
            }
        }
        out.spec = Some(resolved);
        Ok(out)
    }

    /// Head pruning, the baseline head merging is compared with: in every private layer of the
    /// spec only the first query head of each adjacent group of `m` is kept (with its key/value
    /// head); the other heads are dropped (their outputs are zero, i.e. their `o_proj` columns
    /// are unused). The layer then has `n_heads/m` softmax heads of width `d_head`, the same head
    /// count as head merging by `m`. Needs a spec without head merging. A plaintext option only:
    /// the secure suffix refuses a pruned model.
    pub fn with_head_pruning(&self, m: usize) -> Result<Self> {
        let spec = self.spec.as_ref().ok_or_else(|| {
            ModelError::input("head pruning applies to the private layers of a Marill spec")
        })?;
        if m == 0 || !self.cfg.n_heads.is_multiple_of(m) {
            return Err(ModelError::input(format!(
                "head pruning factor {m} must divide the {} heads",
                self.cfg.n_heads
            )));
        }
        if m > 1 && spec.head_merge() > 1 {
            return Err(ModelError::input(
                "head pruning and head merging cannot be combined",
            ));
        }
        if m > 1 && spec.private_layers().is_empty() {
            return Err(ModelError::input("head pruning needs private layers"));
        }
        let mut out = self.clone();
        for layer in spec.private_layers() {
            out.layers[layer].self_attn.head_prune = m;
        }
        Ok(out)
    }

    /// The head-pruning factor of the private layers (1 = none).
    pub fn head_prune(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.self_attn.head_prune)
            .max()
            .unwrap_or(1)
    }

    /// The same model computing with differentiable candle primitives (`on = true`): RMSNorm,
    /// softmax and RoPE use candle-nn's composed ("slow") versions, which record their backward
    /// pass, instead of the fused kernels, which have none (a gradient would silently stop at
    /// them). Used for training; results differ from the fused kernels by f32 rounding only.
    pub fn with_grad_ops(&self, on: bool) -> Self {
        let mut out = self.clone();
        out.norm.grad_ops = on;
        for l in &mut out.layers {
            l.input_layernorm.grad_ops = on;
            l.post_attention_layernorm.grad_ops = on;
            l.self_attn.grad_ops = on;
        }
        out
    }

    /// Embeds a batch of equally long token sequences: `(batch, len, hidden)`.
    pub fn embed_batch(&self, batch: &[Vec<u32>]) -> Result<Tensor> {
        let len = batch.first().map_or(0, Vec::len);
        if len == 0 || batch.iter().any(|s| s.len() != len) {
            return Err(ModelError::input(
                "a batch needs non-empty sequences of one length",
            ));
        }
        let flat: Vec<u32> = batch.concat();
        let h = self.embed(&flat)?;
        Ok(h.reshape((batch.len(), len, self.cfg.hidden_size))?)
    }

    /// Embeds tokens: `(1, tokens.len(), hidden)`. Ids must be in the vocabulary.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        if tokens.is_empty() {
            return Err(ModelError::input("no tokens to embed"));
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(ModelError::input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.cfg.vocab_size
            )));
        }
        let ids = Tensor::new(tokens, &self.device)?;
        Ok(self.embed_tokens.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    /// The causal mask for `t` new queries after `pos` cached positions: `(t, pos + t)`, 0 where
    /// query `i` may attend key `j` (`j <= pos + i`) and `-inf` elsewhere. `None` when `t == 1`.
    pub fn causal_mask(&self, pos: usize, t: usize) -> Result<Option<Tensor>> {
        if t <= 1 {
            return Ok(None);
        }
        let total = pos + t;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| {
                (0..total).map(move |j| if j <= pos + i { 0.0 } else { f32::NEG_INFINITY })
            })
            .collect();
        Ok(Some(Tensor::from_vec(mask, (t, total), &self.device)?))
    }

    /// Runs decoder layers `layers` on `hidden` (`(b, t, hidden)`) for positions `pos..pos+t`,
    /// appending to `cache`. Every layer of the range must hold exactly `pos` cached positions
    /// (with the same batch size).
    pub fn forward_layers(
        &self,
        hidden: &Tensor,
        layers: Range<usize>,
        cache: &mut KvCache,
        pos: usize,
    ) -> Result<Tensor> {
        let (b, t, h) = hidden.dims3().map_err(|_| {
            ModelError::input(format!(
                "hidden state must be (batch, seq, hidden), got {:?}",
                hidden.dims()
            ))
        })?;
        if h != self.cfg.hidden_size || t == 0 || b == 0 {
            return Err(ModelError::input(format!(
                "hidden state must be (batch > 0, seq > 0, {}), got {:?}",
                self.cfg.hidden_size,
                hidden.dims()
            )));
        }
        if layers.start > layers.end || layers.end > self.cfg.n_layers {
            return Err(ModelError::input(format!(
                "layer range {layers:?} is not within 0..{}",
                self.cfg.n_layers
            )));
        }
        if cache.n_layers() != self.cfg.n_layers {
            return Err(ModelError::input(format!(
                "cache covers {} layers, the model has {}",
                cache.n_layers(),
                self.cfg.n_layers
            )));
        }
        if pos + t > self.cfg.max_position_embeddings {
            return Err(ModelError::input(format!(
                "positions {pos}..{} exceed max_position_embeddings {}",
                pos + t,
                self.cfg.max_position_embeddings
            )));
        }
        for layer in layers.clone() {
            let cached = cache.seq_len(layer);
            if cached != pos {
                return Err(ModelError::input(format!(
                    "layer {layer} has {cached} cached positions, but the input starts at position {pos}"
                )));
            }
            if let Some((k, _)) = cache.get(layer) {
                if k.dim(0)? != b {
                    return Err(ModelError::input(format!(
                        "layer {layer} cache has batch {}, input has batch {b}",
                        k.dim(0)?
                    )));
                }
            }
        }
        let (cos, sin) = self.rope.cos_sin(pos, t, &self.device)?;
        let mask = self.causal_mask(pos, t)?;
        let mut x = hidden.to_dtype(DType::F32)?.contiguous()?;
        for layer in layers {
            x = self.layers[layer].forward(
                &x,
                &cos,
                &sin,
                mask.as_ref(),
                &mut cache.layers[layer],
            )?;
        }
        Ok(x)
    }

    /// The final RMSNorm.
    pub fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        self.norm.forward(hidden)
    }

    /// The LM head on normalised hidden states: `(.., hidden)` -> `(.., vocab)`.
    pub fn head(&self, normed: &Tensor) -> Result<Tensor> {
        let dims = normed.dims().to_vec();
        let Some((&last, lead)) = dims.split_last() else {
            return Err(ModelError::input("head input must have at least 1 dim"));
        };
        if last != self.cfg.hidden_size {
            return Err(ModelError::input(format!(
                "head expects last dim {}, got {last}",
                self.cfg.hidden_size
            )));
        }
        let rows: usize = lead.iter().product();
        let logits = normed.reshape((rows, last))?.matmul(&self.lm_head.t()?)?;
        let mut out = lead.to_vec();
        out.push(self.cfg.vocab_size);
        Ok(logits.reshape(out)?)
    }

    /// Final norm then LM head: `(b, t, hidden)` -> logits `(b, t, vocab)`.
    pub fn final_norm_and_head(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head(&self.final_norm(hidden)?)
    }

    /// Full forward pass of `tokens` at positions `pos..`: logits `(1, t, vocab)`.
    pub fn forward(&self, tokens: &[u32], pos: usize, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.embed(tokens)?;
        let hidden = self.forward_layers(&hidden, 0..self.cfg.n_layers, cache, pos)?;
        self.final_norm_and_head(&hidden)
    }

    /// Greedy decoding: up to `max_new_tokens` new tokens after `prompt`, stopping after any id
    /// in `stop` (which is included in the output). Returns the new tokens only.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new_tokens: usize,
        stop: &[u32],
    ) -> Result<Vec<u32>> {
        let mut cache = self.new_cache();
        let mut out = Vec::new();
        if max_new_tokens == 0 {
            return Ok(out);
        }
        let mut logits = self.forward(prompt, 0, &mut cache)?;
        let mut pos = prompt.len();
        loop {
            let next = argmax_last(&logits)?;
            out.push(next);
            if out.len() >= max_new_tokens || stop.contains(&next) {
                return Ok(out);
            }
            logits = self.forward(&[next], pos, &mut cache)?;
            pos += 1;
        }
    }
}

/// The argmax of the last position of `(1, t, vocab)` logits (first index on ties).
pub fn argmax_last(logits: &Tensor) -> Result<u32> {
    let (b, t, v) = logits.dims3()?;
    if b == 0 || t == 0 || v == 0 {
        return Err(ModelError::input(format!(
            "argmax needs non-empty logits, got {:?}",
            logits.dims()
        )));
    }
    let last: Vec<f32> = logits.get(0)?.get(t - 1)?.to_vec1()?;
    let mut best = 0usize;
    for (i, &v) in last.iter().enumerate() {
        if v > last[best] {
            best = i;
        }
    }
    u32::try_from(best).map_err(|_| ModelError::input("vocabulary larger than u32"))
}

/// Maximum absolute difference of two same-shape tensors (for tests and benches).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        return Err(ModelError::input(format!(
            "shapes differ: {:?} vs {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok((a - b)?
        .abs()?
        .flatten_all()?
        .max(D::Minus1)?
        .to_scalar::<f32>()?)
}

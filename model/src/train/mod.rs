//! Marill fine-tuning: layer freezing, unmerged LoRA on the private layers, head merging (or the
//! head-pruning baseline), trained with candle autograd.
//!
//! Implements the training side of Marill (Rathee et al. 2024, "MPC-Minimized Secure LLM
//! Inference"): the first `n_public` layers and the embedding stay the public base weights
//! (*layer freezing*), the private layers get LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank
//! Adaptation of Large Language Models") that stay unmerged, and the private layers may merge
//! adjacent heads (see [`crate::llama::Attention`]). Pruning (keeping `n_heads/m` heads, see
//! [`Llama::with_head_pruning`]) is the baseline merging is compared with.
//!
//! How the frozen/trainable split is enforced: only the adapters' `A` and `B` are candle
//! [`Var`]s; every base weight is a plain tensor, so autograd never produces an update for it and
//! the optimizer never sees it. The public prefix runs on the base model's fused kernels (nothing
//! there is trainable) and its output is detached; the private layers run with differentiable
//! primitives ([`Llama::with_grad_ops`]). The loss is the mean next-token cross-entropy, plus
//! optionally `λ·KL(p_base ‖ p_tuned)` per position (knowledge distillation from the unmodified
//! base model: all layers, no merging, no adapters).
//!
//! An optimizer step averages the gradients of `accum` micro-batches of `micro_batch` windows
//! each ([`data`]), then applies [`adamw::AdamW`]. A checkpoint holds the adapters, the
//! optimizer moments and step, the data cursor and the loss history; the data order is a
//! function of the seed and the cursor, so a resumed run repeats an uninterrupted one bit for
//! bit (tested).

pub mod adamw;
pub mod data;
pub mod export;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::lora::{LoraAdapters, LoraPair};
use crate::spec::{MarillSpec, Target};
use adamw::{AdamW, AdamWParams};
use data::TokenWindows;

/// Training settings (everything that fixes the trajectory, with the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Input tokens per window.
    pub seq_len: usize,
    /// Windows per micro-batch (one forward/backward).
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    pub accum: usize,
    /// Seed of the data order.
    pub seed: u64,
    /// Optimizer settings.
    pub adamw: AdamWParams,
    /// Weight `λ` of the distillation term (0 = none).
    pub distill_weight: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seq_len: 64,
            micro_batch: 1,
            accum: 1,
            seed: 0,
            adamw: AdamWParams::default(),
            distill_weight: 0.0,
        }
    }
}

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CheckpointMeta {
    config: TrainConfig,
    spec: MarillSpec,
    head_prune: usize,
    keys: Vec<(usize, Target)>,
    step: usize,
    sequences: usize,
    losses: Vec<f32>,
    tensors: String,
}

/// File of a checkpoint's metadata (written last, atomically: it names the tensor file).
pub const CHECKPOINT_META: &str = "checkpoint.json";

/// A training run: the base model, the tuned model sharing its weights, the adapter variables
/// and the optimizer.
pub struct Trainer {
    base: Llama,
    model: Llama,
    spec: MarillSpec,
    head_prune: usize,
    keys: Vec<(usize, Target)>,
    vars: Vec<Var>,
    opt: AdamW,
    config: TrainConfig,
    sequences: usize,
    losses: Vec<f32>,
    alpha: f64,
}

impl Trainer {
    /// Starts from `init` adapters (e.g. [`crate::LoraInit::ZeroB`]) on the base model `base`
    /// (which must carry no spec), laid out by `spec`, with head pruning `head_prune` (1 = none)
    /// on the private layers.
    pub fn new(
        base: &Llama,
        spec: &MarillSpec,
        head_prune: usize,
        init: &LoraAdapters,
        config: TrainConfig,
    ) -> Result<Self> {
        if config.seq_len == 0 || config.micro_batch == 0 || config.accum == 0 {
            return Err(ModelError::Train(
                "seq_len, micro_batch and accum must be > 0".into(),
            ));
        }
        if spec.lora.is_none() {
            return Err(ModelError::Train(
                "training needs LoRA on the private layers (rank > 0)".into(),
            ));
        }
        if init.is_empty() {
            return Err(ModelError::Train("no adapters to train".into()));
        }
        let device = base.device().clone();
        let mut adapters = LoraAdapters::new(init.rank(), init.alpha());
        let mut keys = Vec::new();
        let mut vars = Vec::new();
        for (&(layer, target), pair) in init.iter() {
            let a = Var::from_tensor(&pair.a.to_device(&device)?)?;
            let b = Var::from_tensor(&pair.b.to_device(&device)?)?;
            adapters.insert(
                layer,
                target,
                LoraPair {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                },
            )?;
            keys.push((layer, target));
            vars.push(a);
            vars.push(b);
        }
        let model = base
            .with_marill(spec, Some(&adapters))?
            .with_head_pruning(head_prune)?
            .with_grad_ops(true);
        let opt = AdamW::new(vars.clone(), config.adamw)?;
        Ok(Self {
            base: base.clone(),
            model,
            spec: spec.clone(),
            head_prune,
            keys,
            vars,
            opt,
            config,
            sequences: 0,
            losses: Vec::new(),
            alpha: init.alpha(),
        })
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> usize {
        self.opt.step_count()
    }

    /// Training windows consumed (the data cursor).
    pub fn sequences(&self) -> usize {
        self.sequences
    }

    /// Mean loss of every step so far.
    pub fn losses(&self) -> &[f32] {
        &self.losses
    }

    /// The settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The tuned model as trained (adapters live, differentiable ops).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The adapters now, detached copies.
    pub fn adapters(&self) -> Result<LoraAdapters> {
        let rank = self.vars[0].dim(0)?;
        let mut out = LoraAdapters::new(rank, self.alpha);
        for (i, &(layer, target)) in self.keys.iter().enumerate() {
            let a = self.vars[2 * i].as_tensor().copy()?.detach();
            let b = self.vars[2 * i + 1].as_tensor().copy()?.detach();
            out.insert(layer, target, LoraPair { a, b })?;
        }
        Ok(out)
    }

    /// The tuned model for inference: the base with the spec, the current adapters (detached)
    /// and the pruning, on the fused kernels.
    pub fn inference_model(&self) -> Result<Llama> {
        self.base
            .with_marill(&self.spec, Some(&self.adapters()?))?
            .with_head_pruning(self.head_prune)
    }

    /// The loss of one micro-batch of windows (`seq_len + 1` tokens each), as a tensor that
    /// backpropagates to the adapters.
    pub fn loss(&self, windows: &[&[u32]]) -> Result<Tensor> {
        let t = self.config.seq_len;
        if windows.is_empty() || windows.iter().any(|w| w.len() != t + 1) {
            return Err(ModelError::Train(format!(
                "a micro-batch needs windows of {} tokens",
                t + 1
            )));
        }
        let inputs: Vec<Vec<u32>> = windows.iter().map(|w| w[..t].to_vec()).collect();
        let targets: Vec<u32> = windows.iter().flat_map(|w| w[1..].to_vec()).collect();
        let n_layers = self.base.config().n_layers;
        let n_public = self
            .model
            .marill_spec()
            .map(|s| s.n_public())
            .unwrap_or_default();
        let rows = inputs.len() * t;
        let vocab = self.base.config().vocab_size;
        // Public prefix: the base model's fused kernels, nothing trainable, detached.
        let mut prefix_cache = self.base.new_cache();
        let h = self.base.embed_batch(&inputs)?;
        let h = self
            .base
            .forward_layers(&h, 0..n_public, &mut prefix_cache, 0)?
            .detach();
        let mut cache = self.model.new_cache();
        let h = self
            .model
            .forward_layers(&h, n_public..n_layers, &mut cache, 0)?;
        let logits = self.model.final_norm_and_head(&h)?.reshape((rows, vocab))?;
        let tgt = Tensor::new(targets.as_slice(), logits.device())?;
        let ce = candle_nn::loss::cross_entropy(&logits, &tgt)?;
        if self.config.distill_weight == 0.0 {
            return Ok(ce);
        }
        let mut teacher_cache = self.base.new_cache();
        let th = self.base.embed_batch(&inputs)?;
        let th = self
            .base
            .forward_layers(&th, 0..n_layers, &mut teacher_cache, 0)?;
        let teacher = self
            .base
            .final_norm_and_head(&th)?
            .reshape((rows, vocab))?
            .detach();
        let log_pt = candle_nn::ops::log_softmax(&teacher, D::Minus1)?;
        let log_ps = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let kl = (log_pt.exp()? * (&log_pt - &log_ps)?)?
            .sum_all()?
            .affine(1.0 / rows as f64, 0.0)?;
        Ok((ce + (kl * self.config.distill_weight)?)?)
    }

    /// One optimizer step: `accum` micro-batches from `data` at the cursor, gradients averaged,
    /// AdamW applied. Returns the step's mean loss.
    pub fn step(&mut self, data: &TokenWindows) -> Result<f32> {
        if data.seq_len() != self.config.seq_len {
            return Err(ModelError::Train(format!(
                "data windows have {} tokens, the run uses {}",
                data.seq_len(),
                self.config.seq_len
            )));
        }
        let mut acc: Vec<Tensor> = self
            .vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<_>>()?;
        let mut total = 0f64;
        let accum = self.config.accum;
        for _ in 0..accum {
            let idx: Vec<usize> = (0..self.config.micro_batch)
                .map(|j| data.training_window(self.config.seed, self.sequences + j))
                .collect();
            let windows: Vec<&[u32]> = idx.iter().map(|&i| data.window(i)).collect();
            let loss = self.loss(&windows)?;
            self.sequences += windows.len();
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            if !value.is_finite() {
                return Err(ModelError::Train(format!(
                    "loss is {value} at step {}",
                    self.step_count() + 1
                )));
            }
            total += value as f64;
            let grads = (loss / accum as f64)?.backward()?;
            for (slot, var) in acc.iter_mut().zip(&self.vars) {
                if let Some(g) = grads.get(var.as_tensor()) {
                    *slot = (&*slot + g)?;
                }
            }
        }
        self.opt.step(&acc)?;
        let mean = (total / accum as f64) as f32;
        self.losses.push(mean);
        Ok(mean)
    }

    /// Writes a checkpoint into `dir` (created): tensors first under a step-numbered name, then
    /// the metadata atomically (rename), then older tensor files are removed. An interruption at
    /// any point leaves the previous or the new checkpoint readable.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let step = self.step_count();
        let name = format!("state-{step:08}.safetensors");
        let (_, m, v) = self.opt.state();
        let mut tensors = std::collections::HashMap::new();
        for (i, var) in self.vars.iter().enumerate() {
            tensors.insert(format!("p{i}"), var.as_tensor().detach());
            tensors.insert(format!("m{i}"), m[i].clone());
            tensors.insert(format!("v{i}"), v[i].clone());
        }
        let tmp = dir.join(format!("{name}.tmp"));
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| ModelError::io(&tmp, std::io::Error::other(e.to_string())))?;
        let path = dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))?;
        let meta = CheckpointMeta {
            config: self.config.clone(),
            spec: self.spec.clone(),
            head_prune: self.head_prune,
            keys: self.keys.clone(),
            step,
            sequences: self.sequences,
            losses: self.losses.clone(),
            tensors: name.clone(),
        };
        let meta_path = dir.join(CHECKPOINT_META);
        let tmp = dir.join(format!("{CHECKPOINT_META}.tmp"));
        let text = serde_json::to_string_pretty(&meta).map_err(|e| ModelError::json(&tmp, e))?;
        std::fs::write(&tmp, text).map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, &meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
        for entry in std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
            let entry = entry.map_err(|e| ModelError::io(dir, e))?;
            let file = entry.file_name().to_string_lossy().to_string();
            if file.starts_with("state-") && file != name {
                let p: PathBuf = entry.path();
                std::fs::remove_file(&p).map_err(|e| ModelError::io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Whether `dir` holds a checkpoint.
    pub fn has_checkpoint(dir: &Path) -> bool {
        dir.join(CHECKPOINT_META).is_file()
    }

    /// Restores adapters, optimizer state, cursor and losses from a checkpoint written by a run
    /// with the same settings, spec and pruning (checked).
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let meta_path = dir.join(CHECKPOINT_META);
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| ModelError::io(&meta_path, e))?;
        let meta: CheckpointMeta =
            serde_json::from_str(&text).map_err(|e| ModelError::json(&meta_path, e))?;
        if meta.config != self.config
            || meta.spec != self.spec
            || meta.head_prune != self.head_prune
        {
            return Err(ModelError::Train(format!(
                "checkpoint {} was written with other settings ({:?}, {:?}, prune {}); this run has ({:?}, {:?}, prune {})",
                dir.display(),
                meta.config,
                meta.spec,
                meta.head_prune,
                self.config,
                self.spec,
                self.head_prune
            )));
        }
        if meta.keys != self.keys {
            return Err(ModelError::Train(
                "checkpoint adapters are on other (layer, projection) pairs".into(),
            ));
        }
        let path = dir.join(&meta.tensors);
        let mut tensors =
            crate::weights::read_safetensors(std::slice::from_ref(&path), self.base.device())?;
        let mut take = |name: String| {
            tensors
                .remove(&name)
                .ok_or_else(|| ModelError::Train(format!("{} lacks {name}", path.display())))
        };
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (i, var) in self.vars.iter().enumerate() {
            let p = take(format!("p{i}"))?;
            if p.dims() != var.dims() {
                return Err(ModelError::Train(format!(
                    "checkpoint parameter {i} is {:?}, expected {:?}",
                    p.dims(),
                    var.dims()
                )));
            }
            var.set(&p)?;
            m.push(take(format!("m{i}"))?);
            v.push(take(format!("v{i}"))?);
        }
        self.opt.restore(meta.step, m, v)?;
        self.sequences = meta.sequences;
        self.losses = meta.losses;
        Ok(())
    }
}

/// Held-out statistics: summed negative log-likelihood, tokens, correct next-token guesses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EvalStats {
    /// Predicted tokens.
    pub tokens: usize,
    /// Sum of `−log p(target)` (nats).
    pub nll: f64,
    /// Positions whose argmax is the target.
    pub correct: usize,
}

impl EvalStats {
    /// `exp(mean nll)`.
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.tokens.max(1) as f64).exp()
    }

    /// Fraction of positions predicted right.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens.max(1) as f64
    }

    /// Adds the statistics of logits `(t, vocab)` against `targets` (`t` ids).
    pub fn add_logits(&mut self, logits: &Tensor, targets: &[u32]) -> Result<()> {
        let (t, _) = logits.dims2()?;
        if t != targets.len() {
            return Err(ModelError::input(format!(
                "{t} logit rows for {} targets",
                targets.len()
            )));
        }
        let tgt = Tensor::new(targets, logits.device())?.unsqueeze(1)?;
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let picked: Vec<f32> = logp.gather(&tgt, 1)?.squeeze(1)?.to_vec1()?;
        let argmax: Vec<u32> = logits.argmax(D::Minus1)?.to_vec1()?;
        self.tokens += t;
        self.nll -= picked.iter().map(|&x| x as f64).sum::<f64>();
        self.correct += argmax.iter().zip(targets).filter(|(a, b)| a == b).count();
        Ok(())
    }
}

/// Perplexity and next-token accuracy of `model` (plaintext) on the given windows of `data`.
pub fn evaluate(model: &Llama, data: &TokenWindows, windows: &[usize]) -> Result<EvalStats> {
    let t = data.seq_len();
    let mut stats = EvalStats::default();
    for &i in windows {
        let w = data.window(i);
        let mut cache = model.new_cache();
        let logits = model.forward(&w[..t], 0, &mut cache)?.squeeze(0)?;
        stats.add_logits(&logits, &w[1..])?;
    }
    Ok(stats)
}

/// The device of the training tensors (CPU today).
pub fn device() -> Device {
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{LoraSpec, PublicLayers};
    use crate::tiny::{tiny_config, tiny_weights, TinyOptions};
    use crate::weights::TensorStore;
    use crate::LoraInit;

    fn tiny() -> Llama {
        let opts = TinyOptions::default();
        let cfg = tiny_config(&opts).expect("cfg");
        let store = TensorStore::new(tiny_weights(&cfg, opts.seed, &Device::Cpu).expect("weights"));
        Llama::load(&store, &cfg, &Device::Cpu).expect("model")
    }

    fn no_lora(n_public: usize, head_merge: usize) -> MarillSpec {
        MarillSpec {
            public_layers: PublicLayers::Count(n_public),
            lora: None,
            head_merge,
        }
    }

    /// The differentiable primitives compute what the fused kernels compute.
    #[test]
    fn grad_ops_match_fused_kernels() {
        let base = tiny();
        let spec = no_lora(1, 2);
        let fused = base.with_marill(&spec, None).expect("spec");
        let slow = fused.with_grad_ops(true);
        let ids = [5u32, 9, 77, 3, 100, 42];
        let a = fused.forward(&ids, 0, &mut fused.new_cache()).expect("f");
        let b = slow.forward(&ids, 0, &mut slow.new_cache()).expect("s");
        let d = crate::llama::max_abs_diff(&a, &b).expect("diff");
        assert!(d < 1e-4, "fused vs differentiable ops differ by {d}");
    }

    /// Gradients reach the adapters of the first private layer through all later layers (the
    /// fused kernels would stop them silently), and none reach a base weight.
    #[test]
    fn gradients_reach_every_adapter() {
        let base = tiny();
        let spec = MarillSpec {
            public_layers: PublicLayers::Count(2),
            lora: Some(LoraSpec {
                rank: 2,
                alpha: 4.0,
                targets: vec![Target::Q, Target::Down],
            }),
            head_merge: 2,
        };
        let resolved = spec.resolve(base.config()).expect("resolve");
        let init = LoraAdapters::init(
            base.config(),
            &resolved,
            LoraInit::Random { seed: 1, std: 0.1 },
            &Device::Cpu,
        )
        .expect("init");
        let tr = Trainer::new(&base, &spec, 1, &init, TrainConfig::default()).expect("trainer");
        let w: Vec<u32> = (0..65).map(|i| (i * 7 % 250) as u32).collect();
        let grads = tr.loss(&[&w]).expect("loss").backward().expect("backward");
        for var in &tr.vars {
            let g = grads
                .get(var.as_tensor())
                .expect("a gradient for every adapter");
            let norm = g.sqr().expect("sqr").sum_all().expect("sum");
            assert!(norm.to_scalar::<f32>().expect("scalar") > 0.0);
        }
        assert!(grads
            .get(base.layers()[3].mlp().down_proj().weight())
            .is_none());
        assert!(grads.get(base.embed_tokens()).is_none());
    }

    /// A repetitive token stream: a 12-token phrase over and over.
    fn repetitive(n: usize) -> TokenWindows {
        let phrase = [40u32, 71, 94, 12, 200, 33, 40, 71, 150, 9, 88, 61];
        let tokens = (0..n).map(|i| phrase[i % phrase.len()]).collect();
        TokenWindows::new(tokens, 16).expect("windows")
    }

    fn lora_spec(head_merge: usize) -> MarillSpec {
        MarillSpec {
            public_layers: PublicLayers::Count(2),
            lora: Some(LoraSpec {
                rank: 4,
                alpha: 8.0,
                targets: Target::ALL.to_vec(),
            }),
            head_merge,
        }
    }

    fn trainer(base: &Llama, head_merge: usize, prune: usize, distill: f64) -> Trainer {
        let spec = lora_spec(head_merge);
        let resolved = spec.resolve(base.config()).expect("resolve");
        let init = LoraAdapters::init(
            base.config(),
            &resolved,
            LoraInit::ZeroB { seed: 5 },
            &Device::Cpu,
        )
        .expect("init");
        let config = TrainConfig {
            seq_len: 16,
            micro_batch: 2,
            accum: 2,
            seed: 11,
            adamw: AdamWParams {
                lr: 1e-2,
                weight_decay: 0.01,
                ..Default::default()
            },
            distill_weight: distill,
        };
        Trainer::new(base, &spec, prune, &init, config).expect("trainer")
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("f32")
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// Every base tensor of a model: embedding, norms, every projection, head.
    fn base_tensors(m: &Llama) -> Vec<Tensor> {
        let mut out = vec![
            m.embed_tokens().clone(),
            m.norm().weight().clone(),
            m.lm_head().clone(),
        ];
        for l in m.layers() {
            out.push(l.input_layernorm().weight().clone());
            out.push(l.post_attention_layernorm().weight().clone());
            for t in Target::ALL {
                out.push(l.projection(t).weight().clone());
            }
        }
        out
    }

    /// Loss falls on a repetitive text (merging and pruning alike); afterwards every base
    /// weight equals a freshly loaded copy bit for bit, the public prefix computes exactly what
    /// the base computes, and every adapter moved.
    #[test]
    fn training_moves_only_adapters_and_loss_falls() {
        let data = repetitive(600);
        for (hm, prune, distill) in [(2, 1, 0.0), (1, 2, 0.0), (1, 1, 0.5)] {
            let base = tiny();
            let mut tr = trainer(&base, hm, prune, distill);
            let before = tr.adapters().expect("adapters");
            for _ in 0..12 {
                tr.step(&data).expect("step");
            }
            let l = tr.losses();
            let first = l[0];
            let last = l[l.len() - 3..].iter().sum::<f32>() / 3.0;
            assert!(
                last < 0.7 * first,
                "hm {hm} prune {prune} distill {distill}: loss {first} -> {last} ({l:?})"
            );
            let fresh = tiny();
            let tuned = tr.inference_model().expect("model");
            for (a, b) in base_tensors(&tuned).iter().zip(base_tensors(&fresh)) {
                assert_eq!(bits(a), bits(&b), "a base weight changed");
            }
            let ids: Vec<u32> = data.window(0)[..16].to_vec();
            let (mut c1, mut c2) = (tuned.new_cache(), fresh.new_cache());
            let h1 = tuned
                .forward_layers(&tuned.embed(&ids).expect("e"), 0..2, &mut c1, 0)
                .expect("prefix");
            let h2 = fresh
                .forward_layers(&fresh.embed(&ids).expect("e"), 0..2, &mut c2, 0)
                .expect("prefix");
            assert_eq!(bits(&h1), bits(&h2), "the public prefix changed");
            let after = tr.adapters().expect("adapters");
            assert_eq!(after.len(), 2 * Target::ALL.len());
            for ((k, p0), (_, p1)) in before.iter().zip(after.iter()) {
                assert!(k.0 >= 2, "adapter on a public layer");
                assert_ne!(bits(&p0.a), bits(&p1.a), "A of {k:?} did not move");
                assert_ne!(bits(&p0.b), bits(&p1.b), "B of {k:?} did not move");
            }
        }
    }

    /// Stopping after 3 steps, checkpointing, and resuming in a new trainer gives the adapters,
    /// losses and cursor of 7 uninterrupted steps, bit for bit.
    #[test]
    fn resume_equals_uninterrupted() {
        let data = repetitive(600);
        let base = tiny();
        let mut straight = trainer(&base, 2, 1, 0.0);
        for _ in 0..7 {
            straight.step(&data).expect("step");
        }
        let dir = std::env::temp_dir().join(format!("marill-train-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut first = trainer(&base, 2, 1, 0.0);
        for _ in 0..3 {
            first.step(&data).expect("step");
        }
        first.save_checkpoint(&dir).expect("save");
        first
            .step(&data)
            .expect("a step after the checkpoint is lost");
        drop(first);
        let mut resumed = trainer(&base, 2, 1, 0.0);
        resumed.resume(&dir).expect("resume");
        assert_eq!(resumed.step_count(), 3);
        for _ in 0..4 {
            resumed.step(&data).expect("step");
        }
        assert_eq!(resumed.losses(), straight.losses());
        assert_eq!(resumed.sequences(), straight.sequences());
        let (a, b) = (
            resumed.adapters().expect("a"),
            straight.adapters().expect("b"),
        );
        for ((ka, pa), (kb, pb)) in a.iter().zip(b.iter()) {
            assert_eq!(ka, kb);
            assert_eq!(bits(&pa.a), bits(&pb.a), "A of {ka:?}");
            assert_eq!(bits(&pa.b), bits(&pb.b), "B of {ka:?}");
        }
        let mut other = trainer(&base, 1, 1, 0.0);
        assert!(other.resume(&dir).is_err(), "a checkpoint of another spec");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn head_pruning_keeps_one_head_per_group() {
        let base = tiny();
        let spec = no_lora(2, 1);
        let m = base.with_marill(&spec, None).expect("spec");
        assert_eq!(m.with_head_pruning(1).expect("1").head_prune(), 1);
        let pruned = m.with_head_pruning(2).expect("2");
        assert_eq!(pruned.layers()[1].self_attn().head_prune(), 1);
        assert_eq!(pruned.layers()[2].self_attn().head_prune(), 2);
        let ids = [1u32, 2, 3, 4];
        let a = m.forward(&ids, 0, &mut m.new_cache()).expect("a");
        let b = pruned.forward(&ids, 0, &mut pruned.new_cache()).expect("b");
        assert!(crate::llama::max_abs_diff(&a, &b).expect("d") > 1e-3);
        assert!(m.with_head_pruning(3).is_err(), "3 does not divide 4 heads");
        let merged = base
            .with_marill(
                &MarillSpec {
                    head_merge: 2,
                    ..spec
                },
                None,
            )
            .expect("merged");
        assert!(merged.with_head_pruning(2).is_err(), "not both");
    }
}

//! LoRA adapters, kept unmerged.
//!
//! An adapted projection computes `x·Wᵀ + (alpha/rank)·(x·Aᵀ)·Bᵀ` in HF/PEFT layout, where the
//! base weight `W` is `(out, in)`, `A` is `(rank, in)` and `B` is `(out, rank)` (the same maths as
//! `x·W + (x·A)·B` with the row-vector convention of the architecture notes). The adapters are
//! never merged into `W`: under MPC, `x·W` with a public `W` is free, while a merged `W + A·B`
//! would be a private dense matrix.
//!
//! Adapters come from PEFT (`adapter_config.json` + `adapter_model.safetensors`, tensor names like
//! `base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`), or are generated for tests:
//! [`LoraInit::ZeroB`] (PEFT's own initialisation: random `A`, zero `B`, so the model equals the
//! base) and [`LoraInit::Random`] (both random, so the model differs).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::spec::{LoraSpec, ResolvedSpec, SpecError, Target};

/// File name of a PEFT adapter config.
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
/// File name of PEFT adapter weights.
pub const PEFT_WEIGHTS_FILE: &str = "adapter_model.safetensors";

const PEFT_PREFIX: &str = "base_model.model.";

/// One adapter: `A` is `(rank, in)`, `B` is `(out, rank)` (PEFT layout).
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// Down-projection, `(rank, in)`.
    pub a: Tensor,
    /// Up-projection, `(out, rank)`.
    pub b: Tensor,
}

/// How to initialise generated adapters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoraInit {
    /// `A` uniform with variance `1/in` (seeded), `B = 0`: the adapted model equals the base.
    ZeroB {
        /// RNG seed.
        seed: u64,
    },
    /// `A` and `B` uniform (seeded) with standard deviation `std`.
    Random {
        /// RNG seed.
        seed: u64,
        /// Standard deviation of every entry.
        std: f32,
    },
}

/// A set of adapters for one model: rank, alpha, and one [`LoraPair`] per `(layer, target)`.
#[derive(Debug, Clone)]
pub struct LoraAdapters {
    rank: usize,
    alpha: f64,
    pairs: BTreeMap<(usize, Target), LoraPair>,
}

/// The fields of PEFT's `adapter_config.json` this crate reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Must be `"LORA"` when present.
    #[serde(default)]
    pub peft_type: Option<String>,
    /// Rank `r`.
    pub r: usize,
    /// `lora_alpha`.
    pub lora_alpha: f64,
    /// Module names (`["q_proj", "v_proj"]`) or the string `"all-linear"`.
    pub target_modules: serde_json::Value,
    /// Layers that carry adapters (`null` = all).
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Must be `"none"`.
    #[serde(default)]
    pub bias: Option<String>,
    /// Must be false.
    #[serde(default)]
    pub use_rslora: Option<bool>,
    /// Must be false.
    #[serde(default)]
    pub use_dora: Option<bool>,
    /// Must be false.
    #[serde(default)]
    pub fan_in_fan_out: Option<bool>,
    /// Must be empty or null.
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
}

impl PeftConfig {
    /// The targets named by `target_modules`.
    pub fn targets(&self) -> Result<Vec<Target>> {
        match &self.target_modules {
            serde_json::Value::String(s) if s == "all-linear" => Ok(Target::ALL.to_vec()),
            serde_json::Value::Array(items) => {
                let mut targets = Vec::new();
                for item in items {
                    let name = item.as_str().ok_or_else(|| {
                        ModelError::Lora(format!("target_modules entry {item} is not a string"))
                    })?;
                    let t = Target::from_module_name(name).ok_or_else(|| {
                        ModelError::Lora(format!(
                            "unsupported target module {name:?} (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                        ))
                    })?;
                    if !targets.contains(&t) {
                        targets.push(t);
                    }
                }
                targets.sort();
                Ok(targets)
            }
            other => Err(ModelError::Lora(format!(
                "target_modules must be a list of module names or \"all-linear\", got {other}"
            ))),
        }
    }

    fn check_supported(&self) -> Result<()> {
        if let Some(t) = &self.peft_type {
            if t != "LORA" {
                return Err(ModelError::Lora(format!("peft_type {t:?} is not LORA")));
            }
        }
        if self.use_dora == Some(true) {
            return Err(ModelError::Lora("DoRA (use_dora) is not supported".into()));
        }
        if self.use_rslora == Some(true) {
            return Err(ModelError::Lora(
                "rsLoRA (use_rslora, scale alpha/sqrt(r)) is not supported".into(),
            ));
        }
        if self.fan_in_fan_out == Some(true) {
            return Err(ModelError::Lora("fan_in_fan_out is not supported".into()));
        }
        if let Some(bias) = &self.bias {
            if bias != "none" {
                return Err(ModelError::Lora(format!(
                    "bias {bias:?} is not supported (only \"none\")"
                )));
            }
        }
        match &self.modules_to_save {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(a)) if a.is_empty() => {}
            Some(other) => {
                return Err(ModelError::Lora(format!(
                    "modules_to_save {other} is not supported (fully trained modules)"
                )))
            }
        }
        Ok(())
    }
}

fn uniform(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    // Uniform on [-a, a] has variance a²/3.
    let a = std * 3f32.sqrt();
    (0..n).map(|_| rng.gen_range(-a..=a)).collect()
}

impl LoraAdapters {
    /// An empty set with the given rank and alpha.
    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            pairs: BTreeMap::new(),
        }
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `lora_alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The multiplier `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Number of adapters.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are no adapters.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The adapter of `(layer, target)`, if any.
    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    /// All adapters in `(layer, target)` order.
    pub fn iter(&self) -> impl Iterator<Item = (&(usize, Target), &LoraPair)> {
        self.pairs.iter()
    }

    /// Adds an adapter, checking `A` is `(rank, _)` and `B` is `(_, rank)`.
    pub fn insert(&mut self, layer: usize, target: Target, pair: LoraPair) -> Result<()> {
        let (ar, _) = pair.a.dims2()?;
        let (_, br) = pair.b.dims2()?;
        if ar != self.rank || br != self.rank {
            return Err(ModelError::Lora(format!(
                "adapter {target} of layer {layer}: A is {:?}, B is {:?}, rank is {}",
                pair.a.dims(),
                pair.b.dims(),
                self.rank
            )));
        }
        self.pairs.insert((layer, target), pair);
        Ok(())
    }

    /// Generates adapters for every private layer and every target of `spec`'s LoRA.
    pub fn init(
        cfg: &ModelConfig,
        spec: &ResolvedSpec,
        init: LoraInit,
        device: &Device,
    ) -> Result<Self> {
        let lora = spec.lora().ok_or_else(|| {
            SpecError::LoraMismatch("cannot generate adapters: the spec has no lora".into())
        })?;
        let mut out = Self::new(lora.rank, lora.alpha);
        let seed = match init {
            LoraInit::ZeroB { seed } | LoraInit::Random { seed, .. } => seed,
        };
        let mut rng = StdRng::seed_from_u64(seed);
        let r = lora.rank;
        for layer in spec.private_layers() {
            for &target in &lora.targets {
                let (d_in, d_out) = target.dims(cfg);
                let (a, b) = match init {
                    LoraInit::ZeroB { .. } => (
                        uniform(&mut rng, r * d_in, 1.0 / (d_in as f32).sqrt()),
                        vec![0f32; d_out * r],
                    ),
                    LoraInit::Random { std, .. } => (
                        uniform(&mut rng, r * d_in, std),
                        uniform(&mut rng, d_out * r, std),
                    ),
                };
                let pair = LoraPair {
                    a: Tensor::from_vec(a, (r, d_in), device)?,
                    b: Tensor::from_vec(b, (d_out, r), device)?,
                };
                out.insert(layer, target, pair)?;
            }
        }
        Ok(out)
    }

    /// Checks these adapters fit `cfg` and `spec`: same rank and alpha, shapes right, only on
    /// private layers and only on the spec's targets. A `(private layer, target)` pair without an
    /// adapter is allowed and keeps the base projection.
    pub fn validate(&self, cfg: &ModelConfig, spec: &ResolvedSpec) -> Result<()> {
        let lora = spec.lora().ok_or_else(|| {
            SpecError::LoraMismatch(
                "adapters were given but the spec has no lora (private layers are full-rank)"
                    .into(),
            )
        })?;
        if lora.rank != self.rank || lora.alpha != self.alpha {
            return Err(SpecError::LoraMismatch(format!(
                "adapters have rank {} alpha {}, the spec says rank {} alpha {}",
                self.rank, self.alpha, lora.rank, lora.alpha
            ))
            .into());
        }
        for (&(layer, target), pair) in &self.pairs {
            if layer >= cfg.n_layers {
                return Err(ModelError::Lora(format!(
                    "adapter on layer {layer}, but the model has {} layers",
                    cfg.n_layers
                )));
            }
            if !spec.is_private(layer) {
                return Err(SpecError::LoraOnPublicLayer {
                    layer,
                    n_public: spec.n_public(),
                }
                .into());
            }
            if !lora.has_target(target) {
                return Err(SpecError::LoraTargetNotInSpec { layer, target }.into());
            }
            let (d_in, d_out) = target.dims(cfg);
            if pair.a.dims() != [self.rank, d_in] || pair.b.dims() != [d_out, self.rank] {
                return Err(ModelError::Lora(format!(
                    "adapter {target} of layer {layer}: A is {:?} (expected {:?}), B is {:?} (expected {:?})",
                    pair.a.dims(),
                    [self.rank, d_in],
                    pair.b.dims(),
                    [d_out, self.rank]
                )));
            }
        }
        Ok(())
    }

    /// The [`LoraSpec`] these adapters imply (targets present anywhere).
    pub fn spec(&self) -> LoraSpec {
        let mut targets: Vec<Target> = self.pairs.keys().map(|&(_, t)| t).collect();
        targets.sort();
        targets.dedup();
        LoraSpec {
            rank: self.rank,
            alpha: self.alpha,
            targets,
        }
    }

    /// Imports a PEFT adapter directory. Returns the LoRA spec declared by its config (rank,
    /// alpha, `target_modules`) and the adapters. Unknown tensors are an error.
    pub fn from_peft_dir(dir: &Path, device: &Device) -> Result<(LoraSpec, Self)> {
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
        let peft: PeftConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::json(&cfg_path, e))?;
        peft.check_supported()?;
        if peft.r == 0 {
            return Err(ModelError::Lora("r must be > 0".into()));
        }
        let targets = peft.targets()?;
        let spec = LoraSpec {
            rank: peft.r,
            alpha: peft.lora_alpha,
            targets,
        };
        let weights_path = dir.join(PEFT_WEIGHTS_FILE);
        let tensors = crate::weights::read_safetensors(&[weights_path], device)?;
        let mut a_parts: HashMap<(usize, Target), Tensor> = HashMap::new();
        let mut b_parts: HashMap<(usize, Target), Tensor> = HashMap::new();
        for (name, t) in tensors {
            let (layer, target, is_a) = parse_peft_name(&name).ok_or_else(|| {
                ModelError::Lora(format!("unexpected tensor {name} in {PEFT_WEIGHTS_FILE}"))
            })?;
            if !spec.has_target(target) {
                return Err(ModelError::Lora(format!(
                    "tensor {name} targets {target}, which target_modules does not list"
                )));
            }
            let t = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
            let slot = if is_a { &mut a_parts } else { &mut b_parts };
            slot.insert((layer, target), t);
        }
        let mut adapters = Self::new(spec.rank, spec.alpha);
        for (key, a) in a_parts {
            let b = b_parts.remove(&key).ok_or_else(|| {
                ModelError::Lora(format!(
                    "layer {} target {} has lora_A but no lora_B",
                    key.0, key.1
                ))
            })?;
            adapters.insert(key.0, key.1, LoraPair { a, b })?;
        }
        if let Some((layer, target)) = b_parts.keys().next() {
            return Err(ModelError::Lora(format!(
                "layer {layer} target {target} has lora_B but no lora_A"
            )));
        }
        Ok((spec, adapters))
    }

    /// Writes these adapters as a PEFT directory (`adapter_config.json` +
    /// `adapter_model.safetensors`), targets as in `spec`.
    pub fn save_peft(&self, dir: &Path, spec: &LoraSpec) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let cfg = PeftConfig {
            peft_type: Some("LORA".into()),
            r: self.rank,
            lora_alpha: self.alpha,
            target_modules: serde_json::Value::Array(
                spec.targets
                    .iter()
                    .map(|t| serde_json::Value::String(t.module_name().into()))
                    .collect(),
            ),
            layers_to_transform: None,
            bias: Some("none".into()),
            use_rslora: Some(false),
            use_dora: Some(false),
            fan_in_fan_out: Some(false),
            modules_to_save: None,
        };
        let cfg_path = dir.join(PEFT_CONFIG_FILE);
        let text =
            serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::json(&cfg_path, e))?;
        std::fs::write(&cfg_path, text).map_err(|e| ModelError::io(&cfg_path, e))?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (&(layer, target), pair) in &self.pairs {
            let stem = format!(
                "{PEFT_PREFIX}model.layers.{layer}.{}.{}",
                target.parent(),
                target.module_name()
            );
            tensors.insert(format!("{stem}.lora_A.weight"), pair.a.clone());
            tensors.insert(format!("{stem}.lora_B.weight"), pair.b.clone());
        }
        let weights_path = dir.join(PEFT_WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &weights_path)
            .map_err(|e| ModelError::io(&weights_path, std::io::Error::other(e.to_string())))
    }
}

/// Parses `base_model.model.model.layers.N.<parent>.<module>.lora_{A,B}[.default].weight`.
fn parse_peft_name(name: &str) -> Option<(usize, Target, bool)> {
    let rest = name
        .strip_prefix(PEFT_PREFIX)?
        .strip_prefix("model.layers.")?;
    let parts: Vec<&str> = rest.split('.').collect();
    let (layer, parent, module, ab, tail) = match parts.as_slice() {
        [layer, parent, module, ab, "weight"] => (*layer, *parent, *module, *ab, None),
        [layer, parent, module, ab, adapter, "weight"] => {
            (*layer, *parent, *module, *ab, Some(*adapter))
        }
        _ => return None,
    };
    if tail.is_some_and(|a| a != "default") {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let target = Target::from_module_name(module)?;
    if target.parent() != parent {
        return None;
    }
    let is_a = match ab {
        "lora_A" => true,
        "lora_B" => false,
        _ => return None,
    };
    Some((layer, target, is_a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peft_names() {
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, Target::Q, true))
        );
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.11.mlp.down_proj.lora_B.default.weight"),
            Some((11, Target::Down, false))
        );
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.1.mlp.q_proj.lora_A.weight"),
            None
        );
        assert_eq!(
            parse_peft_name("base_model.model.lm_head.lora_A.weight"),
            None
        );
    }

    #[test]
    fn peft_target_modules() {
        let mut cfg: PeftConfig = serde_json::from_str(
            r#"{"r": 4, "lora_alpha": 8, "target_modules": ["v_proj", "q_proj", "q_proj"]}"#,
        )
        .expect("valid");
        assert_eq!(cfg.targets().expect("known"), vec![Target::Q, Target::V]);
        cfg.target_modules = serde_json::json!("all-linear");
        assert_eq!(cfg.targets().expect("known").len(), 7);
        cfg.target_modules = serde_json::json!(["embed_tokens"]);
        assert!(cfg
            .targets()
            .expect_err("unknown")
            .to_string()
            .contains("unsupported target module \"embed_tokens\""));
        cfg.use_dora = Some(true);
        assert!(cfg.check_supported().is_err());
    }
}

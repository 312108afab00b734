//! The exported Marill model: what `marill tune` hands to the workers and to `marill generate`.
//!
//! An export directory holds
//! - `marill.json` ([`ExportManifest`]): the Marill spec (public layers, LoRA rank/alpha/targets,
//!   head merging), the head-pruning factor of the baseline, the shape of the base model it was
//!   trained on (checked when loaded) and a free-form training summary;
//! - `adapters/`: the trained adapters in PEFT's format (`adapter_config.json` +
//!   `adapter_model.safetensors`), loadable by PEFT and by [`LoraAdapters::from_peft_dir`].
//!
//! The base weights are not copied: the public prefix and the private layers' base weights are
//! the public base model, which every party already holds. The private part of the model is
//! exactly the adapters plus the spec, and [`load_export`] rebuilds the served model from the
//! base model and this directory.

use std::path::Path;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::lora::LoraAdapters;
use crate::spec::MarillSpec;

/// File name of the manifest.
pub const MANIFEST_FILE: &str = "marill.json";
/// Sub-directory of the PEFT adapters.
pub const ADAPTERS_DIR: &str = "adapters";

/// The manifest of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportManifest {
    /// Format version (1).
    pub format: u32,
    /// The Marill layout the adapters were trained for.
    pub spec: MarillSpec,
    /// Head pruning on the private layers (1 = none; > 1 only for the plaintext baseline).
    pub head_prune: usize,
    /// The base model it was trained on (as given to `marill tune`; informative).
    pub base_model: String,
    /// Base model shape: layers, hidden size, vocabulary (checked on load).
    pub base_shape: (usize, usize, usize),
    /// Training summary (settings, steps, losses, times).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ExportManifest {
    fn check_base(&self, base: &Llama) -> Result<()> {
        let c = base.config();
        let shape = (c.n_layers, c.hidden_size, c.vocab_size);
        if shape != self.base_shape {
            return Err(ModelError::Train(format!(
                "the export was trained on a base model with (layers, hidden, vocab) = {:?}, this one has {shape:?}",
                self.base_shape
            )));
        }
        Ok(())
    }
}

/// Writes an export: the manifest and the adapters (PEFT format).
pub fn write_export(dir: &Path, manifest: &ExportManifest, adapters: &LoraAdapters) -> Result<()> {
    let lora = manifest
        .spec
        .lora
        .as_ref()
        .ok_or_else(|| ModelError::Train("an export needs a spec with LoRA".into()))?;
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    adapters.save_peft(&dir.join(ADAPTERS_DIR), lora)?;
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest).map_err(|e| ModelError::json(&path, e))?;
    std::fs::write(&path, text).map_err(|e| ModelError::io(&path, e))
}

/// Reads an export's manifest and adapters; the PEFT config must agree with the manifest's
/// LoRA settings.
pub fn read_export(dir: &Path, device: &Device) -> Result<(ExportManifest, LoraAdapters)> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let manifest: ExportManifest =
        serde_json::from_str(&text).map_err(|e| ModelError::json(&path, e))?;
    if manifest.format != 1 {
        return Err(ModelError::Train(format!(
            "{}: unknown export format {}",
            path.display(),
            manifest.format
        )));
    }
    let (peft_spec, adapters) = LoraAdapters::from_peft_dir(&dir.join(ADAPTERS_DIR), device)?;
    let mut declared =
        manifest.spec.lora.clone().ok_or_else(|| {
            ModelError::Train(format!("{}: the spec has no LoRA", path.display()))
        })?;
    declared.targets.sort();
    if declared != peft_spec {
        return Err(ModelError::Train(format!(
            "{}: the manifest says LoRA {declared:?}, the PEFT adapters {peft_spec:?}",
            dir.display()
        )));
    }
    Ok((manifest, adapters))
}

/// The served model: `base` (no spec) laid out by the export's spec, with its adapters and
/// pruning.
pub fn apply_export(
    base: &Llama,
    manifest: &ExportManifest,
    adapters: &LoraAdapters,
) -> Result<Llama> {
    manifest.check_base(base)?;
    base.with_marill(&manifest.spec, Some(adapters))?
        .with_head_pruning(manifest.head_prune)
}

/// [`read_export`] then [`apply_export`].
pub fn load_export(base: &Llama, dir: &Path) -> Result<(ExportManifest, Llama)> {
    let (manifest, adapters) = read_export(dir, base.device())?;
    let model = apply_export(base, &manifest, &adapters)?;
    Ok((manifest, model))
}

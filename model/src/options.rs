//! What a process needs to load a Marill model, as a plain struct (the command-line layer maps
//! its flags onto it; the workers, the client and the tools load through it): the base model's
//! path and where the private layers' adapters come from, a `marill tune` export or generated
//! stand-ins under a Marill spec.

use crate::train::export::load_export;
use crate::TextTokenizer;
use crate::{Llama, LoadedModel, LoraAdapters, LoraInit, MarillSpec, ModelError, Result};
use candle_core::Device;
use std::path::PathBuf;

/// Where the private layers' adapters come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Adapters {
    /// a `marill tune` export (`marill.json` + `adapters/`): its spec and trained adapters
    Export(PathBuf),
    /// `spec` with generated adapters that start at B = 0 (the adapted model equals the base
    /// model until fine-tuned), seeded by `seed` (public: every process that loads the model
    /// generates the same ones)
    Generated {
        /// the public/private split, LoRA and head merging
        spec: MarillSpec,
        /// the adapters' seed
        seed: u64,
    },
}

/// How to load a Marill model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// a `.gguf` file or a directory with `config.json`, `*.safetensors`, `tokenizer.json`
    pub model: PathBuf,
    /// the adapters and the spec they come with
    pub adapters: Adapters,
}

impl ModelOptions {
    /// The base model (no spec) and its tokenizer; a missing file says how to fetch the
    /// default model.
    pub fn load_base(&self, device: &Device) -> Result<LoadedModel> {
        if !self.model.exists() {
            return Err(ModelError::Io {
                path: self.model.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "model not found (run `bash scripts/fetch-smollm2.sh` for SmolLM2-135M)",
                ),
            });
        }
        LoadedModel::load(&self.model, device)
    }

    /// The model with its Marill spec and adapters applied, and its tokenizer.
    pub fn load(&self, device: &Device) -> Result<(Llama, TextTokenizer)> {
        let loaded = self.load_base(device)?;
        let model = match &self.adapters {
            Adapters::Export(dir) => load_export(&loaded.model, dir)?.1,
            Adapters::Generated { spec, seed } => {
                let cfg = loaded.model.config().clone();
                let resolved = spec.resolve(&cfg)?;
                let adapters = match resolved.lora() {
                    Some(_) => Some(LoraAdapters::init(
                        &cfg,
                        &resolved,
                        LoraInit::ZeroB { seed: *seed },
                        device,
                    )?),
                    None => None,
                };
                loaded.model.with_marill(spec, adapters.as_ref())?
            }
        };
        Ok((model, loaded.tokenizer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LoraSpec, PublicLayers, Target};

    /// Generated rank-2 adapters on q with `public_layers` frozen.
    fn generated(public_layers: PublicLayers) -> Adapters {
        Adapters::Generated {
            spec: MarillSpec {
                public_layers,
                lora: Some(LoraSpec {
                    rank: 2,
                    alpha: 2.0,
                    targets: vec![Target::Q],
                }),
                head_merge: 1,
            },
            seed: 7,
        }
    }

    /// A missing model names itself and the command that fetches the default one.
    #[test]
    fn a_missing_model_says_how_to_fetch_one() {
        let o = ModelOptions {
            model: PathBuf::from("/nonexistent/model.gguf"),
            adapters: generated(PublicLayers::Fraction(0.5)),
        };
        let e = o.load(&Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("/nonexistent/model.gguf") && e.contains("fetch-smollm2.sh"),
            "{e}"
        );
    }

    /// Generated adapters give the model its spec, in the same way for every process that
    /// loads it (the same seed, the same adapters).
    #[test]
    fn generated_adapters_apply_the_spec() {
        let dir = std::env::temp_dir().join(format!("marill-options-{}", std::process::id()));
        crate::tiny::write_tiny_model(&dir, &Default::default()).unwrap();
        let o = ModelOptions {
            model: dir.clone(),
            adapters: generated(PublicLayers::Count(2)),
        };
        let (m, _) = o.load(&Device::Cpu).unwrap();
        assert_eq!(m.marill_spec().unwrap().n_public(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

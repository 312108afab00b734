//! Plaintext weights of a private suffix, in the `x·W` convention (`W` is in × out).

use crate::config::{SuffixConfig, SuffixError, Target};
use marill_mpc::prg::{Prg, Seed};
use std::collections::BTreeMap;

/// A dense row-major matrix (rows = input width, cols = output width).
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    /// rows
    pub rows: usize,
    /// columns
    pub cols: usize,
    /// row-major values
    pub data: Vec<f32>,
}

impl Mat {
    /// A matrix; fails on a length mismatch.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, SuffixError> {
        if rows * cols != data.len() {
            return Err(SuffixError::Weights(format!(
                "{rows}×{cols} matrix with {} values",
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// Zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Uniform values in `[-scale, scale]` from a PRG.
    pub fn random(rows: usize, cols: usize, scale: f32, prg: &mut Prg) -> Self {
        let data = (0..rows * cols)
            .map(|_| ((prg.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
            .collect();
        Self { rows, cols, data }
    }

    /// Value at (i, j).
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    /// Horizontal concatenation `[A | B | ...]` (same rows).
    pub fn hcat(parts: &[&Mat]) -> Result<Mat, SuffixError> {
        let rows = parts.first().map(|m| m.rows).unwrap_or(0);
        if parts.iter().any(|m| m.rows != rows) {
            return Err(SuffixError::Weights(
                "hcat of matrices with different rows".into(),
            ));
        }
        let cols: usize = parts.iter().map(|m| m.cols).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for m in parts {
                data.extend_from_slice(&m.data[i * m.cols..(i + 1) * m.cols]);
            }
        }
        Ok(Mat { rows, cols, data })
    }

    /// Block-diagonal matrix of the parts.
    pub fn block_diag(parts: &[&Mat]) -> Mat {
        let rows: usize = parts.iter().map(|m| m.rows).sum();
        let cols: usize = parts.iter().map(|m| m.cols).sum();
        let mut out = Mat::zeros(rows, cols);
        let (mut r0, mut c0) = (0, 0);
        for m in parts {
            for i in 0..m.rows {
                for j in 0..m.cols {
                    out.data[(r0 + i) * cols + c0 + j] = m.at(i, j);
                }
            }
            r0 += m.rows;
            c0 += m.cols;
        }
        out
    }

    /// Scales row i by `s[i]` (folding a norm's γ into the next projection: `diag(γ)·W`).
    pub fn scale_rows(&self, s: &[f32]) -> Mat {
        let mut out = self.clone();
        for (row, si) in out.data.chunks_mut(self.cols.max(1)).zip(s) {
            for v in row {
                *v *= si;
            }
        }
        out
    }

    /// Scales the columns `range` by `s`.
    pub fn scale_cols(&self, range: std::ops::Range<usize>, s: f32) -> Mat {
        let mut out = self.clone();
        for i in 0..self.rows {
            for j in range.clone() {
                out.data[i * self.cols + j] *= s;
            }
        }
        out
    }
}

/// A LoRA adapter: `x·A·B` with the `alpha/rank` scaling already folded into `B`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    /// in × r
    pub a: Mat,
    /// r × out
    pub b: Mat,
}

/// Weights of one decoder layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// RMSNorm before attention
    pub attn_norm: Vec<f32>,
    /// d × (heads·head_dim)
    pub wq: Mat,
    /// d × (kv_heads·head_dim)
    pub wk: Mat,
    /// d × (kv_heads·head_dim)
    pub wv: Mat,
    /// (heads·head_dim) × d
    pub wo: Mat,
    /// RMSNorm before the MLP
    pub mlp_norm: Vec<f32>,
    /// d × d_ff
    pub w_gate: Mat,
    /// d × d_ff
    pub w_up: Mat,
    /// d_ff × d
    pub w_down: Mat,
    /// adapters per target
    pub lora: BTreeMap<Target, Lora>,
}

/// Weights of a whole suffix.
#[derive(Clone, Debug, PartialEq)]
pub struct SuffixWeights {
    /// the private layers
    pub layers: Vec<LayerWeights>,
    /// final RMSNorm γ
    pub final_norm: Vec<f32>,
}

impl LayerWeights {
    /// The (input, output) widths of a projection.
    pub fn dims(cfg: &SuffixConfig, t: Target) -> (usize, usize) {
        match t {
            Target::Q => (cfg.d_model, cfg.q_width()),
            Target::K | Target::V => (cfg.d_model, cfg.kv_width()),
            Target::O => (cfg.q_width(), cfg.d_model),
            Target::Gate | Target::Up => (cfg.d_model, cfg.d_ff),
            Target::Down => (cfg.d_ff, cfg.d_model),
        }
    }

    /// The base weight of a projection.
    pub fn base(&self, t: Target) -> &Mat {
        match t {
            Target::Q => &self.wq,
            Target::K => &self.wk,
            Target::V => &self.wv,
            Target::O => &self.wo,
            Target::Gate => &self.w_gate,
            Target::Up => &self.w_up,
            Target::Down => &self.w_down,
        }
    }

    /// Checks every shape against the configuration.
    pub fn check(&self, cfg: &SuffixConfig) -> Result<(), SuffixError> {
        let err = |s: String| Err(SuffixError::Weights(s));
        if self.attn_norm.len() != cfg.d_model || self.mlp_norm.len() != cfg.d_model {
            return err("norm widths differ from d_model".into());
        }
        for t in Target::ALL {
            let (i, o) = Self::dims(cfg, t);
            let w = self.base(t);
            if (w.rows, w.cols) != (i, o) {
                return err(format!(
                    "{t:?} weight is {}×{}, expected {i}×{o}",
                    w.rows, w.cols
                ));
            }
            match (self.lora.get(&t), cfg.has_lora(t)) {
                (Some(l), true) => {
                    let r = cfg.lora.as_ref().map(|l| l.rank).unwrap_or(0);
                    if (l.a.rows, l.a.cols, l.b.rows, l.b.cols) != (i, r, r, o) {
                        return err(format!("{t:?} adapter has the wrong shape"));
                    }
                }
                (None, false) => {}
                (Some(_), false) => return err(format!("{t:?} has an adapter the config lacks")),
                (None, true) => return err(format!("{t:?} lacks its adapter")),
            }
        }
        Ok(())
    }
}

impl SuffixWeights {
    /// Seeded random weights of realistic scale (synthetic benchmarks and tests). LoRA `B` is
    /// random too (a trained adapter), unless `zero_b`.
    pub fn random(cfg: &SuffixConfig, seed: u64, zero_b: bool) -> Result<Self, SuffixError> {
        cfg.validate()?;
        let mut prg = Prg::new(Seed::from_u64(seed), 0x5eed);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let norm = |prg: &mut Prg| -> Vec<f32> {
            (0..cfg.d_model)
                .map(|_| 0.8 + 0.4 * (prg.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
                .collect()
        };
        for _ in 0..cfg.n_layers {
            let proj = |t: Target, prg: &mut Prg| {
                let (i, o) = LayerWeights::dims(cfg, t);
                Mat::random(i, o, 1.5 / (i as f32).sqrt(), prg)
            };
            let attn_norm = norm(&mut prg);
            let wq = proj(Target::Q, &mut prg);
            let wk = proj(Target::K, &mut prg);
            let wv = proj(Target::V, &mut prg);
            let wo = proj(Target::O, &mut prg);
            let mlp_norm = norm(&mut prg);
            let w_gate = proj(Target::Gate, &mut prg);
            let w_up = proj(Target::Up, &mut prg);
            let w_down = proj(Target::Down, &mut prg);
            let mut lora = BTreeMap::new();
            if let Some(l) = &cfg.lora {
                for &t in &l.targets {
                    let (i, o) = LayerWeights::dims(cfg, t);
                    let a = Mat::random(i, l.rank, 1.0 / (i as f32).sqrt(), &mut prg);
                    let b = if zero_b {
                        Mat::zeros(l.rank, o)
                    } else {
                        Mat::random(l.rank, o, 0.5 / (l.rank as f32).sqrt(), &mut prg)
                    };
                    lora.insert(t, Lora { a, b });
                }
            }
            layers.push(LayerWeights {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                mlp_norm,
                w_gate,
                w_up,
                w_down,
                lora,
            });
        }
        let final_norm = norm(&mut prg);
        Ok(Self { layers, final_norm })
    }

    /// Checks all shapes.
    pub fn check(&self, cfg: &SuffixConfig) -> Result<(), SuffixError> {
        cfg.validate()?;
        if self.layers.len() != cfg.n_layers {
            return Err(SuffixError::Weights(format!(
                "{} layers for a {}-layer suffix",
                self.layers.len(),
                cfg.n_layers
            )));
        }
        if self.final_norm.len() != cfg.d_model {
            return Err(SuffixError::Weights("final norm width".into()));
        }
        self.layers.iter().try_for_each(|l| l.check(cfg))
    }
}

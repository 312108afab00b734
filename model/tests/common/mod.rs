//! Shared test helpers: temp dirs, tiny models, and an independent f64 reference decoder.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use marill_model::llama::Projection;
use marill_model::tiny::{write_tiny_model, TinyOptions};
use marill_model::{Llama, LoadedModel};

/// A fresh, empty directory under cargo's per-target test tmpdir.
pub fn tmp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("marill-model-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create tmp dir");
    dir
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) for the tests that run the real model: where
/// `scripts/fetch-smollm2.sh` puts it, or `MARILL_SMOLLM2_GGUF`. A missing model fails the test
/// (never a silent pass): `scripts/test.sh` and CI fetch it first.
pub fn smollm2() -> PathBuf {
    let path = match std::env::var_os("MARILL_SMOLLM2_GGUF") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    assert!(
        path.is_file(),
        "{} absent: this test needs SmolLM2-135M; fetch it with `bash scripts/fetch-smollm2.sh` \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Writes a tiny model and loads it back through the real loading path.
pub fn tiny(name: &str, opts: &TinyOptions) -> LoadedModel {
    let dir = tmp_dir(name);
    write_tiny_model(&dir, opts).expect("write tiny model");
    LoadedModel::load(&dir, &Device::Cpu).expect("load tiny model")
}

/// Max |a - b| over two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    marill_model::llama::max_abs_diff(a, b).expect("same shapes")
}

/// Logits `(t, vocab)` as nested vectors.
pub fn logits_rows(logits: &Tensor) -> Vec<Vec<f32>> {
    logits.get(0).expect("batch 0").to_vec2().expect("2d")
}

type Mat = Vec<Vec<f64>>;

struct RefProj {
    w: Mat,
    /// `(A, B, alpha/rank)`.
    lora: Option<(Mat, Mat, f64)>,
}

fn mat(t: &Tensor) -> Vec<Vec<f64>> {
    let rows: Vec<Vec<f32>> = t.to_vec2().expect("2d weight");
    rows.into_iter()
        .map(|r| r.into_iter().map(f64::from).collect())
        .collect()
}

fn vec1(t: &Tensor) -> Vec<f64> {
    let v: Vec<f32> = t.to_vec1().expect("1d weight");
    v.into_iter().map(f64::from).collect()
}

impl RefProj {
    fn new(p: &Projection) -> Self {
        Self {
            w: mat(p.weight()),
            lora: p.lora().map(|(pair, s)| (mat(&pair.a), mat(&pair.b), s)),
        }
    }

    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let dot = |row: &Vec<f64>, x: &[f64]| row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        let mut y: Vec<f64> = self.w.iter().map(|row| dot(row, x)).collect();
        if let Some((a, b, s)) = &self.lora {
            let xa: Vec<f64> = a.iter().map(|row| dot(row, x)).collect();
            for (yi, brow) in y.iter_mut().zip(b) {
                *yi += s * dot(brow, &xa);
            }
        }
        y
    }
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

/// Rotate-half RoPE on one head vector at position `pos`.
fn rope(x: &mut [f64], pos: usize, theta: f64) {
    let d = x.len();
    let half = d / 2;
    for i in 0..half {
        let angle = pos as f64 * theta.powf(-(2.0 * i as f64) / d as f64);
        let (s, c) = angle.sin_cos();
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * c - b * s;
        x[i + half] = b * c + a * s;
    }
}

/// An independent, loop-based f64 forward pass of `model` (with its head merging and LoRA) over
/// `tokens` from position 0: logits `(t, vocab)`. Written from the maths in the architecture notes,
/// not from the candle implementation.
pub fn reference_logits(model: &Llama, tokens: &[u32]) -> Vec<Vec<f64>> {
    let cfg = model.config();
    let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
    let emb = mat(model.embed_tokens());
    let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| emb[t as usize].clone()).collect();
    let n = xs.len();
    for layer in model.layers() {
        let attn = layer.self_attn();
        let m = attn.head_merge();
        let scale = 1.0 / ((m * d) as f64).sqrt();
        let (qp, kp, vp, op) = (
            RefProj::new(attn.q_proj()),
            RefProj::new(attn.k_proj()),
            RefProj::new(attn.v_proj()),
            RefProj::new(attn.o_proj()),
        );
        let g1 = vec1(layer.input_layernorm().weight());
        let mut q = Vec::new();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for (p, x) in xs.iter().enumerate() {
            let h = rms_norm(x, &g1, cfg.rms_norm_eps);
            let mut qi = qp.apply(&h);
            let mut ki = kp.apply(&h);
            for head in 0..hq {
                rope(&mut qi[head * d..(head + 1) * d], p, cfg.rope_theta);
            }
            for head in 0..hkv {
                rope(&mut ki[head * d..(head + 1) * d], p, cfg.rope_theta);
            }
            q.push(qi);
            k.push(ki);
            v.push(vp.apply(&h));
        }
        let kv_of = |head: usize| head / (hq / hkv);
        let mut attn_out = vec![vec![0.0; hq * d]; n];
        for group in 0..hq / m {
            let heads: Vec<usize> = (group * m..(group + 1) * m).collect();
            for i in 0..n {
                // One softmax per merged head; its score sums the sub-heads' dot products.
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        heads
                            .iter()
                            .map(|&hh| {
                                (0..d)
                                    .map(|c| q[i][hh * d + c] * k[j][kv_of(hh) * d + c])
                                    .sum::<f64>()
                            })
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = exps.iter().sum();
                for &hh in &heads {
                    for c in 0..d {
                        attn_out[i][hh * d + c] =
                            (0..=i).map(|j| exps[j] / z * v[j][kv_of(hh) * d + c]).sum();
                    }
                }
            }
        }
        let g2 = vec1(layer.post_attention_layernorm().weight());
        let mlp = layer.mlp();
        let (gate, up, down) = (
            RefProj::new(mlp.gate_proj()),
            RefProj::new(mlp.up_proj()),
            RefProj::new(mlp.down_proj()),
        );
        for (x, a) in xs.iter_mut().zip(&attn_out) {
            let o = op.apply(a);
            x.iter_mut().zip(&o).for_each(|(xi, oi)| *xi += oi);
            let h = rms_norm(x, &g2, cfg.rms_norm_eps);
            let gv = gate.apply(&h);
            let uv = up.apply(&h);
            let act: Vec<f64> = gv
                .iter()
                .zip(&uv)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let dv = down.apply(&act);
            x.iter_mut().zip(&dv).for_each(|(xi, di)| *xi += di);
        }
    }
    let gn = vec1(model.norm().weight());
    let head = mat(model.lm_head());
    xs.iter()
        .map(|x| {
            let h = rms_norm(x, &gn, cfg.rms_norm_eps);
            head.iter()
                .map(|row| row.iter().zip(&h).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
}

/// Max |candle - reference| over all logits.
pub fn max_diff_vs_reference(logits: &Tensor, reference: &[Vec<f64>]) -> f64 {
    let got = logits_rows(logits);
    got.iter()
        .zip(reference)
        .flat_map(|(g, r)| g.iter().zip(r).map(|(a, b)| (f64::from(*a) - b).abs()))
        .fold(0.0, f64::max)
}

//! The f64 plaintext reference of the suffix: exactly the function the secure executor
//! computes (RMSNorm, RoPE in the Hugging Face "rotate half" layout, grouped-query attention with
//! head merging, unmerged LoRA, SwiGLU MLP, final RMSNorm), without fixed point or lookups.
//!
//! Head merging by m: query heads `g·m .. g·m+m−1` form merged head g; its score is the sum of
//! the m sub-head dot products (each sub-head uses its own key/value head under GQA), scaled by
//! `1/sqrt(m·head_dim)` — the usual scale for its width, which keeps the logit variance of an
//! original head (m = 1 is exactly the original model) — with one softmax per merged head whose weights apply to all m sub-heads' values. RoPE rotates every
//! original sub-head of width `head_dim` on its own, before merging.

use crate::config::{SuffixConfig, Target};
use crate::weights::{LayerWeights, Mat, SuffixWeights};

/// The plaintext KV cache (per layer: keys after RoPE and values, one row per position).
#[derive(Clone, Debug, Default)]
pub struct PlainCache {
    /// per layer, positions × kv_width
    pub k: Vec<Vec<f64>>,
    /// per layer, positions × kv_width
    pub v: Vec<Vec<f64>>,
}

/// `x (rows × w.rows) · w`.
pub fn matmul(x: &[f64], w: &Mat) -> Vec<f64> {
    let rows = x.len() / w.rows;
    let mut out = vec![0.0; rows * w.cols];
    for r in 0..rows {
        for i in 0..w.rows {
            let a = x[r * w.rows + i];
            if a == 0.0 {
                continue;
            }
            let row = &w.data[i * w.cols..(i + 1) * w.cols];
            let o = &mut out[r * w.cols..(r + 1) * w.cols];
            for (oj, wj) in o.iter_mut().zip(row) {
                *oj += a * *wj as f64;
            }
        }
    }
    out
}

/// RMSNorm of each row (width `d`), times γ.
pub fn rmsnorm(x: &[f64], gamma: &[f32], eps: f64) -> Vec<f64> {
    let d = gamma.len();
    let mut out = vec![0.0; x.len()];
    for (r, row) in x.chunks(d).enumerate() {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for j in 0..d {
            out[r * d + j] = row[j] * inv * gamma[j] as f64;
        }
    }
    out
}

/// SiLU.
pub fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// RoPE angles `pos · θ^(−2i/hd)` for `i < hd/2`.
pub fn rope_angles(cfg: &SuffixConfig, pos: usize) -> Vec<f64> {
    let hd = cfg.head_dim;
    (0..hd / 2)
        .map(|i| pos as f64 * cfg.rope_theta.powf(-2.0 * i as f64 / hd as f64))
        .collect()
}

fn rope_rows(cfg: &SuffixConfig, x: &mut [f64], width: usize, pos0: usize) {
    let hd = cfg.head_dim;
    let half = hd / 2;
    for (r, row) in x.chunks_mut(width).enumerate() {
        let ang = rope_angles(cfg, pos0 + r);
        for h in 0..width / hd {
            for (i, an) in ang.iter().enumerate() {
                let (a, b) = (h * hd + i, h * hd + i + half);
                let (c, s) = (an.cos(), an.sin());
                let (xa, xb) = (row[a], row[b]);
                row[a] = xa * c - xb * s;
                row[b] = xa * s + xb * c;
            }
        }
    }
}

fn project(cfg: &SuffixConfig, l: &LayerWeights, t: Target, x: &[f64]) -> Vec<f64> {
    let mut y = matmul(x, l.base(t));
    if cfg.has_lora(t) {
        if let Some(ad) = l.lora.get(&t) {
            let u = matmul(x, &ad.a);
            let v = matmul(&u, &ad.b);
            for (a, b) in y.iter_mut().zip(v) {
                *a += b;
            }
        }
    }
    y
}

/// Runs the suffix on `x` (T × d) at positions `pos0..pos0+T`, appending to `cache`; returns
/// the final normalised hidden state (T × d, times the final γ).
pub fn forward(
    cfg: &SuffixConfig,
    w: &SuffixWeights,
    x: &[f64],
    pos0: usize,
    cache: &mut PlainCache,
) -> Vec<f64> {
    let t = x.len() / cfg.d_model;
    let (hd, m) = (cfg.head_dim, cfg.head_merge);
    let group = cfg.n_heads / cfg.n_kv_heads;
    if cache.k.len() < cfg.n_layers {
        cache.k.resize(cfg.n_layers, Vec::new());
        cache.v.resize(cfg.n_layers, Vec::new());
    }
    let mut h = x.to_vec();
    for (li, l) in w.layers.iter().enumerate() {
        let a = rmsnorm(&h, &l.attn_norm, cfg.rms_eps);
        let mut q = project(cfg, l, Target::Q, &a);
        let mut k = project(cfg, l, Target::K, &a);
        let v = project(cfg, l, Target::V, &a);
        rope_rows(cfg, &mut q, cfg.q_width(), pos0);
        rope_rows(cfg, &mut k, cfg.kv_width(), pos0);
        cache.k[li].extend_from_slice(&k);
        cache.v[li].extend_from_slice(&v);
        let (kc, vc) = (&cache.k[li], &cache.v[li]);
        let ctx = kc.len() / cfg.kv_width();
        let scale = 1.0 / ((m * hd) as f64).sqrt();
        let mut out = vec![0.0; t * cfg.q_width()];
        for g in 0..cfg.merged_heads() {
            for i in 0..t {
                let seen = pos0 + i + 1;
                let mut s = vec![0.0; seen];
                for (j, sj) in s.iter_mut().enumerate() {
                    let mut acc = 0.0;
                    for sub in 0..m {
                        let head = g * m + sub;
                        let kvh = head / group;
                        for e in 0..hd {
                            acc += q[i * cfg.q_width() + head * hd + e]
                                * kc[j * cfg.kv_width() + kvh * hd + e];
                        }
                    }
                    *sj = acc * scale;
                }
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                for (j, sj) in s.iter().enumerate() {
                    let p = (sj - mx).exp() / z;
                    for sub in 0..m {
                        let head = g * m + sub;
                        let kvh = head / group;
                        for e in 0..hd {
                            out[i * cfg.q_width() + head * hd + e] +=
                                p * vc[j * cfg.kv_width() + kvh * hd + e];
                        }
                    }
                }
            }
        }
        debug_assert!(ctx >= pos0 + t);
        let o = project(cfg, l, Target::O, &out);
        for (a, b) in h.iter_mut().zip(o) {
            *a += b;
        }
        let b = rmsnorm(&h, &l.mlp_norm, cfg.rms_eps);
        let gate = project(cfg, l, Target::Gate, &b);
        let up = project(cfg, l, Target::Up, &b);
        let act: Vec<f64> = gate.iter().zip(&up).map(|(g, u)| silu(*g) * u).collect();
        let dn = project(cfg, l, Target::Down, &act);
        for (a, b) in h.iter_mut().zip(dn) {
            *a += b;
        }
    }
    rmsnorm(&h, &w.final_norm, cfg.rms_eps)
}

//! One party's secure executor of the private suffix.
//!
//! Flow: [`prepare`] (provider side, plaintext) folds every RMSNorm γ into the projection that
//! follows it (`norm(x)·diag(γ)·W = norm(x)·(diag(γ)·W)`, also into LoRA `A`), folds the
//! attention scale `1/sqrt(m·head_dim)` into the query columns, concatenates projections that read
//! the same input (q|k|v, gate|up; LoRA `A`s side by side and `B`s block-diagonal), encodes to
//! fixed point and splits private matrices into two shares. [`SecureSuffix::load`] masks every
//! private matrix once (`W − B` opened per model load). [`SecureSuffix::forward`] then runs
//! prefill (T tokens) or decoding (T = 1) with the KV cache kept as shares.
//!
//! Per layer: RMSNorm (6 rounds) → q|k|v projection (public `x·W` local; LoRA: `x·A`,
//! truncation, `·B`; private `W`: one masked product) → RoPE on the untruncated product (local,
//! public cos/sin) fused into the one truncation → scores `Q·Kᵀ` per merged head (one round for
//! all heads) → causal softmax on the untruncated scores → `P·V` (V kept at scale 2f when the
//! weights bound `|V|`) → o projection (its input truncated in its LoRA opening; LoRA without an
//! intermediate truncation: `(x·A)·B` kept at scale 3f and truncated once) → residual →
//! RMSNorm → gate|up → SwiGLU (`ops::swiglu`: truncation of gate and up in one opening, SiLU by a
//! signed bit-DPF lookup, `·up`, truncation) → down → residual.

use crate::config::{SuffixConfig, SuffixError, Target};
use crate::weights::{LayerWeights, Mat, SuffixWeights};
use marill_mpc::channel::Transport;
use marill_mpc::correlation::key_bucket;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::gemm::PublicWeights;
use marill_mpc::ops::lut::PiecewiseLinear;
use marill_mpc::ops::matmul::{
    mask_weight, matmul_many, matmul_weight, trunc_matmul_weight, MaskedWeight,
};
use marill_mpc::ops::mul::mul;
use marill_mpc::ops::nonlinear::silu_table;
use marill_mpc::ops::norm::{norm_rows, norm_rows_untruncated, Norm, NormKind};
use marill_mpc::ops::open::open_groups;
use marill_mpc::ops::softmax::{softmax_rows_visible, Softmax};
use marill_mpc::ops::swiglu::silu_mul_untruncated;
use marill_mpc::ops::trunc::{trunc, MaskPending};
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::ring::RingTensor;
use marill_mpc::{Party, PartyId};

/// A base weight as one party holds it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Base {
    /// public (frozen) weight, same at both parties; shared (not copied) by every session a
    /// worker loads from the same prepared suffix, packed for the public-weight product
    Public(std::sync::Arc<PublicWeights>),
    /// this party's share of a private weight
    Private(RingTensor),
}

/// A projection as prepared for one party.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PreparedProj {
    /// dealer id base of this projection's masks
    pub id: u64,
    /// base weight
    pub base: Base,
    /// shares of LoRA `A` (in × r) and `B` (r × out, alpha/r folded)
    pub lora: Option<(RingTensor, RingTensor)>,
}

/// One layer as prepared for one party.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PreparedLayer {
    /// q|k|v
    pub qkv: PreparedProj,
    /// attention output
    pub o: PreparedProj,
    /// gate|up
    pub gate_up: PreparedProj,
    /// down
    pub down: PreparedProj,
}

/// Where the final norm's γ is applied.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum FinalGamma {
    /// Public with no zero entry: the parties return the normalised state without γ and the
    /// client multiplies the reconstruction by γ (it holds the public model). This reveals
    /// nothing more: `y ⊙ γ` determines `y` when no `γ_j` is 0.
    AtClient,
    /// public with a zero entry: applied under 2PC
    Public(RingTensor),
    /// private (fine-tuned): this party's share, applied under 2PC
    Private(RingTensor),
}

/// Whether the client applies the final γ for this suffix (see [`FinalGamma::AtClient`]).
pub fn gamma_at_client(cfg: &SuffixConfig, w: &SuffixWeights) -> bool {
    !cfg.private_base && w.final_norm.iter().all(|g| *g != 0.0)
}

/// The client's last step on the reconstructed output (rows of `d_model` reals): multiplies by
/// γ when it is applied at the client (see [`FinalGamma::AtClient`]), otherwise leaves it.
pub fn finish_at_client(cfg: &SuffixConfig, w: &SuffixWeights, y: &mut [f64]) {
    if gamma_at_client(cfg, w) {
        for (k, v) in y.iter_mut().enumerate() {
            *v *= w.final_norm[k % cfg.d_model] as f64;
        }
    }
}

/// The suffix as prepared for one party (what the provider sends to each worker).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PreparedSuffix {
    /// which party
    pub party: PartyId,
    /// layers
    pub layers: Vec<PreparedLayer>,
    /// the final norm's γ
    pub final_gamma: FinalGamma,
    /// V stays at scale 2f in the cache and `P·V` is truncated by the o projection (one
    /// truncation of `T·kv_width` values less per layer); set by [`prepare`] only when the
    /// weights prove `|V| < 2^(61 − 3f)` (see [`value_limit`]).
    pub values_untruncated: bool,
}

/// The largest `|V|` for which V is kept untruncated: `P·V` at scale 3f then stays below
/// `2^61` (a softmax row sums to 1), inside exact truncation's `2^62`; 8192 at f = 16.
pub fn value_limit(fx: FixedPoint) -> f64 {
    2f64.powi(61 - 3 * fx.frac_bits() as i32)
}

/// A proven bound on `|V|` for one layer's fused q|k|v weights: the RMSNorm output `x̂` (γ is
/// folded into the weights' rows) has `‖x̂‖₂ ≤ √d`, so `|V_j| = |x̂·w_j| ≤ √d·‖w_j‖₂` for each
/// V column `w_j` of `W + A·B`; doubled for the secure norm's approximation error.
fn value_bound(cfg: &SuffixConfig, plain: &Plain) -> f64 {
    let (qw, kw) = (cfg.q_width(), cfg.kv_width());
    let d = plain.base.rows;
    let mut worst = 0f64;
    for j in qw + kw..qw + 2 * kw {
        let mut sq = 0f64;
        for i in 0..d {
            let mut w = plain.base.at(i, j) as f64;
            if let Some((a, b)) = &plain.lora {
                w += (0..a.cols)
                    .map(|r| a.at(i, r) as f64 * b.at(r, j) as f64)
                    .sum::<f64>();
            }
            sq += w * w;
        }
        worst = worst.max(sq.sqrt());
    }
    2.0 * (d as f64).sqrt() * worst
}

fn encode_mat(fx: FixedPoint, m: &Mat) -> Result<RingTensor, SuffixError> {
    let v = m
        .data
        .iter()
        .map(|x| fx.encode(*x as f64))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| SuffixError::Weights(e.to_string()))?;
    Ok(RingTensor::from_vec(&[m.rows, m.cols], v)?)
}

fn split(t: &RingTensor, prg: &mut Prg) -> (RingTensor, RingTensor) {
    let r = prg.ring_vec(t.len());
    let s0: Vec<u64> = t
        .data()
        .iter()
        .zip(&r)
        .map(|(a, b)| a.wrapping_sub(*b))
        .collect();
    (
        RingTensor::from_vec(t.shape(), s0).expect("same shape"),
        RingTensor::from_vec(t.shape(), r).expect("same shape"),
    )
}

struct Plain {
    base: Mat,
    lora: Option<(Mat, Mat)>,
}

/// Concatenates the projections `ts` (same input) with γ folded into rows and per-target
/// column scales.
fn fused(
    cfg: &SuffixConfig,
    l: &LayerWeights,
    ts: &[(Target, f32)],
    gamma: Option<&[f32]>,
) -> Result<Plain, SuffixError> {
    let scaled: Vec<Mat> = ts
        .iter()
        .map(|(t, s)| {
            let w = l.base(*t);
            w.scale_cols(0..w.cols, *s)
        })
        .collect();
    let mut base = Mat::hcat(&scaled.iter().collect::<Vec<_>>())?;
    if let Some(g) = gamma {
        base = base.scale_rows(g);
    }
    let adapted: Vec<&(Target, f32)> = ts.iter().filter(|(t, _)| cfg.has_lora(*t)).collect();
    let lora = if adapted.is_empty() {
        None
    } else {
        let a_parts: Vec<&Mat> = adapted.iter().map(|(t, _)| &l.lora[t].a).collect();
        let mut a = Mat::hcat(&a_parts)?;
        if let Some(g) = gamma {
            a = a.scale_rows(g);
        }
        // B: block rows per adapted target, placed in that target's output columns
        let r_total = a.cols;
        let mut b = Mat::zeros(r_total, base.cols);
        let mut r0 = 0;
        let mut c0 = 0;
        for (t, s) in ts {
            let width = l.base(*t).cols;
            if cfg.has_lora(*t) {
                let bt = &l.lora[t].b;
                for i in 0..bt.rows {
                    for j in 0..bt.cols {
                        b.data[(r0 + i) * base.cols + c0 + j] = bt.at(i, j) * s;
                    }
                }
                r0 += bt.rows;
            }
            c0 += width;
        }
        Some((a, b))
    };
    Ok(Plain { base, lora })
}

/// Provider side: turns plaintext suffix weights into what each party holds. Private matrices
/// are split with randomness from `seed` (in deployment a fresh secret seed per model load).
pub fn prepare(
    cfg: &SuffixConfig,
    w: &SuffixWeights,
    fx: FixedPoint,
    seed: Seed,
) -> Result<[PreparedSuffix; 2], SuffixError> {
    w.check(cfg)?;
    let mut prg = Prg::new(seed, 0x5111);
    let qs = 1.0 / ((cfg.head_merge * cfg.head_dim) as f32).sqrt();
    let mut layers: [Vec<PreparedLayer>; 2] = [Vec::new(), Vec::new()];
    let mut values_untruncated = true;
    for (li, l) in w.layers.iter().enumerate() {
        let plains = [
            fused(
                cfg,
                l,
                &[(Target::Q, qs), (Target::K, 1.0), (Target::V, 1.0)],
                Some(&l.attn_norm),
            )?,
            fused(cfg, l, &[(Target::O, 1.0)], None)?,
            fused(
                cfg,
                l,
                &[(Target::Gate, 1.0), (Target::Up, 1.0)],
                Some(&l.mlp_norm),
            )?,
            fused(cfg, l, &[(Target::Down, 1.0)], None)?,
        ];
        values_untruncated &= value_bound(cfg, &plains[0]) < value_limit(fx);
        let mut per_party: [Vec<PreparedProj>; 2] = [Vec::new(), Vec::new()];
        for (pi, pl) in plains.into_iter().enumerate() {
            let id = (li as u64) << 8 | (pi as u64) << 4;
            let base = encode_mat(fx, &pl.base)?;
            let bases = if cfg.private_base {
                let (b0, b1) = split(&base, &mut prg);
                [Base::Private(b0), Base::Private(b1)]
            } else {
                let (k, n) = (pl.base.rows, pl.base.cols);
                let base = std::sync::Arc::new(PublicWeights::new(k, n, base.data()));
                [Base::Public(base.clone()), Base::Public(base)]
            };
            let loras = match &pl.lora {
                Some((a, b)) => {
                    let (a0, a1) = split(&encode_mat(fx, a)?, &mut prg);
                    let (b0, b1) = split(&encode_mat(fx, b)?, &mut prg);
                    [Some((a0, b0)), Some((a1, b1))]
                }
                None => [None, None],
            };
            for (party, (base, lora)) in bases.into_iter().zip(loras).enumerate() {
                per_party[party].push(PreparedProj { id, base, lora });
            }
        }
        for (party, mut v) in per_party.into_iter().enumerate() {
            let down = v.pop().expect("4 projections");
            let gate_up = v.pop().expect("4 projections");
            let o = v.pop().expect("4 projections");
            let qkv = v.pop().expect("4 projections");
            layers[party].push(PreparedLayer {
                qkv,
                o,
                gate_up,
                down,
            });
        }
    }
    let gamma: Vec<u64> = w
        .final_norm
        .iter()
        .map(|g| fx.encode(*g as f64))
        .collect::<Result<_, _>>()
        .map_err(|e| SuffixError::Weights(e.to_string()))?;
    let gamma = RingTensor::from_flat(gamma);
    let finals = if cfg.private_base {
        let (g0, g1) = split(&gamma, &mut prg);
        [FinalGamma::Private(g0), FinalGamma::Private(g1)]
    } else if gamma_at_client(cfg, w) {
        [FinalGamma::AtClient, FinalGamma::AtClient]
    } else {
        [FinalGamma::Public(gamma.clone()), FinalGamma::Public(gamma)]
    };
    let [l0, l1] = layers;
    let [f0, f1] = finals;
    Ok([
        PreparedSuffix {
            party: PartyId::P0,
            layers: l0,
            final_gamma: f0,
            values_untruncated,
        },
        PreparedSuffix {
            party: PartyId::P1,
            layers: l1,
            final_gamma: f1,
            values_untruncated,
        },
    ])
}

enum LoadedBase {
    Public(std::sync::Arc<PublicWeights>),
    Private(MaskedWeight),
}

struct LoadedProj {
    base: LoadedBase,
    lora: Option<(MaskedWeight, MaskedWeight)>,
}

struct LoadedLayer {
    qkv: LoadedProj,
    o: LoadedProj,
    gate_up: LoadedProj,
    down: LoadedProj,
    cache_k: Vec<u64>,
    cache_v: Vec<u64>,
}

/// One party's loaded suffix: masked weights, tables and the secret-shared KV cache.
pub struct SecureSuffix {
    cfg: SuffixConfig,
    fx: FixedPoint,
    layers: Vec<LoadedLayer>,
    final_gamma: FinalGamma,
    values_untruncated: bool,
    norm: Norm,
    softmax: Softmax,
    silu: PiecewiseLinear,
    pos: usize,
}

async fn load_proj<T: Transport>(
    p: &mut Party<T>,
    pp: PreparedProj,
) -> Result<LoadedProj, SuffixError> {
    let base = match pp.base {
        Base::Public(w) => LoadedBase::Public(w),
        Base::Private(w) => LoadedBase::Private(mask_weight(p, pp.id, &w).await?),
    };
    let lora = match pp.lora {
        Some((a, b)) => Some((
            mask_weight(p, pp.id + 1, &a).await?,
            mask_weight(p, pp.id + 2, &b).await?,
        )),
        None => None,
    };
    Ok(LoadedProj { base, lora })
}

impl SecureSuffix {
    /// Loads a prepared suffix: masks every private matrix once (one round each).
    pub async fn load<T: Transport>(
        p: &mut Party<T>,
        cfg: &SuffixConfig,
        prepared: PreparedSuffix,
    ) -> Result<Self, SuffixError> {
        cfg.validate()?;
        if prepared.party != p.id {
            return Err(SuffixError::Input(
                "prepared suffix belongs to the other party".into(),
            ));
        }
        let fx = p.fx;
        let mut layers = Vec::with_capacity(prepared.layers.len());
        for l in prepared.layers {
            layers.push(LoadedLayer {
                qkv: load_proj(p, l.qkv).await?,
                o: load_proj(p, l.o).await?,
                gate_up: load_proj(p, l.gate_up).await?,
                down: load_proj(p, l.down).await?,
                cache_k: Vec::new(),
                cache_v: Vec::new(),
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            fx,
            layers,
            final_gamma: prepared.final_gamma,
            values_untruncated: prepared.values_untruncated,
            norm: Norm::new(
                fx,
                NormKind::Rms,
                cfg.d_model,
                cfg.rms_eps,
                cfg.norm_sum_bound,
            )?,
            softmax: Softmax::with_input_frac(
                fx,
                2 * fx.frac_bits(),
                cfg.score_bound,
                cfg.max_seq,
            )?,
            silu: silu_table(fx, cfg.act_bound)?,
            pos: 0,
        })
    }

    /// The suffix's configuration.
    pub fn config(&self) -> &SuffixConfig {
        &self.cfg
    }

    /// Bytes of the loaded weights: `(public, private)`. The public base weights are shared by
    /// every suffix loaded from the same prepared suffix (count them once); the private part
    /// (masked weights and mask shares) is this suffix's own.
    pub fn weight_bytes(&self) -> (usize, usize) {
        let masked = |w: &MaskedWeight| 8 * (w.f.len() + w.b.len());
        let (mut public, mut private) = (0, 0);
        for l in &self.layers {
            for pr in [&l.qkv, &l.o, &l.gate_up, &l.down] {
                match &pr.base {
                    LoadedBase::Public(w) => public += w.heap_bytes(),
                    LoadedBase::Private(w) => private += masked(w),
                }
                if let Some((a, b)) = &pr.lora {
                    private += masked(a) + masked(b);
                }
            }
        }
        (public, private)
    }

    /// Bytes of the KV-cache shares of `rows` positions (what a session of `rows` tokens
    /// holds at most).
    pub fn cache_bytes_for(&self, rows: usize) -> usize {
        let kv_width = self.cfg.n_kv_heads * self.cfg.head_dim;
        self.layers.len() * 2 * kv_width * rows * 8
    }

    /// Tokens processed so far (the next position).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Starts a new sequence: drops the KV cache (the masked weights stay loaded).
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            l.cache_k = Vec::new();
            l.cache_v = Vec::new();
        }
        self.pos = 0;
    }

    /// Bytes of this party's KV-cache shares.
    pub fn cache_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| 8 * (l.cache_k.len() + l.cache_v.len()))
            .sum()
    }

    /// Runs the suffix on this party's shares `x` (T × d, scale f) at the next T positions;
    /// returns shares of the final normalised hidden state (T × d, scale f), without γ when
    /// it is [`FinalGamma::AtClient`].
    pub async fn forward<T: Transport>(
        &mut self,
        p: &mut Party<T>,
        x: &[u64],
    ) -> Result<Vec<u64>, SuffixError> {
        let cfg = self.cfg.clone();
        let d = cfg.d_model;
        if x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(SuffixError::Input(format!(
                "{} values is not a multiple of d = {d}",
                x.len()
            )));
        }
        let t = x.len() / d;
        if self.pos + t > cfg.max_seq {
            return Err(SuffixError::Input(format!(
                "sequence of {} exceeds max_seq {}",
                self.pos + t,
                cfg.max_seq
            )));
        }
        let f = self.fx.frac_bits();
        let pos0 = self.pos;
        let mut h = x.to_vec();
        for li in 0..self.layers.len() {
            // attention block
            let a = norm_rows_untruncated(p, &self.norm, &h, None, None).await?;
            let acc = proj_untrunc(p, &self.layers[li].qkv, a, t, false).await?;
            let (q, k, v) = self.rope_and_split(p, acc, t, pos0).await?;
            let layer = &mut self.layers[li];
            layer.cache_k.extend_from_slice(&k);
            layer.cache_v.extend_from_slice(&v);
            let attn = attention(
                p,
                &cfg,
                &self.softmax,
                &q,
                &self.layers[li].cache_k,
                &self.layers[li].cache_v,
                t,
                pos0,
                self.values_untruncated,
            )
            .await?;
            let o = proj(p, &self.layers[li].o, attn, t, f).await?;
            add_in_place(&mut h, &o);
            // MLP block
            let b = norm_rows_untruncated(p, &self.norm, &h, None, None).await?;
            let gu_proj = &self.layers[li].gate_up;
            let fuse = gu_proj.lora.is_some();
            let gu = proj_untrunc(p, gu_proj, b, t, fuse).await?; // 2f, or 3f fused
            let ff = cfg.d_ff;
            let mut gate = Vec::with_capacity(t * ff);
            let mut up = Vec::with_capacity(t * ff);
            for r in 0..t {
                gate.extend_from_slice(&gu[r * 2 * ff..r * 2 * ff + ff]);
                up.extend_from_slice(&gu[r * 2 * ff + ff..(r + 1) * 2 * ff]);
            }
            let in_shift = if fuse { 2 * f } else { f };
            let act = silu_mul_untruncated(p, &self.silu, &gate, &up, in_shift).await?;
            let dn = proj(p, &self.layers[li].down, act, t, f).await?;
            add_in_place(&mut h, &dn);
        }
        self.pos += t;
        // final norm with γ
        let y = match &self.final_gamma {
            FinalGamma::AtClient => norm_rows(p, &self.norm, &h, None, None).await?,
            FinalGamma::Public(g) => norm_rows(p, &self.norm, &h, Some(g.data()), None).await?,
            FinalGamma::Private(g) => {
                let n = norm_rows(p, &self.norm, &h, None, None).await?;
                let gb: Vec<u64> = (0..n.len()).map(|k| g.data()[k % d]).collect();
                let z = mul(p, &n, &gb).await?;
                trunc(p, &z, f).await?
            }
        };
        Ok(y)
    }

    /// Applies RoPE to the q and k columns of the untruncated q|k|v product (scale 2f → 3f),
    /// then truncates q, k by 2f and v by f in one round (v stays at 2f when the suffix keeps
    /// values untruncated).
    async fn rope_and_split<T: Transport>(
        &self,
        p: &mut Party<T>,
        acc: Vec<u64>,
        t: usize,
        pos0: usize,
    ) -> Result<(Vec<u64>, Vec<u64>, Vec<u64>), SuffixError> {
        let cfg = &self.cfg;
        let (qw, kw) = (cfg.q_width(), cfg.kv_width());
        let width = qw + 2 * kw;
        let hd = cfg.head_dim;
        let half = hd / 2;
        let f = self.fx.frac_bits();
        let mut qk = Vec::with_capacity(t * (qw + kw));
        let mut v = Vec::with_capacity(t * kw);
        for r in 0..t {
            let row = &acc[r * width..(r + 1) * width];
            let ang = crate::plain::rope_angles(cfg, pos0 + r);
            let cs: Vec<(u64, u64)> = ang
                .iter()
                .map(|a| {
                    (
                        (a.cos() * self.fx.scale()).round() as i64 as u64,
                        (a.sin() * self.fx.scale()).round() as i64 as u64,
                    )
                })
                .collect();
            let rot = |seg: &[u64], out: &mut Vec<u64>| {
                for hh in 0..seg.len() / hd {
                    let base = hh * hd;
                    let mut tmp = vec![0u64; hd];
                    for i in 0..half {
                        let (xa, xb) = (seg[base + i], seg[base + i + half]);
                        let (c, s) = cs[i];
                        tmp[i] = xa.wrapping_mul(c).wrapping_sub(xb.wrapping_mul(s));
                        tmp[i + half] = xa.wrapping_mul(s).wrapping_add(xb.wrapping_mul(c));
                    }
                    out.extend_from_slice(&tmp);
                }
            };
            rot(&row[..qw], &mut qk);
            rot(&row[qw..qw + kw], &mut qk);
            v.extend_from_slice(&row[qw + kw..]);
        }
        let m1 = MaskPending::begin(p, &qk, &[2 * f], 0, &[])?;
        let m2 = if self.values_untruncated {
            None
        } else {
            Some(MaskPending::begin(p, &v, &[f], 0, &[])?)
        };
        let mut groups = vec![(m1.message(), 64)];
        if let Some(m) = &m2 {
            groups.push((m.message(), 64));
        }
        let opened = open_groups(p, &groups).await?;
        let mut it = opened.into_iter();
        let qk = m1.finish(it.next().expect("group")).trunc(2 * f)?;
        let v = match m2 {
            Some(m) => m.finish(it.next().expect("group")).trunc(f)?,
            None => v,
        };
        let mut q = Vec::with_capacity(t * qw);
        let mut k = Vec::with_capacity(t * kw);
        for r in 0..t {
            q.extend_from_slice(&qk[r * (qw + kw)..r * (qw + kw) + qw]);
            k.extend_from_slice(&qk[r * (qw + kw) + qw..(r + 1) * (qw + kw)]);
        }
        Ok((q, k, v))
    }
}

fn add_in_place(h: &mut [u64], o: &[u64]) {
    for (a, b) in h.iter_mut().zip(o) {
        *a = a.wrapping_add(*b);
    }
}

/// An activation entering a projection at scale `f + shift` (`.1` = shift): its truncation is
/// left to the projection, which fuses it into the LoRA opening when there is one.
type Act = (Vec<u64>, u32);

/// `x·W (+ x·A·B)` left untruncated: scale 2f, or 3f when `fuse_lora` keeps `(x·A)·B` whole.
/// An untruncated input is truncated in the same opening as the LoRA product `x·A` when the
/// base weight is public (one round and `8·|x|` bytes less than truncating first).
async fn proj_untrunc<T: Transport>(
    p: &mut Party<T>,
    pr: &LoadedProj,
    x: Act,
    rows: usize,
    fuse_lora: bool,
) -> Result<Vec<u64>, SuffixError> {
    let f = p.fx.frac_bits();
    let in_w = x.0.len() / rows;
    let (x, shift) = x;
    let (xt, xa) = match (&pr.base, &pr.lora) {
        (LoadedBase::Public(_), Some((a, _))) => {
            let xr = RingTensor::from_vec(&[rows, in_w], x)?;
            let (xt, u) = trunc_matmul_weight(p, &xr, shift, a).await?;
            (xt, Some(u))
        }
        _ => {
            let x = trunc(p, &x, shift).await?;
            (RingTensor::from_vec(&[rows, in_w], x)?, None)
        }
    };
    let mut acc = match &pr.base {
        LoadedBase::Public(w) => xt.matmul_public(w)?.into_data(),
        LoadedBase::Private(mw) => matmul_weight(p, &xt, mw).await?.into_data(),
    };
    if let Some((a, b)) = &pr.lora {
        let u = match xa {
            Some(u) => u,
            None => matmul_weight(p, &xt, a).await?, // scale 2f
        };
        let u = if fuse_lora {
            u
        } else {
            RingTensor::from_vec(u.shape(), trunc(p, u.data(), f).await?)?
        };
        let v = matmul_weight(p, &u, b).await?; // 3f fused, else 2f
        if fuse_lora {
            for (s, vv) in acc.iter_mut().zip(v.data()) {
                *s = (*s << f).wrapping_add(*vv);
            }
        } else {
            add_in_place(&mut acc, v.data());
        }
    }
    Ok(acc)
}

/// A projection truncated back to scale f.
async fn proj<T: Transport>(
    p: &mut Party<T>,
    pr: &LoadedProj,
    x: Act,
    rows: usize,
    f: u32,
) -> Result<Vec<u64>, SuffixError> {
    let fuse = pr.lora.is_some();
    let acc = proj_untrunc(p, pr, x, rows, fuse).await?;
    let shift = if fuse { 2 * f } else { f };
    Ok(trunc(p, &acc, shift).await?)
}

/// Attention of the T new queries over the whole cache, per merged head.
#[allow(clippy::too_many_arguments)]
async fn attention<T: Transport>(
    p: &mut Party<T>,
    cfg: &SuffixConfig,
    sm: &Softmax,
    q: &[u64],
    kc: &[u64],
    vc: &[u64],
    t: usize,
    pos0: usize,
    values_untruncated: bool,
) -> Result<Act, SuffixError> {
    let f = p.fx.frac_bits();
    let (hd, m) = (cfg.head_dim, cfg.head_merge);
    let (qw, kw) = (cfg.q_width(), cfg.kv_width());
    let group = cfg.n_heads / cfg.n_kv_heads;
    // the keys are padded with zeros to a bucket (masked out in the softmax, which every row
    // reads only up to its own position): the correlations a step consumes depend on its
    // bucket, not on its exact position (`marill_mpc::correlation::manifest`)
    let real = kc.len() / kw;
    let ctx = key_bucket(real, cfg.max_seq);
    let g_count = cfg.merged_heads();
    let mw = m * hd;
    let mut qs = Vec::with_capacity(g_count);
    let mut kts = Vec::with_capacity(g_count);
    let mut vs = Vec::with_capacity(g_count);
    for g in 0..g_count {
        let mut qg = Vec::with_capacity(t * mw);
        for i in 0..t {
            for sub in 0..m {
                let head = g * m + sub;
                qg.extend_from_slice(&q[i * qw + head * hd..i * qw + (head + 1) * hd]);
            }
        }
        // K_gᵀ (mw × ctx) and V_g (ctx × mw)
        let mut kt = vec![0u64; mw * ctx];
        let mut vg = Vec::with_capacity(ctx * mw);
        for j in 0..real {
            for sub in 0..m {
                let kvh = (g * m + sub) / group;
                let krow = &kc[j * kw + kvh * hd..j * kw + (kvh + 1) * hd];
                for (e, val) in krow.iter().enumerate() {
                    kt[(sub * hd + e) * ctx + j] = *val;
                }
                vg.extend_from_slice(&vc[j * kw + kvh * hd..j * kw + (kvh + 1) * hd]);
            }
        }
        vg.resize(ctx * mw, 0);
        qs.push(RingTensor::from_vec(&[t, mw], qg)?);
        kts.push(RingTensor::from_vec(&[mw, ctx], kt)?);
        vs.push(RingTensor::from_vec(&[ctx, mw], vg)?);
    }
    let pairs: Vec<(&RingTensor, &RingTensor)> = qs.iter().zip(&kts).collect();
    let scores = matmul_many(p, &pairs).await?;
    let mut s_all = Vec::with_capacity(g_count * t * ctx);
    for s in &scores {
        s_all.extend_from_slice(s.data());
    }
    // the softmax reads the scores at scale 2f: no truncation
    let visible: Vec<usize> = (0..g_count)
        .flat_map(|_| (0..t).map(move |i| pos0 + i + 1))
        .collect();
    let probs = softmax_rows_visible(p, sm, &s_all, g_count * t, ctx, Some(&visible)).await?;
    let ps: Vec<RingTensor> = probs
        .chunks(t * ctx)
        .map(|c| RingTensor::from_vec(&[t, ctx], c.to_vec()))
        .collect::<Result<_, _>>()?;
    let pairs: Vec<(&RingTensor, &RingTensor)> = ps.iter().zip(&vs).collect();
    let outs = matmul_many(p, &pairs).await?;
    let mut flat = Vec::with_capacity(g_count * t * mw);
    for o in &outs {
        flat.extend_from_slice(o.data());
    }
    // back to (T × q_width): merged head g holds sub-heads g·m..g·m+m−1 in order; left at
    // scale 2f (3f with untruncated values) for the o projection to truncate
    let mut out = vec![0u64; t * qw];
    for g in 0..g_count {
        for i in 0..t {
            let src = &flat[g * t * mw + i * mw..g * t * mw + (i + 1) * mw];
            out[i * qw + g * mw..i * qw + (g + 1) * mw].copy_from_slice(src);
        }
    }
    Ok((out, if values_untruncated { 2 * f } else { f }))
}

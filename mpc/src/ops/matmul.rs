//! Matrix products on shares.
//!
//! - [`matmul_public`]: shared `X` times public `W` — local, no communication (the public base
//!   weights of LoRA layers).
//! - [`matmul`]: shared `X` times shared `Y` with a Beaver matrix triple (Mohassel–Zhang,
//!   SecureML, S&P 2017): rounds 1; online bytes per party `8·(m·k + k·n)`; dealer bytes `8·m·n`.
//! - [`mask_weight`] + [`matmul_weight`]: a fixed private weight `W` (a LoRA factor, a fine-tuned
//!   matrix) is masked once per model load — `F = W − B` is opened once (8·k·n bytes per party)
//!   and reused — so each inference opens only the masked activation: rounds 1, online bytes
//!   per party `8·m·k`, dealer bytes `8·m·n` (the correction of `C = A·B`).
//!
//! Outputs carry the sum of the input scales; truncate afterwards.

use crate::channel::Transport;
use crate::correlation::CorrRequest;
use crate::error::{MpcError, Result};
use crate::gemm::{gemm_u64, gemm_u64_into};
use crate::ops::open::open;
use crate::ops::trunc::MaskPending;
use crate::party::Party;
use crate::ring::RingTensor;

fn dims(op: &'static str, x: &RingTensor, y_rows: usize) -> Result<(usize, usize)> {
    let (m, k) = x.dims2()?;
    if k != y_rows {
        return Err(MpcError::Shape {
            op,
            detail: format!("inner dimensions {k} vs {y_rows}"),
        });
    }
    Ok((m, k))
}

/// Shared `X (m×k)` times public `W (k×n)`: local.
pub fn matmul_public(x: &RingTensor, w: &RingTensor) -> Result<RingTensor> {
    x.matmul(w)
}

/// Shared `X (m×k)` times shared `Y (k×n)`. One round.
pub async fn matmul<T: Transport>(
    p: &mut Party<T>,
    x: &RingTensor,
    y: &RingTensor,
) -> Result<RingTensor> {
    let (k2, n) = y.dims2()?;
    let (m, k) = dims("matmul", x, k2)?;
    let t = p.take_mat(CorrRequest::MatTriple { m, k, n })?;
    let mut msg = x.sub(&t.a.clone().reshape(x.shape())?)?.into_data();
    msg.extend(y.sub(&t.b.clone().reshape(y.shape())?)?.into_data());
    let opened = open(p, &msg, 64).await?;
    let (e, f) = opened.split_at(m * k);
    let mut z = t.c.into_data();
    gemm_u64_into(m, k, n, e, t.b.data(), &mut z);
    gemm_u64_into(m, k, n, t.a.data(), f, &mut z);
    if p.is_p0() {
        gemm_u64_into(m, k, n, e, f, &mut z);
    }
    RingTensor::from_vec(&[m, n], z)
}

/// Several independent shared products `X_i·Y_i` in one round (e.g. the attention scores of
/// every head). Same bytes as separate [`matmul`] calls, one round in total.
pub async fn matmul_many<T: Transport>(
    p: &mut Party<T>,
    pairs: &[(&RingTensor, &RingTensor)],
) -> Result<Vec<RingTensor>> {
    let mut triples = Vec::with_capacity(pairs.len());
    let mut msg = Vec::new();
    let mut dims_all = Vec::with_capacity(pairs.len());
    for (x, y) in pairs {
        let (k2, n) = y.dims2()?;
        let (m, k) = dims("matmul_many", x, k2)?;
        let t = p.take_mat(CorrRequest::MatTriple { m, k, n })?;
        msg.extend(
            x.data()
                .iter()
                .zip(t.a.data())
                .map(|(v, a)| v.wrapping_sub(*a)),
        );
        msg.extend(
            y.data()
                .iter()
                .zip(t.b.data())
                .map(|(v, b)| v.wrapping_sub(*b)),
        );
        triples.push(t);
        dims_all.push((m, k, n));
    }
    let opened = open(p, &msg, 64).await?;
    let mut off = 0;
    let mut out = Vec::with_capacity(pairs.len());
    for (t, (m, k, n)) in triples.into_iter().zip(dims_all) {
        let e = &opened[off..off + m * k];
        let f = &opened[off + m * k..off + m * k + k * n];
        off += m * k + k * n;
        let mut z = t.c.into_data();
        gemm_u64_into(m, k, n, e, t.b.data(), &mut z);
        gemm_u64_into(m, k, n, t.a.data(), f, &mut z);
        if p.is_p0() {
            gemm_u64_into(m, k, n, e, f, &mut z);
        }
        out.push(RingTensor::from_vec(&[m, n], z)?);
    }
    Ok(out)
}

/// A private weight after its one-time masking: the public `F = W − B` and this party's share
/// of the mask `B`.
#[derive(Clone, Debug)]
pub struct MaskedWeight {
    /// weight identifier known to the dealer
    pub id: u64,
    /// public `W − B` (k×n)
    pub f: RingTensor,
    /// this party's share of `B` (k×n)
    pub b: RingTensor,
}

/// Masks a shared private weight once (per model load). One round, `8·k·n` bytes per party.
pub async fn mask_weight<T: Transport>(
    p: &mut Party<T>,
    id: u64,
    w: &RingTensor,
) -> Result<MaskedWeight> {
    let (k, n) = w.dims2()?;
    let b = p.take_weight_mask(CorrRequest::WeightMask { weight: id, k, n })?;
    let msg = w
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| x.wrapping_sub(*y))
        .collect::<Vec<_>>();
    let f = RingTensor::from_vec(&[k, n], open(p, &msg, 64).await?)?;
    Ok(MaskedWeight { id, f, b })
}

/// Shared `X (m×k)` times a masked private weight. One round, `8·m·k` bytes per party.
pub async fn matmul_weight<T: Transport>(
    p: &mut Party<T>,
    x: &RingTensor,
    w: &MaskedWeight,
) -> Result<RingTensor> {
    let (k2, n) = w.f.dims2()?;
    let (m, k) = dims("matmul_weight", x, k2)?;
    let t = p.take_weight_triple(CorrRequest::WeightTriple {
        weight: w.id,
        m,
        k,
        n,
    })?;
    let msg: Vec<u64> = x
        .data()
        .iter()
        .zip(t.a.data())
        .map(|(v, a)| v.wrapping_sub(*a))
        .collect();
    let e = open(p, &msg, 64).await?;
    let mut z = t.c.into_data();
    gemm_u64_into(m, k, n, &e, w.b.data(), &mut z);
    gemm_u64_into(m, k, n, t.a.data(), w.f.data(), &mut z);
    if p.is_p0() {
        let ef = gemm_u64(m, k, n, &e, w.f.data());
        for (zi, v) in z.iter_mut().zip(ef) {
            *zi = zi.wrapping_add(v);
        }
    }
    RingTensor::from_vec(&[m, n], z)
}

/// A truncation whose opening is also the activation's opening for a product with a masked
/// weight: `⌊X/2^s⌋` and `⌊X/2^s⌋·W` in one round, `8·m·k` bytes per party (the truncation
/// alone costs as much), dealer bytes to P1 `8·(2·m·k + m·n) + ⌈s/8⌉·m·k·n` (P0's half and
/// the mask from seeds; `E`'s entries travel as residues mod `2^s`) — meant for narrow `W`
/// (LoRA `A`).
///
/// With `⌊X/2^s⌋ = P − M` (`P` public from the opening, `M = M_0 + c_hi∘Δ` known to the dealer
/// up to the public top bits `c_hi`) and `W = F + B` (`F` public): `⌊X/2^s⌋·W = P·F + P·B −
/// M·F − M_0·B − Σ_k c_hi[i,k]·Δ[i,k]·B[k,j]`, whose last two terms the dealer supplies as shares.
pub struct TruncWeightPending {
    mask: MaskPending,
    m0b: Vec<u64>,
    e: Vec<u64>,
    dims: (usize, usize, usize),
    shift: u32,
}

impl TruncWeightPending {
    /// Consumes the material for `x` (m×k, untruncated) truncated by `shift` then times `w`.
    pub fn begin<T: Transport>(
        p: &mut Party<T>,
        x: &RingTensor,
        shift: u32,
        w: &MaskedWeight,
    ) -> Result<Self> {
        let (k2, n) = w.f.dims2()?;
        let (m, k) = dims("trunc_matmul_weight", x, k2)?;
        let mat = p.take_trunc_weight(CorrRequest::TruncWeight {
            weight: w.id,
            m,
            k,
            n,
            shift,
        })?;
        Ok(Self {
            mask: MaskPending::with_material(p, x.data(), mat.mask),
            m0b: mat.m0b,
            e: mat.e,
            dims: (m, k, n),
            shift,
        })
    }

    /// This party's share of the opening.
    pub fn message(&self) -> &[u64] {
        self.mask.message()
    }

    /// Completes with the opened values: shares of `⌊X/2^s⌋` (m×k) and of `⌊X/2^s⌋·W` (m×n).
    pub fn finish<T: Transport>(
        self,
        p: &Party<T>,
        opened: Vec<u64>,
        w: &MaskedWeight,
    ) -> Result<(RingTensor, RingTensor)> {
        let (m, k, n) = self.dims;
        let masked = self.mask.finish(opened);
        let tr = masked.trunc(self.shift)?;
        let public = masked.trunc_public(self.shift);
        let hi = masked.top_bits();
        let p0 = p.is_p0();
        // −M's share: share of ⌊X/2^s⌋ − P (P added by party 0 only)
        let neg_m: Vec<u64> = tr
            .iter()
            .zip(&public)
            .map(|(t, pu)| if p0 { t.wrapping_sub(*pu) } else { *t })
            .collect();
        let mut z: Vec<u64> = self.m0b.iter().map(|v| v.wrapping_neg()).collect();
        for (ik, row) in self.e.chunks_exact(n).enumerate() {
            if hi[ik] == 1 {
                let i = ik / k;
                for (a, b) in z[i * n..(i + 1) * n].iter_mut().zip(row) {
                    *a = a.wrapping_sub(*b);
                }
            }
        }
        gemm_u64_into(m, k, n, &neg_m, w.f.data(), &mut z);
        gemm_u64_into(m, k, n, &public, w.b.data(), &mut z);
        if p0 {
            gemm_u64_into(m, k, n, &public, w.f.data(), &mut z);
        }
        Ok((
            RingTensor::from_vec(&[m, k], tr)?,
            RingTensor::from_vec(&[m, n], z)?,
        ))
    }
}

/// [`TruncWeightPending`] in one round on its own.
pub async fn trunc_matmul_weight<T: Transport>(
    p: &mut Party<T>,
    x: &RingTensor,
    shift: u32,
    w: &MaskedWeight,
) -> Result<(RingTensor, RingTensor)> {
    let pending = TruncWeightPending::begin(p, x, shift, w)?;
    let opened = open(p, pending.message(), 64).await?;
    pending.finish(p, opened, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    fn shared(prg: &mut Prg, shape: &[usize]) -> (RingTensor, RingTensor, RingTensor) {
        let n = shape.iter().product();
        let v = prg.ring_vec(n);
        let (a, b) = share(&v, prg);
        (
            RingTensor::from_vec(shape, v).unwrap(),
            RingTensor::from_vec(shape, a).unwrap(),
            RingTensor::from_vec(shape, b).unwrap(),
        )
    }

    #[test]
    fn beaver_matmul_and_masked_weight_are_exact() {
        let mut prg = Prg::new(Seed::from_u64(2), 0);
        let (x, x0, x1) = shared(&mut prg, &[5, 7]);
        let (y, y0, y1) = shared(&mut prg, &[7, 3]);
        let (x2, x20, x21) = shared(&mut prg, &[4, 7]);
        let run = run_pair(6, FixedPoint::default(), |mut p| {
            let (x, y, x2) = if p.is_p0() {
                (&x0, &y0, &x20)
            } else {
                (&x1, &y1, &x21)
            };
            async move {
                let z = matmul(&mut p, x, y).await.unwrap();
                let before = p.comm();
                let w = mask_weight(&mut p, 42, y).await.unwrap();
                let z1 = matmul_weight(&mut p, x, &w).await.unwrap();
                let z2 = matmul_weight(&mut p, x2, &w).await.unwrap();
                let per_use = p.comm().since(&before);
                ((z, z1, z2, per_use), p)
            }
        });
        let want = x.matmul(&y).unwrap();
        let want2 = x2.matmul(&y).unwrap();
        let [a, b] = &run.out;
        assert_eq!(reconstruct(a.0.data(), b.0.data()), want.data());
        assert_eq!(reconstruct(a.1.data(), b.1.data()), want.data());
        assert_eq!(reconstruct(a.2.data(), b.2.data()), want2.data());
        // masking once (7·3) + two uses that send only the activations (5·7 + 4·7)
        assert_eq!(a.3.bytes_sent, 8 * (21 + 35 + 28));
        assert_eq!(a.3.rounds, 3);
    }

    /// ⌊X/2^s⌋ and ⌊X/2^s⌋·W from one opening equal the separate truncation and product:
    /// the truncation within its 1-ulp bound, the product exactly for the truncation it returns.
    #[test]
    fn fused_truncation_and_weight_product() {
        // shifts whose E residues take 4, 3 and 3 (20 bits) bytes
        for s in [32u32, 24, 20] {
            fused_truncation_and_weight_product_at(s);
        }
    }

    /// [`trunc_matmul_weight`] at truncation `s`: the truncation within one ulp, the product
    /// exact, one round, and the dealer's bytes to P1 with `E` as residues mod `2^s`.
    fn fused_truncation_and_weight_product_at(s: u32) {
        let fx = FixedPoint::default();
        let mut prg = Prg::new(Seed::from_u64(12), 0);
        let (m, k, n) = (6, 40, 8);
        // activations at scale 3f with |x| < 2^13 reals, both signs; weights at scale f
        let xv: Vec<u64> = (0..m * k)
            .map(|_| ((prg.next_u64() >> 18) as i64 - (1i64 << 45)) as u64)
            .collect();
        let wv: Vec<u64> = (0..k * n)
            .map(|_| ((prg.next_u64() >> 46) as i64 - (1i64 << 17)) as u64)
            .collect();
        let (x0, x1) = share(&xv, &mut prg);
        let (w0, w1) = share(&wv, &mut prg);
        let run = run_pair(13, fx, |mut p| {
            let (x, w) = if p.is_p0() { (&x0, &w0) } else { (&x1, &w1) };
            async move {
                let w = RingTensor::from_vec(&[k, n], w.clone()).unwrap();
                let w = mask_weight(&mut p, 7, &w).await.unwrap();
                let x = RingTensor::from_vec(&[m, k], x.clone()).unwrap();
                let before = p.comm();
                let (t, z) = trunc_matmul_weight(&mut p, &x, s, &w).await.unwrap();
                ((t, z, p.comm().since(&before)), p)
            }
        });
        let [a, b] = &run.out;
        let t = reconstruct(a.0.data(), b.0.data());
        for (got, x) in t.iter().zip(&xv) {
            let want = (*x as i64) >> s;
            let d = (*got as i64).wrapping_sub(want);
            assert!(d == 0 || d == 1, "truncation off by {d}");
        }
        let tt = RingTensor::from_vec(&[m, k], t).unwrap();
        let want = tt
            .matmul(&RingTensor::from_vec(&[k, n], wv.clone()).unwrap())
            .unwrap();
        assert_eq!(reconstruct(a.1.data(), b.1.data()), want.data());
        assert_eq!(a.2.rounds, 1);
        assert_eq!(a.2.bytes_sent, 8 * (m * k) as u64);
        // P1 (the weight's mask comes from the seeds): r_hi, low parts (m·k words each),
        // M_0·B (m·n words) and E (m·k·n residues of ⌈s/8⌉ bytes, not 8)
        let e_bytes = (m * k * n) as u64 * s.div_ceil(8) as u64;
        assert_eq!(
            run.dealer.bytes_to[1],
            8 * (2 * m * k + m * n) as u64 + e_bytes,
            "shift {s}"
        );
    }

    #[test]
    fn weight_triple_without_mask_is_refused() {
        let run = run_pair(7, FixedPoint::default(), |mut p| async move {
            let w = MaskedWeight {
                id: 9,
                f: RingTensor::zeros(&[2, 2]),
                b: RingTensor::zeros(&[2, 2]),
            };
            let r = matmul_weight(&mut p, &RingTensor::zeros(&[1, 2]), &w).await;
            (r.is_err(), p)
        });
        assert!(run.out[0] && run.out[1]);
    }

    #[test]
    fn public_weight_costs_nothing() {
        let mut prg = Prg::new(Seed::from_u64(3), 0);
        let (x, x0, x1) = shared(&mut prg, &[3, 4]);
        let w = RingTensor::from_vec(&[4, 2], prg.ring_vec(8)).unwrap();
        let z0 = matmul_public(&x0, &w).unwrap();
        let z1 = matmul_public(&x1, &w).unwrap();
        assert_eq!(
            reconstruct(z0.data(), z1.data()),
            x.matmul(&w).unwrap().data()
        );
    }
}

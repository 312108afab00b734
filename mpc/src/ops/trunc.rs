//! Masked opening `c = x + 2^62 + r` and what can be derived from it locally: exact truncation
//! by any prepared shift and comparisons with any public thresholds.
//!
//! **Truncation** (one round; at most 1 ulp error; no wrap error for |x| < 2^62). With
//! `x' = x + 2^62 ∈ [0, 2^63)`, `r = 2^63·r_hi + r_lo` from the dealer and `c = x' + r` opened,
//! `x' = c_lo − r_lo + 2^63·k` where `k = c_hi ⊕ r_hi` is linear in the shares of `r_hi` because
//! `c_hi` is public. Hence `⌊x'/2^s⌋ = ⌊c_lo/2^s⌋ − ⌊r_lo/2^s⌋ + 2^(63−s)·k − ε`, `ε ∈ {0, 1}`
//! (the dropped borrow of the low bits), i.e. the result is `⌊x/2^s⌋` or one more. This is the
//! dealer-assisted variant of the MSB-known truncation (Escudero et al., "Improved primitives for
//! MPC over mixed arithmetic-binary circuits", CRYPTO 2020); unlike local share truncation
//! (SecureML) it never fails catastrophically.
//! Online bytes/elt/party: 8. Dealer bytes/elt: 8 (`r_hi`) + 8 per shift, all to P1.
//!
//! **Comparison** (same opening; DCF of Boyle et al., Eurocrypt 2021). For an n-bit comparison
//! width and `|x − t| < 2^(n−1)`: `[x < t] = MSB_n(x − t) = MSB(c_t) ⊕ r_{n−1} ⊕ [c_t mod 2^(n−1) <
//! r mod 2^(n−1)]` with `c_t = (c − t) mod 2^n` public; the last term is one DCF evaluation with
//! `α = r mod 2^(n−1)`, payload `β = 1 − 2·r_{n−1}` so that the XOR with `r_{n−1}` stays linear.
//! One key serves any number of thresholds. Dealer bytes/elt: 8 + one DCF key (both parties).
//!
//! **Coarse comparison** (same opening, a shorter key): with `u = c_t mod 2^n`,
//! `v = r mod 2^n` and a shift `k`, `⌊(x − t)/2^k⌋ ≡ ⌊u/2^k⌋ − ⌊v/2^k⌋ − β (mod 2^(n−k))` for
//! the low bits' borrow `β = [u mod 2^k < v mod 2^k]`. Dropping `β` and applying the formula
//! above to `⌊u/2^k⌋`, `⌊v/2^k⌋` on `n − k` bits — a DCF key of `n − 1 − k` levels on bits
//! `k..n−1` of r — gives `[⌊(x − t)/2^k⌋ + β < 0]`: exactly `[x < t]` for `x ≥ t` and for
//! `x < t − 2^k`, and either value for `x ∈ [t − 2^k, t)`; valid for
//! `−2^(n−1) ≤ x − t < 2^(n−1) − 2^k`. Callers place their thresholds so that either value
//! is right inside that band (SiLU's gates, where the table and its tails agree: `ops::lut`);
//! the DCF of Boyle et al. is walked over `n − 1 − k` levels instead of `n − 1`.
//!
//! **Exact truncation**: the borrow `[c mod 2^s < r mod 2^s]` is one DCF evaluation of `s`
//! levels (`α = r mod 2^s`, payload 1). A fused signed lookup's mask has no key of its own for
//! it: one two-word DCF key with payload `(1, a)` gives the borrow and its product with the
//! slope's mask `a` in one walk ([`Masked::trunc_offset_exact_with`], [`crate::fss::dcf2`]).

use crate::channel::Transport;
use crate::correlation::{CmpMaterial, CorrRequest, MaskMaterial};
use crate::error::{MpcError, Result};
use crate::fss::{dcf2_eval_keys, dcf_eval_keys, Dcf2Keys};
use crate::ops::open::open;
use crate::party::Party;

/// The offset added before opening a masked value, so that a signed input in range is a
/// non-negative value below 2^63 (`|x| < 2^62`).
pub(crate) const OFFSET: u64 = 1 << 62;

/// The public part of `⌊x'/2^s⌋` from the opened `c = x' + r`:
/// `c_hi·2^(63−s) + ⌊c_lo/2^s⌋ − 2^62/2^s` (see the module header).
pub(crate) fn public_part(c: u64, s: u32) -> u64 {
    ((c >> 63) << (63 - s))
        .wrapping_add((c & (u64::MAX >> 1)) >> s)
        .wrapping_sub(OFFSET >> s)
}

/// A masked opening in progress.
pub struct MaskPending {
    mat: MaskMaterial,
    msg: Vec<u64>,
    p0: bool,
    party: u8,
}

impl MaskPending {
    /// Consumes mask material for `x` supporting `shifts` and, if `cmp_bits > 0`, comparisons
    /// of `cmp_bits`-bit signed values.
    pub fn begin<T: Transport>(
        p: &mut Party<T>,
        x: &[u64],
        shifts: &[u32],
        cmp_bits: u32,
        exact: &[u32],
    ) -> Result<Self> {
        Self::begin_coarse(p, x, shifts, cmp_bits, 0, exact)
    }

    /// [`MaskPending::begin`] with coarse comparisons: the comparison key leaves out the mask's
    /// `cmp_shift` low bits (see the module header).
    pub fn begin_coarse<T: Transport>(
        p: &mut Party<T>,
        x: &[u64],
        shifts: &[u32],
        cmp_bits: u32,
        cmp_shift: u32,
        exact: &[u32],
    ) -> Result<Self> {
        if cmp_bits > 62 {
            return Err(MpcError::InvalidParameter {
                op: "mask",
                detail: format!("comparison width {cmp_bits} > 62"),
            });
        }
        let mat = p.take_mask(CorrRequest::Mask {
            n: x.len(),
            shifts: shifts.to_vec(),
            cmp_bits,
            cmp_shift,
            exact: exact.to_vec(),
        })?;
        Ok(Self::with_material(p, x, mat))
    }

    /// Starts a masked opening of `x` with mask material obtained otherwise (e.g. the partner
    /// mask of a signed lookup bundle).
    ///
    /// # Panics
    /// If the material holds fewer masks than `x` has elements.
    pub fn with_material<T: Transport>(p: &Party<T>, x: &[u64], mat: MaskMaterial) -> Self {
        assert!(mat.r.len() >= x.len(), "mask material too short");
        let p0 = p.is_p0();
        let msg = x
            .iter()
            .zip(&mat.r)
            .map(|(v, r)| {
                let v = v.wrapping_add(*r);
                if p0 {
                    v.wrapping_add(OFFSET)
                } else {
                    v
                }
            })
            .collect();
        Self {
            mat,
            msg,
            p0,
            party: p.id.index() as u8,
        }
    }

    /// This party's share of `c`.
    pub fn message(&self) -> &[u64] {
        &self.msg
    }

    /// Completes with the opened `c`.
    pub fn finish(self, c: Vec<u64>) -> Masked {
        Masked {
            mat: self.mat,
            c,
            p0: self.p0,
            party: self.party,
        }
    }
}

/// An opened mask: derive truncations and comparisons locally.
pub struct Masked {
    mat: MaskMaterial,
    c: Vec<u64>,
    p0: bool,
    party: u8,
}

impl Masked {
    /// A mask opened otherwise: `c = x + r + 2^62` for the mask `r` of `mat` (e.g. the opened
    /// `x − a` of a norm triple, whose mask is `r = −a`).
    pub(crate) fn from_opened<T: Transport>(p: &Party<T>, mat: MaskMaterial, c: Vec<u64>) -> Self {
        Self {
            mat,
            c,
            p0: p.is_p0(),
            party: p.id.index() as u8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.c.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.c.is_empty()
    }

    /// Shares of `⌊x / 2^s⌋` (+0 or +1) for a prepared shift `s`.
    pub fn trunc(&self, s: u32) -> Result<Vec<u64>> {
        self.trunc_offset(s, 0)
    }

    /// Shares of `⌊(x − a) / 2^s⌋` (+0 or +1) for a public `a` with `|x − a| < 2^62`.
    pub fn trunc_offset(&self, s: u32, a: u64) -> Result<Vec<u64>> {
        let lo = self
            .mat
            .lo_shifted
            .iter()
            .find(|(sh, _)| *sh == s)
            .map(|(_, v)| v)
            .ok_or(MpcError::InvalidParameter {
                op: "trunc",
                detail: format!("shift {s} was not prepared in the mask"),
            })?;
        Ok((0..self.c.len())
            .map(|i| {
                let c = self.c[i].wrapping_sub(a);
                // shares of k = c_hi xor r_hi, less the public c_hi (in P)
                let k = self.mat.r_msb[i].wrapping_mul(1u64.wrapping_sub(2 * (c >> 63)));
                let out = k.wrapping_shl(63 - s).wrapping_sub(lo[i]);
                if self.p0 {
                    out.wrapping_add(public_part(c, s))
                } else {
                    out
                }
            })
            .collect())
    }

    /// The public part `P(c)` of the truncation by `shift`: `⌊x/2^shift⌋ = P(c) − M` with `M`
    /// a mask the dealer knows up to the public top bit of `c` (see the module header).
    pub fn trunc_public(&self, shift: u32) -> Vec<u64> {
        self.c.iter().map(|&c| public_part(c, shift)).collect()
    }

    /// The opened values `c = x + r + 2^62`.
    pub fn opened(&self) -> &[u64] {
        &self.c
    }

    /// The top bit of each opened value (selects the dealer's mask variant).
    pub fn top_bits(&self) -> Vec<u64> {
        self.c.iter().map(|c| c >> 63).collect()
    }

    /// Shares of exactly `⌊(x − a) / 2^s⌋` for a shift prepared as exact (the dropped borrow
    /// `[c mod 2^s < r mod 2^s]` is subtracted with one DCF evaluation of `s` levels).
    pub fn trunc_offset_exact(&self, s: u32, a: u64) -> Result<Vec<u64>> {
        let ex =
            self.mat
                .exact
                .iter()
                .find(|e| e.shift == s)
                .ok_or(MpcError::InvalidParameter {
                    op: "trunc_exact",
                    detail: format!("shift {s} was not prepared as exact"),
                })?;
        let pts = self.borrow_points(s, a);
        let mut borrow = vec![0u64; pts.len()];
        dcf_eval_keys(self.party, &ex.roots, &ex.cws, 1, &pts, &mut borrow);
        self.minus_borrow(s, a, &borrow)
    }

    /// Shares of exactly `⌊(x − a) / 2^s⌋` and of `γ·β` for the borrow `β` of that truncation
    /// and a `γ` of the dealer's, from one walk per element of a two-word DCF key with payload
    /// `(1, γ)` at `α = r mod 2^s` (`roots`, `keys`: `s` levels, one key per element) instead of
    /// the mask's own exact-truncation key: a fused signed lookup's input mask, where `γ` is the
    /// slope's mask `a` (see [`crate::correlation::SignedInput`]).
    pub fn trunc_offset_exact_with(
        &self,
        s: u32,
        a: u64,
        roots: &[u128],
        keys: &Dcf2Keys,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let n = self.c.len();
        if keys.n_bits() != s || keys.len() != n || roots.len() != n {
            return Err(MpcError::InvalidParameter {
                op: "trunc_exact",
                detail: format!(
                    "{} two-word keys of {} bits ({} roots) for {n} truncations by {s}",
                    keys.len(),
                    keys.n_bits(),
                    roots.len()
                ),
            });
        }
        let pts = self.borrow_points(s, a);
        let (mut borrow, mut prod) = (vec![0u64; n], vec![0u64; n]);
        dcf2_eval_keys(self.party, roots, keys, 1, &pts, &mut borrow, &mut prod);
        Ok((self.minus_borrow(s, a, &borrow)?, prod))
    }

    /// The points `(c − a) mod 2^s` of the borrows of a truncation by `s` (`s ≤ 63`).
    fn borrow_points(&self, s: u32, a: u64) -> Vec<u64> {
        let low = (1u64 << s) - 1;
        self.c.iter().map(|c| c.wrapping_sub(a) & low).collect()
    }

    /// [`Masked::trunc_offset`] less the shared borrows.
    fn minus_borrow(&self, s: u32, a: u64, borrow: &[u64]) -> Result<Vec<u64>> {
        let mut y = self.trunc_offset(s, a)?;
        for (yi, b) in y.iter_mut().zip(borrow) {
            *yi = yi.wrapping_sub(*b);
        }
        Ok(y)
    }

    /// Shares (0/1 in the ring) of `[x < t]` for a public threshold `t` (a ring encoding),
    /// valid when `|x − t| < 2^(n−1)` for the prepared comparison width n (with coarse
    /// material of shift k: `−2^(n−1) ≤ x − t < 2^(n−1) − 2^k`, and either value for
    /// `x ∈ [t − 2^k, t)`).
    pub fn less_than(&self, t: u64) -> Result<Vec<u64>> {
        Ok(self
            .less_than_multi(&[t])?
            .pop()
            .expect("one threshold, one vector"))
    }

    /// Shares of `[x < t]` for several public thresholds at once (one batched DCF evaluation
    /// per element); returns one vector per threshold.
    pub fn less_than_multi(&self, ts: &[u64]) -> Result<Vec<Vec<u64>>> {
        let cmp = self.mat.cmp.as_ref().ok_or(MpcError::InvalidParameter {
            op: "less_than",
            detail: "the mask was prepared without comparison material".into(),
        })?;
        // c − 2^62 = x + r; mod 2^n the offset vanishes (n ≤ 62)
        Ok(less_than_opened(self.party, &self.c, cmp, ts))
    }

    /// Shares of `[x ≥ t]`.
    pub fn greater_equal(&self, t: u64) -> Result<Vec<u64>> {
        Ok(self.complement(self.less_than(t)?))
    }

    /// Shares of `1 − b` for shared bits `b` (only P0 adds the 1).
    pub fn complement(&self, bits: Vec<u64>) -> Vec<u64> {
        bits.into_iter()
            .map(|b| {
                let nb = b.wrapping_neg();
                if self.p0 {
                    nb.wrapping_add(1)
                } else {
                    nb
                }
            })
            .collect()
    }
}

/// Shares (0/1 in the ring) of `[x < t]` for every public threshold `t` of `ts` (one vector per
/// threshold), from opened values `c = x + r (mod 2^n)` and the comparison material `cmp` of
/// the masks `r` (n = `cmp.bits`; higher bits of `c` are ignored); valid when
/// `|x − t| < 2^(n−1)`. One batched DCF walk per element and threshold (see the module header).
/// Coarse material (`cmp.shift = k > 0`) walks bits `k..n−1` only: exact outside
/// `x ∈ [t − 2^k, t)`, valid for `−2^(n−1) ≤ x − t < 2^(n−1) − 2^k`.
#[allow(clippy::needless_range_loop)]
pub(crate) fn less_than_opened(
    party: u8,
    c: &[u64],
    cmp: &CmpMaterial,
    ts: &[u64],
) -> Vec<Vec<u64>> {
    let n = cmp.bits;
    let full = (1u64 << n) - 1;
    let low = (1u64 << (n - 1)) - 1;
    let k = cmp.shift;
    let len = c.len();
    let per = ts.len();
    let mut out = vec![vec![0u64; len]; per];
    if per == 0 {
        return out;
    }
    let pts: Vec<u64> = (0..len * per)
        .map(|j| (c[j / per].wrapping_sub(ts[j % per]) & full & low) >> k)
        .collect();
    let mut ev = vec![0u64; len * per];
    dcf_eval_keys(party, &cmp.roots, &cmp.cws, per, &pts, &mut ev);
    for i in 0..len {
        for (j, t) in ts.iter().enumerate() {
            let m = (c[i].wrapping_sub(*t) & full) >> (n - 1);
            let u = cmp.msb[i].wrapping_add(ev[i * per + j]);
            let mut b = u.wrapping_mul(1u64.wrapping_sub(2 * m));
            if party == 0 {
                b = b.wrapping_add(m);
            }
            out[j][i] = b;
        }
    }
    out
}

/// Opens a mask of `x` in one round.
pub async fn mask_open<T: Transport>(
    p: &mut Party<T>,
    x: &[u64],
    shifts: &[u32],
    cmp_bits: u32,
    exact: &[u32],
) -> Result<Masked> {
    let pending = MaskPending::begin(p, x, shifts, cmp_bits, exact)?;
    let c = open(p, pending.message(), 64).await?;
    Ok(pending.finish(c))
}

/// Shares of `x / 2^s` (floor, +0 or +1 ulp) for `x` known to lie in `[0, 2^63)` (e.g. a
/// square): the opening of `x − 2^62` covers twice the range of [`trunc`]. One round.
pub async fn trunc_nonnegative<T: Transport>(
    p: &mut Party<T>,
    x: &[u64],
    s: u32,
) -> Result<Vec<u64>> {
    if s == 0 {
        return Ok(x.to_vec());
    }
    let mut y = mask_open(p, x, &[s], 0, &[])
        .await?
        .trunc_offset(s, OFFSET)?;
    if p.is_p0() {
        // ⌊(x − 2^62)/2^s⌋ + 2^(62−s) = ⌊x/2^s⌋
        for v in &mut y {
            *v = v.wrapping_add(OFFSET >> s);
        }
    }
    Ok(y)
}

/// Shares of `x / 2^s` (floor, +0 or +1 ulp) for `|x| < 2^62`. One round.
pub async fn trunc<T: Transport>(p: &mut Party<T>, x: &[u64], s: u32) -> Result<Vec<u64>> {
    if s == 0 {
        return Ok(x.to_vec());
    }
    mask_open(p, x, &[s], 0, &[]).await?.trunc(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};
    use proptest::prelude::*;

    fn run_trunc(x: &[u64], s: u32, seed: u64) -> (Vec<u64>, crate::testing::PairRun<Vec<u64>>) {
        let mut prg = Prg::new(Seed::from_u64(seed), 99);
        let (x0, x1) = share(x, &mut prg);
        let run = run_pair(seed, FixedPoint::default(), |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move { (trunc(&mut p, &x, s).await.unwrap(), p) }
        });
        (reconstruct(&run.out[0], &run.out[1]), run)
    }

    /// At most 1 ulp, never a wrap error, over 10^7 elements spanning the declared range
    /// |x| < 2^62, including its edges.
    #[test]
    fn exact_truncation_ten_million() {
        let n = 10_000_000usize;
        let mut prg = Prg::new(Seed::from_u64(11), 0);
        let mut x: Vec<u64> = prg
            .ring_vec(n)
            .into_iter()
            .map(|v| {
                // uniform in (-2^62, 2^62), with a mix of magnitudes
                let mag = v >> (2 + (v & 63) % 60);
                if v & (1 << 1) != 0 {
                    mag.wrapping_neg()
                } else {
                    mag
                }
            })
            .collect();
        let edges = [
            0u64,
            1,
            u64::MAX,
            (1 << 62) - 1,
            (1u64 << 62).wrapping_neg() + 1,
        ];
        x[..edges.len()].copy_from_slice(&edges);
        for s in [16u32, 1, 40] {
            let (got, run) = run_trunc(&x, s, 3 + s as u64);
            let mut worst = 0i64;
            for (xi, gi) in x.iter().zip(&got) {
                let want = (*xi as i64) >> s;
                let err = (*gi as i64).wrapping_sub(want);
                assert!(
                    err == 0 || err == 1,
                    "x={} s={s} got {} want {want}",
                    *xi as i64,
                    *gi as i64
                );
                worst = worst.max(err);
            }
            assert_eq!(
                worst, 1,
                "the 1-ulp bound should be reached on 10^7 samples"
            );
            assert_eq!(run.comm[0].rounds, 1);
            assert_eq!(run.comm[0].bytes_sent, 8 * n as u64);
        }
    }

    fn enc(v: i64) -> u64 {
        v as u64
    }

    #[test]
    fn comparisons_against_many_thresholds_from_one_key() {
        let n_bits = 40;
        let mut prg = Prg::new(Seed::from_u64(4), 0);
        let mut x: Vec<u64> = (0..3000)
            .map(|_| {
                let v = (prg.next_u64() >> 26) as i64 - (1i64 << 37);
                enc(v)
            })
            .collect();
        x[0] = enc(-5);
        x[1] = enc(0);
        x[2] = enc(7);
        let thresholds = [enc(0), enc(7), enc(-5), enc(1 << 30), enc(-(1 << 36))];
        let (x0, x1) = share(&x, &mut prg);
        let run = run_pair(8, FixedPoint::default(), |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move {
                let m = mask_open(&mut p, &x, &[16], n_bits, &[16]).await.unwrap();
                let outs: Vec<Vec<u64>> = thresholds
                    .iter()
                    .map(|t| m.less_than(*t).unwrap())
                    .collect();
                let ge = m.greater_equal(thresholds[0]).unwrap();
                ((outs, ge), p)
            }
        });
        for (j, t) in thresholds.iter().enumerate() {
            let got = reconstruct(&run.out[0].0[j], &run.out[1].0[j]);
            for i in 0..x.len() {
                let want = ((x[i] as i64) < (*t as i64)) as u64;
                assert_eq!(got[i], want, "x={} t={}", x[i] as i64, *t as i64);
            }
        }
        let ge = reconstruct(&run.out[0].1, &run.out[1].1);
        for i in 0..x.len() {
            assert_eq!(ge[i], ((x[i] as i64) >= 0) as u64);
        }
        assert_eq!(run.comm[0].rounds, 1);
    }

    /// Coarse comparisons (a key of `n − 1 − k` levels): exact for `x ≥ t` and `x < t − 2^k`,
    /// a bit inside the band, at the edges of the validity range too; the key is `k` levels
    /// shorter than the exact one.
    #[test]
    fn coarse_comparisons_are_exact_outside_the_band() {
        let (n_bits, k) = (30u32, 12u32);
        let band = 1i64 << k;
        let thresholds = [enc(0), enc(5000), enc(-(1 << 20)), enc(4096 * 3)];
        let mut prg = Prg::new(Seed::from_u64(21), 0);
        let mut x: Vec<u64> = (0..4000)
            .map(|_| enc((prg.next_u64() >> 37) as i64 - (1i64 << 26)))
            .collect();
        // every threshold's band edges and neighbours, and the validity range's ends
        for t in thresholds {
            for d in [-band - 1, -band, -band + 1, -1, 0, 1, -band / 2] {
                x.push(enc((t as i64) + d));
            }
        }
        x.push(enc((1i64 << 28) - 1));
        x.push(enc(-(1i64 << 28)));
        let (x0, x1) = share(&x, &mut prg);
        let run = run_pair(22, FixedPoint::default(), |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move {
                let c = p.comm();
                let m = MaskPending::begin_coarse(&mut p, &x, &[], n_bits, k, &[]).unwrap();
                let opened = open(&mut p, m.message(), 64).await.unwrap();
                let m = m.finish(opened);
                let outs = m.less_than_multi(&thresholds).unwrap();
                ((outs, p.comm().since(&c)), p)
            }
        });
        let mut in_band = [0usize; 2];
        for (j, t) in thresholds.iter().enumerate() {
            let got = reconstruct(&run.out[0].0[j], &run.out[1].0[j]);
            for i in 0..x.len() {
                let (xi, ti) = (x[i] as i64, *t as i64);
                if xi >= ti - band && xi < ti {
                    assert!(got[i] <= 1, "x={xi} t={ti}: not a bit: {}", got[i]);
                    in_band[got[i] as usize] += 1;
                } else {
                    assert_eq!(got[i], (xi < ti) as u64, "x={xi} t={ti}");
                }
            }
        }
        // inside the band both values occur (the dropped borrow is the mask's, uniform)
        assert!(in_band[0] > 0 && in_band[1] > 0, "{in_band:?}");
        assert_eq!(run.out[0].1.rounds, 1);
        // the key is k levels shorter than an exact one of the same width
        let bytes = |cmp_shift| {
            let req = CorrRequest::Mask {
                n: 1,
                shifts: vec![],
                cmp_bits: n_bits,
                cmp_shift,
                exact: vec![],
            };
            let [b0, _] = crate::correlation::Dealer::new(Seed::from_u64(1))
                .next_bundle(&req)
                .unwrap();
            b0.explicit.len()
        };
        assert_eq!(bytes(0) - bytes(k), 25 * k as usize);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn truncation_error_at_most_one_ulp(xs in proptest::collection::vec(-(1i64 << 61)..(1i64 << 61), 1..200), s in 1u32..60, seed in 0u64..1000) {
            let x: Vec<u64> = xs.iter().map(|v| *v as u64).collect();
            let (got, _) = run_trunc(&x, s, seed);
            for (xi, gi) in xs.iter().zip(&got) {
                let err = (*gi as i64).wrapping_sub(xi >> s);
                prop_assert!(err == 0 || err == 1);
            }
        }
    }
}

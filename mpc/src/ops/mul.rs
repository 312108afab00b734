//! Elementwise multiplication of two shared vectors with Beaver triples (Beaver, CRYPTO 1991).
//!
//! `x·y = e·f + e·b + f·a + c` with `e = x − a`, `f = y − b` opened.
//! Rounds: 1. Online bytes/elt/party: 16 (e and f). Dealer bytes/elt: 8 (P1's `c` correction;
//! P0's triple and P1's `a, b` come from seeds). The product carries the sum of both scales
//! (truncate afterwards when both are fixed point). Squaring uses square pairs: 8 online, 8 dealer.
//! The split API ([`MulPending`]) lets callers batch several products into one round.

use crate::channel::Transport;
use crate::correlation::{CorrRequest, MulTriples, SquarePairs};
use crate::error::{MpcError, Result};
use crate::ops::open::open;
use crate::party::Party;

/// A product waiting for its opening.
pub struct MulPending {
    triple: MulTriples,
    msg: Vec<u64>,
    p0: bool,
}

impl MulPending {
    /// Consumes a triple and prepares the message `(x − a, y − b)`.
    pub fn begin<T: Transport>(p: &mut Party<T>, x: &[u64], y: &[u64]) -> Result<Self> {
        if x.len() != y.len() {
            return Err(MpcError::Shape {
                op: "mul",
                detail: format!("{} vs {} elements", x.len(), y.len()),
            });
        }
        let triple = p.take_mul(CorrRequest::MulTriples { n: x.len() })?;
        let mut msg = Vec::with_capacity(2 * x.len());
        msg.extend(x.iter().zip(&triple.a).map(|(v, a)| v.wrapping_sub(*a)));
        msg.extend(y.iter().zip(&triple.b).map(|(v, b)| v.wrapping_sub(*b)));
        Ok(Self {
            triple,
            msg,
            p0: p.is_p0(),
        })
    }

    /// The values to open (this party's shares of `e` then `f`).
    pub fn message(&self) -> &[u64] {
        &self.msg
    }

    /// Finishes with the opened `e || f`.
    pub fn finish(self, opened: &[u64]) -> Vec<u64> {
        let n = self.triple.a.len();
        let (e, f) = opened.split_at(n);
        (0..n)
            .map(|i| {
                let mut z = self.triple.c[i]
                    .wrapping_add(e[i].wrapping_mul(self.triple.b[i]))
                    .wrapping_add(f[i].wrapping_mul(self.triple.a[i]));
                if self.p0 {
                    z = z.wrapping_add(e[i].wrapping_mul(f[i]));
                }
                z
            })
            .collect()
    }
}

/// Shares of `x·y` (elementwise, no truncation). One round.
pub async fn mul<T: Transport>(p: &mut Party<T>, x: &[u64], y: &[u64]) -> Result<Vec<u64>> {
    let pending = MulPending::begin(p, x, y)?;
    let opened = open(p, pending.message(), 64).await?;
    Ok(pending.finish(&opened))
}

/// A square waiting for its opening.
pub struct SquarePending {
    pair: SquarePairs,
    msg: Vec<u64>,
    p0: bool,
}

impl SquarePending {
    /// Consumes a square pair and prepares `x − a`.
    pub fn begin<T: Transport>(p: &mut Party<T>, x: &[u64]) -> Result<Self> {
        let pair = p.take_square(CorrRequest::SquarePairs { n: x.len() })?;
        let msg = x
            .iter()
            .zip(&pair.a)
            .map(|(v, a)| v.wrapping_sub(*a))
            .collect();
        Ok(Self {
            pair,
            msg,
            p0: p.is_p0(),
        })
    }

    /// The values to open.
    pub fn message(&self) -> &[u64] {
        &self.msg
    }

    /// Finishes with the opened `e = x − a`: `x² = a² + 2·e·a + e²`.
    pub fn finish(self, e: &[u64]) -> Vec<u64> {
        (0..e.len())
            .map(|i| {
                let mut z = self.pair.a2[i]
                    .wrapping_add(2u64.wrapping_mul(e[i]).wrapping_mul(self.pair.a[i]));
                if self.p0 {
                    z = z.wrapping_add(e[i].wrapping_mul(e[i]));
                }
                z
            })
            .collect()
    }
}

/// Shares of `x²` (elementwise, no truncation). One round.
pub async fn square<T: Transport>(p: &mut Party<T>, x: &[u64]) -> Result<Vec<u64>> {
    let pending = SquarePending::begin(p, x)?;
    let opened = open(p, pending.message(), 64).await?;
    Ok(pending.finish(&opened))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    #[test]
    fn beaver_product_is_exact_in_the_ring() {
        let mut prg = Prg::new(Seed::from_u64(1), 0);
        let x = prg.ring_vec(1000);
        let y = prg.ring_vec(1000);
        let (x0, x1) = share(&x, &mut prg);
        let (y0, y1) = share(&y, &mut prg);
        let run = run_pair(5, FixedPoint::default(), |mut p| {
            let (x, y) = if p.is_p0() { (&x0, &y0) } else { (&x1, &y1) };
            async move {
                let z = mul(&mut p, x, y).await.unwrap();
                let s = square(&mut p, x).await.unwrap();
                ((z, s), p)
            }
        });
        let z = reconstruct(&run.out[0].0, &run.out[1].0);
        let s = reconstruct(&run.out[0].1, &run.out[1].1);
        for i in 0..x.len() {
            assert_eq!(z[i], x[i].wrapping_mul(y[i]));
            assert_eq!(s[i], x[i].wrapping_mul(x[i]));
        }
        assert_eq!(run.comm[0].rounds, 2);
        assert_eq!(run.comm[0].bytes_sent, 1000 * 24);
        // dealer: 8 bytes per element for P1 for each of the two ops
        assert_eq!(run.dealer.bytes_to, [0, 16000]);
    }
}

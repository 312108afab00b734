//! Comparison, sign, ReLU and selection.
//!
//! - [`less_than`] / [`drelu`]: 1 round (a masked opening, then DCF evaluations; see
//!   [`crate::ops::trunc`]). Online bytes/elt/party: 8. Dealer bytes/elt: 8 + DCF key of
//!   `n−1` levels (both parties), e.g. ≈ 0.9 KB per party for n = 40.
//! - [`relu`]: 2 rounds (DReLU, then a Beaver product). Online 24 B/elt, dealer DReLU + 8 B/elt.
//! - [`select`]: `b ? x : y = y + b·(x − y)` for a shared bit b: 1 round, 16 B/elt online.
//!
//! Inputs must satisfy `|x| < 2^(n−2)` for the comparison width `n` (the declared range).

use crate::channel::Transport;
use crate::error::Result;
use crate::ops::mul::mul;
use crate::ops::trunc::mask_open;
use crate::party::Party;

/// Default comparison width: signed values up to 2^(46−2) ulp, i.e. |x| < 2^28 at f = 16.
pub const DEFAULT_CMP_BITS: u32 = 46;

/// Shares of `[x < t]` (0/1) for a public ring threshold `t`. One round.
pub async fn less_than<T: Transport>(
    p: &mut Party<T>,
    x: &[u64],
    t: u64,
    bits: u32,
) -> Result<Vec<u64>> {
    mask_open(p, x, &[], bits, &[]).await?.less_than(t)
}

/// Shares of `[x ≥ 0]` (the derivative of ReLU). One round.
pub async fn drelu<T: Transport>(p: &mut Party<T>, x: &[u64], bits: u32) -> Result<Vec<u64>> {
    mask_open(p, x, &[], bits, &[]).await?.greater_equal(0)
}

/// Shares of `max(x, 0)`. Two rounds.
pub async fn relu<T: Transport>(p: &mut Party<T>, x: &[u64], bits: u32) -> Result<Vec<u64>> {
    let d = drelu(p, x, bits).await?;
    mul(p, &d, x).await
}

/// Shares of `b ? x : y` for shared bits `b`. One round.
pub async fn select<T: Transport>(
    p: &mut Party<T>,
    b: &[u64],
    x: &[u64],
    y: &[u64],
) -> Result<Vec<u64>> {
    let diff: Vec<u64> = x.iter().zip(y).map(|(a, c)| a.wrapping_sub(*c)).collect();
    let prod = mul(p, b, &diff).await?;
    Ok(prod
        .iter()
        .zip(y)
        .map(|(a, c)| a.wrapping_add(*c))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    #[test]
    fn relu_matches_plaintext_in_two_rounds() {
        let fx = FixedPoint::default();
        let mut prg = Prg::new(Seed::from_u64(21), 0);
        let vals: Vec<f64> = (0..2000)
            .map(|i| {
                ((prg.next_u64() % 2_000_000) as f64 / 1000.0 - 1000.0)
                    * if i % 7 == 0 { 1e-4 } else { 1.0 }
            })
            .collect();
        let x = fx.encode_slice(&vals).unwrap();
        let (x0, x1) = share(&x, &mut prg);
        let run = run_pair(22, fx, |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move { (relu(&mut p, &x, DEFAULT_CMP_BITS).await.unwrap(), p) }
        });
        let got = reconstruct(&run.out[0], &run.out[1]);
        for i in 0..x.len() {
            let want = if (x[i] as i64) >= 0 { x[i] } else { 0 };
            assert_eq!(got[i], want, "exact ReLU at {}", vals[i]);
        }
        assert_eq!(run.comm[0].rounds, 2);
    }
}

//! Two-party additive secret sharing over Z_2^64: a value `v` is held as `(r, v - r)` with `r`
//! uniform from a PRG, so either share alone is uniform and says nothing of `v`; the sum of the
//! two shares, wrapping, gives `v` back. What a client does to its inputs and outputs, and
//! what the tests do to theirs.

use crate::prg::Prg;

/// Splits secret ring values into two additive shares, the first drawn from `prg`.
pub fn share(values: &[u64], prg: &mut Prg) -> (Vec<u64>, Vec<u64>) {
    let s0 = prg.ring_vec(values.len());
    let s1 = values
        .iter()
        .zip(&s0)
        .map(|(v, r)| v.wrapping_sub(*r))
        .collect();
    (s0, s1)
}

/// Adds two shares back into the values they share.
pub fn reconstruct(s0: &[u64], s1: &[u64]) -> Vec<u64> {
    s0.iter().zip(s1).map(|(a, b)| a.wrapping_add(*b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prg::Seed;

    #[test]
    fn shares_add_back_and_each_alone_is_not_the_value() {
        let v: Vec<u64> = (0..64u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let mut prg = Prg::new(Seed::from_u64(3), 0);
        let (s0, s1) = share(&v, &mut prg);
        assert_eq!(reconstruct(&s0, &s1), v);
        assert!(s0.iter().zip(&v).filter(|(a, b)| a == b).count() <= 1);
        assert!(s1.iter().zip(&v).filter(|(a, b)| a == b).count() <= 1);
        // the first share is the PRG's stream, whatever the values
        let mut again = Prg::new(Seed::from_u64(3), 0);
        assert_eq!(share(&vec![0; 64], &mut again).0, s0);
    }
}

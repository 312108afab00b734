//! Rotary position embedding (RoPE, Su et al. 2021) with public cos/sin tables.
//!
//! Rotation by public angles is local on shares (`y = x·cos ± x'·sin`, products at scale 2f),
//! followed by one truncation. Rounds: 1. Online bytes/elt/party: 8. Dealer bytes/elt: 16.
//! Pairs follow the Hugging Face Llama convention ([`RotaryLayout::Half`]: element `i` pairs
//! with `i + dim/2` of the same head) or the original interleaved one (`2i`, `2i+1`).
//! With merged heads (head merging by m), each merged head of width `m·d_head` is rotated as
//! `m` independent original sub-heads: call with `head_dim = d_head` on the merged layout.

use crate::channel::Transport;
use crate::error::{MpcError, Result};
use crate::ops::trunc::trunc;
use crate::party::Party;

/// How rotation pairs are laid out inside a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryLayout {
    /// `(i, i + d/2)` — Hugging Face Llama "rotate_half"
    Half,
    /// `(2i, 2i + 1)` — GPT-J / original RoFormer
    Interleaved,
}

/// Rotates every head of `x` (rows × width, width a multiple of `head_dim`). `cos`/`sin` are
/// public, encoded at scale f, shape rows × head_dim/2 (one angle set per row/position).
#[allow(clippy::too_many_arguments)]
pub async fn rotary<T: Transport>(
    p: &mut Party<T>,
    x: &[u64],
    rows: usize,
    width: usize,
    head_dim: usize,
    cos: &[u64],
    sin: &[u64],
    layout: RotaryLayout,
) -> Result<Vec<u64>> {
    let half = head_dim / 2;
    if !head_dim.is_multiple_of(2)
        || head_dim == 0
        || !width.is_multiple_of(head_dim)
        || x.len() != rows * width
        || cos.len() != rows * half
        || sin.len() != rows * half
    {
        return Err(MpcError::Shape {
            op: "rotary",
            detail: format!(
                "x {} for {rows}×{width}, head_dim {head_dim}, cos {} sin {}",
                x.len(),
                cos.len(),
                sin.len()
            ),
        });
    }
    let mut y = vec![0u64; x.len()];
    for r in 0..rows {
        for h in 0..width / head_dim {
            let base = r * width + h * head_dim;
            for i in 0..half {
                let (a, b) = match layout {
                    RotaryLayout::Half => (base + i, base + i + half),
                    RotaryLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                };
                let (c, s) = (cos[r * half + i], sin[r * half + i]);
                y[a] = x[a].wrapping_mul(c).wrapping_sub(x[b].wrapping_mul(s));
                y[b] = x[a].wrapping_mul(s).wrapping_add(x[b].wrapping_mul(c));
            }
        }
    }
    trunc(p, &y, p.fx.frac_bits()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    #[test]
    fn rotary_matches_plaintext() {
        let fx = FixedPoint::default();
        let (rows, width, hd) = (5, 16, 8);
        let mut prg = Prg::new(Seed::from_u64(61), 0);
        let vals: Vec<f64> = (0..rows * width)
            .map(|_| (prg.next_u64() % 10_000) as f64 / 1000.0 - 5.0)
            .collect();
        let ang: Vec<f64> = (0..rows * hd / 2)
            .map(|k| (k / (hd / 2)) as f64 / 10000f64.powf((k % (hd / 2)) as f64 * 2.0 / hd as f64))
            .collect();
        let cos = fx
            .encode_slice(&ang.iter().map(|a| a.cos()).collect::<Vec<_>>())
            .unwrap();
        let sin = fx
            .encode_slice(&ang.iter().map(|a| a.sin()).collect::<Vec<_>>())
            .unwrap();
        let x = fx.encode_slice(&vals).unwrap();
        let (x0, x1) = share(&x, &mut prg);
        for layout in [RotaryLayout::Half, RotaryLayout::Interleaved] {
            let (c2, s2) = (&cos, &sin);
            let (x0, x1) = (&x0, &x1);
            let run = run_pair(62, fx, |mut p| {
                let x = if p.is_p0() { x0.clone() } else { x1.clone() };
                async move {
                    (
                        rotary(&mut p, &x, rows, width, hd, c2, s2, layout)
                            .await
                            .unwrap(),
                        p,
                    )
                }
            });
            let got = fx.decode_slice(&reconstruct(&run.out[0], &run.out[1]));
            for r in 0..rows {
                for h in 0..width / hd {
                    for i in 0..hd / 2 {
                        let (a, b) = match layout {
                            RotaryLayout::Half => (i, i + hd / 2),
                            RotaryLayout::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let base = r * width + h * hd;
                        let t = ang[r * hd / 2 + i];
                        let wa = vals[base + a] * t.cos() - vals[base + b] * t.sin();
                        let wb = vals[base + a] * t.sin() + vals[base + b] * t.cos();
                        assert!((got[base + a] - wa).abs() < 1e-4);
                        assert!((got[base + b] - wb).abs() < 1e-4);
                    }
                }
            }
            assert_eq!(run.comm[0].rounds, 1);
        }
    }
}

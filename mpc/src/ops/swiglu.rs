//! SwiGLU's gated product `SiLU(gate)·up` (Shazeer, "GLU variants improve Transformer", 2020),
//! fused so that the SiLU lookup runs on the bit-output DPF.
//!
//! Inputs are the untruncated projections `gate`, `up` at scale `f + in_shift`. Rounds:
//! - 1: one opening truncates both (the gate with an ordinary mask, `up` with the partner mask
//!   of the signed lookup bundle);
//! - 2–4: the signed piecewise-linear lookup of SiLU on the truncated gate ([`eval_signed`]),
//!   which returns `s·U` with a per-element sign `s = ±1` that only the dealer knows;
//! - 5: the product `(s·U)·(s·⌊up⌋) = U·⌊up⌋`, where `s·⌊up⌋ = σ·P − (s·M)_c` is known up to
//!   dealer-known terms (see [`PartnerMask`](crate::correlation::PartnerMask)):
//!   only `s·U − a` is opened (8 bytes/elt) and the dealer's shares of `a·s`, `a·s·M_c`
//!   complete it; gated tables add `tails·⌊up⌋` (Beaver) in the same round;
//! - 6: truncation back to scale f ([`silu_mul`]); [`silu_mul_untruncated`] leaves it to the
//!   caller, who fuses it into its next opening.
//!
//! Rounds 6 (5 when the caller fuses the last truncation). Online bytes/elt/party for an
//! ungated table: 16 (gate and up truncated) + 18 (lookup: 8 + 2 + 8, its interpolation
//! product opening only the masked slope, see
//! [`SignedInput`](crate::correlation::SignedInput)) + 8 (product) + 8 (truncation) = 50, 42
//! fused — the unfused chain (truncation, lookup, Beaver product, truncation) costs 66. The
//! lookup's DPF work drops from `2^n − 2` to `2^(n−6) + 2^(n−7) − 2` AES calls per element
//! (2046 → 46 at n = 11, 1022 → 22 at SiLU's n = 10); its dot products remain `2^n` masked
//! additions, done once for both tables when their entries pack into one word.
//! Error: the table's interpolation error times `|up|`, plus ≤ 2 ulps of truncation.

use crate::channel::Transport;
use crate::error::{MpcError, Result};
use crate::ops::lut::{eval_signed, signed_request, PiecewiseLinear};
use crate::ops::mul::MulPending;
use crate::ops::open::open_groups;
#[allow(unused_imports)] // doc links
use crate::ops::trunc::Masked;
use crate::ops::trunc::{trunc, MaskPending};
use crate::party::Party;

/// `SiLU(gate)·up` (or any one-segment table in place of SiLU) for untruncated `gate`, `up` at
/// scale `f + in_shift`; returns shares at scale f.
pub async fn silu_mul<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    gate: &[u64],
    up: &[u64],
    in_shift: u32,
) -> Result<Vec<u64>> {
    let (y, shift) = silu_mul_untruncated(p, table, gate, up, in_shift).await?;
    trunc(p, &y, shift).await
}

/// [`silu_mul`] without its last round: the result at scale `f + shift`, and `shift`, for
/// callers that fuse the truncation into their next opening.
pub async fn silu_mul_untruncated<T: Transport>(
    p: &mut Party<T>,
    table: &PiecewiseLinear,
    gate: &[u64],
    up: &[u64],
    in_shift: u32,
) -> Result<(Vec<u64>, u32)> {
    let n = gate.len();
    if up.len() != n {
        return Err(MpcError::InvalidParameter {
            op: "silu_mul",
            detail: format!("gate has {n} values, up {}", up.len()),
        });
    }
    if table.in_frac != p.fx.frac_bits() {
        return Err(MpcError::InvalidParameter {
            op: "silu_mul",
            detail: format!(
                "{} reads scale {}, the party works at {}",
                table.name,
                table.in_frac,
                p.fx.frac_bits()
            ),
        });
    }
    let mut mat = p.take_signed_lut(signed_request(table, n, in_shift)?)?;
    let partner = mat.partner.take().ok_or(MpcError::InvalidParameter {
        op: "silu_mul",
        detail: "signed lookup bundle without partner mask".into(),
    })?;
    // Round 1: truncate gate and up with one opening.
    let gm = MaskPending::begin(p, gate, &[in_shift], 0, &[])?;
    let um = MaskPending::with_material(p, up, partner.mask);
    let opened = open_groups(p, &[(gm.message(), 64), (um.message(), 64)]).await?;
    let mut it = opened.into_iter();
    let gate_t = gm.finish(it.next().expect("group")).trunc(in_shift)?;
    let up_m = um.finish(it.next().expect("group"));
    // Rounds 2–4: signed lookup.
    let r = eval_signed(p, table, &gate_t, mat).await?;
    // Round 5: U·⌊up⌋ = (s·U)·(s·⌊up⌋) with s·⌊up⌋ = σ·P − (s·M)_c: only v = s·U − a is
    // opened; the dealer's shares of a·s and a·s·M_c complete the product locally [+ tails·up].
    let pub_up = up_m.trunc_public(in_shift);
    let hi = up_m.top_bits();
    let v_msg: Vec<u64> =
        r.su.iter()
            .zip(&partner.a)
            .map(|(u, a)| u.wrapping_sub(*a))
            .collect();
    let tail = if table.gated {
        let up_t = up_m.trunc(in_shift)?;
        Some(MulPending::begin(p, &r.tails, &up_t)?)
    } else {
        None
    };
    let mut groups = vec![(v_msg.as_slice(), 64)];
    if let Some(t) = &tail {
        groups.push((t.message(), 64));
    }
    let opened = open_groups(p, &groups).await?;
    let v = &opened[0];
    let mut out: Vec<u64> = (0..n)
        .map(|i| {
            let c = hi[i] as usize;
            v[i].wrapping_mul(r.sigma[i])
                .wrapping_add(partner.a_s[i])
                .wrapping_mul(pub_up[i])
                .wrapping_sub(v[i].wrapping_mul(partner.sm[c][i]))
                .wrapping_sub(partner.a_sm[c][i])
        })
        .collect();
    if let Some(t) = tail {
        for (o, x) in out.iter_mut().zip(t.finish(&opened[1])) {
            *o = o.wrapping_add(x);
        }
    }
    Ok((out, table.untruncated_frac()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::CommStats;
    use crate::fixed::FixedPoint;
    use crate::ops::nonlinear::silu_table;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    /// Runs [`silu_mul`] on fresh shares of the encoded `g` and `u`: per party, the result (or
    /// the error's text) and the traffic of the call.
    fn run_silu_mul(
        seed: u64,
        table: &PiecewiseLinear,
        g: &[u64],
        u: &[u64],
        in_shift: u32,
    ) -> [(std::result::Result<Vec<u64>, String>, CommStats); 2] {
        let mut prg = Prg::new(Seed::from_u64(seed), 1);
        let (g0, g1) = share(g, &mut prg);
        let (u0, u1) = share(u, &mut prg);
        let run = run_pair(seed, FixedPoint::default(), |mut p| {
            let (gs, us) = if p.is_p0() {
                (g0.clone(), u0.clone())
            } else {
                (g1.clone(), u1.clone())
            };
            let table = table.clone();
            async move {
                let c = p.comm();
                let y = silu_mul(&mut p, &table, &gs, &us, in_shift).await;
                ((y.map_err(|e| e.to_string()), p.comm().since(&c)), p)
            }
        });
        run.out
    }

    /// SiLU(g)·u against the f64 reference on seeded random inputs, gated and ungated tables,
    /// with LoRA-style inputs at scale 3f (in_shift = 2f).
    #[test]
    fn matches_plaintext_within_bound() {
        let fx = FixedPoint::default();
        let f = fx.frac_bits();
        for (bound, in_shift, seed) in [(24.0, f, 1u64), (24.0, 2 * f, 2), (60.0, f, 3)] {
            let table = silu_table(fx, bound).unwrap();
            assert_eq!(table.gated, bound > 31.9);
            let n = 3000;
            let mut prg = Prg::new(Seed::from_u64(seed), 0);
            let uni = |prg: &mut Prg, a: f64| {
                ((prg.next_u64() >> 11) as f64 / 2f64.powi(53) * 2.0 - 1.0) * a
            };
            let g: Vec<f64> = (0..n).map(|_| uni(&mut prg, bound)).collect();
            let u: Vec<f64> = (0..n).map(|_| uni(&mut prg, 8.0)).collect();
            let scale = 2f64.powi((f + in_shift) as i32);
            let enc = |v: &[f64]| -> Vec<u64> {
                v.iter()
                    .map(|x| (x * scale).round() as i64 as u64)
                    .collect()
            };
            let out = run_silu_mul(seed, &table, &enc(&g), &enc(&u), in_shift);
            let [(Ok(y0), c), (Ok(y1), _)] = &out else {
                panic!("silu_mul failed: {:?}", [&out[0].0, &out[1].0])
            };
            let got = fx.decode_slice(&reconstruct(y0, y1));
            let silu = |x: f64| x / (1.0 + (-x).exp());
            let err = got
                .iter()
                .zip(g.iter().zip(&u))
                .map(|(y, (a, b))| (y - silu(*a) * b).abs())
                .fold(0.0, f64::max);
            // the table's interpolation error (≤ 2.5e-4, nonlinear's tests) and the position
            // rounding, times |up| ≤ 8, plus the truncations' rounding
            let table_err = table.max_error(100_000);
            assert!(
                err < 8.0 * (table_err + 5e-5) + 1e-4,
                "bound {bound} shift {in_shift}: err {err} (table error {table_err})"
            );
            assert_eq!(c.rounds, 6, "rounds");
            if !table.gated {
                // 16 + 18 + 8 + 8 per element, plus the range count
                assert_eq!(c.bytes_sent, 50 * n as u64 + 8, "bytes");
            }
        }
    }

    /// The fused lookup checks the declared range on the exact cell index: gate inputs up to
    /// the bound pass, inputs outside are counted (up to four table widths out) and the op
    /// fails with the count, at both parties.
    #[test]
    fn gate_inputs_outside_the_declared_range_are_refused() {
        let fx = FixedPoint::default();
        let f = fx.frac_bits();
        let table = silu_table(fx, 24.0).unwrap();
        assert!(!table.gated);
        let scale = 2f64.powi(2 * f as i32);
        let enc = |v: &[f64]| -> Vec<u64> {
            v.iter()
                .map(|x| (x * scale).round() as i64 as u64)
                .collect()
        };
        let cases: [(&[f64], usize); 3] = [
            (&[1.0, -23.99, 23.99, -24.0, 24.0], 0),
            (&[1.0, -24.2, 25.5, -30.0, 150.0], 4),
            (&[-60.0, 0.5, 0.25, 2.0, -1.0], 1),
        ];
        for (seed, (g, outside)) in cases.into_iter().enumerate() {
            let u = vec![1.0; g.len()];
            let out = run_silu_mul(seed as u64 + 20, &table, &enc(g), &enc(&u), f);
            match [&out[0].0, &out[1].0] {
                [Ok(y0), Ok(y1)] if outside == 0 => {
                    let got = fx.decode_slice(&reconstruct(y0, y1));
                    for (y, x) in got.iter().zip(g) {
                        let want = x / (1.0 + (-x).exp());
                        assert!((y - want).abs() < 1e-3, "silu({x}) = {y}, want {want}");
                    }
                }
                [Err(e0), Err(e1)] if outside > 0 => {
                    let want = format!("{outside} input(s) of silu are outside");
                    assert!(e0.contains(&want) && e1.contains(&want), "{e0} / {e1}");
                }
                other => panic!("case {seed}: expected {outside} outside, got {other:?}"),
            }
        }
    }

    #[test]
    fn multi_segment_tables_are_refused() {
        use crate::fixed::ValueRange;
        use crate::ops::lut::Tail;
        let t = PiecewiseLinear::build(
            "two",
            std::sync::Arc::new(|x: f64| x),
            &[(-4.0, 0.0, 6), (0.0, 4.0, 6)],
            16,
            16,
            8,
            Tail::Zero,
            Tail::Zero,
            ValueRange::symmetric(4.0, "two"),
        )
        .unwrap();
        let err = signed_request(&t, 4, 16).unwrap_err().to_string();
        assert!(err.contains("one segment"), "{err}");
    }
}

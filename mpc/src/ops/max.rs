//! Maximum and argmax over the rows of a shared matrix: a binary tournament.
//!
//! Each level compares pairs (`[a ≥ b]`, 1 round, DCF) and selects (`b + d·(a − b)`, 1 round;
//! the argmax index is selected in the same round). Rounds: `2·⌈log2 n⌉` for rows of n.
//! Online bytes per comparison per party: 8 (opening) + 16 (select) [+16 for the index].
//! Dealer bytes per comparison: 8 + a DCF key of `cmp_bits − 1` levels (both parties) + 8 (+8).
//! Inputs must satisfy `|a − b| < 2^(cmp_bits − 1)` (declared range `|x| < 2^(cmp_bits−2)` ulps).

use crate::channel::Transport;
use crate::error::{MpcError, Result};
use crate::ops::mul::MulPending;
use crate::ops::open::open_groups;
use crate::ops::trunc::mask_open;
use crate::party::Party;

/// Shares of the row maxima of `x` (rows × cols, row-major), and, if `with_index`, shares of
/// the index of a maximal element per row (ring integers).
pub async fn max_rows<T: Transport>(
    p: &mut Party<T>,
    x: &[u64],
    rows: usize,
    cols: usize,
    cmp_bits: u32,
    with_index: bool,
) -> Result<(Vec<u64>, Option<Vec<u64>>)> {
    if rows * cols != x.len() || cols == 0 {
        return Err(MpcError::Shape {
            op: "max_rows",
            detail: format!("{} elements for {rows}×{cols}", x.len()),
        });
    }
    // current candidates per row
    let mut vals: Vec<Vec<u64>> = x.chunks(cols).map(|r| r.to_vec()).collect();
    let mut idx: Vec<Vec<u64>> = (0..rows)
        .map(|_| (0..cols as u64).map(|j| p.public_share(j)).collect())
        .collect();
    while vals[0].len() > 1 {
        let len = vals[0].len();
        let half = len / 2;
        // pairs (2i, 2i+1) for i < half; an odd last element passes through
        let mut a = Vec::with_capacity(rows * half);
        let mut b = Vec::with_capacity(rows * half);
        let mut ia = Vec::new();
        let mut ib = Vec::new();
        for r in 0..rows {
            for i in 0..half {
                a.push(vals[r][2 * i]);
                b.push(vals[r][2 * i + 1]);
                if with_index {
                    ia.push(idx[r][2 * i]);
                    ib.push(idx[r][2 * i + 1]);
                }
            }
        }
        let diff: Vec<u64> = a.iter().zip(&b).map(|(u, v)| u.wrapping_sub(*v)).collect();
        let d = mask_open(p, &diff, &[], cmp_bits, &[])
            .await?
            .greater_equal(0)?;
        let dv = diff;
        let di: Vec<u64> = ia
            .iter()
            .zip(&ib)
            .map(|(u, v)| u.wrapping_sub(*v))
            .collect();
        let mv = MulPending::begin(p, &d, &dv)?;
        let mi = if with_index {
            Some(MulPending::begin(p, &d, &di)?)
        } else {
            None
        };
        let mut groups: Vec<(&[u64], u32)> = vec![(mv.message(), 64)];
        if let Some(m) = &mi {
            groups.push((m.message(), 64));
        }
        let opened = open_groups(p, &groups).await?;
        let sel_v = mv.finish(&opened[0]);
        let sel_i = mi.map(|m| m.finish(&opened[1]));
        let mut nv = Vec::with_capacity(rows);
        let mut ni = Vec::with_capacity(rows);
        for r in 0..rows {
            let mut row_v = Vec::with_capacity(half + 1);
            let mut row_i = Vec::with_capacity(half + 1);
            for i in 0..half {
                let k = r * half + i;
                row_v.push(b[k].wrapping_add(sel_v[k]));
                if let Some(si) = &sel_i {
                    row_i.push(ib[k].wrapping_add(si[k]));
                }
            }
            if len % 2 == 1 {
                row_v.push(vals[r][len - 1]);
                if with_index {
                    row_i.push(idx[r][len - 1]);
                }
            }
            nv.push(row_v);
            ni.push(row_i);
        }
        vals = nv;
        idx = ni;
    }
    let m = vals.into_iter().map(|v| v[0]).collect();
    let i = if with_index {
        Some(idx.into_iter().map(|v| v[0]).collect())
    } else {
        None
    };
    Ok((m, i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed::FixedPoint;
    use crate::prg::{Prg, Seed};
    use crate::testing::{reconstruct, run_pair, share};

    #[test]
    fn max_and_argmax_match_plaintext() {
        let (rows, cols) = (7, 13);
        let mut prg = Prg::new(Seed::from_u64(31), 0);
        let x: Vec<u64> = (0..rows * cols)
            .map(|_| ((prg.next_u64() >> 40) as i64 - (1 << 23)) as u64)
            .collect();
        let (x0, x1) = share(&x, &mut prg);
        let run = run_pair(32, FixedPoint::default(), |mut p| {
            let x = if p.is_p0() { x0.clone() } else { x1.clone() };
            async move { (max_rows(&mut p, &x, rows, cols, 40, true).await.unwrap(), p) }
        });
        let m = reconstruct(&run.out[0].0, &run.out[1].0);
        let i = reconstruct(
            run.out[0].1.as_ref().unwrap(),
            run.out[1].1.as_ref().unwrap(),
        );
        for r in 0..rows {
            let row: Vec<i64> = x[r * cols..(r + 1) * cols]
                .iter()
                .map(|v| *v as i64)
                .collect();
            let want = *row.iter().max().unwrap();
            assert_eq!(m[r] as i64, want);
            assert_eq!(row[i[r] as usize], want);
        }
        // ceil(log2 13) = 4 levels, 2 rounds each
        assert_eq!(run.comm[0].rounds, 8);
    }
}

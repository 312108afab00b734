//! The client's arithmetic of a step: its hidden state encoded in fixed point and split into
//! the two parties' additive shares over Z_2^64, and the reconstructed output decoded (with the
//! final norm's γ applied when the client holds it).

use anyhow::{anyhow, Result};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Prg;
use marill_mpc::sharing::share;

/// The client's side of a step: checks that `x` holds rows of width `d`, encodes it in fixed
/// point and splits it into the two parties' shares.
pub fn share_hidden(
    fx: FixedPoint,
    d: usize,
    x: &[f32],
    prg: &mut Prg,
) -> Result<(Vec<u64>, Vec<u64>)> {
    if d == 0 || !x.len().is_multiple_of(d) {
        return Err(anyhow!(
            "hidden state of {} values is not a multiple of {d}",
            x.len()
        ));
    }
    let xs: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    let enc = fx
        .encode_slice(&xs)
        .map_err(|e| anyhow!("prefix output: {e}"))?;
    Ok(share(&enc, prg))
}

/// The client's side of a step's end: decodes the reconstructed output and applies the final
/// γ when the client holds it (`marill_suffix::secure::FinalGamma::AtClient`).
pub fn decode_output(fx: FixedPoint, y: &[u64], gamma: Option<&[f32]>) -> Vec<f32> {
    y.iter()
        .enumerate()
        .map(|(k, v)| {
            let g = gamma.map_or(1.0, |g| g[k % g.len()]);
            fx.decode(*v) as f32 * g
        })
        .collect()
}

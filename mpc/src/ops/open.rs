//! Opening (revealing) shared values to both parties.
//!
//! Rounds: 1. Online bytes/elt/party: `ceil(bits/8)` (8 for full ring values). Dealer: 0.

use crate::channel::Transport;
use crate::error::Result;
use crate::party::Party;

/// Opens `shares` (values modulo `2^bits`; 64 = full ring) to both parties.
pub async fn open<T: Transport>(p: &mut Party<T>, shares: &[u64], bits: u32) -> Result<Vec<u64>> {
    let peer = p.chan.exchange(shares, bits).await?;
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    Ok(shares
        .iter()
        .zip(&peer)
        .map(|(a, b)| a.wrapping_add(*b) & mask)
        .collect())
}

/// Opens several independent groups `(shares, bits)` in one round.
pub async fn open_groups<T: Transport>(
    p: &mut Party<T>,
    groups: &[(&[u64], u32)],
) -> Result<Vec<Vec<u64>>> {
    let peer = p.chan.exchange_groups(groups).await?;
    Ok(groups
        .iter()
        .zip(peer)
        .map(|((mine, bits), theirs)| {
            let mask = if *bits >= 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            mine.iter()
                .zip(&theirs)
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .collect()
        })
        .collect())
}

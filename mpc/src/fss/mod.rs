//! Function secret sharing for two parties with a dealer: distributed comparison functions (DCF)
//! and distributed point functions (DPF) over the output group Z_2^64.
//!
//! - DCF: Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing for
//!   Mixed-Mode and Fixed-Point Secure Computation", Eurocrypt 2021 (the DCF of their Fig. 1, used
//!   by the gates of Fig. 3). Shares `f(x) = β·[x < α]` for unsigned `n`-bit `x`, `1 ≤ n ≤ 64`.
//! - DCF with a two-word payload ([`dcf2`]): the same tree over `Z_2^64 × Z_2^64`, one key
//!   instead of two at the same point (the fused signed lookup's borrow and its product).
//! - Bit-output DPF ([`bit_dpf`]): the same tree stopped 7 levels early, one output bit per
//!   point, and the signed table lookup built on it (46 AES calls instead of 2046 at n = 11).
//! - DPF: Boyle, Gilboa, Ishai, "Function Secret Sharing: Improvements and Extensions", CCS 2016,
//!   with payload 1, full-domain evaluation and early termination (a 128-bit leaf holds two u64
//!   outputs), `1 ≤ n ≤ 24`; [`dpf_lookup`] turns it into a masked table lookup.
//!
//! Both trees use the fixed-key AES-128 Matyas–Meyer–Oseas PRG of [`prg`] with the control bit of a
//! node kept in bit 0 of its seed.
//!
//! A party's key is a 16-byte root seed (the caller derives it from a PRG seed it shares with the
//! dealer, so it is not sent) plus correction words common to both parties:
//!
//! | scheme | correction words (bytes) | n = 10 | 12 | 16 | 32 | 64 | AES calls |
//! |---|---|---|---|---|---|---|---|
//! | DCF | `25·n + 8` | 258 | 308 | 408 | 808 | 1608 | eval `2n` per point; gen `6n` |
//! | two-word DCF | `33·n + 16` | 346 | 412 | 544 | 1072 | 2128 | eval `3n + 1` per point; gen `8n + 2` |
//! | DPF | `17·n − 2` (`n ≥ 2`; 16 for `n = 1`) | 168 | 202 | 270 | — | — | full-domain eval `2^n − 2`; gen `4n − 4` |
//!
//! A [`dpf_lookup`] costs one full-domain evaluation plus one `2^n`-term wrapping dot product per
//! table.

pub mod bit_dpf;
pub mod dcf;
pub mod dcf2;
#[cfg(target_arch = "x86_64")]
mod dcf_avx2;
#[cfg(target_arch = "x86_64")]
mod dcf_avx512;
pub mod dpf;
pub mod flat;
pub mod prg;

pub use bit_dpf::{
    bit_dpf_eval_full, bit_dpf_gen, bit_dpf_lookup_many, BitDpfCorrection, BitDpfKeys, SignedTables,
};
pub use dcf::{
    dcf_eval, dcf_eval_keys, dcf_eval_many, dcf_gen, DcfCorrection, DcfKeys, DcfLevel, DCF_MAX_BITS,
};
pub use dcf2::{dcf2_eval, dcf2_eval_keys, dcf2_gen, Dcf2Correction, Dcf2Keys, Dcf2Level};
pub use dpf::{
    dpf_eval_full, dpf_gen, dpf_lookup, dpf_lookup_with_scratch, DpfCorrection, DpfScratch,
    DPF_MAX_BITS,
};

use thiserror::Error;

/// Errors of decoding FSS keys.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FssError {
    /// The domain width is outside the supported range.
    #[error("invalid FSS domain width: {n_bits} bits (supported 1..={max})")]
    InvalidDomain {
        /// the requested width
        n_bits: u32,
        /// the largest supported width
        max: u32,
    },
    /// The input ends before the key does.
    #[error("truncated FSS key: need {needed} bytes, got {got}")]
    Truncated {
        /// bytes the key needs
        needed: usize,
        /// bytes available
        got: usize,
    },
    /// The bytes are not a canonical key encoding.
    #[error("malformed FSS key: {0}")]
    Malformed(&'static str),
}

/// The checks every key decoder starts with: `n_bits` in `1..=max`, and `got ≥ need(n_bits)`
/// bytes. Returns the key's encoded length.
pub(crate) fn check_key_len(
    n_bits: u32,
    max: u32,
    need: impl Fn(u32) -> usize,
    got: usize,
) -> Result<usize, FssError> {
    if !(1..=max).contains(&n_bits) {
        return Err(FssError::InvalidDomain { n_bits, max });
    }
    let needed = need(n_bits);
    if got < needed {
        return Err(FssError::Truncated { needed, got });
    }
    Ok(needed)
}

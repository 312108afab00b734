//! # marill-mpc — the secure-computation core of Marill
//!
//! Two computing parties (P0, P1) hold additive secret shares over the ring Z_2^64 of fixed-point
//! values; a dealer that sees no data produces correlated randomness offline ("2PC-Dealer", as in
//! CrypTen's trusted-third-party mode and SIGMA, Gupta et al., PoPETs 2024). The library is pure
//! protocol maths: deterministic under seeds, no tokio, no zeromq, no Kafka. Parties talk through the
//! small [`channel::Transport`] trait; [`channel::memory_pair`] connects two parties in memory.
//!
//! Layout:
//! - [`ring`], [`gemm`]: shaped u64 tensors with wrapping arithmetic and the ring matrix multiply.
//! - [`fixed`]: fixed-point encoding, value ranges and their checks.
//! - [`prg`]: AES-128-CTR pseudo-random generator (hardware AES) used for seeds and seed compression.
//! - [`fss`]: distributed comparison / point functions (DCF, DPF) with a fixed-key AES PRG.
//! - [`correlation`]: dealer correlations, their seed-compressed wire form and single-use stores.
//! - [`channel`]: the party-to-party channel trait, byte and round accounting.
//! - [`party`]: a party's protocol context (its role, channel, correlations, fixed-point setting).
//! - [`ops`]: the protocols (open, multiply, matmul, truncation, comparison, lookup-interpolation,
//!   exp, reciprocal, rsqrt, SiLU, GeLU, max/argmax, softmax, norms, rotary embedding).
#![deny(missing_docs)]

pub mod channel;
pub mod correlation;
pub mod error;
pub mod fixed;
pub mod fss;
pub mod gemm;
pub mod ops;
pub mod party;
pub mod prg;
pub mod ring;
pub mod sharing;
pub mod testing;

pub use error::{FailureKind, MpcError};
pub use fixed::FixedPoint;
pub use party::{Party, PartyId};
pub use ring::RingTensor;

//! Marill's dealer: correlated randomness for the two workers of the private suffix (2PC with a
//! dealer), generated on request and ahead of demand, each worker's half derived from a seed it
//! shares with the dealer so that only corrections travel (CrypTen's dealer compression).
//!
//! - [`run`]: one dealer process serving one worker pair over CURVE links, lane by lane.
//! - [`epochs`]: a restarted worker opens a new epoch with a fresh seed, so no correlation is
//!   ever handed out twice, also across restarts.
//! - [`ahead`]: the pool generated ahead of demand for a lane's predicted next step.
//!
//! Today a dealer is a per-pair sidecar; issue 19 turns this crate into a pool that any pair
//! draws from. The `marill dealer` command is a thin layer over [`run`].

pub mod ahead;
pub mod epochs;
mod serve;

pub use serve::{run, DealerConfig};

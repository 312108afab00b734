//! The commands of the private suffix's separate processes on encrypted links (`marill keys`,
//! `marill dealer`, `marill worker`, `marill client generate`): thin layers over the
//! `marill-dealer-pool`, `marill-workers` and `marill-client` crates. Every link is zeromq over TCP with CURVE encryption and mutual
//! authentication (`marill-transport`); every message is typed (`marill-proto`).

pub mod client;
pub mod dealer;
pub mod keys;
pub mod worker;

/// The names of the CURVE key pairs `marill keys generate` writes.
pub const ROLES: [&str; 5] = ["client", "provider", "helper", "dealer", "coordinator"];

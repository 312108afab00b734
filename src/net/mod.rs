//! The private suffix as separate processes on encrypted links: a dealer, a provider worker, a
//! helper worker and the client (`marill keys`, `marill dealer`, `marill worker`,
//! `marill client generate`). Direct mode: the client connects to its two workers itself (the
//! cluster's coordinator and Kafka intake come later). Every link is zeromq over TCP with CURVE
//! encryption and mutual authentication (`marill-transport`); every message is typed
//! (`marill-proto`).

pub mod client;
pub mod dealer;
pub mod dealer_ahead;
pub mod dealer_epochs;
pub mod keys;
pub mod worker;

pub use marill_proto::link::{recv, recv_idle, send, typed};

/// The names of the CURVE key pairs `marill keys generate` writes.
pub const ROLES: [&str; 5] = ["client", "provider", "helper", "dealer", "coordinator"];

//! Marill's provider and helper workers: the two parties of the private suffix under 2PC
//! (2PC with a dealer; see the suffix's protocols in `marill-suffix` and `marill-mpc`).
//!
//! - [`run`]: one worker process, from its links and the model to serving steps, with a direct
//!   client or the cluster's coordinator as its front.
//! - [`group`]: the coordinated worker as an actor group (ractor): a supervisor, one actor per
//!   session owning its lane, a memory owner, the owner of the peer and dealer links.
//! - [`lane`]: one lane's state (its correlation stream, masked private weights, KV cache).
//! - [`handshake`]: the provider hands the helper its shares of the prepared suffix.
//! - [`metrics`]: the worker's Prometheus series.
//!
//! The `marill worker` command is a thin layer over [`run`]; nothing here depends on it.

pub mod group;
pub mod handshake;
pub mod lane;
pub mod metrics;
mod run;

pub use run::{run, WorkerConfig, WorkerRole};

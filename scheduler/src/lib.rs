//! Session placement for Marill: which (provider, helper) pair runs a session.
//!
//! A pure library (no I/O, no clocks): the coordinator's actor feeds it worker updates and
//! session requests and applies its decisions. Goals, invariants and costs are in this crate's
//! README. In short:
//! - never over-commit: on each worker, the weight shares of every model it serves (charged once
//!   per model, when its first session lands) plus the KV caches of its sessions stay within its
//!   device memory, and its sessions within its concurrency limit;
//! - a pair is one provider and one helper in different trust domains, both healthy;
//! - stickiness: decode steps of a session stay on its pair; [`solve`] keeps every previous
//!   assignment that is still valid;
//! - locality: a worker that already holds a model's weight shares is preferred;
//! - a lost worker's sessions are reported so the coordinator can re-place or fail them.
//!
//! Decisions cost `O(log n)` in the number of workers (ordered indexes of free memory per role
//! and per (role, model)); see `marill bench scheduler` for measured latencies.

#![deny(missing_docs)]

pub mod bench;
mod index;
mod state;
mod types;

pub use state::Scheduler;
pub use types::{
    Assignment, Health, ModelId, Placement, Problem, Rejection, Role, SchedulerError, SessionId,
    SessionRequest, WorkerId, WorkerSpec,
};

/// Batch placement: the previous placement's still-valid assignments are kept (in session-id
/// order), then the other requests are placed in session-id order. Deterministic.
pub fn solve(problem: &Problem, previous: &Placement) -> Result<Placement, SchedulerError> {
    let mut s = Scheduler::new(&problem.workers, &problem.models)?;
    let mut out = Placement::default();
    let mut requests: Vec<&SessionRequest> = problem.sessions.iter().collect();
    requests.sort_by_key(|r| r.id);
    let mut pending = Vec::new();
    for r in requests {
        match previous.assignments.get(&r.id) {
            Some(a) => {
                let pinned = SessionRequest {
                    pin: Some((a.provider, a.helper)),
                    ..r.clone()
                };
                match s.place(&pinned) {
                    Ok(a) => {
                        out.assignments.insert(r.id, a);
                    }
                    Err(_) => pending.push(r),
                }
            }
            None => pending.push(r),
        }
    }
    for r in pending {
        let unpinned = SessionRequest {
            pin: None,
            ..r.clone()
        };
        match s.place(&unpinned) {
            Ok(a) => {
                out.assignments.insert(r.id, a);
            }
            Err(e) => {
                out.rejected.insert(r.id, e);
            }
        }
    }
    Ok(out)
}

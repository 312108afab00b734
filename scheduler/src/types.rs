//! The scheduler's vocabulary: workers, models, session requests, decisions and errors.

use std::collections::BTreeMap;
use thiserror::Error;

/// A worker's identifier.
pub type WorkerId = u32;
/// A session's identifier.
pub type SessionId = u64;
/// A model's identifier.
pub type ModelId = u32;

/// A worker's role in the 2PC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// holds the model owner's shares (party 0)
    Provider,
    /// holds shares only (party 1), in another trust domain
    Helper,
}

/// A worker's health as the coordinator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// takes new sessions
    Healthy,
    /// keeps its sessions, takes no new one
    Draining,
    /// gone: its sessions must move or fail
    Lost,
}

/// A worker as declared to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// identifier (unique)
    pub id: WorkerId,
    /// provider or helper
    pub role: Role,
    /// trust domain (a provider and its helper must differ)
    pub domain: u32,
    /// device memory for weight shares and KV caches, bytes
    pub mem_limit: u64,
    /// concurrent sessions at most
    pub max_sessions: u32,
    /// current health
    pub health: Health,
}

/// A session to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// identifier (unique)
    pub id: SessionId,
    /// the model it runs
    pub model: ModelId,
    /// KV-cache bytes to reserve on each of its two workers
    pub kv_bytes: u64,
    /// a required pair (stickiness: decode steps of a running session)
    pub pin: Option<(WorkerId, WorkerId)>,
}

/// A placement decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// the session
    pub session: SessionId,
    /// its provider
    pub provider: WorkerId,
    /// its helper
    pub helper: WorkerId,
}

/// Why a session was not placed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    /// no valid pair has room
    #[error("no {role:?} with room for the session")]
    NoCapacity {
        /// the role that had no room
        role: Role,
    },
    /// the model is not served
    #[error("model {0} is not served")]
    UnknownModel(ModelId),
    /// a pinned pair is not usable
    #[error("pinned pair unusable: {0}")]
    PinUnusable(String),
    /// the session id is already placed
    #[error("session {0} is already placed")]
    Duplicate(SessionId),
    /// the session is not placed
    #[error("session {0} is not placed")]
    UnknownSession(SessionId),
}

/// Errors of building a scheduler.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SchedulerError {
    /// two workers share an id
    #[error("worker {0} is declared twice")]
    DuplicateWorker(WorkerId),
    /// a worker id is unknown
    #[error("worker {0} is unknown")]
    UnknownWorker(WorkerId),
    /// a new capacity is below what the worker's sessions already hold
    #[error("worker {0} holds more than the new capacity")]
    BelowUse(WorkerId),
}

/// Everything a batch placement needs.
#[derive(Clone, Debug, Default)]
pub struct Problem {
    /// the workers
    pub workers: Vec<WorkerSpec>,
    /// weight-share bytes per served model (charged once per worker that serves it)
    pub models: BTreeMap<ModelId, u64>,
    /// the sessions to place
    pub sessions: Vec<SessionRequest>,
}

/// The outcome of a batch placement.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// placed sessions
    pub assignments: BTreeMap<SessionId, Assignment>,
    /// sessions that could not be placed, with the reason
    pub rejected: BTreeMap<SessionId, Rejection>,
}

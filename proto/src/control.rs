//! The control link, coordinator ↔ worker: the coordinator's readiness probe and the worker's
//! answer, a session's steps (their shares sealed to the worker's trust domain) and their
//! results (sealed to the client), and a session's end.

use crate::wire;
use serde::{Deserialize, Serialize};

/// The control link's envelope magic.
pub const MAGIC: &[u8; 3] = b"MRC";

/// Everything that travels between the coordinator and a worker.
#[derive(Clone, Serialize, Deserialize)]
pub enum ControlMessage {
    /// coordinator → worker: are you ready (the coordinator runs no public layers)
    Probe,
    /// worker → coordinator: the suffix it serves and the lanes it runs
    Ready {
        /// first private layer
        first_layer: usize,
        /// model width
        d_model: usize,
        /// the client multiplies the output by the final norm's γ (public, no zero entry)
        gamma_at_client: bool,
        /// sessions the worker runs at once (lanes `0..sessions`)
        sessions: u32,
        /// the worker is draining (it was told to stop: `SIGTERM`): it takes no new session,
        /// finishes its open ones, then exits. Sent unasked when the drain begins, and in
        /// every answer to a probe after that.
        draining: bool,
        /// bytes the worker may hold for sessions' KV caches (its memory limit less its
        /// weights; `u64::MAX`: no limit)
        kv_room: u64,
        /// the KV-cache bytes the worker reserves for each session (its most: `max_seq`
        /// positions)
        session_kv: u64,
    },
    /// coordinator → worker: run one step of a session on one of the pair's lanes (step 0
    /// opens the session on the lane, replacing whatever session the lane held); the share is
    /// sealed to the worker's trust domain
    SessionStep {
        /// the session
        session: String,
        /// the lane (`0..sessions` of the worker's `Ready`) the coordinator placed the session
        /// on: the same at both workers, so the session's 2PC messages and correlations
        /// travel on that lane of the peer and dealer links
        lane: u32,
        /// the job
        job_id: String,
        /// the step
        step: u32,
        /// public layers the client ran (the worker's suffix must start there)
        n_public: usize,
        /// the client's sealing key for the output share (bound into the share's sealing)
        reply_key: [u8; 32],
        /// the last rows of the output the client wants (1..=rows)
        out_rows: u32,
        /// this worker's sealed share, with the session's secret for this worker
        /// ([`crate::job::StepShare`])
        share: marill_transport::Sealed,
    },
    /// worker → coordinator: a step's output share, sealed to the client
    SessionOutput {
        /// the session
        session: String,
        /// the job
        job_id: String,
        /// the step
        step: u32,
        /// the sealed output share
        share: marill_transport::Sealed,
        /// the client multiplies the output by the final norm's γ
        gamma_at_client: bool,
        /// bytes this worker sent in the step
        bytes_sent: u64,
        /// rounds of the step
        rounds: u64,
        /// correlation bytes this worker received from the dealer for the step
        dealer_bytes: u64,
    },
    /// worker → coordinator: a step failed (the reason names what, never secrets)
    SessionFailed {
        /// the session
        session: String,
        /// the job
        job_id: String,
        /// the step
        step: u32,
        /// why (a public category for failures inside the 2PC: their detail can depend on
        /// secret values and stays at the workers)
        reason: String,
        /// refused before any 2PC work, at both workers: the lane and the session are as
        /// they were (the pair stays in service; a later step of the session may still run)
        refused: bool,
        /// refused because a worker of the pair drains (both workers learn it in their
        /// agreement before the step): a refused step 0 may run on another pair
        draining: bool,
    },
    /// coordinator → worker: the session ended (or expired): its lane's shares and KV cache
    /// are freed; no reply
    SessionEnd {
        /// the session
        session: String,
        /// its lane
        lane: u32,
    },
    /// either way: the sender failed; the text names what (never secrets)
    Error(String),
}

impl ControlMessage {
    /// The kind of this message, for errors and logs (never its content).
    pub fn kind_of(&self) -> &'static str {
        match self {
            ControlMessage::Probe => "probe",
            ControlMessage::Ready { .. } => "ready",
            ControlMessage::SessionStep { .. } => "session step",
            ControlMessage::SessionOutput { .. } => "session output",
            ControlMessage::SessionFailed { .. } => "session failed",
            ControlMessage::SessionEnd { .. } => "session end",
            ControlMessage::Error(_) => "error",
        }
    }
}

wire!(ControlMessage, "control");

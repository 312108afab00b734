//! The client link of the direct mode, client ↔ worker (one session over an encrypted link,
//! plain shares inside it): the client's hello naming its public prefix, the suffix the worker
//! serves, each step's input and output shares, and the session's end. (In the cluster the
//! client reaches the workers through Kafka: [`crate::job`].)

use crate::wire;
use serde::{Deserialize, Serialize};

/// The client link's envelope magic.
pub const MAGIC: &[u8; 3] = b"MRK";

/// Everything that travels between a direct client and a worker.
#[derive(Clone, Serialize, Deserialize)]
pub enum ClientMessage {
    /// client → worker: hello, with the number of public layers the client runs
    Hello {
        /// the client's public prefix length
        n_public: usize,
    },
    /// worker → client: the suffix it serves
    Ready {
        /// first private layer (= the client's public layers)
        first_layer: usize,
        /// model width
        d_model: usize,
        /// the client multiplies the output by the final norm's γ (public, no zero entry)
        gamma_at_client: bool,
    },
    /// client → worker: one step's share of the prefix output (T × d, fixed point)
    Step {
        /// the last rows of the output the client wants (1..=T; generation needs 1)
        out_rows: u32,
        /// the share
        x: Vec<u64>,
    },
    /// worker → client: the share of the step's output and the worker's online cost
    Output {
        /// the share of the last `out_rows` rows (out_rows × d)
        y: Vec<u64>,
        /// bytes this worker sent in the step
        bytes_sent: u64,
        /// rounds of the step
        rounds: u64,
        /// correlation bytes this worker received from the dealer for the step
        dealer_bytes: u64,
    },
    /// client → worker: end of session
    End,
    /// either way: the sender failed; the text names what (never secrets)
    Error(String),
}

impl ClientMessage {
    /// The kind of this message, for errors and logs (never its content).
    pub fn kind_of(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "hello",
            ClientMessage::Ready { .. } => "ready",
            ClientMessage::Step { .. } => "step",
            ClientMessage::Output { .. } => "output",
            ClientMessage::End => "end",
            ClientMessage::Error(_) => "error",
        }
    }
}

wire!(ClientMessage, "client");

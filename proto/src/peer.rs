//! The peer link's set-up, provider ↔ helper: the helper's probe until the provider is up, the
//! suffix's configuration with the helper's weight shares, and the lanes each runs. The 2PC
//! traffic of a step then travels on the same link as raw ring elements, lane by lane
//! (`marill_transport::mux`), not as these messages.

use crate::wire;
use marill_suffix::secure::PreparedSuffix;
use marill_suffix::SuffixConfig;
use serde::{Deserialize, Serialize};

/// The peer link's envelope magic.
pub const MAGIC: &[u8; 3] = b"MRP";

/// Everything that travels between the provider and the helper outside a step's 2PC.
#[derive(Clone, Serialize, Deserialize)]
pub enum PeerMessage {
    /// helper → provider: I am here (repeated until the provider answers)
    Probe,
    /// provider → helper: the suffix configuration and the helper's weight shares
    Prepared {
        /// the suffix configuration
        cfg: SuffixConfig,
        /// the helper's prepared suffix
        suffix: Box<PreparedSuffix>,
    },
    /// either way: the sessions the sender runs at once (the pair runs the smaller count)
    Ready {
        /// lanes `0..sessions`
        sessions: u32,
    },
    /// either way: the sender failed; the text names what (never secrets)
    Error(String),
}

impl PeerMessage {
    /// The kind of this message, for errors and logs (never its content).
    pub fn kind_of(&self) -> &'static str {
        match self {
            PeerMessage::Probe => "probe",
            PeerMessage::Prepared { .. } => "prepared suffix",
            PeerMessage::Ready { .. } => "ready",
            PeerMessage::Error(_) => "error",
        }
    }
}

wire!(PeerMessage, "peer");

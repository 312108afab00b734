//! The dealer link, worker ↔ dealer: the worker's seed and correlation requests, the dealer's
//! bundles, and the step framing that lets the dealer stream a known step's bundles unasked
//! (`marill_mpc::correlation::manifest`).

use crate::wire;
use marill_mpc::correlation::{Bundle, CorrRequest, StepKey};
use marill_mpc::PartyId;
use serde::{Deserialize, Serialize};

/// The dealer link's envelope magic.
pub const MAGIC: &[u8; 3] = b"MRD";

/// Everything that travels between a worker and the dealer.
#[derive(Clone, Serialize, Deserialize)]
pub enum DealerMessage {
    /// party → dealer: the party's PRG seed for a session
    SeedRequest {
        /// which party
        party: PartyId,
    },
    /// dealer → party: the seed it shares with the dealer
    Seed {
        /// 16 seed bytes
        seed: [u8; 16],
    },
    /// party → dealer: bundle `id` of kind `req`
    BundleRequest {
        /// which party
        party: PartyId,
        /// sequence number
        id: u64,
        /// kind and shape
        req: CorrRequest,
    },
    /// dealer → party: a bundle
    Bundle(Bundle),
    /// dealer → party: consecutive bundles of a streamed step, in id order, in one frame (a
    /// step's material travels in a handful of frames, not bundle by bundle)
    Bundles(Vec<Bundle>),
    /// party → dealer: a step (or the suffix's load) named `key` begins with bundle `first_id`
    StepBegin {
        /// which party
        party: PartyId,
        /// program, rows and position of the step
        key: StepKey,
        /// the party's next bundle id
        first_id: u64,
    },
    /// dealer → party: the step begins with bundle `first_id`, and its first `count` bundles
    /// follow unasked, in order, in a few [`DealerMessage::Bundles`] frames (0: the party
    /// asks for each)
    StepStream {
        /// the step's first bundle id (ids the party skips to were never handed out)
        first_id: u64,
        /// bundles streamed unasked
        count: u64,
    },
    /// dealer → party, between steps and unasked: the predicted next step `key` begins with
    /// bundle `first_id`, and its `count` bundles follow in a few [`DealerMessage::Bundles`]
    /// frames, so that they cross the link (and are decrypted) before the step starts. The
    /// party uses them if its next step is `key` at `first_id` (the dealer then sends no
    /// [`DealerMessage::StepStream`] for it), and drops them otherwise.
    AheadStream {
        /// the predicted step
        key: StepKey,
        /// its first bundle id
        first_id: u64,
        /// bundles that follow
        count: u64,
    },
    /// party → dealer: the step ended well (its requests are the manifest of its key)
    StepEnd {
        /// which party
        party: PartyId,
    },
    /// party → dealer: the session is over
    Done {
        /// which party
        party: PartyId,
    },
    /// either way: the sender failed; the text names what (never secrets)
    Error(String),
}

impl DealerMessage {
    /// The kind of this message, for errors and logs (never its content).
    pub fn kind_of(&self) -> &'static str {
        match self {
            DealerMessage::SeedRequest { .. } => "seed request",
            DealerMessage::Seed { .. } => "seed",
            DealerMessage::BundleRequest { .. } => "bundle request",
            DealerMessage::Bundle(_) => "bundle",
            DealerMessage::Bundles(_) => "bundles",
            DealerMessage::StepBegin { .. } => "step begin",
            DealerMessage::StepStream { .. } => "step stream",
            DealerMessage::AheadStream { .. } => "ahead stream",
            DealerMessage::StepEnd { .. } => "step end",
            DealerMessage::Done { .. } => "done",
            DealerMessage::Error(_) => "error",
        }
    }
}

wire!(DealerMessage, "dealer");

//! Marill's typed wire messages, in one place: every message between client, workers and dealer
//! is a [`Message`] in a versioned envelope (`b"MRL"`, version byte, bincode body with a size
//! limit). Decoders reject wrong magic or version, truncated and trailing bytes, and oversized
//! lengths, with an error naming what was wrong.

#![deny(missing_docs)]

pub mod job;
pub mod link;

use bincode::Options;
use marill_mpc::correlation::{Bundle, CorrRequest, StepKey};
use marill_mpc::PartyId;
use marill_suffix::secure::PreparedSuffix;
use marill_suffix::SuffixConfig;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The envelope's magic bytes.
pub const MAGIC: &[u8; 3] = b"MRL";
/// The wire version this build speaks (4: a step names the output rows the client wants, a
/// session step's sealed share carries the session's secret, a failure says whether it was
/// refused before any 2PC work, and a norm's correlation request and bundle carry its input
/// check; 3: a fused signed lookup's
/// range check moved to its cell index, so its correlation request and bundle layout changed).
pub const VERSION: u8 = 4;
/// Largest message body accepted (a model's weight shares travel in one message).
pub const MAX_BODY: u64 = 1 << 30;

/// Decoding failures.
#[derive(Debug, Error, PartialEq)]
pub enum ProtoError {
    /// Not a Marill message.
    #[error("not a marill message (bad magic)")]
    Magic,
    /// Another wire version.
    #[error("wire version {got} is not supported (this build speaks {VERSION})")]
    Version {
        /// the version received
        got: u8,
    },
    /// The body does not decode.
    #[error("malformed {what} message: {why}")]
    Malformed {
        /// which message type was expected
        what: &'static str,
        /// the decoder's reason
        why: String,
    },
}

/// Everything that travels between Marill's processes. Its `Debug` output names the kind
/// only: shares, seeds and weights never reach a log through it.
#[derive(Clone, Serialize, Deserialize)]
pub enum Message {
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
    /// party → dealer: the session is over
    Done {
        /// which party
        party: PartyId,
    },
    /// provider → helper: the suffix configuration and the helper's weight shares
    Prepared {
        /// the suffix configuration
        cfg: SuffixConfig,
        /// the helper's prepared suffix
        suffix: Box<PreparedSuffix>,
    },
    /// client → party: hello, with the number of public layers the client runs
    ClientHello {
        /// the client's public prefix length
        n_public: usize,
    },
    /// party → client: the suffix it serves
    ServerHello {
        /// first private layer (= the client's public layers)
        first_layer: usize,
        /// model width
        d_model: usize,
        /// the client multiplies the output by the final norm's γ (public, no zero entry)
        gamma_at_client: bool,
        /// sessions the party serves at once (lanes `0..sessions`; 1 on a direct link)
        sessions: u32,
    },
    /// client → party: one step's share of the prefix output (T × d, fixed point)
    Step {
        /// the last rows of the output the client wants (1..=T; generation needs 1)
        out_rows: u32,
        /// the share
        x: Vec<u64>,
    },
    /// party → client: the share of the step's output and the party's online cost
    Output {
        /// the share of the last `out_rows` rows (out_rows × d)
        y: Vec<u64>,
        /// bytes this party sent in the step
        bytes_sent: u64,
        /// rounds of the step
        rounds: u64,
    },
    /// client → party: end of session
    End,
    /// coordinator → worker: run one step of a session on one of the pair's lanes (step 0
    /// opens the session on the lane, replacing whatever session the lane held); the share is
    /// sealed to the worker's trust domain
    SessionStep {
        /// the session
        session: String,
        /// the lane (`0..sessions` of the worker's hello) the coordinator placed the session
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
        /// ([`job::StepShare`])
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
    },
    /// any direction: the peer failed; the text names what (never secrets)
    Error(String),
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
    /// follow unasked, in order (0: the party asks for each)
    StepStream {
        /// the step's first bundle id (ids the party skips to were never handed out)
        first_id: u64,
        /// bundles streamed unasked
        count: u64,
    },
    /// party → dealer: the step ended well (its requests are the manifest of its key)
    StepEnd {
        /// which party
        party: PartyId,
    },
    /// coordinator → worker: the session ended (or expired): its lane's shares and KV cache
    /// are freed; no reply
    SessionEnd {
        /// the session
        session: String,
        /// its lane
        lane: u32,
    },
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::SeedRequest { .. } => "seed request",
            Message::Seed { .. } => "seed",
            Message::BundleRequest { .. } => "bundle request",
            Message::Bundle(_) => "bundle",
            Message::Done { .. } => "done",
            Message::Prepared { .. } => "prepared suffix",
            Message::ClientHello { .. } => "client hello",
            Message::ServerHello { .. } => "server hello",
            Message::Step { .. } => "step",
            Message::Output { .. } => "output",
            Message::End => "end",
            Message::SessionStep { .. } => "session step",
            Message::SessionOutput { .. } => "session output",
            Message::SessionFailed { .. } => "session failed",
            Message::Error(_) => "error",
            Message::StepBegin { .. } => "step begin",
            Message::StepStream { .. } => "step stream",
            Message::StepEnd { .. } => "step end",
            Message::SessionEnd { .. } => "session end",
        }
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Message::<{}>", self.name())
    }
}

/// The kind of a message, for errors and logs (never its content).
pub fn describe(m: &Message) -> &'static str {
    m.name()
}

/// Encodes `m` in an envelope `magic ‖ version ‖ bincode(m)`.
pub(crate) fn encode_in<T: Serialize>(magic: &[u8; 3], version: u8, limit: u64, m: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(magic);
    out.push(version);
    bincode::DefaultOptions::new()
        .with_limit(limit)
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .serialize_into(&mut out, m)
        .expect("in-memory serialisation of a well-formed message");
    out
}

/// Decodes an envelope written by [`encode_in`]: wrong magic or version, truncated or trailing
/// bytes and lengths over `limit` are errors naming `what` was expected.
pub(crate) fn decode_in<T: for<'de> Deserialize<'de>>(
    magic: &[u8; 3],
    version: u8,
    limit: u64,
    bytes: &[u8],
    what: &'static str,
) -> Result<T, ProtoError> {
    if bytes.len() < 4 || &bytes[..3] != magic {
        return Err(ProtoError::Magic);
    }
    if bytes[3] != version {
        return Err(ProtoError::Version { got: bytes[3] });
    }
    bincode::DefaultOptions::new()
        .with_limit(limit)
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .deserialize(&bytes[4..])
        .map_err(|e| ProtoError::Malformed {
            what,
            why: e.to_string(),
        })
}

/// The program fingerprint of a suffix, naming its steps' correlation manifests
/// ([`StepKey::program`]): its configuration as it travels, this wire version and the build's
/// version (another build may order its correlations differently).
pub fn program_of(cfg: &SuffixConfig) -> u64 {
    let mut d = encode_in(MAGIC, VERSION, MAX_BODY, cfg);
    d.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    marill_mpc::correlation::manifest::program_id(&d)
}

/// Encodes a message in its envelope.
pub fn encode(m: &Message) -> Vec<u8> {
    encode_in(MAGIC, VERSION, MAX_BODY, m)
}

/// Decodes a message from its envelope.
pub fn decode(bytes: &[u8]) -> Result<Message, ProtoError> {
    decode_in(MAGIC, VERSION, MAX_BODY, bytes, "marill")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::SeedRequest { party: PartyId::P1 },
            Message::Seed { seed: [7; 16] },
            Message::BundleRequest {
                party: PartyId::P0,
                id: 42,
                req: CorrRequest::Mask {
                    n: 3,
                    shifts: vec![16],
                    cmp_bits: 20,
                    exact: vec![],
                },
            },
            Message::Bundle(Bundle {
                id: 9,
                req: CorrRequest::MulTriples { n: 2 },
                explicit: vec![1, 2, 3],
            }),
            Message::Step {
                out_rows: 1,
                x: vec![1, u64::MAX, 3],
            },
            Message::Output {
                y: vec![5; 4],
                bytes_sent: 10,
                rounds: 2,
            },
            Message::End,
            Message::Error("boom".into()),
            Message::StepBegin {
                party: PartyId::P1,
                key: StepKey {
                    program: 0xfeed,
                    rows: 32,
                    pos: 0,
                },
                first_id: 812,
            },
            Message::StepStream {
                first_id: 900,
                count: 6558,
            },
            Message::StepEnd { party: PartyId::P0 },
            Message::SessionEnd {
                session: "s".into(),
                lane: 1,
            },
        ]
    }

    #[test]
    fn round_trips() {
        for m in samples() {
            let b = encode(&m);
            assert_eq!(encode(&decode(&b).unwrap()), b, "{}", describe(&m));
        }
    }

    #[test]
    fn debug_output_carries_no_content() {
        let m = Message::Seed { seed: [0xab; 16] };
        let shown = format!("{m:?}");
        assert_eq!(shown, "Message::<seed>");
        let s = format!(
            "{:?}",
            Message::Step {
                out_rows: 1,
                x: vec![123_456_789]
            }
        );
        assert!(!s.contains("123456789"), "{s}");
    }

    #[test]
    fn bad_envelopes_are_rejected_with_a_reason() {
        let good = encode(&Message::Step {
            out_rows: 1,
            x: vec![1, 2, 3],
        });
        assert_eq!(decode(b"XYZ\x01abc").unwrap_err(), ProtoError::Magic);
        let mut next = good.clone();
        next[3] = VERSION + 1;
        assert_eq!(
            decode(&next).unwrap_err(),
            ProtoError::Version { got: VERSION + 1 }
        );
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(ProtoError::Malformed { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode(&trailing),
            Err(ProtoError::Malformed { .. })
        ));
        // a length prefix claiming 2^62 elements is refused, not allocated
        let mut huge = encode(&Message::Step {
            out_rows: 1,
            x: vec![],
        });
        let n = huge.len();
        huge[n - 8..].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn a_ring_tensor_with_a_wrong_shape_is_refused() {
        use marill_mpc::RingTensor;
        let t = RingTensor::from_vec(&[2, 2], vec![1, 2, 3, 4]).unwrap();
        let mut b = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .serialize(&t)
            .unwrap();
        b[8] = 3; // shape [3, 2] with 4 elements
        let back: Result<RingTensor, _> = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .deserialize(&b);
        assert!(back.is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = MAGIC.to_vec();
            b.push(VERSION);
            b.extend_from_slice(&body);
            let _ = decode(&b);
        }

        #[test]
        fn steps_round_trip(x in proptest::collection::vec(any::<u64>(), 0..64)) {
            let m = Message::Step { out_rows: 1, x: x.clone() };
            match decode(&encode(&m)).unwrap() {
                Message::Step { x: back, .. } => prop_assert_eq!(back, x),
                other => prop_assert!(false, "decoded {}", describe(&other)),
            }
        }
    }
}

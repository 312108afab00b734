//! Marill's typed wire messages, in one place: one message enum per link, each in a versioned
//! envelope (three magic bytes naming the link, a version byte, a bincode body with a size
//! limit).
//!
//! | link | enum | between |
//! |---|---|---|
//! | control | [`control::ControlMessage`] | coordinator ↔ worker |
//! | peer | [`peer::PeerMessage`] | provider ↔ helper (set-up; the 2PC traffic is raw frames) |
//! | dealer | [`dealer::DealerMessage`] | worker ↔ dealer |
//! | client | [`client::ClientMessage`] | a direct client ↔ worker |
//!
//! A message of one link arriving on another is refused by its magic ("a peer-link message on
//! the dealer link"), before any of its body is read. Decoders also reject another version,
//! truncated and trailing bytes, and oversized lengths, with an error naming what was wrong.
//! The Kafka job schema ([`job`]) has an envelope of its own.

#![deny(missing_docs)]

pub mod client;
pub mod control;
pub mod dealer;
pub mod job;
pub mod link;
pub mod peer;

use bincode::Options;
use marill_suffix::SuffixConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use client::ClientMessage;
pub use control::ControlMessage;
pub use dealer::DealerMessage;
pub use peer::PeerMessage;

/// The wire version this build speaks on every link (7: a mask's correlation request carries
/// its comparison shift, and a coarse comparison key covers only the mask's bits above it; 6: a
/// worker's `Ready` and a refused
/// step say whether it drains, and its `Ready` the memory it has for sessions' KV caches; a
/// fused signed lookup's bundle carries one two-word DCF key for its cell borrow and `a·β`
/// instead of two one-word keys; 5: one message enum per link, each link
/// with its own magic; 4: a step names the output rows the client wants, a session step's
/// sealed share carries the session's secret, a failure says whether it was refused before
/// any 2PC work, and a norm's correlation request and bundle carry its input check; 3: a fused
/// signed lookup's range check moved to its cell index).
pub const VERSION: u8 = 7;
/// Largest message body accepted (a model's weight shares travel in one message).
pub const MAX_BODY: u64 = 1 << 30;

/// The links and their envelope magics.
const LINKS: [(&[u8; 3], &str); 4] = [
    (control::MAGIC, "control"),
    (peer::MAGIC, "peer"),
    (dealer::MAGIC, "dealer"),
    (client::MAGIC, "client"),
];

/// Decoding failures.
#[derive(Debug, Error, PartialEq)]
pub enum ProtoError {
    /// Not a Marill message.
    #[error("not a marill message (bad magic)")]
    Magic,
    /// A Marill message of another link.
    #[error("a {got}-link message on the {expected} link")]
    WrongLink {
        /// the link the receiver serves
        expected: &'static str,
        /// the link the message belongs to
        got: &'static str,
    },
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

/// A link's message enum: its envelope magic, its name, and its `Error` variant (every link
/// can carry a peer's failure, whose text names what failed and never a secret).
pub trait Wire: Serialize + DeserializeOwned {
    /// The link's envelope magic.
    const MAGIC: &'static [u8; 3];
    /// The link's name, for errors ("dealer").
    const LINK: &'static str;
    /// The kind of this message, for errors and logs (never its content).
    fn kind(&self) -> &'static str;
    /// The link's failure message.
    fn error(text: String) -> Self;
    /// This message as a failure: its text, or itself when it is not one.
    fn into_error(self) -> Result<String, Self>;
}

/// Implements [`Wire`] for a link's enum `$t` (its module's `MAGIC`, the link's name, its
/// `Error(String)` variant, its inherent `kind_of`) and `Debug` as the message's kind only:
/// shares, seeds and weights never reach a log through it.
macro_rules! wire {
    ($t:ident, $link:literal) => {
        impl crate::Wire for $t {
            const MAGIC: &'static [u8; 3] = MAGIC;
            const LINK: &'static str = $link;

            fn kind(&self) -> &'static str {
                self.kind_of()
            }

            fn error(text: String) -> Self {
                $t::Error(text)
            }

            fn into_error(self) -> Result<String, Self> {
                match self {
                    $t::Error(e) => Ok(e),
                    m => Err(m),
                }
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}::<{}>", stringify!($t), self.kind_of())
            }
        }
    };
}
pub(crate) use wire;

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
/// ([`marill_mpc::correlation::StepKey::program`]): its configuration as it travels, this wire
/// version and the build's version (another build may order its correlations differently).
pub fn program_of(cfg: &SuffixConfig) -> u64 {
    let mut d = encode_in(peer::MAGIC, VERSION, MAX_BODY, cfg);
    d.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    marill_mpc::correlation::manifest::program_id(&d)
}

/// Encodes a message of link `M` in its envelope.
pub fn encode<M: Wire>(m: &M) -> Vec<u8> {
    encode_in(M::MAGIC, VERSION, MAX_BODY, m)
}

/// Decodes a message of link `M` from its envelope; a message of another link is
/// [`ProtoError::WrongLink`].
pub fn decode<M: Wire>(bytes: &[u8]) -> Result<M, ProtoError> {
    match decode_in(M::MAGIC, VERSION, MAX_BODY, bytes, M::LINK) {
        Err(ProtoError::Magic) => Err(LINKS
            .iter()
            .find(|(magic, _)| bytes.len() >= 3 && &bytes[..3] == *magic)
            .map_or(ProtoError::Magic, |(_, got)| ProtoError::WrongLink {
                expected: M::LINK,
                got,
            })),
        r => r,
    }
}

/// The kind of a message, for errors and logs (never its content).
pub fn describe<M: Wire>(m: &M) -> &'static str {
    m.kind()
}

#[cfg(test)]
mod tests {
    use super::*;
    use marill_mpc::correlation::{Bundle, CorrRequest, StepKey};
    use marill_mpc::PartyId;
    use proptest::prelude::*;

    fn dealer_samples() -> Vec<DealerMessage> {
        vec![
            DealerMessage::SeedRequest { party: PartyId::P1 },
            DealerMessage::Seed { seed: [7; 16] },
            DealerMessage::BundleRequest {
                party: PartyId::P0,
                id: 42,
                req: CorrRequest::Mask {
                    n: 3,
                    shifts: vec![16],
                    cmp_bits: 20,
                    cmp_shift: 0,
                    exact: vec![],
                },
            },
            DealerMessage::Bundle(Bundle {
                id: 9,
                req: CorrRequest::MulTriples { n: 2 },
                explicit: vec![1, 2, 3],
            }),
            DealerMessage::StepBegin {
                party: PartyId::P1,
                key: StepKey {
                    program: 0xfeed,
                    rows: 32,
                    pos: 0,
                },
                first_id: 812,
            },
            DealerMessage::StepStream {
                first_id: 900,
                count: 6558,
            },
            DealerMessage::StepEnd { party: PartyId::P0 },
            DealerMessage::Done { party: PartyId::P0 },
            DealerMessage::Error("boom".into()),
        ]
    }

    fn client_samples() -> Vec<ClientMessage> {
        vec![
            ClientMessage::Hello { n_public: 15 },
            ClientMessage::Ready {
                first_layer: 15,
                d_model: 576,
                gamma_at_client: true,
            },
            ClientMessage::Step {
                out_rows: 1,
                x: vec![1, u64::MAX, 3],
            },
            ClientMessage::Output {
                y: vec![5; 4],
                bytes_sent: 10,
                rounds: 2,
                dealer_bytes: 3,
            },
            ClientMessage::End,
            ClientMessage::Error("boom".into()),
        ]
    }

    fn control_samples() -> Vec<ControlMessage> {
        vec![
            ControlMessage::Probe,
            ControlMessage::Ready {
                first_layer: 15,
                d_model: 576,
                gamma_at_client: false,
                sessions: 4,
                draining: true,
                kv_room: 1 << 30,
                session_kv: 1 << 20,
            },
            ControlMessage::SessionFailed {
                session: "s".into(),
                job_id: "j".into(),
                step: 3,
                reason: "r".into(),
                refused: true,
                draining: false,
            },
            ControlMessage::SessionEnd {
                session: "s".into(),
                lane: 1,
            },
            ControlMessage::Error("boom".into()),
        ]
    }

    fn peer_samples() -> Vec<PeerMessage> {
        vec![
            PeerMessage::Probe,
            PeerMessage::Ready { sessions: 3 },
            PeerMessage::Error("boom".into()),
        ]
    }

    fn round_trip<M: Wire>(samples: Vec<M>) {
        for m in samples {
            let b = encode(&m);
            assert_eq!(encode(&decode::<M>(&b).unwrap()), b, "{}", describe(&m));
        }
    }

    #[test]
    fn every_link_round_trips() {
        round_trip(dealer_samples());
        round_trip(client_samples());
        round_trip(control_samples());
        round_trip(peer_samples());
    }

    #[test]
    fn a_message_of_another_link_is_refused_by_name() {
        let on_peer = encode(&PeerMessage::Probe);
        assert_eq!(
            decode::<DealerMessage>(&on_peer).unwrap_err(),
            ProtoError::WrongLink {
                expected: "dealer",
                got: "peer"
            }
        );
        let step = encode(&ClientMessage::End);
        let e = decode::<ControlMessage>(&step).unwrap_err();
        assert_eq!(e.to_string(), "a client-link message on the control link");
        // every pair of distinct links: no message of one decodes as another's
        let all: [(&str, Vec<u8>); 4] = [
            ("control", encode(&ControlMessage::Probe)),
            ("peer", encode(&PeerMessage::Probe)),
            (
                "dealer",
                encode(&DealerMessage::Done { party: PartyId::P0 }),
            ),
            ("client", encode(&ClientMessage::End)),
        ];
        for (link, bytes) in &all {
            let results = [
                ("control", decode::<ControlMessage>(bytes).is_ok()),
                ("peer", decode::<PeerMessage>(bytes).is_ok()),
                ("dealer", decode::<DealerMessage>(bytes).is_ok()),
                ("client", decode::<ClientMessage>(bytes).is_ok()),
            ];
            for (other, ok) in results {
                assert_eq!(ok, link == &other, "a {link} message decoded on {other}");
            }
        }
    }

    #[test]
    fn a_peers_error_becomes_an_error_on_every_link() {
        let e = link::typed::<DealerMessage>(&encode(&DealerMessage::Error("no stock".into())));
        assert!(matches!(e, Err(link::LinkError::Peer(t)) if t == "no stock"));
        let e = link::typed::<PeerMessage>(&encode(&PeerMessage::error("gone".into())));
        assert!(matches!(e, Err(link::LinkError::Peer(t)) if t == "gone"));
    }

    #[test]
    fn debug_output_carries_no_content() {
        let m = DealerMessage::Seed { seed: [0xab; 16] };
        assert_eq!(format!("{m:?}"), "DealerMessage::<seed>");
        let s = format!(
            "{:?}",
            ClientMessage::Step {
                out_rows: 1,
                x: vec![123_456_789]
            }
        );
        assert!(!s.contains("123456789"), "{s}");
    }

    #[test]
    fn bad_envelopes_are_rejected_with_a_reason() {
        let good = encode(&ClientMessage::Step {
            out_rows: 1,
            x: vec![1, 2, 3],
        });
        assert_eq!(
            decode::<ClientMessage>(b"XYZ\x01abc").unwrap_err(),
            ProtoError::Magic
        );
        let mut next = good.clone();
        next[3] = VERSION + 1;
        assert_eq!(
            decode::<ClientMessage>(&next).unwrap_err(),
            ProtoError::Version { got: VERSION + 1 }
        );
        assert!(matches!(
            decode::<ClientMessage>(&good[..good.len() - 1]),
            Err(ProtoError::Malformed { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<ClientMessage>(&trailing),
            Err(ProtoError::Malformed { .. })
        ));
        // a length prefix claiming 2^62 elements is refused, not allocated
        let mut huge = encode(&ClientMessage::Step {
            out_rows: 1,
            x: vec![],
        });
        let n = huge.len();
        huge[n - 8..].copy_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(decode::<ClientMessage>(&huge).is_err());
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

    fn random_body<M: Wire>(body: &[u8]) {
        let mut b = M::MAGIC.to_vec();
        b.push(VERSION);
        b.extend_from_slice(body);
        let _ = decode::<M>(&b);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            random_body::<ControlMessage>(&body);
            random_body::<PeerMessage>(&body);
            random_body::<DealerMessage>(&body);
            random_body::<ClientMessage>(&body);
        }

        #[test]
        fn steps_round_trip(x in proptest::collection::vec(any::<u64>(), 0..64)) {
            let m = ClientMessage::Step { out_rows: 1, x: x.clone() };
            match decode::<ClientMessage>(&encode(&m)).unwrap() {
                ClientMessage::Step { x: back, .. } => prop_assert_eq!(back, x),
                other => prop_assert!(false, "decoded {}", describe(&other)),
            }
        }
    }
}

//! The Kafka job schema (topics `marill.jobs`, `marill.results`, `marill.dead-letter`): typed,
//! versioned messages in their own envelope (`b"MRJ"`, version byte, bincode body with a size
//! limit), validated before anything acts on them.
//!
//! A session is a sequence of jobs with the same `session` and steps 0, 1, 2, …: step 0 is the
//! prefill (it opens the session), each later step one decoded token; `last` closes it (a step
//! with no rows and `last` only closes it: the client stopped, e.g. at an end-of-text token). Jobs
//! are keyed by session on `marill.jobs` (one partition keeps a session's steps in order),
//! results by job id on `marill.results`. The shares travel sealed (see
//! `marill_transport::seal`): the broker and the coordinator see ciphertexts only.

use marill_transport::Sealed;
use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// The job envelope's magic bytes.
pub const JOB_MAGIC: &[u8; 3] = b"MRJ";
/// The job schema version this build speaks (3: a result names the dealer bytes of its step;
/// 2: `out_rows`; the sealed shares carry the
/// session's secret and are bound to the reply key).
pub const JOB_VERSION: u8 = 3;
/// Largest job message accepted (a prompt's sealed shares: T × d × 8 bytes each).
pub const MAX_JOB_BODY: u64 = 64 << 20;
/// Longest job, session or model identifier.
pub const MAX_ID: usize = 128;

/// Topic of submitted jobs.
pub const JOBS_TOPIC: &str = "marill.jobs";
/// Topic of results (keyed by job id).
pub const RESULTS_TOPIC: &str = "marill.results";
/// Topic of rejected messages, with the reason.
pub const DEAD_LETTER_TOPIC: &str = "marill.dead-letter";

/// One step of a private inference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// unique per job: the idempotency key of its result
    pub job_id: String,
    /// the session (chosen by the client)
    pub session: String,
    /// 0 = prefill (opens the session), then one per decoded token
    pub step: u32,
    /// the session ends after this step
    pub last: bool,
    /// the model served
    pub model: String,
    /// public layers the client ran
    pub n_public: usize,
    /// rows (tokens) of the shares
    pub rows: usize,
    /// the last rows of the output the client wants back (1..=rows; generation needs only
    /// the last one, the default): the workers return nothing of the other rows
    pub out_rows: u32,
    /// the job fails if not done by this time (Unix milliseconds)
    pub deadline_ms: u64,
    /// the client's per-session sealing key (X25519) for the output shares; bound into the
    /// sealing of both input shares (a changed key makes them refuse to open), and fixed for
    /// the session by its step 0 at each worker
    pub reply_key: [u8; 32],
    /// the provider's and the helper's [`StepShare`] (the session's secret for that worker and
    /// its share of the hidden state, rows × d fixed-point values), each sealed to its trust
    /// domain's key
    pub shares: [Sealed; 2],
}

/// What became of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// the output shares, sealed to the client's key
    Done {
        /// provider's and helper's output share
        outputs: [Sealed; 2],
        /// the client multiplies the reconstruction by the final norm's γ
        gamma_at_client: bool,
        /// bytes each party sent in the step
        bytes_sent: [u64; 2],
        /// rounds of the step
        rounds: u64,
        /// correlation bytes each party received from the dealer for the step
        dealer_bytes: [u64; 2],
    },
    /// the session was closed by an end step (no rows)
    Closed,
    /// the job failed; the reason names what (never secrets)
    Failed {
        /// why
        reason: String,
    },
}

/// The result of a job on `marill.results`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// the job
    pub job_id: String,
    /// its session
    pub session: String,
    /// its step
    pub step: u32,
    /// what became of it
    pub outcome: Outcome,
}

/// A rejected message on `marill.dead-letter`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// where it came from
    pub topic: String,
    /// partition
    pub partition: i32,
    /// offset
    pub offset: i64,
    /// why it was rejected
    pub reason: String,
    /// the message as received (bounded by the broker's message size)
    pub payload: Vec<u8>,
}

fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    crate::encode_in(JOB_MAGIC, JOB_VERSION, MAX_JOB_BODY, m)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &'static str) -> Result<T, ProtoError> {
    crate::decode_in(JOB_MAGIC, JOB_VERSION, MAX_JOB_BODY, bytes, what)
}

fn check_id(what: &'static str, s: &str) -> Result<(), ProtoError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ProtoError::Malformed {
            what: "job",
            why: format!("{what} must be 1..={MAX_ID} characters of [A-Za-z0-9._:-]"),
        })
    }
}

impl Job {
    /// Encodes the job in its envelope.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes and validates a job.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let j: Job = decode(bytes, "job")?;
        j.validate()?;
        Ok(j)
    }

    /// Checks identifiers and shapes (what can be checked without the model).
    pub fn validate(&self) -> Result<(), ProtoError> {
        check_id("job_id", &self.job_id)?;
        check_id("session", &self.session)?;
        check_id("model", &self.model)?;
        let bad = |why: String| Err(ProtoError::Malformed { what: "job", why });
        if self.rows == 0 && !(self.last && self.step > 0) {
            return bad(
                "rows must be at least 1 (0 only ends an open session: last, step > 0)".into(),
            );
        }
        if self.rows > 0 && !(1..=self.rows).contains(&(self.out_rows as usize)) {
            return bad(format!(
                "out_rows {} is not within 1..={} (the step's rows)",
                self.out_rows, self.rows
            ));
        }
        if self.step > 0 && self.rows > 1 {
            return bad(format!(
                "decode step {} carries {} rows, not 1",
                self.step, self.rows
            ));
        }
        for (i, s) in self.shares.iter().enumerate() {
            if s.enc.len() != 32 || s.ct.len() < 16 {
                return bad(format!("share {i} is not a sealed message"));
            }
        }
        Ok(())
    }
}

impl JobResult {
    /// Encodes the result in its envelope.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a result.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        let r: JobResult = decode(bytes, "job result")?;
        check_id("job_id", &r.job_id)?;
        Ok(r)
    }
}

impl DeadLetter {
    /// Encodes the dead letter in its envelope.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a dead letter.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtoError> {
        decode(bytes, "dead letter")
    }
}

/// Length of a session's secret (per worker).
pub const SESSION_SECRET_LEN: usize = 32;

/// What a step's sealed share holds for one worker: the session's secret for that worker
/// (drawn by the client from the OS CSPRNG when it opens the session) and the worker's share.
///
/// The secret authenticates the session's later steps: a worker fixes it (and the reply key)
/// at step 0 and refuses a later step that does not carry the same secret. Only the client and
/// that worker can read it (it travels sealed to the worker's trust domain), so a broker or a
/// coordinator, who can seal shares of their own to the public domain keys, cannot inject a
/// step into another client's session.
pub struct StepShare {
    /// the session's secret for this worker
    pub secret: [u8; SESSION_SECRET_LEN],
    /// the worker's share of the hidden state (rows × d)
    pub values: Vec<u64>,
}

impl std::fmt::Debug for StepShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StepShare(<secret>, {} values)", self.values.len())
    }
}

impl StepShare {
    /// The plaintext to seal: the secret, then the values little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SESSION_SECRET_LEN + 8 * self.values.len());
        b.extend_from_slice(&self.secret);
        b.extend(shares_to_bytes(&self.values));
        b
    }

    /// The inverse of [`StepShare::to_bytes`]; errors on a short or ragged plaintext.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ProtoError> {
        if b.len() < SESSION_SECRET_LEN {
            return Err(ProtoError::Malformed {
                what: "share",
                why: format!(
                    "{} bytes is shorter than the session secret ({SESSION_SECRET_LEN})",
                    b.len()
                ),
            });
        }
        let (secret, values) = b.split_at(SESSION_SECRET_LEN);
        Ok(Self {
            secret: secret.try_into().expect("secret length"),
            values: shares_from_bytes(values)?,
        })
    }

    /// Whether `other` is this share's secret (in time independent of where they differ).
    pub fn secret_is(&self, other: &[u8; SESSION_SECRET_LEN]) -> bool {
        self.secret
            .iter()
            .zip(other)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// A share's plaintext inside its sealed box: the values, little-endian.
pub fn shares_to_bytes(x: &[u64]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of [`shares_to_bytes`]; errors on a length that is not a multiple of 8.
pub fn shares_from_bytes(b: &[u8]) -> Result<Vec<u64>, ProtoError> {
    if !b.len().is_multiple_of(8) {
        return Err(ProtoError::Malformed {
            what: "share",
            why: format!("{} bytes is not a whole number of values", b.len()),
        });
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealed(n: usize) -> Sealed {
        Sealed {
            enc: vec![1; 32],
            ct: vec![2; n + 16],
        }
    }

    pub(crate) fn job() -> Job {
        Job {
            job_id: "job-1".into(),
            session: "sess-1".into(),
            step: 0,
            last: false,
            model: "smollm2".into(),
            n_public: 28,
            rows: 3,
            out_rows: 1,
            deadline_ms: 1_800_000_000_000,
            reply_key: [9; 32],
            shares: [sealed(24), sealed(24)],
        }
    }

    #[test]
    fn round_trips() {
        let j = job();
        assert_eq!(Job::decode(&j.encode()).unwrap(), j);
        let r = JobResult {
            job_id: "job-1".into(),
            session: "sess-1".into(),
            step: 0,
            outcome: Outcome::Done {
                outputs: [sealed(8), sealed(8)],
                gamma_at_client: true,
                bytes_sent: [1, 2],
                rounds: 3,
                dealer_bytes: [4, 5],
            },
        };
        assert_eq!(JobResult::decode(&r.encode()).unwrap(), r);
        let d = DeadLetter {
            topic: JOBS_TOPIC.into(),
            partition: 0,
            offset: 7,
            reason: "bad magic".into(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(DeadLetter::decode(&d.encode()).unwrap(), d);
    }

    #[test]
    fn invalid_jobs_are_refused_with_a_reason() {
        let mut j = job();
        j.job_id = "a b".into();
        assert!(Job::decode(&j.encode())
            .unwrap_err()
            .to_string()
            .contains("job_id"));
        let mut j = job();
        j.step = 2;
        assert!(Job::decode(&j.encode())
            .unwrap_err()
            .to_string()
            .contains("rows"));
        let mut j = job();
        j.out_rows = 4;
        assert!(Job::decode(&j.encode())
            .unwrap_err()
            .to_string()
            .contains("out_rows"));
        j.out_rows = 0;
        assert!(Job::decode(&j.encode()).is_err());
        let mut j = job();
        j.shares[1].enc.truncate(3);
        assert!(Job::decode(&j.encode())
            .unwrap_err()
            .to_string()
            .contains("share 1"));
        let mut b = job().encode();
        b[3] = 9;
        assert_eq!(Job::decode(&b), Err(ProtoError::Version { got: 9 }));
        assert_eq!(Job::decode(b"MRL\x01"), Err(ProtoError::Magic));
        let b = job().encode();
        assert!(Job::decode(&b[..b.len() - 1]).is_err());
        let mut t = job().encode();
        t.push(0);
        assert!(Job::decode(&t).is_err());
    }

    #[test]
    fn step_shares_round_trip_and_short_ones_are_refused() {
        let s = StepShare {
            secret: [7; SESSION_SECRET_LEN],
            values: vec![1, u64::MAX, 3],
        };
        let b = s.to_bytes();
        let back = StepShare::from_bytes(&b).unwrap();
        assert_eq!((back.secret, back.values.clone()), (s.secret, s.values));
        assert!(back.secret_is(&[7; SESSION_SECRET_LEN]));
        let mut other = [7; SESSION_SECRET_LEN];
        other[31] = 8;
        assert!(!back.secret_is(&other));
        assert!(StepShare::from_bytes(&b[..20]).is_err());
        assert!(StepShare::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(!format!("{back:?}").contains('7'));
    }

    proptest! {
        /// Arbitrary bytes never panic any decoder; mutated valid jobs decode or are refused.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), flip in 0usize..400) {
            let _ = Job::decode(&bytes);
            let _ = JobResult::decode(&bytes);
            let _ = DeadLetter::decode(&bytes);
            let mut b = job().encode();
            let i = flip % b.len();
            b[i] ^= 0x5a;
            let _ = Job::decode(&b);
        }
    }
}

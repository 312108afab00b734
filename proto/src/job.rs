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
/// The job schema version this build speaks.
pub const JOB_VERSION: u8 = 1;
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
    /// the job fails if not done by this time (Unix milliseconds)
    pub deadline_ms: u64,
    /// the client's per-session sealing key (X25519) for the output shares
    pub reply_key: [u8; 32],
    /// the provider's and the helper's share of the hidden state (rows × d fixed-point
    /// values), each sealed to its trust domain's key
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

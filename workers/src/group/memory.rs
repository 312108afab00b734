//! The worker's memory owner: accounts every byte of the loaded weights (the shared public base
//! weights once, each lane's masked private weights) and each open session's KV-cache
//! reservation (its most: `max_seq` positions), and admits a session only when its reservation
//! fits under the worker's limit, so the worker never holds more than it may. The accounting
//! is what the worker holds in host memory (the 2PC runs on the CPU); its limit is
//! `--memory-limit-mb`, else the device's: the first CUDA device's memory in a `cuda` build
//! with a GPU, else the host's cgroup limit or physical memory.
//! Published as `marill_worker_accounted_bytes{kind}` beside the KV cache in use.

use crate::metrics::WorkerMetrics;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;

/// Messages to the memory owner.
pub enum MemoryMsg {
    /// weights loaded (bytes)
    Weights(u64),
    /// reserve a session's KV cache (bytes); the reply says whether it was admitted, and why
    /// not
    Reserve {
        /// the session
        session: String,
        /// its reservation
        bytes: u64,
        /// admitted, or why not
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// the KV cache a session holds now (bytes, within its reservation)
    Used {
        /// the session
        session: String,
        /// bytes in use
        bytes: u64,
    },
    /// a session ended: its reservation is freed
    Release {
        /// the session
        session: String,
    },
}

/// What the owner accounts.
#[derive(Default)]
pub struct Accounts {
    /// the limit (0: none)
    pub limit: u64,
    /// weights
    pub weights: u64,
    /// reservations by session: (reserved, in use)
    pub sessions: HashMap<String, (u64, u64)>,
}

impl Accounts {
    /// Bytes accounted: weights and every reservation.
    pub fn total(&self) -> u64 {
        self.weights + self.sessions.values().map(|s| s.0).sum::<u64>()
    }

    /// Admits `session` with `bytes` reserved, or says why not (the limit would be exceeded);
    /// a session already open keeps its reservation.
    pub fn reserve(&mut self, session: &str, bytes: u64) -> Result<(), String> {
        if self.sessions.contains_key(session) {
            return Ok(());
        }
        let after = self.total() + bytes;
        if self.limit > 0 && after > self.limit {
            return Err(format!(
                "worker memory full: a session's KV cache of {bytes} bytes on top of {} \
                 accounted exceeds the limit of {}",
                self.total(),
                self.limit
            ));
        }
        self.sessions.insert(session.to_string(), (bytes, 0));
        Ok(())
    }
}

/// The memory owner.
pub struct MemoryOwner;

/// Its state: the accounts and the series they feed.
pub struct MemoryState {
    accounts: Accounts,
    metrics: WorkerMetrics,
}

impl MemoryState {
    fn publish(&self) {
        let a = &self.accounts;
        let m = &self.metrics;
        m.accounted
            .with_label_values(&["weights"])
            .set(a.weights as i64);
        let reserved: u64 = a.sessions.values().map(|s| s.0).sum();
        let used: u64 = a.sessions.values().map(|s| s.1).sum();
        m.accounted
            .with_label_values(&["kv_reserved"])
            .set(reserved as i64);
        m.kv_cache_bytes.set(used as i64);
        m.sessions_open.set(a.sessions.len() as i64);
    }
}

impl Actor for MemoryOwner {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = (u64, WorkerMetrics);

    async fn pre_start(
        &self,
        _myself: ActorRef<MemoryMsg>,
        (limit, metrics): (u64, WorkerMetrics),
    ) -> Result<MemoryState, ActorProcessingErr> {
        let accounts = Accounts {
            limit,
            ..Accounts::default()
        };
        Ok(MemoryState { accounts, metrics })
    }

    async fn handle(
        &self,
        _myself: ActorRef<MemoryMsg>,
        msg: MemoryMsg,
        st: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemoryMsg::Weights(b) => st.accounts.weights += b,
            MemoryMsg::Reserve {
                session,
                bytes,
                reply,
            } => {
                let r = st.accounts.reserve(&session, bytes);
                let _ = reply.send(r);
            }
            MemoryMsg::Used { session, bytes } => {
                if let Some(s) = st.accounts.sessions.get_mut(&session) {
                    s.1 = bytes;
                }
            }
            MemoryMsg::Release { session } => {
                st.accounts.sessions.remove(&session);
            }
        }
        st.publish();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_exceed_the_limit_and_are_freed() {
        let mut a = Accounts {
            limit: 1000,
            weights: 400,
            ..Accounts::default()
        };
        assert!(a.reserve("s1", 300).is_ok());
        let e = a.reserve("s2", 301).unwrap_err();
        assert!(e.contains("exceeds the limit of 1000"), "{e}");
        assert!(a.reserve("s2", 300).is_ok());
        assert_eq!(a.total(), 1000);
        // an open session keeps its reservation, it is not counted twice
        assert!(a.reserve("s1", 300).is_ok());
        assert_eq!(a.total(), 1000);
        a.sessions.remove("s1");
        assert!(a.reserve("s3", 300).is_ok());
        assert_eq!(a.total(), 1000);
    }

    #[test]
    fn no_limit_admits_everything() {
        let mut a = Accounts::default();
        for i in 0..100 {
            assert!(a.reserve(&format!("s{i}"), u64::MAX / 1000).is_ok());
        }
    }
}

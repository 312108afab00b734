//! One lane of a worker: an independent 2PC instance of the private suffix, on one lane of the
//! peer link and one lane of the dealer link (`marill_transport::mux`). A lane has its own
//! correlation stream (its own dealer seed), its own masked private weights (masked once, at
//! load, with that stream's masks) and the KV cache of the session it serves; the public base
//! weights are shared by all lanes (`Arc`). A worker runs its lanes' sessions in parallel.
//!
//! Correlations: a step whose manifest the dealer knows arrives streamed, unasked and in order
//! (`marill_mpc::correlation::manifest`): no round trip per bundle; any other bundle is asked
//! for.

use anyhow::{anyhow, bail, Result};
use marill_mpc::correlation::{
    Bundle, BundleSupplier, CorrRequest, CorrelationError, CorrelationStore, StepKey,
};
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::Seed;
use marill_mpc::{FailureKind, Party, PartyId};
use marill_proto::link::{recv, send};
use marill_proto::DealerMessage;
use marill_suffix::secure::{PreparedSuffix, SecureSuffix};
use marill_suffix::SuffixConfig;
use marill_transport::Lane;

/// Correlations from the dealer over this lane of the worker's dealer link. Tells the dealer
/// the lane's stream is over when dropped.
pub struct DealerLink {
    link: Lane,
    party: PartyId,
    /// nanoseconds spent waiting for the dealer (its answers to a step's start, its bundles),
    /// shared with the lane's state
    waited: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// the ids the dealer streams in the current step
    streamed: std::ops::Range<u64>,
    /// streamed bundles received and not yet taken, in id order
    queue: std::collections::VecDeque<Bundle>,
}

impl DealerLink {
    /// Asks the dealer for this lane's seed (skipping what it still streamed to this worker's
    /// previous incarnation); returns the link and the seed.
    pub fn open(link: Lane, party: PartyId) -> Result<(Self, Seed)> {
        send(&link, &DealerMessage::SeedRequest { party })?;
        let seed = loop {
            match recv(&link)? {
                DealerMessage::Seed { seed } => break Seed(seed),
                DealerMessage::Bundle(_)
                | DealerMessage::Bundles(_)
                | DealerMessage::StepStream { .. }
                | DealerMessage::AheadStream { .. } => continue,
                m => bail!(
                    "expected a seed from the dealer, got {}",
                    marill_proto::describe(&m)
                ),
            }
        };
        let me = Self {
            link,
            party,
            waited: Default::default(),
            streamed: 0..0,
            queue: Default::default(),
        };
        Ok((me, seed))
    }

    /// Sends `m` to the dealer; a failure makes bundle `id` unavailable.
    fn tell(&self, id: u64, m: &DealerMessage) -> Result<(), CorrelationError> {
        send(&self.link, m).map_err(|e| CorrelationError::Unavailable {
            id,
            why: e.to_string(),
        })
    }

    /// Receives the dealer's next message, counting the wait.
    fn next(&self) -> Result<DealerMessage, marill_proto::link::LinkError> {
        let t = std::time::Instant::now();
        let m = recv(&self.link);
        let waited = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.waited
            .fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
        m
    }

    /// Receives bundle `id`, which the dealer sends next (alone, or in a frame of streamed
    /// bundles).
    fn receive(&mut self, id: u64) -> Result<Bundle, CorrelationError> {
        let unavailable = |why: String| CorrelationError::Unavailable { id, why };
        if self.queue.is_empty() {
            match self.next().map_err(|e| unavailable(e.to_string()))? {
                DealerMessage::Bundle(b) => self.queue.push_back(b),
                DealerMessage::Bundles(bs) if !bs.is_empty() => self.queue.extend(bs),
                other => {
                    return Err(unavailable(format!(
                        "dealer sent {}",
                        marill_proto::describe(&other)
                    )))
                }
            }
        }
        match self.queue.pop_front() {
            Some(b) if b.id == id => Ok(b),
            Some(b) => {
                self.queue.clear();
                Err(unavailable(format!("dealer sent bundle {}", b.id)))
            }
            None => Err(unavailable("dealer sent an empty frame".into())),
        }
    }

    /// Reads and drops `count` bundles shipped ahead for a step that did not come.
    fn drop_bundles(&mut self, mut count: u64) -> Result<(), String> {
        while count > 0 {
            match self.next().map_err(|e| e.to_string())? {
                DealerMessage::Bundle(_) => count -= 1,
                DealerMessage::Bundles(bs) => count = count.saturating_sub(bs.len() as u64),
                other => {
                    return Err(format!(
                        "dealer sent {} among bundles shipped ahead",
                        marill_proto::describe(&other)
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Drop for DealerLink {
    fn drop(&mut self) {
        let _ = send(&self.link, &DealerMessage::Done { party: self.party });
    }
}

impl BundleSupplier for DealerLink {
    fn fetch(
        &mut self,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> Result<Bundle, CorrelationError> {
        if !self.streamed.contains(&id) {
            let ask = DealerMessage::BundleRequest {
                party,
                id,
                req: req.clone(),
            };
            self.tell(id, &ask)?;
        }
        self.receive(id)
    }

    fn begin_step(
        &mut self,
        party: PartyId,
        key: StepKey,
        first_id: u64,
    ) -> Result<u64, CorrelationError> {
        let begin = DealerMessage::StepBegin {
            party,
            key,
            first_id,
        };
        self.tell(first_id, &begin)?;
        let unavailable = |why: String| CorrelationError::Unavailable { id: first_id, why };
        self.queue.clear();
        loop {
            match self.next().map_err(|e| unavailable(e.to_string()))? {
                DealerMessage::StepStream { first_id: f, count } if f >= first_id => {
                    self.streamed = f..f.saturating_add(count);
                    return Ok(f);
                }
                // shipped before the step began: this step's bundles, already here, when the
                // dealer predicted it (it then sends no step stream)
                DealerMessage::AheadStream {
                    key: k,
                    first_id: f,
                    count,
                } if k == key && f == first_id => {
                    self.streamed = f..f.saturating_add(count);
                    return Ok(f);
                }
                // another step's: dropped (their ids are never used)
                DealerMessage::AheadStream { count, .. } => self
                    .drop_bundles(count)
                    .map_err(|e| unavailable(e.to_string()))?,
                other => {
                    return Err(unavailable(format!(
                        "dealer answered the step's start with {}",
                        marill_proto::describe(&other)
                    )))
                }
            }
        }
    }

    fn end_step(&mut self, party: PartyId, next_id: u64) -> Result<u64, CorrelationError> {
        // streamed bundles the step did not use are drained (and their ids never used)
        for id in next_id..self.streamed.end {
            self.receive(id)?;
        }
        let next = next_id.max(self.streamed.end);
        self.streamed = 0..0;
        self.queue.clear();
        self.tell(next, &DealerMessage::StepEnd { party })?;
        Ok(next)
    }
}

/// A lane's 2PC state: the party (peer lane, correlation store) and the loaded suffix with the
/// KV cache of the session it serves.
pub struct LaneState {
    /// the lane's number (the same at both workers)
    pub lane: u32,
    /// the party on the lane
    pub party: Party<Lane>,
    /// the suffix loaded on the lane
    pub sfx: SecureSuffix,
    /// the suffix's program fingerprint (names its steps for the dealer)
    pub program: u64,
    /// nanoseconds the lane has waited for the dealer so far (see [`LaneState::dealer_wait`])
    waited: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LaneState {
    /// Opens lane `lane` (its peer and dealer lanes) and loads `prep` on it: masks the private
    /// weights with this lane's correlations, bracketed as a step for the dealer.
    pub fn load(
        party: PartyId,
        peer: Lane,
        dealer: Lane,
        cfg: &SuffixConfig,
        prep: PreparedSuffix,
        fx: FixedPoint,
    ) -> Result<Self> {
        let lane = peer.id();
        let (supplier, seed) = DealerLink::open(dealer, party)?;
        let waited = supplier.waited.clone();
        let store = CorrelationStore::with_supplier(party, seed, Box::new(supplier));
        let mut p = Party::new(party, peer, store, fx);
        let program = marill_proto::program_of(cfg);
        p.store
            .begin_step(StepKey::load(program))
            .map_err(|e| anyhow!("load on lane {lane}: {e}"))?;
        let sfx = futures::executor::block_on(SecureSuffix::load(&mut p, cfg, prep))
            .map_err(|e| anyhow!("load on lane {lane}: {e}"))?;
        p.store
            .end_step()
            .map_err(|e| anyhow!("load on lane {lane}: {e}"))?;
        Ok(Self {
            lane,
            party: p,
            sfx,
            program,
            waited,
        })
    }

    /// Runs one step on `x` (rows × d), bracketed for the dealer, which streams the step's
    /// correlations unasked when it knows the manifest of the step's shape.
    pub fn forward(&mut self, x: &[u64]) -> Result<Vec<u64>, StepFailure> {
        let d = self.sfx_width();
        let key = StepKey {
            program: self.program,
            rows: (x.len() / d.max(1)) as u32,
            pos: self.sfx.position() as u32,
        };
        let p = &mut self.party;
        let correlation = |e: marill_mpc::correlation::CorrelationError| StepFailure {
            kind: FailureKind::Correlation,
            detail: e.to_string(),
        };
        p.store.begin_step(key).map_err(correlation)?;
        let y = futures::executor::block_on(self.sfx.forward(p, x)).map_err(|e| StepFailure {
            kind: e.kind(),
            detail: e.to_string(),
        })?;
        p.store.end_step().map_err(correlation)?;
        Ok(y)
    }

    /// Seconds this lane has waited for the dealer so far (inside steps and loads): the time
    /// its 2PC stood still for correlations that were not in its hands.
    pub fn dealer_wait(&self) -> f64 {
        self.waited.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9
    }

    fn sfx_width(&self) -> usize {
        self.sfx.config().d_model
    }
}

/// A step that failed inside the 2PC: its public category, and the detail that may depend on
/// secret values (e.g. how many inputs were out of range) and so never leaves the worker
/// above debug level.
#[derive(Debug)]
pub struct StepFailure {
    /// the public category (what the coordinator, the client and the logs see)
    pub kind: FailureKind,
    /// the detail (debug logs of the worker only)
    pub detail: String,
}

//! The dealer: generates correlations offline, deterministically from its seeds, and keeps
//! count of the bytes it must send to each party.

use super::material::generate;
use super::{Bundle, BundleSupplier, CorrRequest, CorrelationError};
use crate::party::PartyId;
use crate::prg::{Prg, Seed};
use crate::ring::RingTensor;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// Dealer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DealerStats {
    /// bundles generated
    pub bundles: u64,
    /// explicit bytes for party 0 and party 1
    pub bytes_to: [u64; 2],
    /// time spent generating, in nanoseconds
    pub gen_nanos: u64,
}

impl DealerStats {
    /// Total bytes that travel from the dealer (both parties, plus the two 16-byte seeds).
    pub fn total_bytes(&self) -> u64 {
        self.bytes_to[0] + self.bytes_to[1] + 32
    }
}

/// Correlation generator for one session.
pub struct Dealer {
    seeds: [Seed; 2],
    weights: HashMap<u64, RingTensor>,
    next_id: u64,
    stats: DealerStats,
}

impl Dealer {
    /// A dealer whose party seeds derive from `master` (deterministic).
    pub fn new(master: Seed) -> Self {
        Self {
            seeds: [master.derive(0), master.derive(1)],
            weights: HashMap::new(),
            next_id: 0,
            stats: DealerStats::default(),
        }
    }

    /// A dealer with explicit party seeds (all of a bundle's randomness comes from the two
    /// party streams, so fixing one seed fixes that party's random half — used by view tests).
    pub fn with_party_seeds(seeds: [Seed; 2]) -> Self {
        Self {
            seeds,
            weights: HashMap::new(),
            next_id: 0,
            stats: DealerStats::default(),
        }
    }

    /// The seed that party `p` must receive (once per session, over an encrypted channel).
    pub fn party_seed(&self, p: PartyId) -> Seed {
        self.seeds[p.index()]
    }

    /// Counters.
    pub fn stats(&self) -> DealerStats {
        self.stats
    }

    /// Generates the next bundle pair (for party 0 and party 1).
    pub fn next_bundle(&mut self, req: &CorrRequest) -> Result<[Bundle; 2], CorrelationError> {
        let id = self.next_id;
        let t = std::time::Instant::now();
        let mut s0 = Prg::new(self.seeds[0], id);
        let mut s1 = Prg::new(self.seeds[1], id);
        let (e0, e1) = generate(req, &mut s0, &mut s1, &mut self.weights)?;
        self.next_id += 1;
        self.stats.bundles += 1;
        self.stats.bytes_to[0] += e0.len() as u64;
        self.stats.bytes_to[1] += e1.len() as u64;
        self.stats.gen_nanos += t.elapsed().as_nanos() as u64;
        Ok([
            Bundle {
                id,
                req: req.clone(),
                explicit: e0,
            },
            Bundle {
                id,
                req: req.clone(),
                explicit: e1,
            },
        ])
    }

    /// Generates bundles for a whole manifest (offline phase).
    pub fn generate_manifest(
        &mut self,
        manifest: &[CorrRequest],
    ) -> Result<[Vec<Bundle>; 2], CorrelationError> {
        let mut out = [Vec::new(), Vec::new()];
        for req in manifest {
            let [b0, b1] = self.next_bundle(req)?;
            out[0].push(b0);
            out[1].push(b1);
        }
        Ok(out)
    }
}

struct SharedState {
    dealer: Dealer,
    stash: [BTreeMap<u64, Bundle>; 2],
    manifest: Option<Vec<CorrRequest>>,
    views: Option<[crate::channel::ViewLog; 2]>,
}

/// An on-demand dealer shared by the two parties of one process (tests, single-process runs):
/// whichever party first asks for bundle `id` makes the dealer generate it; the other party's
/// half waits in a stash. [`SharedDealer::recording`] also records the manifest (the sequence
/// of requests).
#[derive(Clone)]
pub struct SharedDealer {
    inner: Arc<Mutex<SharedState>>,
}

impl SharedDealer {
    /// Wraps a dealer (for a long-running service: nothing is kept once both halves are out).
    pub fn new(dealer: Dealer) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SharedState {
                dealer,
                stash: [BTreeMap::new(), BTreeMap::new()],
                manifest: None,
                views: None,
            })),
        }
    }

    /// Wraps a dealer that also records every request (benchmarks and tests replay the
    /// manifest; it grows with every bundle).
    pub fn recording(dealer: Dealer) -> Self {
        let d = Self::new(dealer);
        d.lock().manifest = Some(Vec::new());
        d
    }

    /// Halves generated for one party and not yet fetched by it, per party.
    pub fn stashed(&self) -> [usize; 2] {
        let st = self.lock();
        [st.stash[0].len(), st.stash[1].len()]
    }

    /// Records the explicit bytes each party receives into its view log (security tests).
    pub fn record_views(&self, views: [crate::channel::ViewLog; 2]) {
        self.lock().views = Some(views);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        // A poisoned lock only means another test thread panicked; the state stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The seed of party `p`.
    pub fn party_seed(&self, p: PartyId) -> Seed {
        self.lock().dealer.party_seed(p)
    }

    /// Dealer counters.
    pub fn stats(&self) -> super::dealer::DealerStats {
        self.lock().dealer.stats()
    }

    /// The id the dealer generates next.
    pub fn next_id(&self) -> u64 {
        self.lock().dealer.next_id
    }

    /// Generates the next bundle before either party asks for it and stashes both halves
    /// (a pool ahead of demand); returns its id and the explicit bytes of both halves.
    pub fn generate_ahead(&self, req: &CorrRequest) -> Result<(u64, usize), CorrelationError> {
        let mut st = self.lock();
        let [b0, b1] = Self::generate_locked(&mut st, req)?;
        let (id, bytes) = (b0.id, b0.explicit.len() + b1.explicit.len());
        st.stash[0].insert(id, b0);
        st.stash[1].insert(id, b1);
        Ok((id, bytes))
    }

    /// Drops the stashed halves with ids in `ids` (generated ahead for a step that did not
    /// come). They were never handed out, and the dealer never generates their ids again.
    pub fn discard(&self, ids: std::ops::Range<u64>) -> usize {
        let mut st = self.lock();
        let mut n = 0;
        for stash in &mut st.stash {
            let kept = stash.split_off(&ids.end);
            let below = stash.split_off(&ids.start);
            n += below.len();
            stash.extend(kept);
        }
        n
    }

    /// The requests generated so far, in order (empty unless [`SharedDealer::recording`]).
    pub fn manifest(&self) -> Vec<CorrRequest> {
        self.lock().manifest.clone().unwrap_or_default()
    }
}

impl BundleSupplier for SharedDealer {
    fn fetch(
        &mut self,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> Result<Bundle, CorrelationError> {
        let mut st = self.lock();
        let b = Self::fetch_locked(&mut st, party, id, req)?;
        if let Some(v) = &st.views {
            v[party.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(b.explicit.clone());
        }
        Ok(b)
    }
}

impl SharedDealer {
    /// Generates the next bundle pair, recording its request when recording.
    fn generate_locked(
        st: &mut SharedState,
        req: &CorrRequest,
    ) -> Result<[Bundle; 2], CorrelationError> {
        let pair = st.dealer.next_bundle(req)?;
        if let Some(m) = &mut st.manifest {
            m.push(req.clone());
        }
        Ok(pair)
    }

    fn fetch_locked(
        st: &mut SharedState,
        party: PartyId,
        id: u64,
        req: &CorrRequest,
    ) -> Result<Bundle, CorrelationError> {
        if let Some(b) = st.stash[party.index()].remove(&id) {
            return Ok(b);
        }
        if id != st.dealer.next_id {
            return Err(CorrelationError::Unavailable {
                id,
                why: format!("dealer is at bundle {}", st.dealer.next_id),
            });
        }
        let [b0, b1] = Self::generate_locked(st, req)?;
        let (mine, other) = match party {
            PartyId::P0 => (b0, b1),
            PartyId::P1 => (b1, b0),
        };
        st.stash[party.other().index()].insert(id, other);
        Ok(mine)
    }
}

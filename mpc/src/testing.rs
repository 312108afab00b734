//! Helpers to run both parties of a protocol in one process (tests, benchmarks, the
//! single-process executor): in-memory channel, on-demand dealer, one thread per party.

use crate::channel::{memory_pair, CommStats, MemoryTransport, ViewLog};
use crate::correlation::dealer::DealerStats;
use crate::correlation::{CorrRequest, CorrelationStore, Dealer, SharedDealer};
use crate::fixed::FixedPoint;
use crate::party::{Party, PartyId};
use crate::prg::Seed;
use std::future::Future;

pub use crate::sharing::{reconstruct, share};

/// What a two-party run returns: each party's output and counters, and the dealer's counters.
pub struct PairRun<R> {
    /// party outputs (P0, P1)
    pub out: [R; 2],
    /// communication counters (P0, P1)
    pub comm: [CommStats; 2],
    /// dealer counters
    pub dealer: DealerStats,
    /// the correlation manifest the run consumed
    pub manifest: Vec<CorrRequest>,
}

/// Runs `f` as both parties (one thread each) over an in-memory channel with an on-demand dealer
/// seeded by `seed`. `f` receives its party context; it picks its inputs by `party.id`.
pub fn run_pair<R, F, Fut>(seed: u64, fx: FixedPoint, f: F) -> PairRun<R>
where
    R: Send,
    F: Fn(Party<MemoryTransport>) -> Fut + Sync,
    Fut: Future<Output = (R, Party<MemoryTransport>)>,
{
    let d = Dealer::new(Seed::from_u64(seed));
    let seeds = [d.party_seed(PartyId::P0), d.party_seed(PartyId::P1)];
    run_pair_viewed(seeds, fx, None, f)
}

/// Like [`run_pair`] with explicit party seeds, recording each party's whole view — the
/// correlation bytes it receives from the dealer and every message from its peer — into
/// `views` (P0, P1).
pub fn run_pair_viewed<R, F, Fut>(
    seeds: [Seed; 2],
    fx: FixedPoint,
    views: Option<[ViewLog; 2]>,
    f: F,
) -> PairRun<R>
where
    R: Send,
    F: Fn(Party<MemoryTransport>) -> Fut + Sync,
    Fut: Future<Output = (R, Party<MemoryTransport>)>,
{
    let dealer = SharedDealer::recording(Dealer::with_party_seeds(seeds));
    let (mut t0, mut t1) = memory_pair();
    if let Some([v0, v1]) = views {
        dealer.record_views([v0.clone(), v1.clone()]);
        t0.record_view(v0);
        t1.record_view(v1);
    }
    let mk = |id: PartyId, t: MemoryTransport| {
        let store =
            CorrelationStore::with_supplier(id, dealer.party_seed(id), Box::new(dealer.clone()));
        Party::new(id, t, store, fx)
    };
    let p0 = mk(PartyId::P0, t0);
    let p1 = mk(PartyId::P1, t1);
    let (out, comm) = run_parties(p0, p1, &f);
    PairRun {
        out,
        comm,
        dealer: dealer.stats(),
        manifest: dealer.manifest(),
    }
}

/// Timings of a run with an offline phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseTimes {
    /// dealer generation of the whole manifest, seconds
    pub offline_s: f64,
    /// the online protocol, seconds (both parties in parallel, wall clock)
    pub online_s: f64,
}

/// Like [`run_pair`], but with a real offline phase: a first run records the correlation
/// manifest, the dealer then generates it all ahead of time (timed), and the online run (timed)
/// consumes only pre-generated bundles, which the parties expanded into material beforehand
/// (timed with the offline phase).
pub fn run_pair_offline<R, F, Fut>(seed: u64, fx: FixedPoint, f: F) -> (PairRun<R>, PhaseTimes)
where
    R: Send,
    F: Fn(Party<MemoryTransport>) -> Fut + Sync,
    Fut: Future<Output = (R, Party<MemoryTransport>)>,
{
    run_pair_stocked(seed, fx, true, f)
}

/// Like [`run_pair_offline`], with the parties' decoding of the pre-generated bundles (seed
/// expansion, key decoding) done before the online run when `decode_ahead`, or inside it, as
/// each bundle is taken, when not (what a worker does with the bundles it receives).
pub fn run_pair_stocked<R, F, Fut>(
    seed: u64,
    fx: FixedPoint,
    decode_ahead: bool,
    f: F,
) -> (PairRun<R>, PhaseTimes)
where
    R: Send,
    F: Fn(Party<MemoryTransport>) -> Fut + Sync,
    Fut: Future<Output = (R, Party<MemoryTransport>)>,
{
    let manifest = run_pair(seed, fx, &f).manifest;
    let mut dealer = Dealer::new(Seed::from_u64(seed));
    let t = std::time::Instant::now();
    let [b0, b1] = dealer
        .generate_manifest(&manifest)
        .expect("a recorded manifest is valid");
    let offline_s = t.elapsed().as_secs_f64();
    let (t0, t1) = memory_pair();
    let mut s0 = CorrelationStore::new(PartyId::P0, dealer.party_seed(PartyId::P0));
    let mut s1 = CorrelationStore::new(PartyId::P1, dealer.party_seed(PartyId::P1));
    for b in b0 {
        s0.insert(b).expect("fresh bundle");
    }
    for b in b1 {
        s1.insert(b).expect("fresh bundle");
    }
    // Workers expand correlations (seed expansion, key decoding) ahead of the request: part of
    // the offline phase, timed with it.
    let t_expand = std::time::Instant::now();
    if decode_ahead {
        s0.expand_pending();
        s1.expand_pending();
    }
    let offline_s = offline_s + t_expand.elapsed().as_secs_f64();
    let p0 = Party::new(PartyId::P0, t0, s0, fx);
    let p1 = Party::new(PartyId::P1, t1, s1, fx);
    let t = std::time::Instant::now();
    let (out, comm) = run_parties(p0, p1, &f);
    let online_s = t.elapsed().as_secs_f64();
    (
        PairRun {
            out,
            comm,
            dealer: dealer.stats(),
            manifest,
        },
        PhaseTimes {
            offline_s,
            online_s,
        },
    )
}

/// One thread pool per party, each with half the machine's cores (at least one): the two
/// parties of an in-process pair run side by side as they would on two machines, each party's
/// parallel work (ring GEMM) on its own threads instead of both contending for one global pool.
fn party_pools() -> [rayon::ThreadPool; 2] {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = (cores / 2).max(1);
    [0, 1].map(|i| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(per)
            .thread_name(move |t| format!("party{i}-{t}"))
            .build()
            .expect("a thread pool")
    })
}

fn run_parties<R, F, Fut>(
    p0: Party<MemoryTransport>,
    p1: Party<MemoryTransport>,
    f: &F,
) -> ([R; 2], [CommStats; 2])
where
    R: Send,
    F: Fn(Party<MemoryTransport>) -> Fut + Sync,
    Fut: Future<Output = (R, Party<MemoryTransport>)>,
{
    let [pool0, pool1] = party_pools();
    let ((r0, c0), (r1, c1)) = std::thread::scope(|s| {
        let h0 = s.spawn(move || {
            pool0.install(|| {
                let (r, p) = futures::executor::block_on(f(p0));
                (r, p.comm())
            })
        });
        let h1 = s.spawn(move || {
            pool1.install(|| {
                let (r, p) = futures::executor::block_on(f(p1));
                (r, p.comm())
            })
        });
        (
            h0.join().expect("party 0 panicked"),
            h1.join().expect("party 1 panicked"),
        )
    });
    ([r0, r1], [c0, c1])
}

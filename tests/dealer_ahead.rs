//! The dealer's ship-ahead (`marill_dealer_pool::serve`) with a pair whose parties run a step
//! apart: a real `marill dealer` process and, in this test, each party's real dealer link
//! (`marill_workers::lane::DealerLink` over an encrypted `marill_transport` link) feeding a
//! `CorrelationStore`, as a worker's lane does, without the 2PC between them. The parties
//! only take correlations, so the test can hold one of them back for as long as it likes.
//!
//! `a_party_a_step_behind_gets_every_step_once_and_in_order`: the provider runs a decode step,
//! and the dealer predicts and generates the step after it, while the helper has not begun
//! the first one. The helper must not be shipped that later step before it catches up (it
//! would take it for the step it is about to begin, drop it, and find its ids spent when it
//! comes: "correlated randomness unavailable"). Every step of both parties must succeed and
//! every triple the two parties hold must be a correct correlation (a·b = c on the shares).

mod common;

use common::{free_port, marill, temp, Procs};
use marill_mpc::correlation::{CorrRequest, CorrelationStore, Material, StepKey};
use marill_mpc::PartyId;
use marill_transport::{KeyPair, Link, LinkConfig, Mux, Role};
use marill_workers::lane::DealerLink;
use std::path::Path;
use std::time::Duration;

/// One party's end of the dealer link: the store its steps take correlations from.
struct PartyEnd {
    store: CorrelationStore,
    /// the link's mux (its lane dies with it)
    _mux: Mux,
}

fn connect(keys: &Path, endpoint: &str, party: PartyId) -> PartyEnd {
    let name = ["provider", "helper"][party.index()];
    let own = KeyPair::load(keys, name).unwrap();
    let mut cfg = LinkConfig::new("dealer");
    cfg.timeout = Duration::from_secs(30);
    let link = Link::open(
        Role::Client {
            endpoint: endpoint.to_string(),
            server_public: KeyPair::load_public(keys, "dealer").unwrap(),
        },
        &own,
        cfg,
    )
    .unwrap();
    let (mux, mut lanes) = Mux::split(link, 1).unwrap();
    let (supplier, seed) = DealerLink::open(lanes.remove(0), party).unwrap();
    PartyEnd {
        store: CorrelationStore::with_supplier(party, seed, Box::new(supplier)),
        _mux: mux,
    }
}

/// The requests of every step: a few bundles of triples.
fn manifest() -> Vec<CorrRequest> {
    (1..=4)
        .map(|n| CorrRequest::MulTriples { n: n * 1024 })
        .collect()
}

fn key(rows: u32, pos: u32) -> StepKey {
    StepKey {
        program: 0x5eed,
        rows,
        pos,
    }
}

type Triples = Vec<(Vec<u64>, Vec<u64>, Vec<u64>)>;

/// Begins step `k` at party `p` and takes the manifest's triples (the step is under way).
fn begin_and_take(p: &mut PartyEnd, k: StepKey, what: &str) -> Triples {
    p.store
        .begin_step(k)
        .unwrap_or_else(|e| panic!("{what}: begin: {e}"));
    manifest()
        .iter()
        .map(|req| match p.store.take(req) {
            Ok(Material::Mul(t)) => (t.a, t.b, t.c),
            Ok(m) => panic!("{what}: a {} for a triple request", m.kind_name()),
            Err(e) => panic!("{what}: {e}"),
        })
        .collect()
}

/// Ends party `p`'s step.
fn end(p: &mut PartyEnd, what: &str) {
    p.store
        .end_step()
        .unwrap_or_else(|e| panic!("{what}: end: {e}"));
}

/// Runs step `k` at party `p`: begins it, takes the manifest's triples, ends it.
fn step(p: &mut PartyEnd, k: StepKey, what: &str) -> Triples {
    let t = begin_and_take(p, k, what);
    end(p, what);
    t
}

/// Each triple the parties took for one step reconstructs to a·b = c.
fn assert_correlated(p0: &Triples, p1: &Triples, what: &str) {
    assert_eq!(p0.len(), p1.len(), "{what}");
    for ((a0, b0, c0), (a1, b1, c1)) in p0.iter().zip(p1) {
        for i in 0..a0.len() {
            let a = a0[i].wrapping_add(a1[i]);
            let b = b0[i].wrapping_add(b1[i]);
            let c = c0[i].wrapping_add(c1[i]);
            assert_eq!(a.wrapping_mul(b), c, "{what}: triple {i} is not a·b = c");
        }
    }
}

#[test]
fn a_party_a_step_behind_gets_every_step_once_and_in_order() {
    let dir = temp("dealer-ahead");
    std::fs::create_dir_all(&dir).unwrap();
    let keys = dir.join("keys");
    assert!(
        marill(&["keys", "generate", "--out", keys.to_str().unwrap()])
            .status()
            .unwrap()
            .success()
    );
    let (dp, dh) = (
        format!("tcp://127.0.0.1:{}", free_port()),
        format!("tcp://127.0.0.1:{}", free_port()),
    );
    let log = dir.join("dealer.log");
    let _dealer = Procs(vec![marill(&["dealer", "--keys", keys.to_str().unwrap()])
        .args(["--provider-endpoint", &dp, "--helper-endpoint", &dh])
        .args(["--lanes", "1", "--exit-when-done"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap()]);
    let mut p0 = connect(&keys, &dp, PartyId::P0);
    let mut p1 = connect(&keys, &dh, PartyId::P1);
    // a prefill and a first decode in step: the dealer records their manifests (then knows
    // every decode step's, and predicts each decode step after the one before it)
    let (prefill, first) = (key(5, 0), key(1, 5));
    for k in [prefill, first] {
        let (t0, t1) = (step(&mut p0, k, "provider"), step(&mut p1, k, "helper"));
        assert_correlated(&t0, &t1, &format!("step {k:?}"));
    }
    // the helper begins the next decode step and holds it (as a slow worker would), while
    // the provider runs it and the one after it: the dealer predicts, generates and ships
    // the step after each (to the provider; to the helper only the one after its own step)
    let held = begin_and_take(&mut p1, key(1, 6), "helper at 6");
    let mut ours = vec![step(&mut p0, key(1, 6), "provider at 6")];
    std::thread::sleep(Duration::from_millis(800));
    ours.push(step(&mut p0, key(1, 7), "provider at 7"));
    std::thread::sleep(Duration::from_millis(800));
    // the helper ends its step (its dealer thread wakes, with the step at 8 ready), then goes on
    end(&mut p1, "helper at 6");
    let mut theirs = vec![held, step(&mut p1, key(1, 7), "helper at 7")];
    for pos in 8..12 {
        ours.push(step(&mut p0, key(1, pos), &format!("provider at {pos}")));
        theirs.push(step(&mut p1, key(1, pos), &format!("helper at {pos}")));
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, (t0, t1)) in ours.iter().zip(&theirs).enumerate() {
        assert_correlated(t0, t1, &format!("decode step {}", 6 + i));
    }
    let (w0, w1) = (p0.store.watermark(), p1.store.watermark());
    assert_eq!(w0, w1, "the parties' streams ended apart");
    drop((p0, p1));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("stopped") && !text.contains("refused"),
        "the dealer refused a bundle:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

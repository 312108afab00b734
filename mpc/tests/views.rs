//! Security of the views: what one party receives must not depend on the secret.
//!
//! For each protocol we run it many times (fresh seeds) on two very different secrets and
//! record every message each party receives. For every bit position of the views we compare the
//! frequency of ones under secret A and under secret B with a two-sample test (6σ, so the
//! thousands of positions give no false alarm). A negative control — a protocol that sends its
//! share unmasked — must be caught by the same check, so the check can fail.

use marill_mpc::channel::MemoryTransport;
use marill_mpc::channel::ViewLog;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::ops::{cmp, lut, matmul, mul, nonlinear, norm, open, softmax, swiglu, trunc};
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::testing::run_pair_viewed;
use marill_mpc::Party;
use marill_mpc::RingTensor;
use std::future::Future;
use std::sync::{Arc, Mutex};

const RUNS: usize = 160;

type P = Party<MemoryTransport>;

/// Collects the views of party `observer` over `RUNS` runs on secret `x`. The observer's own
/// state (its input share and its dealer seed) is fixed; the peer's seed varies per run and the
/// peer's share is `x − own share`. A view is everything the observer receives: correlation
/// bytes from the dealer and messages from the peer, in order.
fn views<G, Fut>(x: &[u64], salt: u64, observer: usize, g: &G) -> Vec<Vec<u8>>
where
    G: Fn(P, Vec<u64>) -> Fut + Sync,
    Fut: Future<Output = ((), P)>,
{
    let fx = FixedPoint::default();
    let own_seed = Seed::from_u64(4242);
    let own_share = Prg::new(Seed::from_u64(4343), 0).ring_vec(x.len());
    let peer_share: Vec<u64> = x
        .iter()
        .zip(&own_share)
        .map(|(v, s)| v.wrapping_sub(*s))
        .collect();
    let (mine, theirs) = (&own_share, &peer_share);
    let mut out = Vec::new();
    for run in 0..RUNS {
        let peer_seed = Seed::from_u64(1_000_000 * salt + run as u64);
        let mut seeds = [peer_seed, peer_seed];
        seeds[observer] = own_seed;
        let logs: [ViewLog; 2] = [
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        ];
        run_pair_viewed(
            seeds,
            fx,
            Some([logs[0].clone(), logs[1].clone()]),
            |p: P| {
                let xs = if p.id.index() == observer {
                    mine.clone()
                } else {
                    theirs.clone()
                };
                g(p, xs)
            },
        );
        let v: Vec<u8> = logs[observer].lock().unwrap().concat();
        out.push(v);
    }
    out
}

/// Largest two-sample z-score over all bit positions of the views.
fn max_z(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let len = a[0].len();
    assert!(
        a.iter().chain(b).all(|v| v.len() == len),
        "view lengths must not depend on the secret"
    );
    let mut worst: f64 = 0.0;
    for byte in 0..len {
        for bit in 0..8 {
            let ca = a.iter().filter(|v| v[byte] >> bit & 1 == 1).count() as f64;
            let cb = b.iter().filter(|v| v[byte] >> bit & 1 == 1).count() as f64;
            let p = (ca + cb) / (2 * RUNS) as f64;
            let var = 2.0 * RUNS as f64 * p * (1.0 - p);
            if var == 0.0 {
                continue; // constant bit under both secrets (e.g. packing padding)
            }
            worst = worst.max((ca - cb).abs() / var.sqrt());
        }
    }
    worst
}

fn check<G, Fut>(name: &str, a: &[u64], b: &[u64], g: G)
where
    G: Fn(P, Vec<u64>) -> Fut + Sync,
    Fut: Future<Output = ((), P)>,
{
    for party in 0..2 {
        let va = views(a, 1, party, &g);
        let vb = views(b, 2, party, &g);
        let z = max_z(&va, &vb);
        assert!(
            z < 6.0,
            "{name}: party {party}'s view depends on the secret (z = {z:.1})"
        );
    }
}

fn secrets(n: usize) -> (Vec<u64>, Vec<u64>) {
    let fx = FixedPoint::default();
    let a = fx.encode_slice(&vec![0.0; n]).unwrap();
    let b = fx
        .encode_slice(&(0..n).map(|i| 7.5 - i as f64 * 1.3).collect::<Vec<_>>())
        .unwrap();
    (a, b)
}

#[test]
fn negative_control_detects_an_unmasked_share() {
    let (a, b) = secrets(8);
    // a broken protocol: the parties open the secret itself
    let leaky = |mut p: P, x: Vec<u64>| async move {
        open::open(&mut p, &x, 64).await.unwrap();
        ((), p)
    };
    for party in 0..2 {
        let z = max_z(&views(&a, 1, party, &leaky), &views(&b, 2, party, &leaky));
        assert!(z >= 6.0, "the check must catch a leak (z = {z:.1})");
    }
}

#[test]
fn views_of_core_protocols_are_independent_of_the_secret() {
    let fx = FixedPoint::default();
    let f = fx.frac_bits();
    let (a, b) = secrets(8);
    check("mul+trunc", &a, &b, |mut p: P, x: Vec<u64>| async move {
        let y = mul::mul(&mut p, &x, &x).await.unwrap();
        trunc::trunc(&mut p, &y, f).await.unwrap();
        ((), p)
    });
    check("relu", &a, &b, |mut p: P, x: Vec<u64>| async move {
        cmp::relu(&mut p, &x, cmp::DEFAULT_CMP_BITS).await.unwrap();
        ((), p)
    });
    let silu = nonlinear::silu_table(fx, 64.0).unwrap();
    let s = &silu;
    check("silu", &a, &b, |mut p: P, x: Vec<u64>| async move {
        lut::eval(&mut p, s, &x).await.unwrap();
        ((), p)
    });
    let silu_u = nonlinear::silu_table(fx, 24.0).unwrap();
    let su = &silu_u;
    check(
        "swiglu (signed lookup)",
        &a,
        &b,
        |mut p: P, x: Vec<u64>| async move {
            let wide: Vec<u64> = x.iter().map(|v| v << f).collect();
            let up: Vec<u64> = wide.iter().rev().copied().collect();
            swiglu::silu_mul(&mut p, su, &wide, &up, f).await.unwrap();
            ((), p)
        },
    );
    let nm = norm::Norm::new(fx, norm::NormKind::Rms, 4, 1e-5, 1e4).unwrap();
    let nm = &nm;
    check(
        "rmsnorm (norm triple)",
        &a,
        &b,
        |mut p: P, x: Vec<u64>| async move {
            let (y, shift) = norm::norm_rows_untruncated(&mut p, nm, &x, None, None)
                .await
                .unwrap();
            // the truncation fused into a LoRA-style product with a private 4×3 weight
            let w: Vec<u64> = (0..12u64)
                .map(|i| if p.is_p0() { (i * 7919) << 10 } else { 0 })
                .collect();
            let w = RingTensor::from_vec(&[4, 3], w).unwrap();
            let w = matmul::mask_weight(&mut p, 9, &w).await.unwrap();
            let y = RingTensor::from_vec(&[2, 4], y).unwrap();
            matmul::trunc_matmul_weight(&mut p, &y, shift, &w)
                .await
                .unwrap();
            ((), p)
        },
    );
    let sm = softmax::Softmax::new(fx, 32.0, 8).unwrap();
    let sm = &sm;
    check("softmax", &a, &b, |mut p: P, x: Vec<u64>| async move {
        softmax::softmax_rows(&mut p, sm, &x, 2, 4, None)
            .await
            .unwrap();
        ((), p)
    });
}

/// The private weights are secrets too: the provider shares `W` once per model load, the
/// parties open `F = W − B` for a dealer mask `B` (its shares come from the parties' seeds,
/// so the observer's view of `B` is its own share only), and every later product `x·W` or
/// `⌊x/2^s⌋·W` opens only masked activations. Two very different 4×3 weights (zero, and
/// values from 7.5 down to −6.8) must give views of the same distribution, for both parties —
/// the helper's view of `W − B` included — with the activation fixed (the same under both
/// weights). A leaky variant that opens `W` unmasked is caught by the same check.
#[test]
fn views_are_independent_of_the_private_weights() {
    let fx = FixedPoint::default();
    let f = fx.frac_bits();
    let (wa, wb) = secrets(12);
    check(
        "private weight (W − B, x·W, ⌊x/2^f⌋·W)",
        &wa,
        &wb,
        |mut p: P, w: Vec<u64>| async move {
            let w = RingTensor::from_vec(&[4, 3], w).unwrap();
            let w = matmul::mask_weight(&mut p, 9, &w).await.unwrap();
            // a fixed activation (2×4), held by party 0
            let x: Vec<u64> = (0..8u64)
                .map(|i| if p.is_p0() { (i * 40_503) << 4 } else { 0 })
                .collect();
            let x = RingTensor::from_vec(&[2, 4], x).unwrap();
            matmul::matmul_weight(&mut p, &x, &w).await.unwrap();
            let wide = RingTensor::from_vec(
                &[2, 4],
                x.data().iter().map(|v| v << f).collect::<Vec<u64>>(),
            )
            .unwrap();
            matmul::trunc_matmul_weight(&mut p, &wide, f, &w)
                .await
                .unwrap();
            ((), p)
        },
    );
    let leaky = |mut p: P, w: Vec<u64>| async move {
        open::open(&mut p, &w, 64).await.unwrap();
        ((), p)
    };
    for party in 0..2 {
        let z = max_z(&views(&wa, 1, party, &leaky), &views(&wb, 2, party, &leaky));
        assert!(
            z >= 6.0,
            "the check must catch an unmasked weight (z = {z:.1})"
        );
    }
}

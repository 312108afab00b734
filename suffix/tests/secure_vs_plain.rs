//! The secure suffix equals the plaintext reference within a stated bound, for full-rank
//! private weights, LoRA on public weights and head merging; decoding with the secret-shared
//! cache equals recomputation.

use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::testing::{reconstruct, run_pair, share};
use marill_suffix::config::LoraConfig;
use marill_suffix::plain::{forward, PlainCache};
use marill_suffix::secure::{
    finish_at_client, gamma_at_client, prepare, PreparedSuffix, SecureSuffix,
};
use marill_suffix::{SuffixConfig, SuffixWeights, Target};

fn tiny() -> SuffixConfig {
    SuffixConfig {
        d_model: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        d_ff: 64,
        n_layers: 2,
        first_layer: 0,
        head_merge: 1,
        lora: None,
        private_base: true,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        max_seq: 16,
        score_bound: 64.0,
        act_bound: 31.0,
        norm_sum_bound: 1e6,
    }
}

/// Runs prefill of `t0` tokens then `steps` single-token decodes; returns (secure, plain)
/// outputs for all tokens.
fn run(cfg: &SuffixConfig, t0: usize, steps: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    run_with(cfg, t0, steps, seed, |_| {})
}

/// [`run`] with the random weights edited first.
fn run_with(
    cfg: &SuffixConfig,
    t0: usize,
    steps: usize,
    seed: u64,
    edit: impl Fn(&mut SuffixWeights),
) -> (Vec<f64>, Vec<f64>) {
    run_prepared(cfg, t0, steps, seed, edit, |_| {})
}

/// [`run_with`] with the prepared halves edited before loading.
fn run_prepared(
    cfg: &SuffixConfig,
    t0: usize,
    steps: usize,
    seed: u64,
    edit: impl Fn(&mut SuffixWeights),
    tweak: impl Fn(&mut [PreparedSuffix; 2]),
) -> (Vec<f64>, Vec<f64>) {
    let fx = FixedPoint::default();
    let mut w = SuffixWeights::random(cfg, seed, false).unwrap();
    edit(&mut w);
    let d = cfg.d_model;
    let total = t0 + steps;
    let mut prg = Prg::new(Seed::from_u64(seed), 3);
    let x: Vec<f64> = (0..total * d)
        .map(|_| (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        .collect();
    // plaintext: prefill then decode with cache
    let mut cache = PlainCache::default();
    let mut want = forward(cfg, &w, &x[..t0 * d], 0, &mut cache);
    for s in 0..steps {
        let r = t0 + s;
        want.extend(forward(cfg, &w, &x[r * d..(r + 1) * d], r, &mut cache));
    }
    let xe = fx.encode_slice(&x).unwrap();
    let (x0, x1) = share(&xe, &mut prg);
    let mut prepared = prepare(cfg, &w, fx, Seed::from_u64(seed + 1)).unwrap();
    tweak(&mut prepared);
    let run = run_pair(seed, fx, |mut p| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        let prep = prepared[p.id.index()].clone();
        let cfg = cfg.clone();
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.unwrap();
            let mut out = sfx.forward(&mut p, &xs[..t0 * d]).await.unwrap();
            for s in 0..steps {
                let r = t0 + s;
                out.extend(sfx.forward(&mut p, &xs[r * d..(r + 1) * d]).await.unwrap());
            }
            (out, p)
        }
    });
    let mut got = fx.decode_slice(&reconstruct(&run.out[0], &run.out[1]));
    finish_at_client(cfg, &w, &mut got);
    (got, want)
}

fn max_err(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Stated bound on the max abs error of the normalised output (measured ≈ 2–3e-4).
const BOUND: f64 = 2e-3;

#[test]
fn full_rank_private_suffix_matches_plaintext() {
    let cfg = tiny();
    let (got, want) = run(&cfg, 5, 3, 1);
    let e = max_err(&got, &want);
    eprintln!("full-rank max abs error {e:.2e}");
    assert!(e < BOUND, "max abs error {e}");
}

#[test]
fn lora_and_head_merging_match_plaintext() {
    let mut cfg = tiny();
    cfg.private_base = false;
    cfg.lora = Some(LoraConfig {
        rank: 4,
        targets: Target::ALL.to_vec(),
    });
    for m in [1, 2, 4] {
        cfg.head_merge = m;
        let (got, want) = run(&cfg, 4, 2, 10 + m as u64);
        let e = max_err(&got, &want);
        eprintln!("LoRA + HM={m} max abs error {e:.2e}");
        assert!(e < BOUND, "HM={m}: max abs error {e}");
    }
}

/// A public final γ with a zero entry cannot be left to the client (the output would reveal
/// the zeroed coordinate): it is applied under 2PC, with the same bound.
#[test]
fn public_final_gamma_with_a_zero_is_applied_by_the_parties() {
    let mut cfg = tiny();
    cfg.private_base = false;
    cfg.lora = Some(LoraConfig {
        rank: 4,
        targets: Target::ALL.to_vec(),
    });
    let zero_gamma = |w: &mut SuffixWeights| w.final_norm[3] = 0.0;
    let mut w = SuffixWeights::random(&cfg, 21, false).unwrap();
    assert!(gamma_at_client(&cfg, &w));
    zero_gamma(&mut w);
    assert!(!gamma_at_client(&cfg, &w));
    let (got, want) = run_with(&cfg, 4, 2, 21, zero_gamma);
    let e = max_err(&got, &want);
    eprintln!("public γ with a zero: max abs error {e:.2e}");
    assert!(e < BOUND, "max abs error {e}");
    // the zeroed coordinate stays zero within the truncation's ulp
    assert!(got
        .iter()
        .skip(3)
        .step_by(cfg.d_model)
        .all(|v| v.abs() < 1e-4));
}

/// V stays at scale 2f when the weights bound |V| (random weights here), and is truncated when
/// they do not: both paths match plaintext, prefill and decoding.
#[test]
fn values_are_kept_untruncated_only_when_the_weights_bound_them() {
    let cfg = tiny();
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(&cfg, 31, false).unwrap();
    let p = prepare(&cfg, &w, fx, Seed::from_u64(1)).unwrap();
    assert!(p[0].values_untruncated && p[1].values_untruncated);
    let mut big = w.clone();
    for v in big.layers[1].wv.data.iter_mut() {
        *v *= 2000.0;
    }
    let p = prepare(&cfg, &big, fx, Seed::from_u64(1)).unwrap();
    assert!(!p[0].values_untruncated && !p[1].values_untruncated);
    // the truncated path, forced on weights that would allow either
    let truncated = |p: &mut [PreparedSuffix; 2]| {
        for h in p.iter_mut() {
            h.values_untruncated = false;
        }
    };
    let (got, want) = run_prepared(&cfg, 4, 2, 31, |_| {}, truncated);
    let e = max_err(&got, &want);
    eprintln!("values truncated: max abs error {e:.2e}");
    assert!(e < BOUND, "max abs error {e}");
}

#[test]
fn decoding_with_cache_equals_recomputation() {
    // plaintext: the cache path equals recomputing the whole sequence
    let cfg = tiny();
    let w = SuffixWeights::random(&cfg, 5, false).unwrap();
    let d = cfg.d_model;
    let mut prg = Prg::new(Seed::from_u64(5), 0);
    let x: Vec<f64> = (0..6 * d)
        .map(|_| (prg.next_u64() % 1000) as f64 / 250.0 - 2.0)
        .collect();
    let full = forward(&cfg, &w, &x, 0, &mut PlainCache::default());
    let mut cache = PlainCache::default();
    let mut inc = forward(&cfg, &w, &x[..3 * d], 0, &mut cache);
    for r in 3..6 {
        inc.extend(forward(&cfg, &w, &x[r * d..(r + 1) * d], r, &mut cache));
    }
    assert!(max_err(&full, &inc) < 1e-9);
    // secure: prefill+decode vs prefill of everything
    let (a, _) = run(&cfg, 6, 0, 7);
    let (b, _) = run(&cfg, 3, 3, 7);
    let e = max_err(&a, &b);
    assert!(e < BOUND, "secure cache vs recomputation: {e}");
}

/// A worker serves sessions one after another on the same loaded suffix: after `reset` the
/// next sequence starts at position 0 with an empty cache and gives the plaintext result.
#[test]
fn reset_starts_a_fresh_sequence() {
    let cfg = tiny();
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(&cfg, 41, false).unwrap();
    let d = cfg.d_model;
    let mut prg = Prg::new(Seed::from_u64(41), 3);
    let x: Vec<f64> = (0..3 * d)
        .map(|_| (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        .collect();
    let want = forward(&cfg, &w, &x, 0, &mut PlainCache::default());
    let (x0, x1) = share(&fx.encode_slice(&x).unwrap(), &mut prg);
    let prepared = prepare(&cfg, &w, fx, Seed::from_u64(42)).unwrap();
    let run = run_pair(41, fx, |mut p| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        let prep = prepared[p.id.index()].clone();
        let cfg = cfg.clone();
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.unwrap();
            let first = sfx.forward(&mut p, &xs).await.unwrap();
            assert_eq!(sfx.position(), 3);
            assert_eq!(sfx.cache_bytes(), 2 * 2 * 3 * cfg.kv_width() * 8);
            sfx.reset();
            assert_eq!((sfx.position(), sfx.cache_bytes()), (0, 0));
            let second = sfx.forward(&mut p, &xs).await.unwrap();
            ((first, second), p)
        }
    });
    for k in 0..2 {
        let pick = |o: &(Vec<u64>, Vec<u64>)| if k == 0 { o.0.clone() } else { o.1.clone() };
        let mut got = fx.decode_slice(&reconstruct(&pick(&run.out[0]), &pick(&run.out[1])));
        finish_at_client(&cfg, &w, &mut got);
        let e = max_err(&got, &want);
        assert!(e < BOUND, "sequence {k}: max abs error {e}");
    }
}

/// The keys are padded to a bucket (`marill_mpc::correlation::KEY_BUCKET`), masked out in
/// the softmax: every decode step of one bucket consumes the same correlations (one manifest
/// serves the bucket), a step in the next bucket other ones, and the output still equals the
/// plaintext within the bound.
#[test]
fn decode_steps_of_one_key_bucket_consume_the_same_correlations() {
    use marill_mpc::correlation::KEY_BUCKET;
    let cfg = SuffixConfig {
        max_seq: 2 * KEY_BUCKET,
        ..tiny()
    };
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(&cfg, 17, false).unwrap();
    let d = cfg.d_model;
    let (t0, steps) = (3, KEY_BUCKET); // decode positions 3 ..= KEY_BUCKET + 2
    let total = t0 + steps;
    let mut prg = Prg::new(Seed::from_u64(17), 3);
    let x: Vec<f64> = (0..total * d)
        .map(|_| (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0)
        .collect();
    let mut cache = PlainCache::default();
    let mut want = forward(&cfg, &w, &x[..t0 * d], 0, &mut cache);
    for r in t0..total {
        want.extend(forward(&cfg, &w, &x[r * d..(r + 1) * d], r, &mut cache));
    }
    let (x0, x1) = share(&fx.encode_slice(&x).unwrap(), &mut prg);
    let prepared = prepare(&cfg, &w, fx, Seed::from_u64(18)).unwrap();
    let run = run_pair(17, fx, |mut p| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        let prep = prepared[p.id.index()].clone();
        let cfg = cfg.clone();
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.unwrap();
            let mut marks = vec![p.store.watermark()];
            let mut out = sfx.forward(&mut p, &xs[..t0 * d]).await.unwrap();
            marks.push(p.store.watermark());
            for r in t0..total {
                out.extend(sfx.forward(&mut p, &xs[r * d..(r + 1) * d]).await.unwrap());
                marks.push(p.store.watermark());
            }
            ((out, marks), p)
        }
    });
    let (out0, marks) = &run.out[0];
    let mut got = fx.decode_slice(&reconstruct(out0, &run.out[1].0));
    finish_at_client(&cfg, &w, &mut got);
    let e = max_err(&got, &want);
    assert!(e < BOUND, "max abs error {e}");
    // each decode step's requests, from the dealer's record of every request in order
    let step = |i: usize| run.manifest[marks[i] as usize..marks[i + 1] as usize].to_vec();
    let decode = |pos: usize| step(1 + pos - t0); // the step at position `pos`
    let first = decode(t0);
    assert!(!first.is_empty());
    // positions t0 .. KEY_BUCKET - 1 attend to at most KEY_BUCKET keys: one bucket
    for pos in t0 + 1..KEY_BUCKET {
        assert_eq!(
            decode(pos),
            first,
            "decode at {pos} left the bucket's manifest"
        );
    }
    // the next bucket consumes more
    let next = decode(KEY_BUCKET);
    assert_ne!(next, first);
    assert_eq!(decode(KEY_BUCKET + 1), next);
}

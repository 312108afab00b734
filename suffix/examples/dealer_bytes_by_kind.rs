//! The dealer's bytes by correlation kind for one load, one prefill of 5 rows and one decode
//! step of a SmolLM2-shaped suffix (15 private layers, LoRA r = 8, random weights: the requests
//! are data-oblivious), both halves; in process, on the seed-compressed encoding the workers
//! receive. Run: `cargo run --release -p marill-suffix --example dealer_bytes_by_kind [-- model]
//! [verbose]`; `model` runs the model's calibrated bounds (`marill_model::suffix::Bounds`:
//! |gate| ≤ 256, |score| ≤ 128, what `marill generate` and the workers run) instead of the
//! suffix crate's defaults (|gate| ≤ 31, scores ≤ 64), `verbose` groups by request shape and
//! prints bytes per element to each party.
//! With the defaults SiLU's lookup is fused with its input mask (787 bytes per element to P0,
//! 891 to P1). At the model's bounds SiLU is gated: before issue 19's cuts its input opened
//! through a `Mask` with a 26-level comparison key and an 11-level borrow key (941 + 67 bytes
//! per element to P0, 973 + 123 + 40 to P1; `Mask` 79% of a decode step's 67.2 MB); with
//! coarse gates and inexact cells its mask has an 8-level key and no borrow key (208 + 84 to
//! P0, 240 + 140 + 40 to P1), and with softmax's exp also without a borrow key and the
//! truncation-weight triples' `E` as residues a decode step is 30.3 MB (docs/performance.md).

use marill_mpc::correlation::Dealer;
use marill_mpc::fixed::FixedPoint;
use marill_mpc::prg::{Prg, Seed};
use marill_mpc::testing::{run_pair, share};
use marill_suffix::config::LoraConfig;
use marill_suffix::secure::{prepare, SecureSuffix};
use marill_suffix::{SuffixConfig, SuffixWeights, Target};
use std::collections::BTreeMap;

fn main() {
    // `-- model` runs the model's calibrated bounds (|gate| ≤ 256, |score| ≤ 128)
    let args: Vec<String> = std::env::args().collect();
    let model = args.iter().any(|a| a == "model");
    // `-- verbose` groups by request shape (count fields aside) and prints bytes per element
    let verbose = args.iter().any(|a| a == "verbose");
    let (score_bound, act_bound) = if model { (128.0, 256.0) } else { (64.0, 31.0) };
    let cfg = SuffixConfig {
        d_model: 576,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
        d_ff: 1536,
        n_layers: 15,
        first_layer: 15,
        head_merge: 1,
        lora: Some(LoraConfig {
            rank: 8,
            targets: vec![
                Target::Q,
                Target::K,
                Target::V,
                Target::O,
                Target::Gate,
                Target::Up,
                Target::Down,
            ],
        }),
        private_base: false,
        rms_eps: 1e-5,
        rope_theta: 10000.0,
        max_seq: 256,
        score_bound,
        act_bound,
        norm_sum_bound: 2e9,
    };
    let fx = FixedPoint::default();
    let w = SuffixWeights::random(&cfg, 3, false).unwrap();
    let d = cfg.d_model;
    let t0 = 5;
    let mut prg = Prg::new(Seed::from_u64(3), 3);
    let x: Vec<f64> = (0..(t0 + 1) * d)
        .map(|_| (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
        .collect();
    let (x0, x1) = share(&fx.encode_slice(&x).unwrap(), &mut prg);
    let prepared = prepare(&cfg, &w, fx, Seed::from_u64(4)).unwrap();
    let run = run_pair(3, fx, |mut p| {
        let xs = if p.is_p0() { x0.clone() } else { x1.clone() };
        let prep = prepared[p.id.index()].clone();
        let cfg = cfg.clone();
        async move {
            let mut sfx = SecureSuffix::load(&mut p, &cfg, prep).await.unwrap();
            let mut marks = vec![p.store.watermark()];
            sfx.forward(&mut p, &xs[..t0 * d]).await.unwrap();
            marks.push(p.store.watermark());
            sfx.forward(&mut p, &xs[t0 * d..]).await.unwrap();
            marks.push(p.store.watermark());
            (marks, p)
        }
    });
    let marks = &run.out[0];
    let mut dealer = Dealer::new(Seed::from_u64(9));
    for (name, r) in [
        ("load", 0..marks[0]),
        ("prefill", marks[0]..marks[1]),
        ("decode", marks[1]..marks[2]),
    ] {
        let mut by: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
        for req in &run.manifest[r.start as usize..r.end as usize] {
            let [b0, b1] = dealer.next_bundle(req).unwrap();
            let (kind, elts) = if verbose {
                shape(&format!("{req:?}"))
            } else {
                (
                    format!("{:?}", req)
                        .split([' ', '{', '('])
                        .next()
                        .unwrap()
                        .to_string(),
                    0,
                )
            };
            let e = by.entry(kind).or_default();
            e.0 += 1;
            e.1 += b0.explicit.len() as u64;
            e.2 += b1.explicit.len() as u64;
            e.3 += elts;
        }
        let tot: u64 = by.values().map(|v| v.1 + v.2).sum();
        println!(
            "== {name}: {} bundles, {:.1} MB",
            r.end - r.start,
            tot as f64 / 1e6
        );
        for (k, (n, a, b, e)) in &by {
            println!(
                "  {k:14} {n:6} bundles  p0 {:8.2} MB  p1 {:8.2} MB  ({:.0}%)",
                *a as f64 / 1e6,
                *b as f64 / 1e6,
                100.0 * (*a + *b) as f64 / tot as f64
            );
            if *e > 0 {
                println!(
                    "      {e} elements: {:.1} B/elt to p0, {:.1} to p1",
                    *a as f64 / *e as f64,
                    *b as f64 / *e as f64
                );
            }
        }
    }
}

/// A request's shape: its debug text with the leading count field `n: N` (or `rows: N`) taken
/// out, and that count.
fn shape(d: &str) -> (String, u64) {
    for field in ["n: ", "rows: "] {
        if let Some(i) = d.find(field) {
            let rest = &d[i + field.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if let Ok(n) = rest[..end].parse::<u64>() {
                return (format!("{}{}", &d[..i], &rest[end..]), n);
            }
        }
    }
    (d.to_string(), 0)
}

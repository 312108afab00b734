//! PRG and dealer throughput: AES-128-CTR expansion (the seed-compressed half of every
//! correlation) and the dealer's generation rate for the main correlation kinds.
//! Run: `cargo bench -p marill-mpc --bench prg`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use marill_mpc::correlation::{CorrRequest, Dealer};
use marill_mpc::prg::{Prg, Seed};

fn prg_expansion(c: &mut Criterion) {
    let mut g = c.benchmark_group("prg");
    let n = 1 << 20; // 8 MiB of ring elements
    g.throughput(Throughput::Bytes((n * 8) as u64));
    let mut buf = vec![0u64; n];
    g.bench_function("aes128_ctr_fill_u64_8MiB", |b| {
        let mut p = Prg::new(Seed::from_u64(1), 0);
        b.iter(|| p.fill_u64(&mut buf))
    });
    g.finish();
}

fn dealer_generation(c: &mut Criterion) {
    let mut g = c.benchmark_group("dealer");
    let cases: Vec<(&str, CorrRequest, u64)> = vec![
        (
            "mul_triples_64k",
            CorrRequest::MulTriples { n: 1 << 16 },
            1 << 16,
        ),
        (
            "mat_triple_32x768x768",
            CorrRequest::MatTriple {
                m: 32,
                k: 768,
                n: 768,
            },
            32 * 768,
        ),
        (
            "trunc_mask_64k",
            CorrRequest::Mask {
                n: 1 << 16,
                shifts: vec![16],
                cmp_bits: 0,
                cmp_shift: 0,
                exact: vec![],
            },
            1 << 16,
        ),
        (
            "cmp_mask_dcf40_4k",
            CorrRequest::Mask {
                n: 1 << 12,
                shifts: vec![],
                cmp_bits: 40,
                cmp_shift: 0,
                exact: vec![],
            },
            1 << 12,
        ),
        (
            "lut_dpf11_4k",
            CorrRequest::Lut {
                n: 1 << 12,
                bits: 11,
            },
            1 << 12,
        ),
    ];
    for (name, req, elems) in cases {
        g.throughput(Throughput::Elements(elems));
        g.bench_function(name, |b| {
            let mut d = Dealer::new(Seed::from_u64(2));
            b.iter(|| d.next_bundle(&req).expect("valid request"))
        });
    }
    g.finish();
}

criterion_group!(benches, prg_expansion, dealer_generation);
criterion_main!(benches);

//! Online FSS evaluation cost per element, single thread: the Z_2^64 DPF lookup against the
//! bit-output DPF's signed lookup (batched, packed tables) at the SiLU table width (11 bits), and
//! DCF comparisons (key by key and batched across keys), and the signed lookup's borrow and
//! `a·β` at 12 bits: two one-word DCF walks against one two-word walk.
//! Run: `cargo bench -p marill-mpc --bench fss_eval`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use marill_mpc::fss::{
    bit_dpf_gen, bit_dpf_lookup_many, dcf2_eval_keys, dcf2_gen, dcf_eval_keys, dcf_eval_many,
    dcf_gen, dpf_gen, dpf_lookup, BitDpfKeys, Dcf2Keys, DcfCorrection, DcfKeys, SignedTables,
};
use marill_mpc::prg::{Prg, Seed};

const N: usize = 1024;
const BITS: u32 = 11;

fn lookups(c: &mut Criterion) {
    let mut prg = Prg::new(Seed::from_u64(3), 0);
    let size = 1usize << BITS;
    let mask = size as u64 - 1;
    let t0: Vec<u64> = (0..size).map(|i| (i as u64) << 9).collect();
    let t1: Vec<u64> = (0..size).map(|i| (i % 700) as u64).collect();
    let roots: Vec<u128> = (0..N).map(|_| prg.next_u128()).collect();
    let cs: Vec<u64> = (0..N).map(|_| prg.next_u64() & mask).collect();
    let dpf: Vec<_> = (0..N)
        .map(|i| dpf_gen(BITS, cs[i], roots[i], roots[(i + 1) % N]))
        .collect();
    let mut bit = BitDpfKeys::with_capacity(BITS, N);
    for i in 0..N {
        bit.push(&bit_dpf_gen(BITS, cs[i], roots[i], roots[(i + 1) % N]).0);
    }
    let tables = SignedTables::new(BITS, &t0, &t1);
    let mut g = c.benchmark_group("lookup_11bit");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("z2_64_dpf_full_domain", |b| {
        let mut out = [0u64; 2];
        b.iter(|| {
            for i in 0..N {
                dpf_lookup(0, roots[i], &dpf[i], cs[i], &[&t0, &t1], &mut out);
            }
        })
    });
    g.bench_function("bit_dpf_signed_batched", |b| {
        b.iter(|| bit_dpf_lookup_many(0, &roots, &bit, &cs, &tables))
    });
    g.finish();
}

fn comparisons(c: &mut Criterion) {
    let mut prg = Prg::new(Seed::from_u64(4), 0);
    let bits = 23u32;
    let roots: Vec<u128> = (0..N).map(|_| prg.next_u128()).collect();
    let keys: Vec<DcfCorrection> = (0..N)
        .map(|i| dcf_gen(bits, prg.next_u64() >> 41, 1, roots[i], prg.next_u128()))
        .collect();
    let mut flat = DcfKeys::with_capacity(bits, N);
    for k in &keys {
        flat.push(k);
    }
    let xs: Vec<u64> = (0..2 * N).map(|_| prg.next_u64() >> 41).collect();
    let mut g = c.benchmark_group("dcf_23bit_two_thresholds");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("key_by_key", |b| {
        let mut out = [0u64; 2];
        b.iter(|| {
            for i in 0..N {
                dcf_eval_many(0, roots[i], &keys[i], &xs[2 * i..2 * i + 2], &mut out);
            }
        })
    });
    g.bench_function("batched_across_keys", |b| {
        let mut out = vec![0u64; 2 * N];
        b.iter(|| dcf_eval_keys(0, &roots, &flat, 2, &xs, &mut out))
    });
    g.finish();
}

/// One point per key at 12 bits (SiLU's cell truncation): the borrow `[x < α]` and `a·[x < α]`
/// from two one-word keys (two walks) or from one two-word key with payload `(1, a)`.
fn borrow_and_product(c: &mut Criterion) {
    let mut prg = Prg::new(Seed::from_u64(5), 0);
    let bits = 12u32;
    let mut one = [
        DcfKeys::with_capacity(bits, N),
        DcfKeys::with_capacity(bits, N),
    ];
    let mut two = Dcf2Keys::with_capacity(bits, N);
    let roots: Vec<u128> = (0..N).map(|_| prg.next_u128()).collect();
    for root in &roots {
        let alpha = prg.next_u64() >> 52;
        let a = prg.next_u64();
        one[0].push(&dcf_gen(bits, alpha, 1, *root, prg.next_u128()));
        one[1].push(&dcf_gen(bits, alpha, a, *root, prg.next_u128()));
        two.push(&dcf2_gen(bits, alpha, [1, a], *root, prg.next_u128()));
    }
    let xs: Vec<u64> = (0..N).map(|_| prg.next_u64() >> 52).collect();
    let mut g = c.benchmark_group("dcf_12bit_borrow_and_product");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("two_one_word_walks", |b| {
        let (mut o0, mut o1) = (vec![0u64; N], vec![0u64; N]);
        b.iter(|| {
            dcf_eval_keys(0, &roots, &one[0], 1, &xs, &mut o0);
            dcf_eval_keys(0, &roots, &one[1], 1, &xs, &mut o1);
        })
    });
    g.bench_function("one_two_word_walk", |b| {
        let (mut o0, mut o1) = (vec![0u64; N], vec![0u64; N]);
        b.iter(|| dcf2_eval_keys(0, &roots, &two, 1, &xs, &mut o0, &mut o1))
    });
    g.finish();
}

criterion_group!(benches, lookups, comparisons, borrow_and_product);
criterion_main!(benches);

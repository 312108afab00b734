//! Ring GEMM over Z_2^64 (`marill_mpc::gemm::gemm_u64`) against an f32 GEMM of the same shape,
//! and the product with prepared public weights (`marill_mpc::gemm::PublicWeights`: fixed-point
//! entries of up to 32 signed bits, here 18 like real weights at 16 fractional bits; AVX-512
//! IFMA where the CPU has it, else the same ring GEMM).
//!
//! Throughput is reported as elements = m·k·n multiply-adds, so the two rates compare directly.
//! Both sides use both cores: the ring GEMM through rayon, the f32 GEMM (`matrixmultiply::sgemm`,
//! AVX2/FMA kernels) as two column strips run with `rayon::join` (matrixmultiply's own threading
//! only splits the row loop, which leaves one core idle for the 32-row shapes).
//! At the end a markdown table of the median per-iteration rates is printed on stderr.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use marill_mpc::gemm::{gemm_u64, PublicWeights};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// (m, k, n)
const SHAPES: &[(usize, usize, usize)] = &[
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (32, 768, 768),
    (32, 768, 2048),
];

/// Per-iteration times seen by criterion, keyed by (shape, kind).
type Samples = BTreeMap<((usize, usize, usize), &'static str), Vec<f64>>;
static SAMPLES: Mutex<Samples> = Mutex::new(BTreeMap::new());

fn record(shape: (usize, usize, usize), kind: &'static str, per_iter: f64) {
    SAMPLES
        .lock()
        .expect("samples lock")
        .entry((shape, kind))
        .or_default()
        .push(per_iter);
}

/// Times `iters` calls of `f`, records the per-call time and returns the total (criterion's
/// `iter_custom` contract).
fn timed(
    iters: u64,
    shape: (usize, usize, usize),
    kind: &'static str,
    mut f: impl FnMut(),
) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let d = t.elapsed();
    record(shape, kind, d.as_secs_f64() / iters.max(1) as f64);
    d
}

/// C = A·B in f32 (row-major), columns split in two strips computed in parallel.
fn sgemm_2core(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let n0 = n / 2;
    let (a_ptr, b_ptr) = (a.as_ptr() as usize, b.as_ptr() as usize);
    let c_ptr = c.as_mut_ptr() as usize;
    let strip = |j0: usize, w: usize| {
        // SAFETY: the strips write disjoint columns of C; the pointers come from slices of
        // m·k, k·n and m·n elements, and the strides keep every access inside them.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                w,
                1.0,
                a_ptr as *const f32,
                k as isize,
                1,
                (b_ptr as *const f32).add(j0),
                n as isize,
                1,
                0.0,
                (c_ptr as *mut f32).add(j0),
                n as isize,
                1,
            )
        }
    };
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    rayon::join(|| strip(0, n0), || strip(n0, n - n0));
}

fn bench_gemm(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    for &(m, k, n) in SHAPES {
        let shape = (m, k, n);
        let a: Vec<u64> = (0..m * k).map(|_| rng.gen()).collect();
        let b: Vec<u64> = (0..k * n).map(|_| rng.gen()).collect();
        let w: Vec<u64> = (0..k * n)
            .map(|_| rng.gen_range(-(1i64 << 17)..1i64 << 17) as u64)
            .collect();
        let pw = PublicWeights::new(k, n, &w);
        let af: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let bf: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let mut cf = vec![0f32; m * n];

        let mut g = c.benchmark_group("gemm");
        g.throughput(Throughput::Elements((m * k * n) as u64));
        if m * k * n >= 1 << 28 {
            g.sample_size(10);
        }
        let id = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("ring_u64", &id), |bch| {
            bch.iter_custom(|iters| {
                timed(iters, shape, "ring", || {
                    black_box(gemm_u64(m, k, n, black_box(&a), black_box(&b)));
                })
            })
        });
        g.bench_function(BenchmarkId::new("public_weights", &id), |bch| {
            bch.iter_custom(|iters| {
                timed(iters, shape, "public", || {
                    black_box(pw.matmul(m, black_box(&a)));
                })
            })
        });
        g.bench_function(BenchmarkId::new("f32", &id), |bch| {
            bch.iter_custom(|iters| {
                timed(iters, shape, "f32", || {
                    sgemm_2core(m, k, n, black_box(&af), black_box(&bf), &mut cf);
                    black_box(&cf);
                })
            })
        });
        g.finish();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Markdown table: shape, ring G mul-add/s, f32 G mul-add/s, ratio (median per-iteration times).
fn print_table() {
    let mut samples = SAMPLES.lock().expect("samples lock");
    let mut rows = String::new();
    for &(m, k, n) in SHAPES {
        let shape = (m, k, n);
        let (Some(mut r), Some(mut p), Some(mut f)) = (
            samples.remove(&(shape, "ring")),
            samples.remove(&(shape, "public")),
            samples.remove(&(shape, "f32")),
        ) else {
            continue;
        };
        let work = (m * k * n) as f64;
        let ring = work / median(&mut r) / 1e9;
        let public = work / median(&mut p) / 1e9;
        let f32r = work / median(&mut f) / 1e9;
        rows += &format!(
            "| ({m}×{k})·({k}×{n}) | {ring:.2} | {public:.2} | {f32r:.2} | {:.3} | {:.3} |\n",
            ring / f32r,
            public / f32r
        );
    }
    if rows.is_empty() {
        return;
    }
    eprintln!(
        "\n| shape | ring u64 G mul-add/s | public weights G mul-add/s | f32 G mul-add/s | ring/f32 | public/f32 |\n|---|---|---|---|---|---|\n{rows}"
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_gemm(&mut c);
    c.final_summary();
    print_table();
}

//! Placement latency at 10,000 workers with 100,000 live sessions (criterion).
//! Run: `cargo bench -p marill-scheduler`.

use criterion::{criterion_group, criterion_main, Criterion};
use marill_scheduler::bench::pool;
use marill_scheduler::{Scheduler, SessionRequest};

fn placement(c: &mut Criterion) {
    let (specs, models) = pool(10_000, 1);
    let mut s = Scheduler::new(&specs, &models).unwrap();
    for id in 0..100_000u64 {
        let _ = s.place(&SessionRequest {
            id,
            model: (id % 16) as u32,
            kv_bytes: (16 << 20) + (id % 7) * (32 << 20),
            pin: None,
        });
    }
    let mut id = 1_000_000u64;
    c.bench_function("place_then_release_10k_workers_100k_sessions", |b| {
        b.iter(|| {
            id += 1;
            let r = SessionRequest {
                id,
                model: (id % 16) as u32,
                kv_bytes: 64 << 20,
                pin: None,
            };
            if s.place(&r).is_ok() {
                s.release(id).unwrap();
            }
        })
    });
}

criterion_group!(benches, placement);
criterion_main!(benches);

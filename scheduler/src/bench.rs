//! The placement benchmark behind `marill bench scheduler` and the criterion bench: a pool of
//! providers and helpers in several trust domains, then a stream of decisions (placements,
//! releases, resizes) timed one by one. Inputs come from a seeded generator (no clock or I/O
//! in the scheduler itself; only this module measures time).

use crate::{Health, Role, Scheduler, SessionRequest, WorkerSpec};
use std::collections::BTreeMap;
use std::time::Instant;

/// What one benchmark run measured.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// workers in the pool
    pub workers: usize,
    /// sessions alive at the end of the fill
    pub sessions: usize,
    /// decisions timed
    pub decisions: usize,
    /// median latency per decision, µs
    pub p50_us: f64,
    /// 99th percentile, µs
    pub p99_us: f64,
    /// worst, µs
    pub max_us: f64,
    /// placements refused for lack of room
    pub rejected: usize,
    /// wall time of the whole run, s
    pub total_s: f64,
}

/// A small seeded generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The pool: half providers, half helpers, 8 trust domains, 80 GB devices, 64 sessions each;
/// 16 models of 0.5–2 GB weight shares.
pub fn pool(workers: usize, seed: u64) -> (Vec<WorkerSpec>, BTreeMap<u32, u64>) {
    let mut rng = Rng(seed);
    let specs = (0..workers as u32)
        .map(|i| WorkerSpec {
            id: i,
            role: if i % 2 == 0 {
                Role::Provider
            } else {
                Role::Helper
            },
            domain: (i / 2) % 8 + if i % 2 == 0 { 0 } else { 8 },
            mem_limit: 80 << 30,
            max_sessions: 64,
            health: Health::Healthy,
        })
        .collect();
    let models = (0..16u32)
        .map(|m| (m, (512 << 20) + rng.below(3 << 29)))
        .collect();
    (specs, models)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Fills the pool with `sessions` placements, then runs as many mixed decisions (release one,
/// place one, resize one), timing every decision.
pub fn run(workers: usize, sessions: usize, seed: u64) -> BenchReport {
    let start = Instant::now();
    let (specs, models) = pool(workers, seed);
    let mut s = Scheduler::new(&specs, &models).expect("distinct ids");
    let mut rng = Rng(seed ^ 0x5eed);
    let mut lat = Vec::with_capacity(3 * sessions);
    let mut live: Vec<u64> = Vec::with_capacity(sessions);
    let mut rejected = 0;
    let mut next_id = 0u64;
    let mut request = |rng: &mut Rng| {
        next_id += 1;
        SessionRequest {
            id: next_id,
            model: rng.below(16) as u32,
            kv_bytes: (16 << 20) + rng.below(240 << 20),
            pin: None,
        }
    };
    let mut place = |s: &mut Scheduler, rng: &mut Rng, lat: &mut Vec<f64>, live: &mut Vec<u64>| {
        let r = request(rng);
        let t = Instant::now();
        let ok = s.place(&r);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        match ok {
            Ok(_) => live.push(r.id),
            Err(_) => rejected += 1,
        }
    };
    for _ in 0..sessions {
        place(&mut s, &mut rng, &mut lat, &mut live);
    }
    let filled = live.len();
    for _ in 0..sessions {
        if !live.is_empty() {
            let k = rng.below(live.len() as u64) as usize;
            let id = live.swap_remove(k);
            let t = Instant::now();
            s.release(id).expect("live session");
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        place(&mut s, &mut rng, &mut lat, &mut live);
        if !live.is_empty() {
            let id = live[rng.below(live.len() as u64) as usize];
            let t = Instant::now();
            let _ = s.update_usage(id, (32 << 20) + rng.below(256 << 20));
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    BenchReport {
        workers,
        sessions: filled,
        decisions: lat.len(),
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        max_us: lat.last().copied().unwrap_or(0.0),
        rejected,
        total_s: start.elapsed().as_secs_f64(),
    }
}

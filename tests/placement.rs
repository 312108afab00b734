//! Placement against what the workers announce (issue 22: "a session that fits on no pair
//! waits, or is refused with a clear reason, never lands on a full pair"), with real
//! processes: a tansu broker, a coordinator and one worker pair (`TestCluster`).
//!
//! Each worker's hello carries the memory it has for sessions' KV caches (its
//! `--memory-limit-mb` less its weights) and one session's reservation; the coordinator's
//! scheduler places a session on a pair only where both workers have room for it.
//!
//! `sessions_wait_for_memory_and_a_pair_without_room_refuses_at_once`: the pair is restarted
//! with a memory limit that holds one session's KV cache while it serves 4 lanes. A batch of
//! 3 sessions runs one session at a time (the others wait in the coordinator; before, the
//! second one landed on a free lane and the worker's memory owner failed it), every session
//! finishes equal to plaintext. Then, restarted with room for no session, the pair refuses a
//! new session at once with the reason, instead of letting it wait for its deadline.

mod common;

use common::{accounted, metric, TestCluster};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Long enough that one session's KV cache (the tiny model's) is a few MiB: the memory limit
/// is given in MiB.
const MAX_SEQ: &str = "4096";

/// The memory pair 0 announced in the "worker pair ready" line of coordinator `n`'s log: (room
/// for KV caches at the provider and the helper, one session's KV cache).
fn announced(c: &TestCluster, n: usize) -> ([u64; 2], u64) {
    let log = c.log_text(&format!("coordinator-{n}"));
    let line = log
        .lines()
        .rfind(|l| l.contains("pair=0 ") && l.contains("session_kv="))
        .unwrap_or_else(|| panic!("no hello of pair 0 in the coordinator's log ({})", c.logs()));
    let after = |name: &str| -> &str {
        let at = line.find(name).expect(name) + name.len();
        &line[at..]
    };
    let room: Vec<u64> = after("kv_room=[")
        .split(']')
        .next()
        .unwrap()
        .split(", ")
        .map(|r| r.parse().unwrap())
        .collect();
    let kv = after("session_kv=")
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    ([room[0], room[1]], kv)
}

/// Restarts the cluster's coordinator and pair 0 with `--memory-limit-mb mb` (a pair's
/// memory is learnt from its hello, so the new coordinator probes the new workers); returns
/// the new coordinator's number and what the pair announced.
fn restart_with_limit(c: &mut TestCluster, mb: u64) -> (usize, [u64; 2], u64) {
    for p in c.coordinators.iter_mut() {
        let _ = p.kill();
        let _ = p.wait();
    }
    for role in [1, 2] {
        let _ = c.pairs[0][role].kill();
        let _ = c.pairs[0][role].wait();
    }
    c.worker_args = vec![
        "--memory-limit-mb".into(),
        mb.to_string(),
        "--max-seq".into(),
        MAX_SEQ.into(),
    ];
    c.pairs[0][1] = c.worker(0, "provider");
    c.pairs[0][2] = c.worker(0, "helper");
    let n = c.coordinator();
    c.wait_log(
        &format!("coordinator-{n}"),
        "worker pair ready pair=0 ",
        180,
    );
    let (room, kv) = announced(c, n);
    (n, room, kv)
}

#[test]
fn sessions_wait_for_memory_and_a_pair_without_room_refuses_at_once() {
    let mut c = TestCluster::start_with(
        "placement",
        1,
        &["--memory-limit-mb", "4096", "--max-seq", MAX_SEQ],
    );
    c.coordinator();
    let logs = c.logs();
    c.wait_log("coordinator-0", "worker pair ready pair=0 ", 180);
    let (room, kv) = announced(&c, 0);
    let weights = room.map(|r| 4096 * MIB - r);
    eprintln!("weights {weights:?} bytes, one session's KV cache {kv} bytes");
    assert!(kv > 0, "no KV reservation announced ({logs})");
    // a limit with room for one session's KV cache and not two, at both workers
    let one = (weights[0].max(weights[1]) + kv + kv / 2).div_ceil(MIB);
    let (_, room, _) = restart_with_limit(&mut c, one);
    for r in room {
        assert_eq!(
            r / kv,
            1,
            "the test's sizing is off: {r} bytes of room hold {} sessions of {kv} ({logs})",
            r / kv
        );
    }
    let sessions = 3;
    let mut batch = c.spawn_batch(sessions, 3);
    // the pair never holds more than one session, while the others wait
    let mut most = 0.0f64;
    let start = Instant::now();
    while batch.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(240) {
        most = most.max(metric(&c.metrics[0][0], "marill_worker_sessions_open"));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (finished, failed) = accounted(batch, sessions, &logs);
    assert_eq!(
        (finished, failed.len()),
        (sessions, 0),
        "{failed:?} ({logs})"
    );
    assert_eq!(most, 1.0, "the pair held {most} sessions at once ({logs})");
    // room for no session at all: refused at once, with the reason
    let none = (weights[0].max(weights[1]) + kv / 2).div_ceil(MIB);
    let (_, room, _) = restart_with_limit(&mut c, none);
    assert!(room.iter().all(|r| *r < kv), "{room:?} vs {kv} ({logs})");
    let t = Instant::now();
    let (finished, failed) = accounted(c.spawn_batch(1, 2), 1, &logs);
    assert_eq!(finished, 0, "{failed:?} ({logs})");
    assert!(
        failed[0].contains("no worker pair has memory for a session"),
        "{} ({logs})",
        failed[0]
    );
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the refusal waited {:?} ({logs})",
        t.elapsed()
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

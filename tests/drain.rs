//! Drain on `SIGTERM` (issue 22: scaling a pair down mid-batch fails no session), with real
//! processes: a tansu broker, a coordinator and two worker pairs (`TestCluster`).
//!
//! `a_pair_drained_mid_batch_fails_no_session`: while a batch runs on both pairs, pair 0's
//! provider and helper get `SIGTERM` (what Kubernetes sends a pod it scales down). They tell the
//! coordinator at once, which places no new session on the pair; a step 0 that reached them
//! first is refused at both workers and placed on pair 1, not failed; the sessions open on the
//! pair run to their end; then both workers exit cleanly (status 0) long before their drain
//! deadline. Every session of the batch finishes equal to plaintext, one result per job.

mod common;

use common::{accounted, assert_one_result_per_job, TestCluster};
use std::time::Instant;

/// Sends `SIGTERM` to process `pid`.
fn terminate(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

/// The number of sessions a worker said were open when its drain began (its line
/// "<role>: draining: N sessions open, deadline D s").
fn open_at_drain(log: &str) -> Option<usize> {
    log.lines()
        .find(|l| l.contains(" sessions open, deadline "))?
        .split(": draining: ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_pair_drained_mid_batch_fails_no_session() {
    let mut c = TestCluster::start("drain", 2);
    c.coordinator();
    let logs = c.logs();
    let sessions = 8;
    let batch = c.spawn_batch(sessions, 12);
    // pair 0 is serving sessions: a few of its steps are done, more are to come
    c.wait_steps(0, 3.0, 180);
    let drained = Instant::now();
    for role in [1, 2] {
        terminate(c.pairs[0][role].id());
    }
    let (finished, failed) = accounted(batch, sessions, &logs);
    assert_eq!(
        (finished, failed.len()),
        (sessions, 0),
        "a session failed during the drain: {failed:?} ({logs})"
    );
    for role in 0..2 {
        let took = c.wait_exit(0, role, 120);
        let status = c.pairs[0][1 + role].try_wait().unwrap().expect("exited");
        let name = ["provider-0", "helper-0"][role];
        let log = c.log_text(name);
        assert!(
            status.success(),
            "{name} exited with {status} after its drain ({logs})"
        );
        assert!(
            log.contains("drained: every session ended"),
            "{name} did not end its drain by itself ({logs})"
        );
        let open = open_at_drain(&log).unwrap_or(0);
        eprintln!(
            "{name}: {open} sessions open at SIGTERM, exited within {:?} of it (seen {took:?} after the batch ended)",
            drained.elapsed()
        );
        assert!(
            open > 0,
            "{name} had no session open when it was told to drain: the test did not drain mid-batch ({logs})"
        );
    }
    c.wait_log("coordinator-0", "worker pair draining", 10);
    assert!(c.steps_done(1) > 0.0, "pair 1 ran no step ({logs})");
    assert_one_result_per_job(&c.brokers, &logs);
    let _ = std::fs::remove_dir_all(&c.dir);
}

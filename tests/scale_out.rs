//! Scaling out during a batch (issue 22: "a pair started during a running batch serves
//! sessions within 10 s, nothing restarted"), with real processes: a tansu broker, a
//! coordinator and two worker pairs (`TestCluster`).
//!
//! The coordinator lists both pairs (as the Helm chart lists pairs up to the autoscaler's
//! `maxReplicas`), but pair 1's workers are not running when it starts: it serves with pair 0
//! alone and keeps probing pair 1. Mid-batch pair 1's workers start (a scale-out); the
//! sessions waiting for a lane go to it within seconds of its workers coming up, nothing else
//! is restarted (pair 0's workers and the coordinator keep their processes), and every
//! session of the batch finishes equal to plaintext, one result per job.
//!
//! What this does not show yet: pairs that announce themselves with no list at all (live
//! membership, issue 22 point 2).

mod common;

use common::{accounted, assert_one_result_per_job, TestCluster};
use std::time::{Duration, Instant};

#[test]
fn a_pair_started_during_a_batch_serves_within_seconds() {
    let mut c = TestCluster::start("scale-out", 2);
    // pair 1 is listed but not running (its pods not scheduled yet)
    for role in [1, 2] {
        c.pairs[1][role].kill().unwrap();
        c.pairs[1][role].wait().unwrap();
    }
    c.coordinator();
    let logs = c.logs();
    let before: Vec<u32> = [
        c.pairs[0][1].id(),
        c.pairs[0][2].id(),
        c.coordinators[0].id(),
    ]
    .into();
    let sessions = 12;
    let batch = c.spawn_batch(sessions, 8);
    c.wait_steps(0, 2.0, 180);
    // scale out: pair 1's workers start
    let started = Instant::now();
    c.pairs[1][1] = c.worker(1, "provider");
    c.pairs[1][2] = c.worker(1, "helper");
    c.wait_steps(1, 1.0, 60);
    let serving = started.elapsed();
    let (finished, failed) = accounted(batch, sessions, &logs);
    assert_eq!(
        (finished, failed.len()),
        (sessions, 0),
        "{failed:?} ({logs})"
    );
    eprintln!("pair 1 ran its first step {serving:?} after its workers started");
    assert!(
        serving < Duration::from_secs(10),
        "pair 1 served its first step {serving:?} after its start ({logs})"
    );
    // nothing else was restarted
    for role in [1, 2] {
        assert!(
            c.pairs[0][role].try_wait().unwrap().is_none(),
            "pair 0's worker {role} exited ({logs})"
        );
    }
    assert!(
        c.coordinators[0].try_wait().unwrap().is_none(),
        "the coordinator exited ({logs})"
    );
    assert_eq!(
        before,
        vec![
            c.pairs[0][1].id(),
            c.pairs[0][2].id(),
            c.coordinators[0].id()
        ]
    );
    assert_one_result_per_job(&c.brokers, &logs);
    let _ = std::fs::remove_dir_all(&c.dir);
}

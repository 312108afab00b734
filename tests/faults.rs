//! Faults on the cluster as separate processes (tansu, dealers, provider/helper pairs, the
//! coordinator, the client), each ending with every job accounted for: a correct result or a
//! clear error within its deadline, and never two different visible results for one job.
//!
//! - `a_coordinator_killed_mid_batch_and_restarted`: `kill -9` of the coordinator while a batch
//!   of sessions runs, a new coordinator started in its place. Jobs the dead one consumed but
//!   did not finish are redelivered to the new one; sessions that were open on the dead one fail
//!   at their next step with "not open" (their clients restart them), the others finish equal
//!   to plaintext; every job id on `marill.results` has one payload, however often published.

mod common;

use common::TestCluster;
use marill_coordinator::KafkaSettings;
use marill_proto::job::{JobResult, Outcome, RESULTS_TOPIC};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The results published so far, by job id.
fn results(brokers: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut by_job: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let all = marill_coordinator::kafka::read_tail(
        &KafkaSettings::new(brokers),
        RESULTS_TOPIC,
        100_000,
        Duration::from_secs(20),
    )
    .unwrap();
    for (key, payload) in all {
        by_job
            .entry(String::from_utf8_lossy(&key).into_owned())
            .or_default()
            .push(payload);
    }
    by_job
}

#[test]
fn a_coordinator_killed_mid_batch_and_restarted() {
    let mut c = TestCluster::start("restart", 2);
    c.coordinator();
    let sessions = 8;
    let batch = c
        .batch(sessions, 4, 60)
        .args(["--concurrency", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // let some jobs finish first
    let start = Instant::now();
    while results(&c.brokers).len() < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no results; logs in {}",
            c.dir.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    c.coordinators[0].kill().unwrap(); // SIGKILL
    c.coordinators[0].wait().unwrap();
    let before = results(&c.brokers).len();
    c.coordinator();
    let out = batch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs = c.dir.display().to_string();
    eprintln!("{stdout}\n{stderr}");

    // every session either finished identical to plaintext or failed with a clear reason
    let finished = stderr
        .lines()
        .filter(|l| l.contains(": identical true"))
        .count();
    let differing = stderr
        .lines()
        .filter(|l| l.contains(": identical false"))
        .count();
    let failed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .collect();
    assert_eq!(differing, 0, "a session differs from plaintext ({logs})");
    assert_eq!(
        finished + failed.len(),
        sessions,
        "sessions unaccounted for ({logs})"
    );
    for f in &failed {
        assert!(
            f.contains("is not open") || f.contains("not open"),
            "a session failed for another reason than the restart: {f} ({logs})"
        );
    }
    assert!(
        finished > 0,
        "no session finished after the restart ({logs})"
    );

    // one visible result per job, whatever was redelivered
    let published = results(&c.brokers);
    assert!(
        published.len() > before,
        "the new coordinator published nothing ({logs})"
    );
    for (job, payloads) in &published {
        assert!(
            payloads.windows(2).all(|w| w[0] == w[1]),
            "job {job} has {} different results ({logs})",
            payloads.len()
        );
        let r = JobResult::decode(&payloads[0]).unwrap();
        if let Outcome::Failed { reason } = &r.outcome {
            assert!(
                reason.contains("not open"),
                "job {job} failed: {reason} ({logs})"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

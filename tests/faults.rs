//! Faults on the cluster as separate processes (tansu, dealers, provider/helper pairs, the
//! coordinator, the client), each ending with every job accounted for: a correct result or a
//! clear error within its deadline, and never two different visible results for one job.
//!
//! - `a_coordinator_killed_mid_batch_and_restarted`: `kill -9` of the coordinator while a batch
//!   of sessions runs, a new coordinator started in its place. Jobs the dead one consumed but
//!   did not finish are redelivered to the new one; sessions that were open on the dead one fail
//!   at their next step with "not open" (their clients restart them), the others finish equal
//!   to plaintext; every job id on `marill.results` has one payload, however often published.
//! - `a_helper_killed_mid_batch`: `kill -9` of one pair's helper while a batch runs (workers'
//!   in-step timeout 5 s, the coordinator's step timeout 15 s). The provider's step fails inside
//!   the 2PC within the timeout and it exits (its supervisor restarts it); the coordinator fails
//!   that session's step with the reason and retires the pair; the other pair serves the rest.
//!   Then both workers of the pair are started again: the dealer opens a new epoch (fresh seed:
//!   no correlation handed out twice), the coordinator brings the pair back into service, and a
//!   second batch runs equal to plaintext.

mod common;

use common::TestCluster;
use marill_coordinator::KafkaSettings;
use marill_proto::job::{JobResult, Outcome, RESULTS_TOPIC};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What a batch printed: sessions finished identical, differing, and failure lines.
fn outcome(stderr: &str) -> (usize, usize, Vec<String>) {
    let count = |pat: &str| stderr.lines().filter(|l| l.contains(pat)).count();
    let failed = stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .map(str::to_string)
        .collect();
    (
        count(": identical true"),
        count(": identical false"),
        failed,
    )
}

/// Every job id has one payload on `marill.results`, however often it was published.
fn assert_one_result_per_job(brokers: &str, logs: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let published = results(brokers);
    for (job, payloads) in &published {
        assert!(
            payloads.windows(2).all(|w| w[0] == w[1]),
            "job {job} has {} different results ({logs})",
            payloads.len()
        );
    }
    published
}

/// Waits until at least `n` results are published.
fn wait_for_results(brokers: &str, n: usize, logs: &str) {
    let start = Instant::now();
    while results(brokers).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "fewer than {n} results; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `sessions` sessions of 4 tokens, 4 at a time, 60 s per step, output captured.
fn spawn_batch(c: &TestCluster, sessions: usize) -> std::process::Child {
    c.batch(sessions, 4, 60)
        .args(["--concurrency", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

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
    let batch = spawn_batch(&c, sessions);
    // let some jobs finish first
    wait_for_results(&c.brokers, 6, &c.dir.display().to_string());
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
    let (finished, differing, failed) = outcome(&stderr);
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
    let published = assert_one_result_per_job(&c.brokers, &logs);
    assert!(
        published.len() > before,
        "the new coordinator published nothing ({logs})"
    );
    for (job, payloads) in &published {
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

#[test]
fn a_helper_killed_mid_batch() {
    let mut c = TestCluster::start_with("helper-kill", 2, &["--idle-timeout-s", "5"]);
    c.coordinator_with(&["--step-timeout-s", "15"]);
    let logs = c.dir.display().to_string();
    let sessions = 8;
    let batch = spawn_batch(&c, sessions);
    wait_for_results(&c.brokers, 4, &logs);
    let killed = Instant::now();
    c.pairs[0][2].kill().unwrap(); // SIGKILL of pair 0's helper
    let out = batch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let (finished, differing, failed) = outcome(&stderr);
    assert_eq!(differing, 0, "a session differs from plaintext ({logs})");
    assert_eq!(
        finished + failed.len(),
        sessions,
        "sessions unaccounted for ({logs})"
    );
    assert!(finished > 0, "the other pair finished nothing ({logs})");
    for f in &failed {
        // the step that was running on the pair fails with the reason, in time
        assert!(
            !f.contains("no result within"),
            "a job was left without an outcome: {f} ({logs})"
        );
    }
    // the provider's 2PC step failed with its peer gone: it exits for its supervisor
    let provider = &mut c.pairs[0][1];
    while provider.try_wait().unwrap().is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the provider of the broken pair is still running ({logs})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let coordinator = std::fs::read_to_string(c.dir.join("coordinator-0.log")).unwrap();
    assert!(
        coordinator.contains("worker pair lost pair=0"),
        "pair 0 not retired ({logs})"
    );
    assert_one_result_per_job(&c.brokers, &logs);

    // the pair restarted (as its supervisor would): a new epoch at the dealer, back in service
    c.pairs[0][1] = c.worker(0, "provider");
    c.pairs[0][2] = c.worker(0, "helper");
    let log = |name: &str| std::fs::read_to_string(c.dir.join(name)).unwrap_or_default();
    let start = Instant::now();
    while !log("coordinator-0.log").contains("worker pair back in service pair=0") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "pair 0 did not come back ({logs})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let dealer = log("dealer-0.log");
    for party in ["P0", "P1"] {
        assert!(
            dealer.contains(&format!("{party} seeded in epoch 1")),
            "{party} not in a new epoch ({logs}):\n{dealer}"
        );
    }
    let out = c
        .batch(4, 2, 60)
        .args(["--concurrency", "4"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "second batch failed ({logs}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

//! Faults on the links between processes, made with a TCP proxy on 127.0.0.1
//! (`tests/common/proxy.rs`) between a pair's helper and the provider's peer endpoint, or
//! between the coordinator and a worker's control endpoint. Every batch ends with each job
//! accounted for: a result equal to plaintext or a clear error within its deadline.
//!
//! - `a_slow_peer_link_gives_results_equal_to_plaintext`: every chunk on the peer link delayed;
//!   the sessions are slower and still equal to plaintext.
//! - `a_stalled_peer_link_fails_the_step_and_the_pair_recovers`: the link holds every byte
//!   for longer than the workers' in-step timeout (5 s) in the middle of a step: that step's
//!   session fails with "the peer party was lost or timed out" as its reason, both workers
//!   exit (for their supervisor), the coordinator retires the pair, the other pair serves the
//!   rest; restarted, the pair serves again.
//! - `a_cut_peer_link`: cut between steps and restored, the link reconnects by itself and the
//!   next sessions run on the same workers; cut in the middle of a step, that session fails
//!   with a clear reason and the pair is retired, then restarted and serving once the link is
//!   back.
//! - `a_recorded_control_connection_replayed_is_rejected`: the bytes the coordinator sent on
//!   its control link to a provider (CURVE handshake, hello, a session's steps), recorded and
//!   sent again on a new connection, run no step: the handshake fails and the provider closes
//!   the connection; the provider keeps serving its coordinator.

mod common;

use common::proxy::{port_of, Proxy};
use common::{
    accounted, assert_one_result_per_job, first_failure, metric, wait_metric_one, TestCluster,
};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn a_slow_peer_link_gives_results_equal_to_plaintext() {
    let mut c = TestCluster::start_proxied("slow", 1, &["--idle-timeout-s", "10"]);
    c.coordinator();
    let logs = c.logs();
    // a first batch teaches the dealer the steps' shapes (later ones are streamed): the two
    // timed batches below then differ only by the link
    let (finished, _) = accounted(c.spawn_batch(2, 3), 2, &logs);
    assert_eq!(finished, 2, "warming up ({logs})");
    let t = Instant::now();
    let (finished, _) = accounted(c.spawn_batch(2, 3), 2, &logs);
    assert_eq!(finished, 2, "at full speed ({logs})");
    let fast = t.elapsed();
    // every chunk, either way, 10 ms late
    c.proxies[0].delay(Duration::from_millis(10));
    let t = Instant::now();
    let (finished, failed) = accounted(c.spawn_batch(2, 3), 2, &logs);
    assert_eq!(finished, 2, "slowed: {failed:?} ({logs})");
    let slow = t.elapsed();
    eprintln!("2 sessions of 3 tokens: {fast:?} at full speed, {slow:?} with 10 ms per chunk");
    assert!(slow > fast, "the delay had no effect ({logs})");
    assert_one_result_per_job(&c.brokers, &logs);
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// Pair 0's peer link broken by `fault` in the middle of a prefill step (its chunks delayed
/// 20 ms so that steps last seconds), healed by `heal` after 8 s (longer than the workers'
/// 5 s in-step timeout): checks the one session on that step fails with a reason naming the
/// timeout, within its deadline, both workers exit, the pair is retired, the rest is served
/// by pair 1, and once restarted the pair serves again. Returns (fault → failed result,
/// restart → back in service).
fn peer_link_broken_mid_step(
    name: &str,
    fault: impl Fn(&Proxy),
    heal: impl Fn(&Proxy),
) -> (Duration, Duration) {
    // one session at a time per pair, so exactly one session is on the broken link (with more
    // lanes every session open on the pair fails the same way)
    let mut c = TestCluster::start_proxied(name, 2, &["--idle-timeout-s", "5", "--sessions", "1"]);
    c.coordinator_with(&["--step-timeout-s", "30"]);
    let logs = c.logs();
    c.proxies[0].delay(Duration::from_millis(20));
    let sessions = 6;
    let batch = c.spawn_batch(sessions, 4);
    let running = "marill_worker_step_running{phase=\"prefill\"}";
    wait_metric_one(&c.metrics[0][1], running, 180, &logs);
    let broken = Instant::now();
    fault(&c.proxies[0]);
    let (to_failure, _) = first_failure(&c.brokers, broken, &logs);
    c.wait_exit(0, 0, 30);
    c.wait_exit(0, 1, 30);
    let exited = broken.elapsed();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(broken.elapsed()));
    heal(&c.proxies[0]);
    c.proxies[0].delay(Duration::ZERO);
    let (finished, failed) = accounted(batch, sessions, &logs);
    assert!(finished > 0, "pair 1 finished nothing ({logs})");
    assert_eq!(
        failed.len(),
        1,
        "only the broken step's session fails: {failed:?} ({logs})"
    );
    assert!(
        failed[0].contains("the peer party was lost or timed out"),
        "the reason does not name the lost peer: {} ({logs})",
        failed[0]
    );
    assert_one_result_per_job(&c.brokers, &logs);
    // retired once its probe goes unanswered (the workers exited): within the step timeout
    c.wait_log("coordinator-0", "worker pair lost pair=0", 60);
    let back = c.restart_pair(0, 0);
    let (finished, failed) = accounted(c.spawn_batch(4, 2), 4, &logs);
    assert_eq!(finished, 4, "after the restart: {failed:?} ({logs})");
    assert!(
        c.steps_done(0) > 0.0,
        "the restarted pair ran no step ({logs})"
    );
    eprintln!(
        "{name}: the failed result {to_failure:?} after the fault, both workers exited by {exited:?}, the pair back in service {back:?} after its restart"
    );
    let _ = std::fs::remove_dir_all(&c.dir);
    (to_failure, back)
}

#[test]
fn a_stalled_peer_link_fails_the_step_and_the_pair_recovers() {
    peer_link_broken_mid_step("stall", Proxy::pause, |p| p.delay(Duration::ZERO));
}

#[test]
fn a_cut_peer_link() {
    let (_, _) = peer_link_broken_mid_step("cut", Proxy::cut, Proxy::restore);
}

#[test]
fn a_peer_link_cut_between_steps_reconnects_by_itself() {
    let mut c = TestCluster::start_proxied("cut-idle", 1, &["--idle-timeout-s", "5"]);
    c.coordinator();
    let logs = c.logs();
    let (finished, _) = accounted(c.spawn_batch(1, 2), 1, &logs);
    assert_eq!(finished, 1, "before the cut ({logs})");
    let before = (c.proxies[0].connections(), c.steps_done(0));
    c.proxies[0].cut();
    std::thread::sleep(Duration::from_secs(3));
    c.proxies[0].restore();
    let (finished, failed) = accounted(c.spawn_batch(2, 2), 2, &logs);
    assert_eq!(finished, 2, "after the cut: {failed:?} ({logs})");
    assert!(
        c.proxies[0].connections() > before.0,
        "the helper did not reconnect ({logs})"
    );
    assert!(c.steps_done(0) > before.1, "no step after the cut ({logs})");
    for w in &mut c.pairs[0][1..] {
        assert!(w.try_wait().unwrap().is_none(), "a worker exited ({logs})");
    }
    let _ = std::fs::remove_dir_all(&c.dir);
}

#[test]
fn a_recorded_control_connection_replayed_is_rejected() {
    let mut c = TestCluster::start("replay", 1);
    let logs = c.logs();
    // the coordinator reaches the provider's control endpoint through a recording proxy
    let px = Proxy::start(port_of(&c.control[0].0));
    let real = std::mem::replace(&mut c.control[0].0, px.endpoint());
    c.coordinator();
    c.control[0].0 = real;
    let (finished, _) = accounted(c.spawn_batch(1, 2), 1, &logs);
    assert_eq!(finished, 1, "({logs})");
    let recorded = px.recorded();
    let all_steps = |c: &TestCluster| -> f64 {
        ["done", "refused", "failed"]
            .iter()
            .map(|o| {
                metric(
                    &c.metrics[0][0],
                    &format!("marill_worker_steps_total{{outcome=\"{o}\"}}"),
                )
            })
            .sum()
    };
    let before = all_steps(&c);
    assert!(before >= 2.0, "the session ran {before} steps ({logs})");
    assert!(
        recorded.len() > 1000,
        "recorded only {} bytes ({logs})",
        recorded.len()
    );
    // the recording sent again on a fresh connection, as an attacker on the path could
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port_of(&c.control[0].0))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(&recorded);
    let t = Instant::now();
    let mut sink = Vec::new();
    let closed = match s.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    };
    eprintln!(
        "replayed {} bytes; the provider answered {} bytes and closed: {closed} after {:?}",
        recorded.len(),
        sink.len(),
        t.elapsed()
    );
    assert!(
        closed,
        "the provider kept the replayed connection open ({logs})"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(all_steps(&c), before, "a replayed step ran ({logs})");
    // the provider still serves its coordinator
    let (finished, failed) = accounted(c.spawn_batch(1, 2), 1, &logs);
    assert_eq!(finished, 1, "after the replay: {failed:?} ({logs})");
    assert!(all_steps(&c) > before, "({logs})");
    let _ = std::fs::remove_dir_all(&c.dir);
}

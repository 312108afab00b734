//! A canary secret fed as the prompt never leaves the client in clear: after a private
//! generation through the cluster (tansu, coordinator, a provider/helper pair, a dealer, all
//! logging at `trace`), the canary text appears in no process's log, not in the coordinator's
//! metrics, and not in any message the broker stored (jobs, results, dead letters: the shares
//! travel sealed to the workers' keys and the client's reply key).

mod common;

use common::{scrape, TestCluster, FAST_GROUP};
use marill_coordinator::KafkaSettings;
use marill_proto::job::{DEAD_LETTER_TOPIC, JOBS_TOPIC, RESULTS_TOPIC};
use std::time::Duration;

const CANARY: &str = "ZEBRA7731CANARY";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_canary_prompt_appears_in_no_log_metric_or_stored_message() {
    std::env::set_var("MARILL_LOG", "trace");
    let mut c = TestCluster::start("canary", 1);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    c.coordinator_with(&["--metrics-addr", &metrics]);
    let prompt = format!("The vault code is {CANARY}, keep it");
    let out = common::marill(&["client", "generate", "--brokers", &c.brokers])
        .args(["--keys", c.keys.to_str().unwrap()])
        .args(["--model", c.model.to_str().unwrap()])
        .args([
            "--prompt",
            &prompt,
            "--max-new-tokens",
            "2",
            "--timeout-s",
            "120",
        ])
        .args(FAST_GROUP)
        .output()
        .unwrap();
    let logs = c.dir.display().to_string();
    assert!(
        out.status.success(),
        "generation failed ({logs}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canary = CANARY.as_bytes();
    // the metrics endpoint
    let body = scrape(&metrics);
    assert!(body.contains("marill_coordinator_jobs_total"), "{body}");
    assert!(!body.contains(CANARY), "the canary is in the metrics");
    // every message the broker stored
    let mut stored = 0;
    for topic in [JOBS_TOPIC, RESULTS_TOPIC, DEAD_LETTER_TOPIC] {
        let msgs = marill_coordinator::kafka::read_tail(
            &KafkaSettings::new(&c.brokers),
            topic,
            10_000,
            Duration::from_secs(20),
        )
        .unwrap();
        for (key, payload) in msgs {
            stored += 1;
            assert!(
                !contains(&key, canary) && !contains(&payload, canary),
                "the canary is in a message on {topic}"
            );
        }
    }
    assert!(stored >= 4, "only {stored} messages stored");
    // every process's log (written at trace level)
    let mut read = 0;
    for e in std::fs::read_dir(&c.dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read(&p).unwrap();
            read += text.len();
            assert!(!contains(&text, canary), "the canary is in {}", p.display());
        }
    }
    assert!(read > 1000, "the logs hold only {read} bytes ({logs})");
    let _ = std::fs::remove_dir_all(&c.dir);
}

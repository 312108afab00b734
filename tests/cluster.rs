//! The cluster end to end as separate processes on 127.0.0.1: `marill bench cluster` starts a
//! Kafka-protocol broker (tansu, its own process), the coordinator, two provider and two
//! helper workers with a dealer per pair, and acts as the client of 20 private sessions at once
//! through Kafka. Every session's greedy continuation must equal plaintext inference (the
//! command fails otherwise, and the test reads its JSON rows). The coordinator's dead-letter,
//! failure and redelivery paths are tested against a broker in `coordinator/tests/`.
//! `scripts/test.sh` fetches tansu (`scripts/fetch-tansu.sh`) and the model first.

mod common;

use common::{marill, temp};
use std::path::Path;

const MODEL: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const TANSU: &str = "target/tools/tansu";

fn path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn twenty_sessions_through_kafka_equal_plaintext() {
    let (model, tansu) = (path(MODEL), path(TANSU));
    for p in [&model, &tansu] {
        assert!(
            Path::new(p).exists(),
            "{p} absent: run scripts/fetch-smollm2.sh and scripts/fetch-tansu.sh (scripts/test.sh does)"
        );
    }
    let dir = temp("cluster");
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rows.json");
    let out = marill(&[
        "bench",
        "cluster",
        "--pairs",
        "2",
        "--sessions",
        "20",
        "--tokens",
        "2",
        "--tansu",
        &tansu,
        "--use-model",
        "--model",
        &model,
        "--n-public",
        "28",
        "--json",
        json.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench cluster failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let r = &rows[0];
    assert_eq!(r["pairs"], 2);
    assert_eq!(r["sessions"], 20, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["identical"], 20, "{r}");
    assert_eq!(r["jobs"], 60, "{r}");
    assert!(r["max_abs_logit_err"].as_f64().unwrap() < 0.05, "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! `marill fuzz` with a small budget (CI): every decoder that reads another party's or
//! process's bytes gets mutated inputs; none may panic, the authenticated one (sealed shares)
//! may accept no modified input, and each must both accept valid and reject broken inputs (so
//! the mutations reach it). Longer runs: `marill fuzz --iterations 1000000`.

mod common;

use common::{marill, temp};

#[test]
fn every_decoder_survives_mutated_input() {
    let dir = temp("fuzz");
    let json = dir.join("rows.json");
    let out = marill(&["fuzz", "--iterations", "3000", "--seed", "7"])
        .args(["--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fuzz failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["target"].as_str().unwrap()).collect();
    for want in [
        "control-link message",
        "peer-link message",
        "dealer-link message",
        "client-link message",
        "job (",
        "job result",
        "dead letter",
        "share payload",
        "sealed share",
        "correlation bundle",
        "settings file",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} missing: {names:?}"
        );
    }
    for r in &rows {
        assert_eq!(r["executions"], 3000, "{r}");
        assert_eq!(r["panics"], 0, "{r}");
        assert_eq!(r["forged"], 0, "{r}");
        assert!(r["rejected"].as_u64().unwrap() > 0, "{r}");
        if r["authenticated"] == false {
            assert!(r["accepted"].as_u64().unwrap() > 0, "{r}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

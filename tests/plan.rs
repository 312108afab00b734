//! `marill plan`: measures a tiny random model (`marill plan measure`), plans a load on its
//! inputs (`marill plan --json`) and checks that every figure is there and positive; bad
//! questions fail with a message that says what is wrong.

mod common;

use common::{marill, temp};
use serde_json::Value;
use std::path::Path;

fn run_ok(args: &[&str]) -> String {
    let out = marill(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "marill {args:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> String {
    let out = marill(args).output().unwrap();
    assert!(!out.status.success(), "marill {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = v
        .pointer(path)
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
        .as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number"));
    assert!(x.is_finite() && x > 0.0, "{path} = {x}");
    x
}

#[test]
fn measure_then_plan_on_a_tiny_model() {
    let dir = temp("plan");
    let model = dir.join("tiny");
    marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
    let (m, inputs, plan) = (
        model.to_str().unwrap(),
        dir.join("inputs.json"),
        dir.join("plan.json"),
    );
    let table = run_ok(&[
        "plan",
        "measure",
        "--model",
        m,
        "--prompt-tokens",
        "6",
        "--output-tokens",
        "3",
        "--out",
        inputs.to_str().unwrap(),
    ]);
    assert!(
        table.contains("prefill T=6") && table.contains("prefill T=12"),
        "{table}"
    );

    let i = read(&inputs);
    assert_eq!(i["version"], 1);
    assert_eq!(i["model"]["n_private"], 2);
    assert!(positive(&i, "/machine/cores") >= 1.0);
    assert!(!i["machine"]["cpu_model"].as_str().unwrap().is_empty());
    let runs = i["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (r, t) in runs.iter().zip([6, 12]) {
        assert_eq!(r["prompt_tokens"], t);
        assert_eq!(r["decode"].as_array().unwrap().len(), 3);
        for step in std::iter::once(&r["prefill"]).chain(r["decode"].as_array().unwrap()) {
            for f in [
                "/online_bytes/0",
                "/online_bytes/1",
                "/rounds",
                "/wall_s",
                "/cpu_s/0",
                "/cpu_s/1",
                "/dealer_bytes/1",
                "/dealer_bundles",
                "/dealer_cpu_s",
                "/client_s",
            ] {
                positive(step, f);
            }
        }
        positive(r, "/kv_bytes_per_party");
    }
    // the fitted costs at a longer prompt than measured are positive, and grow with it
    for phase in ["prefill", "decode"] {
        for cost in [
            "online_bytes_per_party",
            "rounds",
            "wall_s",
            "cpu_s_per_party",
            "dealer_bytes",
            "dealer_bundles",
            "dealer_cpu_s",
            "client_s",
        ] {
            let f = &i["fits"][phase][cost];
            assert!(f["basis"].is_string(), "{phase}.{cost}");
            assert!(!f["coef"].as_array().unwrap().is_empty(), "{phase}.{cost}");
        }
    }
    for f in [
        "/memory/kv_bytes_per_token_per_party",
        "/memory/weights_prepared_bytes_per_worker",
        "/memory/weights_loaded_bytes_per_worker",
        "/load/online_bytes_per_party",
        "/load/rounds",
    ] {
        positive(&i, f);
    }
    // K and V of 2 private layers, 2 kv heads × 8 wide, 8 bytes a share: 512 B per token
    assert_eq!(i["memory"]["kv_bytes_per_token_per_party"], 512.0);

    let table = run_ok(&[
        "plan",
        "--inputs",
        inputs.to_str().unwrap(),
        "--requests-per-day",
        "1000000",
        "--prompt-tokens",
        "24",
        "--output-tokens",
        "4",
        "--rtt-ms",
        "20",
        "--bandwidth-gbps",
        "1",
        "--json",
        plan.to_str().unwrap(),
    ]);
    assert!(table.contains("provider/helper pairs"), "{table}");
    let p = read(&plan);
    assert!((positive(&p, "/plan/requests_per_s") - 1e6 / 86_400.0).abs() < 1e-9);
    assert_eq!(p["target"]["prompt_tokens"], 24);
    for f in [
        "/plan/pairs",
        "/plan/busy_pairs",
        "/plan/dealers_for_cpu",
        "/plan/dealers_today",
        "/plan/inter_domain_gbps",
        "/plan/dealer_gbps",
        "/plan/client_gbps",
        "/plan/memory_per_worker_bytes",
        "/plan/memory_total_bytes",
        "/plan/worker_cpu_utilization",
        "/plan/request/latency_s",
        "/plan/request/compute_s",
        "/plan/request/rounds_s",
        "/plan/request/dealer_wait_s",
        "/plan/request/online_bytes_per_party",
        "/plan/request/rounds",
        "/plan/request/cpu_s_per_worker",
        "/plan/request/dealer_cpu_s",
        "/plan/request/kv_bytes_per_worker",
    ] {
        positive(&p, f);
    }
    assert_eq!(p["plan"]["request"]["jobs"], 5);
    let busy = positive(&p, "/plan/busy_pairs");
    assert!(positive(&p, "/plan/pairs") >= busy / 0.7);
    // rounds × 20 ms are a part of the latency
    let rounds = positive(&p, "/plan/request/rounds");
    assert!((positive(&p, "/plan/request/rounds_s") - rounds * 0.02).abs() < 1e-9);

    // bad questions: clear errors, no panic
    let i_path = inputs.to_str().unwrap();
    let e = run_err(&["plan", "--inputs", i_path]);
    assert!(e.contains("--requests-per-s"), "{e}");
    let e = run_err(&["plan", "--inputs", i_path, "--requests-per-s", "0"]);
    assert!(e.contains("must be > 0"), "{e}");
    let e = run_err(&["plan", "--inputs", i_path, "--requests-per-s", "-3"]);
    assert!(e.contains("must be > 0"), "{e}");
    let e = run_err(&[
        "plan",
        "--inputs",
        i_path,
        "--requests-per-s",
        "5",
        "--target-utilization",
        "1.5",
    ]);
    assert!(e.contains("utilization"), "{e}");
    let e = run_err(&[
        "plan",
        "--inputs",
        dir.join("absent.json").to_str().unwrap(),
        "--requests-per-s",
        "5",
    ]);
    assert!(e.contains("plan measure"), "{e}");
    let mut broken = i.clone();
    broken["fits"]["decode"]
        .as_object_mut()
        .unwrap()
        .remove("rounds");
    let broken_path = dir.join("broken.json");
    std::fs::write(&broken_path, broken.to_string()).unwrap();
    let e = run_err(&[
        "plan",
        "--inputs",
        broken_path.to_str().unwrap(),
        "--requests-per-s",
        "5",
    ]);
    assert!(e.contains("rounds"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `marill plan check`: the cluster benchmark (tiny model, 1 and 2 pairs, tansu) against the
/// model's prediction from inputs measured in the same run; the command itself fails beyond
/// its factor (2×), and the rows must be complete. Ignored by default: it takes 50–70 s on a
/// 2-core machine, and other work on the same cores slows the benchmark more than the
/// in-process measurement the prediction is made from (run it with `-- --ignored` on a quiet
/// machine).
#[test]
#[ignore = "50–70 s; needs a machine not shared with other work (run with -- --ignored)"]
fn plan_check_predicts_the_cluster_benchmark() {
    let tansu = format!("{}/target/tools/tansu", env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&tansu).exists(),
        "{tansu} absent: run scripts/fetch-tansu.sh (scripts/test.sh does)"
    );
    let dir = temp("plan-check");
    let json = dir.join("check.json");
    let table = run_ok(&[
        "plan",
        "check",
        "--tansu",
        &tansu,
        "--logs",
        dir.join("logs").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(table.contains("measured / predicted"), "{table}");
    let c = read(&json);
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (r, pairs) in rows.iter().zip([1, 2]) {
        assert_eq!(r["pairs"], pairs);
        assert_eq!(r["failed"], 0);
        assert_eq!(r["measured_jobs"], 48);
        let ratio = positive(r, "/ratio");
        assert!((0.5..=2.0).contains(&ratio), "{pairs} pair(s): {ratio}");
        positive(r, "/predicted/jobs_per_s");
        positive(r, "/measured_cpu_s/dealers");
    }
    for f in [
        "/link/round_s",
        "/link/dealer_request_s",
        "/link/bandwidth_bps",
    ] {
        positive(&c, f);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

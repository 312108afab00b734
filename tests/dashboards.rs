//! The Grafana dashboards (`deploy/grafana/*.json`) and the Prometheus alert rules
//! (`deploy/prometheus/marill-rules.yaml`) query only series that Marill exports, and every
//! dashboard variable they use is defined. "Exported" is `docs/metrics.md`, which
//! `tests/metrics.rs` checks against running processes.

use std::collections::BTreeSet;

fn path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// The series `docs/metrics.md` documents.
fn exported() -> BTreeSet<String> {
    std::fs::read_to_string(path("docs/metrics.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| `marill_"))
        .map(|l| l.split('`').nth(1).unwrap().to_string())
        .collect()
}

/// Metric names in a PromQL expression (histogram suffixes folded to the series' name).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(k) = expr[i..].find("marill_") {
        let start = i + k;
        let mut end = start;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'_')
        {
            end += 1;
        }
        let mut name = &expr[start..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if base.ends_with("_seconds") || base.ends_with("_bytes") {
                    name = base;
                }
            }
        }
        out.push(name.to_string());
        i = end;
    }
    out
}

/// Variables (`$x`, `${x}`) used in a string.
fn vars_in(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(k) = rest.find('$') {
        rest = &rest[k + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

fn walk<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
        _ => {}
    }
}

#[test]
fn dashboards_query_exported_series_and_defined_variables() {
    let exported = exported();
    assert!(exported.len() > 10, "{exported:?}");
    let mut files: Vec<_> = std::fs::read_dir(path("deploy/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "overview plus one per component: {files:?}"
    );
    for f in files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let defined: BTreeSet<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{f:?}");
        let mut queried = 0;
        for p in panels {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                for m in metrics_in(expr) {
                    assert!(exported.contains(&m), "{f:?}: {m} is not exported ({expr})");
                    queried += 1;
                }
            }
        }
        assert!(queried > 0, "{f:?} queries nothing");
        let mut strings = Vec::new();
        walk(&d, &mut strings);
        for s in strings {
            for v in vars_in(s) {
                assert!(
                    defined.contains(&v) || v.starts_with("__"),
                    "{f:?}: variable ${v} is not defined ({s})"
                );
            }
        }
    }
}

#[test]
fn alert_rules_query_exported_series() {
    let exported = exported();
    let rules = std::fs::read_to_string(path("deploy/prometheus/marill-rules.yaml")).unwrap();
    let mut alerts = 0;
    let mut queried = BTreeSet::new();
    for line in rules.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if line.trim_start().starts_with("- alert:") {
            alerts += 1;
        }
        for m in metrics_in(line) {
            assert!(exported.contains(&m), "rule uses {m}, not exported: {line}");
            queried.insert(m);
        }
    }
    assert!(
        alerts >= 4,
        "pool starvation, queue lag, error rate, memory pressure"
    );
    for needed in [
        "marill_coordinator_pairs",
        "marill_coordinator_sessions_waiting",
        "marill_coordinator_jobs_total",
        "marill_worker_kv_cache_bytes",
    ] {
        assert!(queried.contains(needed), "no rule on {needed}");
    }
}

#[test]
fn the_checks_themselves_catch_a_bad_query() {
    let exported = exported();
    assert!(
        metrics_in("rate(marill_coordinator_job_seconds_bucket[5m])")
            .iter()
            .all(|m| exported.contains(m))
    );
    assert!(!metrics_in("sum(marill_coordinator_nonexistent_total)")
        .iter()
        .all(|m| exported.contains(m)));
    assert_eq!(
        vars_in("a $job b ${datasource} $__rate_interval"),
        ["job", "datasource", "__rate_interval"]
    );
}

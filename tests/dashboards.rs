//! Offline checks of the Grafana dashboards (`deploy/grafana/*.json`) and the Prometheus rules
//! (`deploy/prometheus/marill-rules.yaml`):
//! - every dashboard has the shape Grafana's provisioning (the chart's dashboards ConfigMap,
//!   read by the Grafana sidecar) expects: a uid (unique, at most 40 characters of
//!   `[A-Za-z0-9_-]`), a title (unique), no fixed `id`, a `schemaVersion` with object datasource
//!   references, the templated `datasource` variable (type `datasource`, query `prometheus`)
//!   that every panel, target and query variable references as `${datasource}`, and panels with
//!   unique ids, a known type, a title, a gridPos inside the 24-column grid and not overlapping
//!   another, and targets with unique refIds and an expression; every variable used is defined;
//! - every Marill series the dashboards and rules name is documented in `docs/metrics.md` (which
//!   `tests/metrics.rs` checks against the running processes), every recorded series a dashboard
//!   reads is recorded by the rules, and every recording rule is read by a dashboard.
//!
//! What Prometheus checks better is left to it: `promtool check rules` / `test rules`
//! (`scripts/check-rules.sh`) parse and unit-test the rules, and `tests/prometheus_live.rs`
//! evaluates every dashboard query and rule in a real Prometheus scraping a running cluster.

mod common;

use common::grafana::{dashboards, marill_names_in, path, rule_names, vars_in, RULES};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The datasource reference every panel, target and query variable carries: the dashboard's
/// `datasource` variable, so each Grafana picks its own Prometheus (no datasource uid baked in).
const DATASOURCE_UID: &str = "${datasource}";

/// Grafana's built-in variables a query may use.
const GRAFANA_GLOBALS: &[&str] = &[
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__dashboard",
    "__org",
    "__user",
];

/// Grafana's core panel types (a typo would render as "panel plugin not found").
const PANEL_TYPES: &[&str] = &[
    "timeseries",
    "stat",
    "gauge",
    "bargauge",
    "table",
    "heatmap",
    "histogram",
    "piechart",
    "barchart",
    "state-timeline",
    "status-history",
    "text",
];

/// The series `docs/metrics.md` documents.
fn exported() -> BTreeSet<String> {
    std::fs::read_to_string(path("docs/metrics.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| `marill_"))
        .map(|l| l.split('`').nth(1).unwrap().to_string())
        .collect()
}

fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        Value::Object(o) => o.values().for_each(|x| walk(x, out)),
        _ => {}
    }
}

fn is_prometheus_ref(v: &Value) -> bool {
    v["type"] == "prometheus" && v["uid"] == DATASOURCE_UID
}

/// What is wrong with dashboard `d` for Grafana's provisioning; empty when nothing.
fn schema_problems(d: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    match d["uid"].as_str() {
        Some(uid)
            if !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') => {}
        other => bad.push(format!(
            "uid {other:?}: Grafana needs 1 to 40 characters of [A-Za-z0-9_-]"
        )),
    }
    if d["title"].as_str().is_none_or(|t| t.trim().is_empty()) {
        bad.push("no title".into());
    }
    if !d["id"].is_null() {
        bad.push(format!(
            "id {}: a provisioned dashboard must leave its id to Grafana (null or absent)",
            d["id"]
        ));
    }
    if d["schemaVersion"].as_u64().is_none_or(|v| v < 33) {
        bad.push(format!(
            "schemaVersion {}: 33 or later (datasources referenced as {{type, uid}})",
            d["schemaVersion"]
        ));
    }

    // the templated datasource variable, and the variables that query through it
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut defined = BTreeSet::new();
    let ds_vars: Vec<&Value> = vars.iter().filter(|v| v["type"] == "datasource").collect();
    if ds_vars.len() != 1
        || ds_vars[0]["name"] != "datasource"
        || ds_vars[0]["query"] != "prometheus"
    {
        bad.push(format!(
            "templating needs exactly one datasource variable named \"datasource\" with query \
             \"prometheus\", found {ds_vars:?}"
        ));
    }
    for v in &vars {
        let name = v["name"].as_str().unwrap_or_default();
        if name.is_empty() || !defined.insert(name.to_string()) {
            bad.push(format!("variable {v}: no name, or a name used twice"));
        }
        if v["type"] == "query"
            && (!is_prometheus_ref(&v["datasource"])
                || v["query"].as_str().is_none_or(|q| q.is_empty()))
        {
            bad.push(format!(
                "variable {name}: a query variable needs datasource {{type: prometheus, uid: \
                 {DATASOURCE_UID}}} and a query"
            ));
        }
    }

    // panels
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    if panels.is_empty() {
        bad.push("no panels".into());
    }
    let mut ids = BTreeSet::new();
    let mut cells: Vec<(String, [u64; 4])> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        let what = format!("panel {} {title:?}", p["id"]);
        match p["id"].as_u64() {
            Some(id) if ids.insert(id) => {}
            _ => bad.push(format!("{what}: id missing, not an integer, or not unique")),
        }
        if !PANEL_TYPES.contains(&p["type"].as_str().unwrap_or_default()) {
            bad.push(format!(
                "{what}: type {} is not a core panel type",
                p["type"]
            ));
        }
        if title.trim().is_empty() {
            bad.push(format!("{what}: no title"));
        }
        let g = &p["gridPos"];
        match [&g["x"], &g["y"], &g["w"], &g["h"]].map(Value::as_u64) {
            [Some(x), Some(y), Some(w), Some(h)] if w >= 1 && h >= 1 && x + w <= 24 => {
                for (other, [ox, oy, ow, oh]) in &cells {
                    if x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h {
                        bad.push(format!("{what}: gridPos overlaps {other}"));
                    }
                }
                cells.push((what.clone(), [x, y, w, h]));
            }
            _ => bad.push(format!(
                "{what}: gridPos {g} must have integers x, y >= 0, w, h >= 1, x + w <= 24"
            )),
        }
        if !is_prometheus_ref(&p["datasource"]) {
            bad.push(format!(
                "{what}: datasource {} is not {{type: prometheus, uid: {DATASOURCE_UID}}}",
                p["datasource"]
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            bad.push(format!("{what}: no targets"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            match t["refId"].as_str() {
                Some(r) if !r.is_empty() && refs.insert(r.to_string()) => {}
                _ => bad.push(format!(
                    "{what}: target {t}: refId missing or not unique in the panel"
                )),
            }
            if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                bad.push(format!("{what}: target {t}: no expr"));
            }
            if !t["datasource"].is_null() && t["datasource"] != p["datasource"] {
                bad.push(format!(
                    "{what}: target {t}: datasource differs from the panel's"
                ));
            }
        }
    }

    // every variable used is defined or Grafana's
    let mut strings = Vec::new();
    walk(d, &mut strings);
    for s in strings {
        for v in vars_in(s) {
            if !defined.contains(&v) && !GRAFANA_GLOBALS.contains(&v.as_str()) {
                bad.push(format!("variable ${v} is not defined ({s})"));
            }
        }
    }
    bad
}

#[test]
fn dashboards_follow_grafana_provisioning_schema() {
    let all = dashboards();
    assert!(
        all.len() >= 3,
        "overview plus one per component: {:?}",
        all.iter().map(|(f, _)| f).collect::<Vec<_>>()
    );
    let (mut uids, mut titles) = (BTreeSet::new(), BTreeSet::new());
    let mut problems = Vec::new();
    for (file, d) in &all {
        problems.extend(
            schema_problems(d)
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
        if !uids.insert(d["uid"].to_string()) {
            problems.push(format!("{file}: uid {} used twice", d["uid"]));
        }
        if !titles.insert(d["title"].to_string()) {
            problems.push(format!("{file}: title {} used twice", d["title"]));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `(names in expressions, recorded series defined)` of the rules file.
fn rule_series() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path(RULES)).unwrap();
    let used = text
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#') && !l.starts_with("- record:"))
        .flat_map(marill_names_in)
        .collect();
    (used, rule_names("record").into_iter().collect())
}

#[test]
fn dashboards_and_rules_name_exported_or_recorded_series() {
    let exported = exported();
    assert!(exported.len() > 10, "{exported:?}");
    let (rule_uses, recorded) = rule_series();
    assert!(!recorded.is_empty(), "no recording rule in {RULES}");
    let mut problems = Vec::new();
    // recorded names: level:marill_<metric>:operations, over a documented series
    for r in &recorded {
        let parts: Vec<&str> = r.split(':').collect();
        let ok = parts.len() == 3
            && !parts[0].is_empty()
            && !parts[2].is_empty()
            && exported.contains(parts[1]);
        if !ok {
            problems.push(format!(
                "{RULES}: {r} is not level:metric:operations over a series of docs/metrics.md"
            ));
        }
    }
    let mut read_by_dashboards = BTreeSet::new();
    for (file, d) in dashboards() {
        let mut names = 0;
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                for m in marill_names_in(expr) {
                    names += 1;
                    if m.contains(':') {
                        if !recorded.contains(&m) {
                            problems.push(format!("{file}: {m} is not recorded in {RULES}"));
                        }
                        read_by_dashboards.insert(m);
                    } else if !exported.contains(&m) {
                        problems.push(format!("{file}: {m} is not exported ({expr})"));
                    }
                }
            }
        }
        if names == 0 {
            problems.push(format!("{file} queries no Marill series"));
        }
    }
    for m in &rule_uses {
        if !(exported.contains(m) || recorded.contains(m)) {
            problems.push(format!("{RULES} uses {m}: neither exported nor recorded"));
        }
    }
    for r in recorded.difference(&read_by_dashboards) {
        problems.push(format!("{RULES} records {r}, which no dashboard reads"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn alert_rules_cover_pool_starvation_queue_lag_errors_and_memory() {
    let (rule_uses, _) = rule_series();
    let alerts = rule_names("alert");
    assert!(
        alerts.len() >= 4,
        "pool starvation, queue lag, error rate, memory pressure: {alerts:?}"
    );
    for needed in [
        "marill_coordinator_pairs",
        "marill_coordinator_sessions_waiting",
        "marill_coordinator_kafka_lag_messages",
        "marill_coordinator_jobs_total",
        "marill_worker_memory_used_bytes",
        "marill_dealer_memory_used_bytes",
    ] {
        assert!(rule_uses.contains(needed), "no rule on {needed}");
    }
}

#[test]
fn the_checks_themselves_catch_bad_dashboards_and_names() {
    let exported = exported();
    assert_eq!(
        marill_names_in(
            "max by (phase) (job_phase:marill_worker_step_seconds:p99_rate5m{job=~\"marill_x\"}) \
             / rate(marill_coordinator_job_seconds_bucket[5m])"
        ),
        [
            "job_phase:marill_worker_step_seconds:p99_rate5m",
            "marill_coordinator_job_seconds"
        ]
    );
    assert!(
        marill_names_in("rate(marill_coordinator_job_seconds_bucket[5m])")
            .iter()
            .all(|m| exported.contains(m))
    );
    assert!(
        !marill_names_in("sum(marill_coordinator_nonexistent_total)")
            .iter()
            .all(|m| exported.contains(m))
    );
    assert_eq!(
        vars_in("a $job b ${datasource} $__rate_interval"),
        ["job", "datasource", "__rate_interval"]
    );

    // each planted fault in a copy of the overview is reported, the original is clean
    let (_, good) = dashboards()
        .into_iter()
        .find(|(f, _)| f == "overview.json")
        .unwrap();
    assert_eq!(schema_problems(&good), Vec::<String>::new());
    type Plant = fn(&mut Value);
    let plants: [(&str, Plant, &str); 13] = [
        ("no uid", |d| d["uid"] = Value::Null, "uid"),
        (
            "41-character uid",
            |d| d["uid"] = json!("m".repeat(41)),
            "uid",
        ),
        (
            "uid with a space",
            |d| d["uid"] = json!("marill overview"),
            "uid",
        ),
        ("empty title", |d| d["title"] = json!(""), "title"),
        ("fixed id", |d| d["id"] = json!(7), "id 7"),
        (
            "duplicate panel id",
            |d| d["panels"][1]["id"] = json!(1),
            "not unique",
        ),
        (
            "hard-coded datasource",
            |d| d["panels"][0]["datasource"]["uid"] = json!("prometheus"),
            "datasource",
        ),
        (
            "target without refId",
            |d| d["panels"][0]["targets"][0]["refId"] = Value::Null,
            "refId",
        ),
        (
            "no datasource variable",
            |d| {
                d["templating"]["list"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|v| v["type"] != "datasource")
            },
            "datasource variable",
        ),
        (
            "panel wider than the grid",
            |d| d["panels"][0]["gridPos"]["w"] = json!(30),
            "gridPos",
        ),
        (
            "overlapping panels",
            |d| d["panels"][1]["gridPos"] = d["panels"][0]["gridPos"].clone(),
            "overlaps",
        ),
        (
            "undefined variable",
            |d| {
                d["panels"][0]["targets"][0]["expr"] = json!("sum(marill_build_info{pod=\"$pod\"})")
            },
            "$pod",
        ),
        (
            "unknown panel type",
            |d| d["panels"][0]["type"] = json!("timeseris"),
            "type",
        ),
    ];
    for (what, plant, expect) in plants {
        let mut d = good.clone();
        plant(&mut d);
        let problems = schema_problems(&d);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "planted {what}: no problem mentioning {expect:?} in {problems:?}"
        );
    }
}

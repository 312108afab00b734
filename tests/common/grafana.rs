//! The Grafana dashboards (`deploy/grafana/*.json`) and the Prometheus rules
//! (`deploy/prometheus/marill-rules.yaml`) as the tests read them: `tests/dashboards.rs` checks
//! them offline, `tests/prometheus_live.rs` evaluates them in a running Prometheus.

use std::path::PathBuf;

/// The rules file (alerts and recording rules); the chart's PrometheusRule is its copy.
pub const RULES: &str = "deploy/prometheus/marill-rules.yaml";

/// `rel` under the repository root.
pub fn path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Every dashboard: its file name and its JSON, sorted by file name.
pub fn dashboards() -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(path("deploy/grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).unwrap();
            let d = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", f.display()));
            (f.file_name().unwrap().to_string_lossy().into_owned(), d)
        })
        .collect()
}

/// One query of a dashboard panel.
#[derive(Clone, Debug)]
pub struct PanelQuery {
    /// the dashboard's file name
    pub dashboard: String,
    /// the panel's title
    pub panel: String,
    /// the target's refId
    pub ref_id: String,
    /// the PromQL expression, Grafana variables and all
    pub expr: String,
}

impl PanelQuery {
    /// `file / panel / refId`, how failures and the results table name a query.
    pub fn name(&self) -> String {
        format!("{} / {} / {}", self.dashboard, self.panel, self.ref_id)
    }
}

/// Every panel target of every dashboard, in file and panel order. Panics on a target without
/// an `expr` (the structure itself is checked by `tests/dashboards.rs`).
pub fn panel_queries() -> Vec<PanelQuery> {
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    dashboard: file.clone(),
                    panel: p["title"].as_str().unwrap_or("?").to_string(),
                    ref_id: t["refId"].as_str().unwrap_or("?").to_string(),
                    expr: t["expr"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{file}: a target of {p} has no expr"))
                        .to_string(),
                });
            }
        }
    }
    out
}

/// The names after `- <key>:` in the rules file (`alert` or `record`), comments skipped.
pub fn rule_names(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path(RULES)).unwrap();
    let prefix = format!("- {key}:");
    text.lines()
        .map(str::trim_start)
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|n| n.trim().to_string())
        .collect()
}

/// The series names in a PromQL expression that are Marill's: exported metrics
/// (`marill_...`, a histogram's `_bucket`, `_sum` and `_count` folded to its name) and
/// recorded series (`level:marill_...:operations`, kept whole). Names inside quoted strings
/// (label values) are skipped. Hand-written, so its one job is this: Prometheus parses the
/// expressions (`promtool check rules`, and `tests/prometheus_live.rs` for every query).
pub fn marill_names_in(expr: &str) -> Vec<String> {
    fn flush(word: &mut String, out: &mut Vec<String>) {
        if word.starts_with("marill_") || word.contains(":marill_") {
            let mut name = word.as_str();
            if !name.contains(':') {
                for suffix in ["_bucket", "_sum", "_count"] {
                    if let Some(base) = name.strip_suffix(suffix) {
                        if base.ends_with("_seconds") || base.ends_with("_bytes") {
                            name = base;
                        }
                    }
                }
            }
            out.push(name.to_string());
        }
        word.clear();
    }
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            flush(&mut word, &mut out);
            quote = Some(c);
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Grafana variables (`$x`, `${x}`) named in a string.
pub fn vars_in(s: &str) -> Vec<String> {
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

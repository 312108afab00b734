//! The dashboards and rules against a real Prometheus scraping a running cluster.
//!
//! Starts a cluster of separate processes on 127.0.0.1 (tansu, the coordinator, one
//! provider/helper pair on the tiny model, its dealer) and a Prometheus server (the Debian
//! package's `prometheus`, 2.42 in CI) that scrapes the four `/metrics` endpoints every second
//! under the job names the chart's ServiceMonitor gives them (the Services' names) and loads
//! `deploy/prometheus/marill-rules.yaml`, evaluating its rules every second. Then:
//! - `promtool check metrics` lints each process's exposition (and flags a planted bad one);
//! - every rule group loads with health "ok", every rule of the file is there and evaluates
//!   without error;
//! - a batch of 4 sessions of 4 tokens runs through Kafka (equal to plaintext; long enough
//!   that the open sessions' gauges are scraped, not only their counters), and once
//!   Prometheus has scraped its last counts, every query of every panel of every dashboard in
//!   `deploy/grafana/` runs through `/api/v1/query_range` over the batch the way Grafana sends
//!   it (the `$job` variable as "All" of its own `label_values(marill_build_info, job)` query,
//!   `$__interval` the 1 s step, `$__rate_interval` = max(step + scrape interval, 4 x scrape
//!   interval) = 4 s): each must parse and return a finite value at some point, unless it is in
//!   [`NO_DATA`] with the reason (a planted unbalanced query must come back as an error);
//! - every recorded series has finite values; every alert expression is empty (not firing on
//!   this healthy cluster) at the end, and the same expression with its comparisons turned into
//!   `bool` returns series all 0, so the alert's selectors match what the processes export
//!   (an alert on a misspelt series or label would be silently empty forever);
//! - every Marill series the dashboards and rules name is among those Prometheus scraped.
//!
//! A table of every query with its series, points and largest value goes to stderr
//! (`cargo test --release --test prometheus_live -- --nocapture`); docs/metrics.md carries it.
//! The test installs nothing: without `prometheus` and `promtool` it fails, naming the package
//! (`scripts/system-deps.sh` installs it; `MARILL_TEST_PROMETHEUS` / `MARILL_TEST_PROMTOOL`
//! name other binaries).

mod common;

use common::grafana::{self, marill_names_in, panel_queries, RULES};
use common::{free_port, scrape, TestCluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Prometheus's scrape and rule evaluation interval (seconds).
const SCRAPE_S: u64 = 1;
/// The range queries' step, Grafana's `$__interval` for a short range (its floor is the
/// datasource's scrape interval).
const STEP_S: u64 = SCRAPE_S;
/// Grafana's `$__rate_interval`: max(`$__interval` + scrape interval, 4 x scrape interval).
const RATE_INTERVAL_S: u64 = if STEP_S + SCRAPE_S > 4 * SCRAPE_S {
    STEP_S + SCRAPE_S
} else {
    4 * SCRAPE_S
};

/// Panel queries allowed to return no finite value, with the condition the test does not
/// create (`"<file> / <panel title> / <refId>"`, reason). A query listed here that returns
/// data fails the test, so the list stays true.
const NO_DATA: &[(&str, &str)] = &[];

/// Alerts expected to hold on the test's cluster, with why. An alert listed here that stays
/// quiet fails the test, so the list stays true.
const FIRING_EXPECTED: &[(&str, &str)] = &[(
    "MarillStepsWaitOnDealer",
    "the test's dealer is fresh: it has seen no step shape yet, so each worker asks for every \
     bundle of its first steps one by one, and steps wait ~75% of their time for material (the \
     dealer on the critical path, issue 19); the alert reports exactly that",
)];

/// The jobs Prometheus scrapes: the chart's Services' names, which its ServiceMonitor makes the
/// `job` label.
const JOBS: [&str; 4] = [
    "marill-coordinator",
    "marill-provider",
    "marill-helper",
    "marill-dealer",
];

/// A Prometheus tool: `$env` or `name` on the PATH; fails the test naming the package when it
/// does not run. Returns the command and the first line of its `--version`.
fn tool(env: &str, name: &str) -> (String, String) {
    let bin = std::env::var(env).unwrap_or_else(|_| name.to_string());
    let out = Command::new(&bin).arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            (bin, text.lines().next().unwrap_or_default().to_string())
        }
        _ => panic!(
            "{bin} does not run: this test needs Prometheus's server and promtool (Debian and \
             Ubuntu: `sudo apt-get install prometheus`; `bash scripts/system-deps.sh` installs \
             it, scripts/test.sh runs that), or {env} naming the binary"
        ),
    }
}

/// `GET target` at `addr` (HTTP/1.0, the connection closed by the server): status and body.
fn http_get(addr: &str, target: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("connecting to Prometheus at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from {addr}{target}: {head}"));
    (status, body.to_string())
}

/// Percent-encoding of a query parameter.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A Prometheus server on a free port of 127.0.0.1, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts `bin` scraping `targets` (job, `host:port`) and evaluating `rules`, its data and
    /// log in `dir`, and waits until it is ready.
    fn start(bin: &str, dir: &Path, targets: &[(&str, String)], rules: &[PathBuf]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut config = format!(
            "global:\n  scrape_interval: {SCRAPE_S}s\n  scrape_timeout: {SCRAPE_S}s\n  \
             evaluation_interval: {SCRAPE_S}s\nrule_files:\n"
        );
        for r in rules {
            config += &format!("  - {}\n", r.display());
        }
        config += "scrape_configs:\n";
        for (job, addr) in targets {
            config +=
                &format!("  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n");
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut p = Prometheus { child, addr, log };
        let start = Instant::now();
        loop {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", p.log_text());
            }
            if std::net::TcpStream::connect(&p.addr).is_ok()
                && http_get(&p.addr, "/-/ready").0 == 200
            {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "prometheus not ready within 30 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v1/<what>`: `Ok(data)` when Prometheus answers status "success", else
    /// `Err(errorType: error)` (a query that does not parse or evaluate).
    fn api(&self, what: &str) -> Result<Value, String> {
        let (code, body) = http_get(&self.addr, &format!("/api/v1/{what}"));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/api/v1/{what}: HTTP {code}, not JSON ({e}): {body}"));
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// [`Prometheus::api`] that must succeed.
    fn data(&self, what: &str) -> Value {
        self.api(what)
            .unwrap_or_else(|e| panic!("/api/v1/{what}: {e}"))
    }

    /// An instant query at `t`.
    fn query(&self, expr: &str, t: f64) -> Result<Value, String> {
        self.api(&format!("query?query={}&time={t:.3}", enc(expr)))
    }

    /// A range query from `start` to `end` every [`STEP_S`].
    fn query_range(&self, expr: &str, start: f64, end: f64) -> Result<Value, String> {
        self.api(&format!(
            "query_range?query={}&start={start:.3}&end={end:.3}&step={STEP_S}",
            enc(expr)
        ))
    }
}

/// What a range query returned: series, finite points, the largest finite value.
#[derive(Default)]
struct Seen {
    series: usize,
    points: usize,
    max: Option<f64>,
}

fn seen(data: &Value) -> Seen {
    let mut s = Seen::default();
    for series in data["result"].as_array().into_iter().flatten() {
        let finite: Vec<f64> = series["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p[1].as_str()?.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect();
        if !finite.is_empty() {
            s.series += 1;
            s.points += finite.len();
            let m = finite.iter().cloned().fold(f64::MIN, f64::max);
            s.max = Some(s.max.map_or(m, |x: f64| x.max(m)));
        }
    }
    s
}

/// The expression with Grafana's variables as Grafana sends them here; `None` when one is
/// left that the test does not know (extend it).
fn grafana_expr(expr: &str, job_all: &str) -> Option<String> {
    let e = expr
        .replace("$__rate_interval", &format!("{RATE_INTERVAL_S}s"))
        .replace("$__interval", &format!("{STEP_S}s"))
        .replace("${job}", job_all)
        .replace("$job", job_all);
    (!e.contains('$')).then_some(e)
}

/// `expr` with every comparison outside parentheses, braces and brackets given the `bool`
/// modifier (`a > 0.9` → `a > bool 0.9`): every series the comparison's operands have comes
/// back, 1 where the alert's condition holds and 0 where not. Returns the expression and the
/// number of comparisons changed.
fn with_bool(expr: &str) -> (String, usize) {
    let b = expr.as_bytes();
    let (mut out, mut changed, mut depth) = (Vec::new(), 0, 0i32);
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                out.extend_from_slice(&b[i..(i + 2).min(b.len())]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => quote = Some(c),
            b'(' | b'{' | b'[' => depth += 1,
            b')' | b'}' | b']' => depth -= 1,
            _ => {}
        }
        let two = b.get(i..i + 2).unwrap_or_default();
        let op = if [b"==", b"!=", b">=", b"<="].iter().any(|o| two == *o) {
            2
        } else if c == b'>' || c == b'<' {
            1
        } else {
            0
        };
        if depth == 0 && op > 0 {
            out.extend_from_slice(&b[i..i + op]);
            i += op;
            if !expr[i..].trim_start().starts_with("bool") {
                out.extend_from_slice(b" bool");
                changed += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    (
        String::from_utf8(out).expect("split at ASCII bytes only"),
        changed,
    )
}

/// The count of `marill_coordinator_jobs_total` over its outcomes in a scrape.
fn jobs_total(body: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with("marill_coordinator_jobs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `promtool check metrics` on an exposition: its complaints, empty when none.
fn lint(promtool: &str, exposition: &str) -> String {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim().is_empty() {
        String::new()
    } else {
        format!("exit {}: {text}", out.status)
    }
}

#[test]
fn prometheus_evaluates_every_dashboard_query_and_rule_on_a_live_cluster() {
    let began = Instant::now();
    let (prometheus, version) = tool("MARILL_TEST_PROMETHEUS", "prometheus");
    let (promtool, _) = tool("MARILL_TEST_PROMTOOL", "promtool");
    eprintln!("{version}");

    let mut c = TestCluster::start("prometheus-live", 1);
    let caddr = format!("127.0.0.1:{}", free_port());
    c.coordinator_with(&["--metrics-addr", &caddr]);
    let targets = [
        (JOBS[0], caddr.clone()),
        (JOBS[1], c.metrics[0][0].clone()),
        (JOBS[2], c.metrics[0][1].clone()),
        (JOBS[3], c.dealer_metrics[0].clone()),
    ];
    let logs = c.logs();
    let prom = Prometheus::start(
        &prometheus,
        &c.dir.join("prometheus"),
        &targets,
        &[grafana::path(RULES)],
    );
    let mut problems: Vec<String> = Vec::new();

    // every endpoint scraped, its exposition clean for promtool
    let start = Instant::now();
    loop {
        let t = prom.data("targets");
        let active = t["activeTargets"].as_array().cloned().unwrap_or_default();
        let up = active.iter().filter(|a| a["health"] == "up").count();
        if up == targets.len() && active.len() == targets.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every target up within 60 s ({logs}): {active:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for (job, addr) in &targets {
        let response = scrape(addr);
        let exposition = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        assert!(
            exposition.contains("marill_build_info"),
            "{job}: no exposition in {response}"
        );
        let complaints = lint(&promtool, exposition);
        if !complaints.is_empty() {
            problems.push(format!("promtool check metrics on {job}: {complaints}"));
        }
    }
    let planted = "# HELP marill_x_bytes a counter without _total\n# TYPE marill_x_bytes counter\n\
                   marill_x_bytes 1\n";
    assert!(
        !lint(&promtool, planted).is_empty(),
        "promtool check metrics passed a counter without _total"
    );

    // the batch, then until Prometheus has its last counts and the rules have seen them
    let batch_start = now_s();
    c.serve_batch(4, 4, "the batch");
    let jobs = jobs_total(&scrape(&caddr));
    assert!(jobs >= 2.0, "the coordinator counts {jobs} jobs ({logs})");
    let start = Instant::now();
    loop {
        let r = prom
            .query("sum(marill_coordinator_jobs_total)", now_s())
            .unwrap();
        let got = r["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok());
        if got == Some(jobs) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Prometheus has {got:?} jobs, the coordinator {jobs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2 * SCRAPE_S + 1));
    let (from, to) = (batch_start - 5.0, now_s());

    // the rules: loaded, healthy, every one of the file
    let groups = prom.data("rules")["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rules: Vec<Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    for r in &rules {
        if r["health"] != "ok" {
            problems.push(format!(
                "rule {} has health {} ({})",
                r["name"], r["health"], r["lastError"]
            ));
        }
    }
    let names = |kind: &str| -> BTreeSet<String> {
        rules
            .iter()
            .filter(|r| r["type"] == kind)
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (alerts, records) = (names("alerting"), names("recording"));
    assert_eq!(
        alerts,
        grafana::rule_names("alert").into_iter().collect(),
        "the alerts Prometheus loaded from {RULES}"
    );
    assert_eq!(
        records,
        grafana::rule_names("record").into_iter().collect(),
        "the recording rules Prometheus loaded from {RULES}"
    );

    // the $job variable as Grafana fills it: its query, label_values(marill_build_info, job),
    // with "All" selected
    let query_var = "label_values(marill_build_info, job)";
    for (file, d) in grafana::dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["name"] == "job" {
                assert_eq!(v["query"], query_var, "{file}: the job variable's query");
            }
        }
    }
    let mut job_values: Vec<String> = prom
        .data(&format!(
            "label/job/values?match[]={}",
            enc("marill_build_info")
        ))
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    job_values.sort();
    let mut want: Vec<String> = JOBS.iter().map(|j| j.to_string()).collect();
    want.sort();
    assert_eq!(job_values, want, "{query_var}");
    let job_all = format!("({})", job_values.join("|"));

    // every panel query (and a planted broken one, which must come back as an error)
    assert!(
        prom.query_range("sum(marill_build_info", from, to).is_err(),
        "Prometheus accepted an unbalanced parenthesis"
    );
    let mut table = Vec::new();
    let queries = panel_queries();
    assert!(queries.len() >= 20, "{} panel queries", queries.len());
    for q in &queries {
        let name = q.name();
        let Some(expr) = grafana_expr(&q.expr, &job_all) else {
            problems.push(format!(
                "{name}: a Grafana variable this test does not fill: {}",
                q.expr
            ));
            continue;
        };
        let allowed = NO_DATA.iter().find(|(n, _)| *n == name);
        match prom.query_range(&expr, from, to) {
            Err(e) => problems.push(format!("{name}: {e}\n    {expr}")),
            Ok(data) => {
                let s = seen(&data);
                match (s.series > 0, allowed) {
                    (false, None) => problems.push(format!(
                        "{name}: no finite value over the batch\n    {expr}"
                    )),
                    (true, Some((_, why))) => problems.push(format!(
                        "{name}: returned data, yet NO_DATA lists it ({why}): drop it from NO_DATA"
                    )),
                    _ => {}
                }
                table.push((name, s, allowed.map(|a| a.1)));
            }
        }
    }

    // every recorded series, and every alert: empty, and its bool form all 0
    for r in &records {
        match prom.query_range(r, from, to) {
            Err(e) => problems.push(format!("recorded {r}: {e}")),
            Ok(data) => {
                let s = seen(&data);
                if s.series == 0 {
                    problems.push(format!("recorded {r}: no finite value over the batch"));
                }
                table.push((format!("rule {r}"), s, None));
            }
        }
    }
    for r in rules.iter().filter(|r| r["type"] == "alerting") {
        let (name, expr) = (r["name"].as_str().unwrap(), r["query"].as_str().unwrap());
        let allowed = FIRING_EXPECTED.iter().find(|(n, _)| *n == name);
        match prom.query(expr, to) {
            Err(e) => problems.push(format!("alert {name}: {e}")),
            Ok(data) => {
                let firing = data["result"].as_array().map_or(0, Vec::len);
                if firing > 0 && allowed.is_none() {
                    problems.push(format!(
                        "alert {name} holds on a healthy cluster: {}",
                        data["result"]
                    ));
                }
                if firing == 0 && allowed.is_some() {
                    problems.push(format!(
                        "alert {name} is quiet, yet FIRING_EXPECTED lists it"
                    ));
                }
            }
        }
        if r["state"] != "inactive" && allowed.is_none() {
            problems.push(format!("alert {name} is {}", r["state"]));
        }
        let (bool_expr, changed) = with_bool(expr);
        if changed == 0 {
            problems.push(format!(
                "alert {name}: no comparison outside parentheses to turn into bool: {expr}"
            ));
            continue;
        }
        match prom.query(&bool_expr, to) {
            Err(e) => problems.push(format!("alert {name} as bool: {e}\n    {bool_expr}")),
            Ok(data) => {
                let values: Vec<f64> = data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                    .collect();
                if values.is_empty() {
                    problems.push(format!(
                        "alert {name}: its operands match no series, it can never fire\n    {bool_expr}"
                    ));
                }
                if allowed.is_none() && values.iter().any(|v| *v != 0.0) {
                    problems.push(format!("alert {name} as bool: {values:?}"));
                }
                let s = Seen {
                    series: values.len(),
                    points: values.len(),
                    max: values.iter().cloned().reduce(f64::max),
                };
                table.push((format!("alert {name} (bool)"), s, None));
            }
        }
    }

    // every Marill series named is one Prometheus scraped (or recorded)
    let scraped: BTreeSet<String> = prom
        .data("label/__name__/values")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let rules_text = std::fs::read_to_string(grafana::path(RULES)).unwrap();
    let named: BTreeSet<String> = queries
        .iter()
        .map(|q| q.expr.as_str())
        .chain(
            rules_text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#')),
        )
        .flat_map(marill_names_in)
        .collect();
    for n in &named {
        let present = scraped.contains(n)
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|s| scraped.contains(&format!("{n}{s}")));
        if !present {
            problems.push(format!("{n} is named but Prometheus has no such series"));
        }
    }

    eprintln!(
        "\n| query | series | points | max |\n|---|---|---|---|{}",
        table
            .iter()
            .map(|(name, s, why)| format!(
                "\n| {name} | {} | {} | {} |",
                s.series,
                s.points,
                match (s.max, why) {
                    (Some(m), _) => format!("{m:.4}"),
                    (None, Some(w)) => format!("none: {w}"),
                    (None, None) => "none".into(),
                }
            ))
            .collect::<String>()
    );
    eprintln!(
        "{} panel queries, {} recording rules, {} alerts checked in {:.0} s ({version})",
        queries.len(),
        records.len(),
        alerts.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems (cluster logs in {logs}, Prometheus's in {}):\n{}",
        problems.len(),
        prom.log.display(),
        problems.join("\n")
    );
    let dir = c.dir.clone();
    drop(prom);
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn with_bool_turns_top_level_comparisons_only() {
    assert_eq!(
        with_bool("marill_coordinator_pairs{state=\"ready\"} == 0"),
        (
            "marill_coordinator_pairs{state=\"ready\"} == bool 0".to_string(),
            1
        )
    );
    assert_eq!(
        with_bool("a{x!=\"y\",z=~\"a|b\"} / b > 0.9\n  or c / d > bool 0.9"),
        (
            "a{x!=\"y\",z=~\"a|b\"} / b > bool 0.9\n  or c / d > bool 0.9".to_string(),
            1
        )
    );
    assert_eq!(with_bool("count(a > 1) >= 2").1, 1);
    assert_eq!(with_bool("sum(rate(x[5m]))").1, 0);
    assert_eq!(
        grafana_expr("rate(x{job=~\"$job\"}[$__rate_interval])", "(a|b)").as_deref(),
        Some("rate(x{job=~\"(a|b)\"}[4s])")
    );
    assert_eq!(grafana_expr("x{pod=\"$pod\"}", "(a|b)"), None);
}

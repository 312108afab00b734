//! What the gateway's end-to-end tests share: a gateway process (`marill gateway` or `marill dev
//! --serve`) stopped when dropped, the text `marill generate` gives, requests with curl,
//! OpenAI's error shape, server-sent event payloads and `/metrics` values.

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A gateway process, stopped with SIGTERM (then killed, after 20 s) when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The text `marill generate` adds to `prompt` on `model` (greedy, `tokens` new tokens).
pub fn generated(model: &str, prompt: &str, tokens: usize) -> String {
    let out = super::marill(&["generate", "--model", model, "--prompt", prompt])
        .args(["--max-new-tokens", &tokens.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .strip_prefix(prompt)
        .and_then(|s| s.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("unexpected output {stdout:?}"))
        .to_string()
}

/// curl with `args` (silent but for errors, 600 s at most).
pub fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "600"])
        .args(args)
        .output()
        .expect("curl (install curl)")
}

/// The curl arguments that POST `body` as JSON to `url` and write the status on a last line
/// (`-N`: streamed as it comes).
pub fn post_args<'a>(url: &'a str, body: &'a str, stream: bool) -> Vec<&'a str> {
    let mut args = vec![
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
    ];
    if stream {
        args.push("-N");
    }
    args.extend(["-d", body, url]);
    args
}

/// Splits what [`post_args`] made curl write into (status, body).
pub fn status_and_body(stdout: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

/// POSTs `body` to `url`: (status, body).
pub fn post(url: &str, body: &str, stream: bool) -> (u16, String) {
    let out = curl(&post_args(url, body, stream));
    assert!(out.status.success(), "curl {url}: {out:?}");
    status_and_body(&out.stdout)
}

/// `s` as JSON (the test fails naming it otherwise).
pub fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Asserts OpenAI's error shape and returns the error object.
pub fn error_of(body: &str) -> Value {
    let v = json(body);
    let e = v["error"].clone();
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("code").is_some() && e.get("param").is_some(),
        "{body}"
    );
    e
}

/// The `data:` payloads of a server-sent event stream.
pub fn sse_data(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// Waits until `base`/healthz answers (`secs` at most; the failure shows `log`).
pub fn wait_healthy(base: &str, log: &Path, secs: u64) {
    let start = Instant::now();
    while !curl(&["-f", &format!("{base}/healthz")]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "no /healthz: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The text of `base`/metrics.
pub fn metrics(base: &str) -> String {
    String::from_utf8_lossy(&curl(&[&format!("{base}/metrics")]).stdout).into_owned()
}

/// The value of `series` (name and labels as served) in the metrics text `m`.
pub fn value(m: &str, series: &str) -> f64 {
    m.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')
                .and_then(|r| r.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} absent: {m}"))
}

/// Waits until every `(series, value)` of `want` holds at `base`/metrics (`secs` at most);
/// returns the metrics text.
pub fn wait_metrics(base: &str, want: &[(&str, f64)], secs: u64) -> String {
    let start = Instant::now();
    loop {
        let m = metrics(base);
        if want
            .iter()
            .all(|(s, v)| m.lines().any(|l| l == format!("{s} {v}")))
        {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "not {want:?} within {secs} s: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

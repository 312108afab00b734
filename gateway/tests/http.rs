//! The gateway over real HTTP (axum on a local port, ureq as the client) on a tiny model loaded
//! from a directory with a `tokenizer_config.json` chat template, with runner factories held by
//! the tests:
//! - `limits_keys_and_errors_over_http`: sessions held until the test lets them fail as an
//!   unreachable cluster would: API keys (401), the body limit (413), unknown paths (404), the
//!   context check of a chat request rendered through the directory's template (400 before any
//!   session), the concurrency limit (429 while a session holds the only slot), a cluster out
//!   of reach (503, status and OpenAI error shape even for a streamed request), and the
//!   requests counted by outcome on /metrics.
//! - `a_finished_request_frees_its_slot_before_its_session_closes`: with one slot and session
//!   closes that hang until the test lets them fail, requests fired back to back (streamed and
//!   not) all get their answer and none a 429; every close still happens, and the failed ones
//!   are counted.
//! - `a_session_failed_in_the_2pc_is_a_502`: a step failing as the cluster reports a lost peer:
//!   a 502 in OpenAI's shape (not streamed, or failed at the first step), an error event that
//!   ends the stream (streamed, after a token); the slot is free again for the next request.
//!
//! Real generations are checked end to end by the workspace's tests/gateway.rs and
//! tests/gateway_cluster.rs.

use marill_client::runner::SuffixRunner;
use marill_gateway::{router, ApiKeys, Engine, GatewayConfig, GatewayMetrics, RunnerFactory};
use marill_model::tiny::{write_tiny_model, TinyOptions};
use marill_model::{Adapters, Llama, MarillSpec, ModelOptions, PublicLayers, TextTokenizer};
use marill_mpc::channel::CommStats;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-key";

/// (status, body) of a request.
fn call(req: ureq::Request, body: Option<&str>) -> (u16, String) {
    let r = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let e = &v["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(e["type"].is_string() && e.get("param").is_some(), "{body}");
    e["code"].as_str().unwrap_or_default().to_string()
}

/// A fresh directory under the system's temporary one.
fn temp(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("marill-gateway-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The tiny model written to `dir` with a `tokenizer_config.json` chat template, loaded with two
/// public layers.
fn tiny(dir: &std::path::Path) -> (Llama, TextTokenizer) {
    write_tiny_model(dir, &TinyOptions::default()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"}"#,
    )
    .unwrap();
    let (model, tok) = ModelOptions {
        model: dir.to_path_buf(),
        adapters: Adapters::Generated {
            spec: MarillSpec {
                public_layers: PublicLayers::Count(2),
                lora: None,
                head_merge: 1,
            },
            seed: 1,
        },
    }
    .load(&candle_core::Device::Cpu)
    .unwrap();
    assert!(
        tok.chat_template().is_some(),
        "the directory's template was not read"
    );
    (model, tok)
}

/// Serves the gateway over `model` with sessions from `factory` on a port of 127.0.0.1 (on
/// `rt`); returns its base URL.
fn serve(
    rt: &tokio::runtime::Runtime,
    (model, tok): (Llama, TextTokenizer),
    factory: RunnerFactory,
    cfg: GatewayConfig,
) -> String {
    let engine = Engine::new(Arc::new(model), Arc::new(tok), 64, 4, factory).unwrap();
    let registry = marill_metrics::registry("gateway").unwrap();
    let metrics = GatewayMetrics::new(&registry).unwrap();
    let app = router(Arc::new(engine), cfg, metrics, registry);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        marill_gateway::serve(listener, app, std::future::pending())
            .await
            .unwrap()
    });
    base
}

/// One slot, no API keys, model `tiny`.
fn one_slot() -> GatewayConfig {
    GatewayConfig {
        model_name: "tiny".into(),
        max_body_bytes: 4096,
        max_concurrent: 1,
        api_keys: None,
    }
}

/// A client that gives up after 30 s (a response that never ends fails the test, never hangs
/// it).
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// Waits until `/metrics` at `base` has the line `line` (30 s at most).
fn wait_metric(base: &str, line: &str) -> String {
    let start = Instant::now();
    loop {
        let m = call(agent().get(&format!("{base}/metrics")), None).1;
        if m.lines().any(|l| l == line) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {line:?} within 30 s in\n{m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(body: &str) -> Vec<&str> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// A final hidden state whose greedy token through `model`'s head is one letter of text (so a
/// streamed response has text after its first step): a letter's own row of the head, scaled,
/// for the first letter whose row wins its own product.
fn letter_hidden(model: &Llama, tok: &TextTokenizer) -> Vec<f32> {
    let head: Vec<Vec<f32>> = model.lm_head().to_vec2().unwrap();
    for letter in 'a'..='z' {
        let ids = tok.encode(&letter.to_string()).unwrap();
        let [t] = ids[..] else { continue };
        let y: Vec<f32> = head[t as usize].iter().map(|v| v * 50.0).collect();
        let logit = |row: &Vec<f32>| row.iter().zip(&y).map(|(a, b)| a * b).sum::<f32>();
        let best = (0..head.len())
            .max_by(|&a, &b| logit(&head[a]).total_cmp(&logit(&head[b])))
            .unwrap();
        if best == t as usize {
            return y;
        }
    }
    panic!("no letter is its own row's greedy token");
}

/// A session as the tests script it: each step returns `hidden` or fails as the cluster
/// reports a failed step (from step `fail_at` on); `end` counts itself, waits for the test's
/// word on `close_gate` (when given, 60 s at most) and then fails as a close job without an
/// answer does.
struct Scripted {
    hidden: Vec<f32>,
    steps: usize,
    fail_at: usize,
    ends: Arc<AtomicUsize>,
    close_gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
}

/// The reason the cluster gives for a step whose peer link stalled (a public category).
const PEER_LOST: &str = "job s00-1 failed: provider: the peer party was lost or timed out";

/// Sessions from [`Scripted`]: each fails from step `fail_at()` on (asked at its start), counts
/// its end in `ends`, and hangs its close on `close_gate` when given.
fn scripted(
    hidden: Vec<f32>,
    ends: Arc<AtomicUsize>,
    fail_at: impl Fn() -> usize + Send + Sync + 'static,
    close_gate: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
) -> RunnerFactory {
    Arc::new(move || {
        Ok(Box::new(Scripted {
            hidden: hidden.clone(),
            steps: 0,
            fail_at: fail_at(),
            ends: ends.clone(),
            close_gate: close_gate.clone(),
        }) as Box<dyn SuffixRunner + Send>)
    })
}

impl SuffixRunner for Scripted {
    fn step(&mut self, _x: &[f32], out_rows: usize) -> anyhow::Result<Vec<f32>> {
        self.steps += 1;
        if self.steps > self.fail_at {
            anyhow::bail!(PEER_LOST);
        }
        Ok(self.hidden.repeat(out_rows))
    }

    fn comm(&self) -> CommStats {
        CommStats::default()
    }

    fn end(&mut self) -> anyhow::Result<()> {
        self.ends.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.close_gate {
            let _ = g.lock().unwrap().recv_timeout(Duration::from_secs(60));
            anyhow::bail!("no result for the close job within 300 s");
        }
        Ok(())
    }
}

/// What a test of scripted sessions starts from: its directory, the tiny model, a hidden state
/// that decodes to a letter, and a count of session ends.
type ScriptedSetup = (
    std::path::PathBuf,
    (Llama, TextTokenizer),
    Vec<f32>,
    Arc<AtomicUsize>,
);

/// [`ScriptedSetup`] in a fresh directory named after `name`.
fn scripted_setup(name: &str) -> ScriptedSetup {
    let dir = temp(name);
    let model = tiny(&dir);
    let hidden = letter_hidden(&model.0, &model.1);
    (dir, model, hidden, Arc::new(AtomicUsize::new(0)))
}

#[test]
fn a_finished_request_frees_its_slot_before_its_session_closes() {
    let (dir, model, hidden, ends) = scripted_setup("slot");
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(Mutex::new(gate));
    let factory = scripted(hidden, ends.clone(), || usize::MAX, Some(gate));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, model, factory, one_slot());
    let url = format!("{base}/v1/completions");
    // back to back, each fired the moment the last one's answer is read; every close hangs
    let n = 6;
    for i in 0..n {
        let stream = i % 2 == 1;
        let (code, body) = call(
            agent().post(&url),
            Some(&format!(
                r#"{{"model":"tiny","prompt":"hello","max_tokens":3,"stream":{stream}}}"#
            )),
        );
        assert_eq!(code, 200, "request {i} (stream {stream}): {body}");
        if stream {
            assert_eq!(sse_data(&body).last(), Some(&"[DONE]"), "{body}");
        } else {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["choices"][0]["finish_reason"].is_string(), "{body}");
        }
    }
    // every response came while the closes hang: the sessions are still being closed
    wait_metric(&base, &format!("marill_gateway_sessions_in_flight {n}"));
    wait_metric(
        &base,
        &format!("marill_gateway_requests_total{{outcome=\"ok\"}} {n}"),
    );
    wait_metric(&base, "marill_gateway_requests_total{outcome=\"busy\"} 0");
    for _ in 0..n {
        release.send(()).unwrap();
    }
    // every close happened, and each failure is counted
    wait_metric(&base, "marill_gateway_sessions_in_flight 0");
    wait_metric(
        &base,
        &format!("marill_gateway_session_close_failures_total {n}"),
    );
    assert_eq!(ends.load(Ordering::SeqCst), n);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_failed_in_the_2pc_is_a_502() {
    let (dir, model, hidden, ends) = scripted_setup("failed");
    // sessions fail at their first step, then at their second, then never
    let plan = Arc::new(Mutex::new(vec![usize::MAX, 1, 0]));
    let factory = scripted(
        hidden,
        ends.clone(),
        move || plan.lock().unwrap().pop().unwrap_or(usize::MAX),
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, model, factory, one_slot());
    let url = format!("{base}/v1/completions");
    let check_error = |e: &Value| {
        assert_eq!(e["code"], "session_failed", "{e}");
        assert_eq!(e["type"], "server_error", "{e}");
        assert_eq!(
            e["message"],
            format!("the private session failed: {PEER_LOST}"),
            "{e}"
        );
    };
    // failed at the prefill, streamed: the status still says it
    let (code, body) = call(
        agent().post(&url),
        Some(r#"{"model":"tiny","prompt":"hello","max_tokens":3,"stream":true,"temperature":0}"#),
    );
    assert_eq!(code, 502, "{body}");
    check_error(&serde_json::from_str::<Value>(&body).unwrap()["error"]);
    // failed after a token, streamed: the token, then an error event, and the stream ends
    let (code, body) = call(
        agent().post(&url),
        Some(r#"{"model":"tiny","prompt":"hello","max_tokens":3,"stream":true,"temperature":0}"#),
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert!(data.len() >= 2, "{body}");
    let last: Value = serde_json::from_str(data[data.len() - 1]).unwrap();
    check_error(&last["error"]);
    for chunk in &data[..data.len() - 1] {
        let v: Value = serde_json::from_str(chunk).unwrap();
        assert!(v["choices"][0]["text"].is_string(), "{body}");
    }
    // the slot is free again, and the next session serves
    let (code, body) = call(
        agent().post(&url),
        Some(r#"{"model":"tiny","prompt":"hello","max_tokens":3}"#),
    );
    assert_eq!(code, 200, "{body}");
    wait_metric(&base, "marill_gateway_requests_total{outcome=\"failed\"} 2");
    wait_metric(&base, "marill_gateway_requests_total{outcome=\"ok\"} 1");
    wait_metric(&base, "marill_gateway_sessions_in_flight 0");
    assert_eq!(ends.load(Ordering::SeqCst), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn limits_keys_and_errors_over_http() {
    let dir = temp("limits");
    let (model, tok) = tiny(&dir);

    // each session waits for the test, then fails as an unreachable cluster does
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let factory: RunnerFactory = Arc::new(move || {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
        Err(anyhow::anyhow!("topic marill.results is out of reach"))
    });
    let cfg = GatewayConfig {
        model_name: "tiny".into(),
        max_body_bytes: 512,
        max_concurrent: 1,
        api_keys: Some(ApiKeys::parse(&format!("# test\n{KEY}\n"))),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, (model, tok), factory, cfg);
    let get = |path: &str| ureq::get(&format!("{base}{path}"));
    let post = |path: &str| {
        ureq::post(&format!("{base}{path}")).set("authorization", &format!("Bearer {KEY}"))
    };

    assert_eq!(call(get("/healthz"), None).0, 200);
    let (code, body) = call(get("/v1/models"), None);
    assert_eq!((code, error_code(&body).as_str()), (401, "invalid_api_key"));
    let (code, body) = call(
        get("/v1/models").set("authorization", "Bearer sk-wrong"),
        None,
    );
    assert_eq!((code, error_code(&body).as_str()), (401, "invalid_api_key"));
    let (code, body) = call(
        get("/v1/models").set("authorization", &format!("Bearer {KEY}")),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(r#""id":"tiny""#), "{body}");

    let big = format!(r#"{{"model":"tiny","prompt":"{}"}}"#, "a".repeat(600));
    let (code, body) = call(post("/v1/completions"), Some(&big));
    assert_eq!(
        (code, error_code(&body).as_str()),
        (413, "request_too_large")
    );
    let (code, body) = call(post("/v1/embeddings"), Some("{}"));
    assert_eq!((code, error_code(&body).as_str()), (404, "unknown_url"));
    let (code, body) = call(
        post("/v1/chat/completions"),
        Some(
            r#"{"model":"tiny","messages":[{"role":"user","content":"hello"}],"max_tokens":1000}"#,
        ),
    );
    assert_eq!(
        (code, error_code(&body).as_str()),
        (400, "context_length_exceeded"),
        "{body}"
    );

    // a streamed chat request takes the only slot (its session waits at the gate)
    let first = {
        let req = post("/v1/chat/completions");
        std::thread::spawn(move || {
            call(
                req,
                Some(
                    r#"{"model":"tiny","messages":[{"role":"user","content":"hello"}],"stream":true}"#,
                ),
            )
        })
    };
    let start = Instant::now();
    while !call(get("/metrics"), None)
        .1
        .contains("marill_gateway_sessions_in_flight 1")
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the session never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, body) = call(
        post("/v1/completions"),
        Some(r#"{"model":"tiny","prompt":"hello"}"#),
    );
    assert_eq!(
        (code, error_code(&body).as_str()),
        (429, "too_many_requests")
    );
    // the cluster is out of reach: a 503 with the error, not a broken stream
    release.send(()).unwrap();
    let (code, body) = first.join().unwrap();
    assert_eq!(
        (code, error_code(&body).as_str()),
        (503, "cluster_unavailable")
    );
    assert!(body.contains("out of reach"), "{body}");

    let m = call(get("/metrics"), None).1;
    for (outcome, n) in [
        ("unauthorized", 2),
        ("bad_request", 2),
        ("not_found", 1),
        ("busy", 1),
        ("unavailable", 1),
        ("ok", 0),
    ] {
        let line = format!("marill_gateway_requests_total{{outcome=\"{outcome}\"}} {n}");
        assert!(m.lines().any(|l| l == line), "no {line:?} in\n{m}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

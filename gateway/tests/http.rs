//! The gateway over real HTTP (axum on a local port, ureq as the client) on a tiny model loaded
//! from a directory with a `tokenizer_config.json` chat template, with a runner factory that
//! holds each session until the test lets it fail as an unreachable cluster would: API keys
//! (401), the body limit (413), unknown paths (404), the context check of a chat request
//! rendered through the directory's template (400 before any session), the concurrency limit
//! (429 while a session holds the only slot), a cluster out of reach (503, status and OpenAI
//! error shape even for a streamed request), and the requests counted by outcome on /metrics.
//! Real generations are checked end to end by the workspace's tests/gateway.rs.

use marill_gateway::{router, ApiKeys, Engine, GatewayConfig, GatewayMetrics, RunnerFactory};
use marill_model::tiny::{write_tiny_model, TinyOptions};
use marill_model::{Adapters, MarillSpec, ModelOptions, PublicLayers};
use serde_json::Value;
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

#[test]
fn limits_keys_and_errors_over_http() {
    let dir = std::env::temp_dir().join(format!("marill-gateway-http-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_tiny_model(&dir, &TinyOptions::default()).unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"chat_template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"}"#,
    )
    .unwrap();
    let (model, tok) = ModelOptions {
        model: dir.clone(),
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

    // each session waits for the test, then fails as an unreachable cluster does
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let factory: RunnerFactory = Arc::new(move || {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
        Err(anyhow::anyhow!("topic marill.results is out of reach"))
    });
    let engine = Engine::new(Arc::new(model), Arc::new(tok), 64, 4, factory).unwrap();
    let registry = marill_metrics::registry("gateway").unwrap();
    let metrics = GatewayMetrics::new(&registry).unwrap();
    let cfg = GatewayConfig {
        model_name: "tiny".into(),
        max_body_bytes: 512,
        max_concurrent: 1,
        api_keys: Some(ApiKeys::parse(&format!("# test\n{KEY}\n"))),
    };
    let app = router(Arc::new(engine), cfg, metrics, registry);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move {
        marill_gateway::serve(listener, app, std::future::pending())
            .await
            .unwrap()
    });
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

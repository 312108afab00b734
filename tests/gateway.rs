//! End to end: `marill dev --serve` (the embedded cluster behind the OpenAI-compatible
//! gateway, a real process) answered with curl and with the real `openai` Python package
//! (installed from PyPI into target/openai-venv by scripts/check-openai.sh; an unreachable PyPI
//! fails the test, it never skips):
//! - a greedy completion (temperature 0, max_tokens 8) equals `marill generate`'s text;
//! - a streamed chat completion yields at least two content chunks, a finish_reason, `[DONE]`;
//! - an unknown model is a 404 in OpenAI's error shape; bad JSON, an unsupported parameter and
//!   a prompt past the context are 400s naming what is wrong, before any session;
//! - a client that disconnects ends its session (counted as cancelled);
//! - the gateway's metrics count the requests and their first tokens;
//! - `marill generate` and `marill dev` refuse a prompt plus --max-new-tokens past the maximum
//!   at once (and `marill dev` needs no --prompt).
//!
//! About two minutes on two cores (a private token through the embedded cluster takes about a
//! second).

mod common;

use common::gateway::{
    curl, error_of, generated, json, post, sse_data, value, wait_healthy, Server,
};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "The capital of France is";

#[test]
fn the_gateway_serves_openai_clients() {
    let model = common::smollm2();
    // the CLI refuses a prompt plus --max-new-tokens past the maximum at once
    let out = common::marill(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "100000",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("exceeds the suffix's maximum sequence length of 256"),
        "{err}"
    );
    let t0 = Instant::now();
    let out = common::marill(&["dev", "--model", &model, "--max-new-tokens", "1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("exceeds the workers' maximum sequence length of 256"),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "refused only after {:?}",
        t0.elapsed()
    );

    // what `marill generate` writes for the prompt (greedy, 8 tokens)
    let expected = generated(&model, PROMPT, 8);

    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("marill-gateway-test-{}.log", std::process::id()));
    let _server = Server(
        common::marill(&["dev", "--model", &model, "--serve", &addr])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{addr}");
    wait_healthy(&base, &log, 180);
    let models = json(&String::from_utf8_lossy(
        &curl(&[&format!("{base}/v1/models")]).stdout,
    ));
    let name = models["data"][0]["id"]
        .as_str()
        .expect("a model id")
        .to_string();
    assert_eq!(name, "SmolLM2-135M-Instruct.Q4_1");

    // refused before any session: unknown model, bad JSON, unsupported parameter, too long
    let url = format!("{base}/v1/completions");
    let (code, body) = post(
        &url,
        r#"{"model":"no-such-model","prompt":"x","max_tokens":1}"#,
        false,
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(error_of(&body)["code"], "model_not_found");
    let (code, body) = post(&url, "{not json", false);
    assert_eq!(code, 400, "{body}");
    assert_eq!(error_of(&body)["code"], "invalid_json");
    let (code, body) = post(
        &url,
        &format!(r#"{{"model":"{name}","prompt":"x","n":2,"logprobs":1}}"#),
        false,
    );
    assert_eq!(code, 400, "{body}");
    let e = error_of(&body);
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("n") && msg.contains("logprobs"), "{body}");
    let (code, body) = post(
        &url,
        &format!(r#"{{"model":"{name}","prompt":"x","max_tokens":1000}}"#),
        false,
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(error_of(&body)["code"], "context_length_exceeded");

    // a greedy completion equals `marill generate`
    let (code, body) = post(
        &url,
        &format!(r#"{{"model":"{name}","prompt":"{PROMPT}","max_tokens":8,"temperature":0}}"#),
        false,
    );
    assert_eq!(code, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["choices"][0]["text"], expected.as_str(), "{body}");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // a streamed chat completion: chunks as tokens come, a finish_reason, usage, [DONE]
    let (code, body) = post(
        &format!("{base}/v1/chat/completions"),
        &format!(
            r#"{{"model":"{name}","messages":[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"What is the capital of France?"}}],"max_tokens":6,"temperature":0,"stream":true,"stream_options":{{"include_usage":true}}}}"#
        ),
        true,
    );
    assert_eq!(code, 200, "{body}");
    let data = sse_data(&body);
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json(d)).collect();
    let contents = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(contents >= 2, "{contents} content chunks: {body}");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length"),
        "{body}"
    );
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        6,
        "{body}"
    );

    // a client that goes away ends its session (a non-streaming one, cut after 4 s of 40
    // tokens)
    let out = curl(&[
        "--max-time",
        "4",
        "-d",
        &format!(r#"{{"model":"{name}","prompt":"Once upon a time","max_tokens":40}}"#),
        &url,
    ]);
    assert!(
        !out.status.success(),
        "a 40-token completion within 4 s: {out:?}"
    );
    let start = Instant::now();
    loop {
        let m = String::from_utf8_lossy(&curl(&[&format!("{base}/metrics")]).stdout).into_owned();
        if m.contains("marill_gateway_requests_total{outcome=\"cancelled\"} 1")
            && m.contains("marill_gateway_sessions_in_flight 0")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the session did not end: {m}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // the real openai package, the same checks
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-openai.sh"
        ))
        .args([&format!("{base}/v1"), name.as_str(), expected.as_str()])
        .output()
        .expect("bash");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    assert!(
        out.status.success() && said.contains("all checks passed"),
        "openai check failed: {said}"
    );

    // the metrics counted it all
    let m = String::from_utf8_lossy(&curl(&[&format!("{base}/metrics")]).stdout).into_owned();
    let value = |series: &str| value(&m, series);
    assert_eq!(
        value("marill_gateway_requests_total{outcome=\"ok\"}"),
        4.0,
        "{m}"
    );
    assert_eq!(
        value("marill_gateway_requests_total{outcome=\"not_found\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        value("marill_gateway_requests_total{outcome=\"bad_request\"}"),
        3.0,
        "{m}"
    );
    assert_eq!(
        value("marill_gateway_requests_total{outcome=\"cancelled\"}"),
        1.0,
        "{m}"
    );
    // the cancelled request's first token included
    assert_eq!(
        value("marill_gateway_time_to_first_token_seconds_count"),
        5.0,
        "{m}"
    );
    assert!(value("marill_gateway_tokens_total") >= 28.0, "{m}");
    assert_eq!(value("marill_gateway_sessions_in_flight"), 0.0, "{m}");
    // every series docs/metrics.md lists for the gateway is served
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let documented: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with("| `marill_"))
        .filter(|l| matches!(l.split('|').nth(3).map(str::trim), Some("gateway" | "all")))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    assert!(documented.len() >= 5, "{documented:?}");
    for name in documented {
        assert!(
            m.lines().any(|l| l.starts_with(name)),
            "{name} documented but not served: {m}"
        );
    }
    let _ = std::fs::remove_file(&log);
}

//! `marill gateway` as its own process in front of a cluster of separate processes (tansu, the
//! coordinator, dealers and provider/helper pairs on the tiny model: `common::TestCluster`),
//! answered with curl:
//! - `the_gateway_process_serves_a_cluster`: a greedy completion (temperature 0) equals the text
//!   `marill generate` gives for the prompt; a streamed chat completion comes as chunks and
//!   ends with a finish_reason and `[DONE]`, its text the same as the chat answered whole; with
//!   `--max-concurrent 1`, requests fired back to back (each the moment the last one's answer
//!   is read) never get a 429: a request frees its slot when its response is complete, before
//!   its session's close has come back from Kafka; every close succeeds.
//! - `a_session_failed_in_the_2pc_is_a_502`: a pair's peer link stalled (through
//!   `common::proxy`) in the middle of a step makes the workers give the step up ("the peer
//!   party was lost or timed out"): a streamed request that had begun gets one error event in
//!   OpenAI's shape and its stream ends; a request not streamed gets a 502 with the error; each
//!   message names the public failure category and nothing else; the gateway (one slot) then
//!   serves the next request once a pair is back in service.
//!
//! About 85 s on two loaded cores (the two tests run side by side; the second waits twice for
//! the coordinator to retire a pair whose workers gave up).

mod common;

use common::gateway::{
    error_of, generated, json, post, post_args, sse_data, status_and_body, value, wait_healthy,
    wait_metrics, Server,
};
use common::{marill, TestCluster, FAST_GROUP};
use serde_json::Value;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "the tiny model says";

/// A chat template for the tiny model (it has none): the gateway reads it from the model
/// directory's `tokenizer_config.json`; the workers do not read it.
const TEMPLATE: &str = r#"{"chat_template": "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:"}"#;

/// `marill gateway` in front of `c` (one slot, `extra` arguments), logging to
/// `<dir>/gateway.log`, once `/healthz` answers; its base URL.
fn gateway(c: &TestCluster, extra: &[&str]) -> (Server, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let server = Server(
        marill(&["gateway", "--listen", &addr, "--brokers", &c.brokers])
            .args(["--keys", c.keys.to_str().unwrap()])
            .args(["--model", c.model.to_str().unwrap()])
            .args(["--max-concurrent", "1", "--timeout-s", "120"])
            .args(extra)
            .args(FAST_GROUP)
            .args(&c.kafka_args)
            .stdout(Stdio::null())
            .stderr(c.log("gateway"))
            .spawn()
            .unwrap(),
    );
    let base = format!("http://{addr}");
    wait_healthy(&base, &c.dir.join("gateway.log"), 120);
    (server, base)
}

/// A completion request of `max_tokens` greedy tokens of PROMPT.
fn completion(max_tokens: usize, stream: bool) -> String {
    format!(
        r#"{{"model":"tiny","prompt":"{PROMPT}","max_tokens":{max_tokens},"temperature":0,"stream":{stream}}}"#
    )
}

#[test]
fn the_gateway_process_serves_a_cluster() {
    let t0 = Instant::now();
    let mut c = TestCluster::start("gw-cluster", 1);
    std::fs::write(c.model.join("tokenizer_config.json"), TEMPLATE).unwrap();
    c.coordinator();
    let logs = c.logs();

    // what `marill generate` writes for the prompt (greedy, 6 tokens)
    let expected = generated(c.model.to_str().unwrap(), PROMPT, 6);

    let (_server, base) = gateway(&c, &[]);
    let url = format!("{base}/v1/completions");
    let (code, body) = post(&url, &completion(6, false), false);
    assert_eq!(code, 200, "{body} ({logs})");
    let v = json(&body);
    assert_eq!(v["choices"][0]["text"], expected.as_str(), "{body}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{body}");
    assert_eq!(v["usage"]["completion_tokens"], 6, "{body}");

    // a streamed chat: the role chunk, content chunks, a finish_reason, [DONE]; the same text
    // as the chat answered whole
    let chat = |stream: bool| {
        format!(
            r#"{{"model":"tiny","messages":[{{"role":"user","content":"hello there"}}],"max_tokens":4,"temperature":0,"stream":{stream}}}"#
        )
    };
    let chat_url = format!("{base}/v1/chat/completions");
    let (code, body) = post(&chat_url, &chat(true), true);
    assert_eq!(code, 200, "{body} ({logs})");
    let data = sse_data(&body);
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| json(d)).collect();
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{body}"
    );
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let ended = chunks.last().unwrap()["choices"][0]["finish_reason"].clone();
    assert!(ended == "length" || ended == "stop", "{body}");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{body}"
    );
    let (code, whole) = post(&chat_url, &chat(false), false);
    assert_eq!(code, 200, "{whole}");
    assert_eq!(
        json(&whole)["choices"][0]["message"]["content"],
        streamed.as_str(),
        "streamed {body}, whole {whole}"
    );

    // back to back at the limit of one: never a 429
    let fired = Instant::now();
    let n = 6;
    for i in 0..n {
        let (code, body) = post(&url, &completion(1, i % 2 == 1), i % 2 == 1);
        assert_eq!(code, 200, "request {i} back to back: {body} ({logs})");
    }
    let back_to_back = fired.elapsed();
    let total = 3.0 + n as f64;
    let m = wait_metrics(
        &base,
        &[
            ("marill_gateway_requests_total{outcome=\"ok\"}", total),
            ("marill_gateway_sessions_in_flight", 0.0),
        ],
        120,
    );
    assert_eq!(
        value(&m, "marill_gateway_requests_total{outcome=\"busy\"}"),
        0.0
    );
    assert_eq!(
        value(&m, "marill_gateway_session_close_failures_total"),
        0.0,
        "a session's close failed ({logs})"
    );
    eprintln!(
        "{n} requests of one token back to back in {back_to_back:?}; the test took {:?}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

/// Waits until a step of `phase` runs on the helper of one of `pairs` (`secs` at most); that
/// pair.
fn step_running(c: &TestCluster, pairs: &[usize], phase: &str, secs: u64) -> usize {
    let series = format!("marill_worker_step_running{{phase=\"{phase}\"}}");
    let start = Instant::now();
    loop {
        for &i in pairs {
            if common::metric(&c.metrics[i][1], &series) == 1.0 {
                return i;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "no {phase} step ran within {secs} s ({})",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// curl POSTing `body` to `url` in the background, its output captured.
fn spawn_post(url: &str, body: &str, stream: bool) -> Child {
    std::process::Command::new("curl")
        .args(["-sS", "--max-time", "300"])
        .args(post_args(url, body, stream))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl (install curl)")
}

/// Checks the error of a session failed in the 2PC: OpenAI's shape, code `session_failed`,
/// and a message that carries the failure's public category and nothing more (the workers keep
/// the detail, which can depend on secret values, in their debug logs).
fn check_failed(e: &Value, logs: &str) {
    assert_eq!(e["code"], "session_failed", "{e} ({logs})");
    assert_eq!(e["type"], "server_error", "{e}");
    let msg = e["message"].as_str().unwrap();
    // "the private session failed: job <session>-<step> failed: <party>: step failed inside
    // the 2PC: <category>[ (the <peer>)]"
    let (job, reason) = msg
        .strip_prefix("the private session failed: job ")
        .and_then(|r| r.split_once(" failed: "))
        .unwrap_or_else(|| panic!("not a failed job's reason: {msg} ({logs})"));
    assert!(job.starts_with('s') && !job.contains(' '), "{msg} ({logs})");
    let category = ["provider: ", "helper: "]
        .iter()
        .find_map(|p| reason.strip_prefix(p))
        .and_then(|r| r.strip_prefix("step failed inside the 2PC: "))
        .map(|r| {
            [" (the provider)", " (the helper)"]
                .iter()
                .find_map(|p| r.strip_suffix(p))
                .unwrap_or(r)
        });
    assert_eq!(
        category,
        Some("the peer party was lost or timed out"),
        "the reason is not a party's public category alone: {msg} ({logs})"
    );
}

/// Once pair `i`'s workers gave their stalled step up and exited, heals its peer link and
/// waits until coordinator 0 has retired the pair.
fn heal_when_lost(c: &mut TestCluster, i: usize) {
    c.wait_exit(i, 0, 60);
    c.wait_exit(i, 1, 60);
    c.proxies[i].delay(Duration::ZERO);
    c.wait_log("coordinator-0", &format!("worker pair lost pair={i}"), 90);
}

#[test]
fn a_session_failed_in_the_2pc_is_a_502() {
    let t0 = Instant::now();
    // one session per pair at a time, the workers give a stalled step up after 5 s
    let mut c = TestCluster::start_proxied(
        "gw-failed",
        2,
        &["--idle-timeout-s", "5", "--sessions", "1"],
    );
    c.coordinator_with(&["--step-timeout-s", "30"]);
    let logs = c.logs();
    // the gateway does not re-place a failed session: the client sees the failure
    let (_server, base) = gateway(&c, &["--replace-attempts", "0"]);
    let url = format!("{base}/v1/completions");
    // a warm-up request: the dealers learn the steps' shapes
    let (code, body) = post(&url, &completion(2, false), false);
    assert_eq!(code, 200, "{body} ({logs})");
    // every chunk on the peer links 20 ms late: a step lasts seconds
    for p in &c.proxies {
        p.delay(Duration::from_millis(20));
    }

    // streamed: the stream has begun (its first token sent) when a decode step stalls
    let stream = spawn_post(&url, &completion(40, true), true);
    let lost = step_running(&c, &[0, 1], "decode", 120);
    c.proxies[lost].pause();
    let stalled = Instant::now();
    let out = stream.wait_with_output().unwrap();
    let failed_after = stalled.elapsed();
    assert!(
        out.status.success(),
        "the stream did not end cleanly: {out:?} ({logs})"
    );
    let (code, body) = status_and_body(&out.stdout);
    assert_eq!(code, 200, "{body} ({logs})");
    let data = sse_data(&body);
    let (last, tokens) = data.split_last().unwrap();
    assert!(!tokens.is_empty(), "no token before the failure: {body}");
    for t in tokens {
        let v = json(t);
        assert!(v["choices"][0]["text"].is_string(), "{body}");
        assert!(v["choices"][0]["finish_reason"].is_null(), "{body}");
    }
    check_failed(&error_of(last), &logs);
    heal_when_lost(&mut c, lost);

    // not streamed, on the other pair: a 502 with the error
    let other = 1 - lost;
    let whole = spawn_post(&url, &completion(40, false), false);
    step_running(&c, &[other], "decode", 120);
    c.proxies[other].pause();
    let stalled = Instant::now();
    let out = whole.wait_with_output().unwrap();
    let failed_502_after = stalled.elapsed();
    assert!(out.status.success(), "{out:?} ({logs})");
    let (code, body) = status_and_body(&out.stdout);
    assert_eq!(code, 502, "{body} ({logs})");
    check_failed(&error_of(&body), &logs);
    heal_when_lost(&mut c, other);

    // a pair back: the gateway (one slot) serves again
    for p in &c.proxies {
        p.delay(Duration::ZERO);
    }
    let back = c.restart_pair(lost, 0);
    let (code, body) = post(&url, &completion(2, false), false);
    assert_eq!(code, 200, "after the failures: {body} ({logs})");
    let m = wait_metrics(
        &base,
        &[
            ("marill_gateway_requests_total{outcome=\"failed\"}", 2.0),
            ("marill_gateway_requests_total{outcome=\"ok\"}", 2.0),
            ("marill_gateway_sessions_in_flight", 0.0),
        ],
        60,
    );
    assert_eq!(
        value(&m, "marill_gateway_requests_total{outcome=\"busy\"}"),
        0.0
    );
    eprintln!(
        "a stalled step: the stream's error event {failed_after:?} after the stall, the 502 \
         {failed_502_after:?} after it; pair {lost} back in service {back:?} after its \
         restart; the test took {:?}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&c.dir);
}

//! `marill bench gateway`: a small load run against the OpenAI-compatible gateway over HTTP:
//! streamed greedy completions, `--concurrency` of them in flight at once (each level a run),
//! time to first token (from sending the request to its first text chunk) and tokens/s (all
//! completion tokens over the run's wall time, and per request after its first token). Without
//! `--url` it starts `marill dev --serve` (the embedded cluster: broker, coordinator, one
//! provider/helper pair and its dealer in one process on this machine) and measures through it.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `marill bench gateway`.
#[derive(Args)]
pub struct GatewayBenchArgs {
    /// Requests in flight at once, comma separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Requests per run (default: the run's concurrency).
    #[arg(long)]
    requests: Option<usize>,
    /// New tokens per request (max_tokens; greedy, so every request runs them all unless the
    /// model ends).
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// The prompt.
    #[arg(long, default_value = crate::generate::DEFAULT_PROMPT)]
    prompt: String,
    /// A running gateway's API base, e.g. http://127.0.0.1:8080/v1 (default: start `marill dev
    /// --serve` on a free local port).
    #[arg(long)]
    url: Option<String>,
    /// The model to start `marill dev --serve` with (without --url).
    #[arg(long, default_value = crate::generate::DEFAULT_MODEL)]
    model: PathBuf,
    /// Requests run (and not counted) before the first run: the first session of a fresh
    /// cluster also pays its start (the pair's first placement, the dealer's first streams).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// An API key to send (`Authorization: Bearer`).
    #[arg(long)]
    api_key: Option<String>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One run's figures.
#[derive(Serialize)]
struct Row {
    concurrency: usize,
    requests: usize,
    failed: usize,
    tokens: usize,
    ttft_p50_s: f64,
    ttft_max_s: f64,
    tokens_per_s: f64,
    request_tokens_per_s: f64,
    wall_s: f64,
}

/// `marill dev --serve`, stopped (SIGTERM, then killed) when dropped.
struct Embedded(Child);

impl Drop for Embedded {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct One {
    ttft: f64,
    tokens: usize,
    after_first: f64,
}

/// One streamed completion: its time to first text, its tokens, the time after the first.
fn request(base: &str, model: &str, a: &GatewayBenchArgs) -> Result<One> {
    let body = serde_json::json!({
        "model": model,
        "prompt": a.prompt,
        "max_tokens": a.tokens,
        "temperature": 0,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let mut req = ureq::post(&format!("{base}/completions"))
        .timeout(Duration::from_secs(900))
        .set("content-type", "application/json");
    if let Some(k) = &a.api_key {
        req = req.set("authorization", &format!("Bearer {k}"));
    }
    let resp = req
        .send_string(&body.to_string())
        .map_err(|e| anyhow!("{e}"))?;
    let (mut first, mut tokens, mut done) = (None, None, false);
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: serde_json::Value = serde_json::from_str(data)?;
        if let Some(e) = v.get("error") {
            bail!("the stream failed: {e}");
        }
        if first.is_none()
            && v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        {
            first = Some(t0.elapsed());
        }
        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
            tokens = Some(n as usize);
        }
    }
    if !done {
        bail!("the stream ended without [DONE]");
    }
    let first = first.ok_or_else(|| anyhow!("no text"))?;
    Ok(One {
        ttft: first.as_secs_f64(),
        tokens: tokens.ok_or_else(|| anyhow!("no usage chunk"))?,
        after_first: (t0.elapsed() - first).as_secs_f64(),
    })
}

fn get_text(url: &str) -> Result<String> {
    let r = ureq::get(url)
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(r.into_string()?)
}

fn get(url: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&get_text(url)?)?)
}

/// Waits (up to a minute) until the gateway at `base` runs no session: a request's session
/// is ended after its `[DONE]`, and still holds its slot meanwhile.
fn settle(base: &str) {
    let metrics = format!("{}/metrics", base.trim_end_matches("/v1"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        let idle = get_text(&metrics).is_ok_and(|m| {
            m.lines()
                .any(|l| l.trim() == "marill_gateway_sessions_in_flight 0")
        });
        if idle {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs the benchmark.
pub fn run(a: GatewayBenchArgs) -> Result<()> {
    let mut _embedded = None;
    let base = match &a.url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let port = crate::cluster::launch::free_port()?;
            let most = a.concurrency.iter().copied().max().unwrap_or(1).to_string();
            let child = Command::new(std::env::current_exe()?)
                .args([
                    "dev",
                    "--serve",
                    &format!("127.0.0.1:{port}"),
                    "--max-concurrent",
                    &most,
                ])
                .arg("--model")
                .arg(&a.model)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting marill dev --serve")?;
            _embedded = Some(Embedded(child));
            format!("http://127.0.0.1:{port}/v1")
        }
    };
    let start = Instant::now();
    let models = loop {
        match get(&format!("{base}/models")) {
            Ok(m) => break m,
            Err(e) if start.elapsed() > Duration::from_secs(300) => {
                bail!("no gateway at {base}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    let model = models["data"][0]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("{base}/models lists no model"))?
        .to_string();
    eprintln!(
        "bench gateway: {base} ({}), model {model}, {} greedy tokens per streamed completion",
        if a.url.is_some() {
            "a running gateway"
        } else {
            "marill dev --serve: the embedded cluster in one process on this machine"
        },
        a.tokens
    );
    for _ in 0..a.warmup {
        request(&base, &model, &a).context("warm-up request")?;
    }
    let mut rows = Vec::new();
    for &c in &a.concurrency {
        settle(&base);
        let c = c.max(1);
        let n = a.requests.unwrap_or(c).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..c.min(n) {
                s.spawn(|| {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let r = request(&base, &model, &a);
                        results.lock().expect("lock").push(r);
                    }
                });
            }
        });
        let wall = t0.elapsed().as_secs_f64();
        let results = results.into_inner().expect("lock");
        let mut ok: Vec<One> = Vec::new();
        let mut failed = 0;
        for r in results {
            match r {
                Ok(o) => ok.push(o),
                Err(e) => {
                    failed += 1;
                    eprintln!("request failed: {e:#}");
                }
            }
        }
        let mut ttft: Vec<f64> = ok.iter().map(|o| o.ttft).collect();
        ttft.sort_by(f64::total_cmp);
        let tokens: usize = ok.iter().map(|o| o.tokens).sum();
        let per_request: Vec<f64> = ok
            .iter()
            .filter(|o| o.tokens > 1 && o.after_first > 0.0)
            .map(|o| (o.tokens - 1) as f64 / o.after_first)
            .collect();
        rows.push(Row {
            concurrency: c,
            requests: n,
            failed,
            tokens,
            ttft_p50_s: ttft.get(ttft.len() / 2).copied().unwrap_or(f64::NAN),
            ttft_max_s: ttft.last().copied().unwrap_or(f64::NAN),
            tokens_per_s: tokens as f64 / wall,
            request_tokens_per_s: per_request.iter().sum::<f64>() / per_request.len().max(1) as f64,
            wall_s: wall,
        });
    }
    println!("| concurrency | requests | failed | tokens | TTFT p50 s | TTFT max s | tokens/s (all) | tokens/s per request | wall s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            r.concurrency,
            r.requests,
            r.failed,
            r.tokens,
            r.ttft_p50_s,
            r.ttft_max_s,
            r.tokens_per_s,
            r.request_tokens_per_s,
            r.wall_s
        );
    }
    crate::bench::write_json(&a.json, &rows)?;
    let failed: usize = rows.iter().map(|r| r.failed).sum();
    if failed > 0 {
        bail!("{failed} requests failed");
    }
    Ok(())
}

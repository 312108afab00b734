//! Scrapes `/metrics` of running processes (a coordinator against a tansu broker, a dealer, a
//! provider worker) and checks that every series `docs/metrics.md` documents for that component is
//! served, with the build info.

mod common;

use common::{free_port, marill, scrape, smollm2, start_tansu, temp, Procs};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// The series `docs/metrics.md` lists for `component`.
fn documented(component: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(path("docs/metrics.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with("| `marill_"))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cols[1].trim_matches('`').to_string();
            (cols[3] == component || cols[3] == "all").then_some(name)
        })
        .collect()
}

fn check(body: &str, component: &str) {
    let want = documented(component);
    assert!(
        want.len() > 5,
        "docs/metrics.md lists {want:?} for {component}"
    );
    for name in want {
        assert!(
            body.lines().any(|l| l.starts_with(&name)),
            "{component}: {name} documented but not served:\n{body}"
        );
    }
}

#[test]
fn coordinator_and_worker_serve_the_documented_series() {
    let (tansu, brokers) = start_tansu();
    let mut procs = Procs(vec![tansu]);
    let dir = temp("metrics");
    let k = dir.to_str().unwrap().to_string();
    assert!(marill(&["keys", "generate", "--out", &k])
        .status()
        .unwrap()
        .success());
    let ep = || format!("tcp://127.0.0.1:{}", free_port());
    let (caddr, waddr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let daddr = format!("127.0.0.1:{}", free_port());
    procs.0.push(
        marill(&[
            "dealer",
            "--keys",
            &k,
            "--provider-endpoint",
            &ep(),
            "--helper-endpoint",
            &ep(),
        ])
        .args(["--metrics-addr", &daddr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let pair = format!("{},{}", ep(), ep());
    procs.0.push(
        marill(&[
            "coordinator",
            "--brokers",
            &brokers,
            "--keys",
            &k,
            "--pair",
            &pair,
        ])
        .args(["--metrics-addr", &caddr])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    // a provider waiting for its helper still serves its metrics
    let model = smollm2();
    procs.0.push(
        marill(&["worker", "--role", "provider", "--keys", &k])
            .args([
                "--control-endpoint",
                &ep(),
                "--peer-endpoint",
                &ep(),
                "--dealer-endpoint",
                &ep(),
            ])
            .args([
                "--metrics-addr",
                &waddr,
                "--model",
                &model,
                "--n-public",
                "28",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // the coordinator reports its pair once its loop runs; no worker answers its hello, so
    // the pair stays starting
    let start = Instant::now();
    let mut body = scrape(&caddr);
    while !body.contains("marill_coordinator_pairs{state=\"starting\"} 1")
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(200));
        body = scrape(&caddr);
    }
    check(&body, "coordinator");
    assert!(
        body.contains("marill_build_info{component=\"coordinator\""),
        "{body}"
    );
    assert!(
        body.contains("marill_coordinator_pairs{state=\"starting\"} 1"),
        "{body}"
    );
    let body = scrape(&daddr);
    check(&body, "dealer");
    assert!(
        body.contains("marill_dealer_stashed_bundles{party=\"helper\"} 0"),
        "{body}"
    );
    let body = scrape(&waddr);
    check(&body, "worker");
    assert!(
        body.contains("marill_build_info{component=\"provider\""),
        "{body}"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

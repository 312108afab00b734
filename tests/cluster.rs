//! The cluster end to end as separate processes on 127.0.0.1: a Kafka-protocol broker (tansu,
//! its own process), the coordinator, two provider and two helper workers (two pairs, one
//! dealer each), and the client submitting 20 private sessions at once through Kafka. Every
//! session's greedy continuation must equal plaintext inference; a malformed job goes to the
//! dead-letter topic with its reason. `scripts/test.sh` fetches tansu (`scripts/fetch-tansu.sh`)
//! and the model first.

mod common;

use common::{free_port, marill, temp, Procs};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const TANSU: &str = "target/tools/tansu";

fn path(rel: &str) -> String {
    format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
}

/// Starts tansu on a free port and waits until it accepts connections.
fn broker(procs: &mut Procs) -> String {
    let bin = path(TANSU);
    assert!(
        Path::new(&bin).exists(),
        "{bin} absent: run scripts/fetch-tansu.sh (scripts/test.sh does)"
    );
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu");
    procs.0.push(child);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    format!("127.0.0.1:{port}")
}

/// Kafka settings that make consumer-group joins fast on tansu.
const KAFKA_SET: [&str; 4] = [
    "--kafka-set",
    "session.timeout.ms=1000",
    "--kafka-set",
    "heartbeat.interval.ms=300",
];

#[test]
fn twenty_sessions_through_kafka_equal_plaintext() {
    let model = path(MODEL);
    assert!(
        Path::new(&model).exists(),
        "{model} absent: run scripts/fetch-smollm2.sh (scripts/test.sh does)"
    );
    let mut procs = Procs(Vec::new());
    let brokers = broker(&mut procs);
    let dir = temp("cluster");
    let k = dir.to_str().unwrap().to_string();
    assert!(marill(&["keys", "generate", "--out", &k])
        .status()
        .unwrap()
        .success());
    let ep = || format!("tcp://127.0.0.1:{}", free_port());
    let model_args = ["--model", &model, "--n-public", "28"];
    let mut pairs = Vec::new();
    for _ in 0..2 {
        let (dp, dh, peer, cp, ch) = (ep(), ep(), ep(), ep(), ep());
        let mut dealer = marill(&[
            "dealer",
            "--keys",
            &k,
            "--provider-endpoint",
            &dp,
            "--helper-endpoint",
            &dh,
        ]);
        procs.0.push(dealer.stderr(Stdio::null()).spawn().unwrap());
        for (role, dealer_ep, control) in [("provider", &dp, &cp), ("helper", &dh, &ch)] {
            let mut w = marill(&[
                "worker",
                "--role",
                role,
                "--keys",
                &k,
                "--control-endpoint",
                control,
                "--peer-endpoint",
                &peer,
                "--dealer-endpoint",
                dealer_ep,
            ]);
            w.args(model_args);
            procs.0.push(w.stderr(Stdio::null()).spawn().unwrap());
        }
        pairs.push(format!("{cp},{ch}"));
    }
    let mut coord = marill(&[
        "coordinator",
        "--brokers",
        &brokers,
        "--keys",
        &k,
        "--n-public",
        "28",
        "--pair",
        &pairs[0],
        "--pair",
        &pairs[1],
    ]);
    coord.args(KAFKA_SET);
    procs.0.push(coord.stderr(Stdio::null()).spawn().unwrap());
    // 20 sessions at once, 2 greedy tokens each (2 steps + the end: 60 jobs)
    let mut client = marill(&[
        "client",
        "batch",
        "--brokers",
        &brokers,
        "--keys",
        &k,
        "--prompts",
        "20",
        "--tokens",
        "2",
        "--concurrency",
        "20",
        "--timeout-s",
        "240",
    ]);
    client.args(model_args);
    let out = client.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert!(
        stdout.contains("| 20 | 60 | 0 | 20/20 | 20/20 |"),
        "{stdout}"
    );
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

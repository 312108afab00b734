//! An idle cluster keeps serving: workers and the dealer wait for work without limit between
//! steps and requests; `--idle-timeout-s` bounds only the exchanges inside a step. The test
//! starts tansu, a dealer, a provider/helper pair and the coordinator with a 2-second timeout,
//! lets them idle for several timeouts, checks every process is still running, then runs a
//! private generation through Kafka and compares it with plaintext.

mod common;

use common::{assert_agrees, free_port, marill, temp, Procs};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TANSU: &str = "target/tools/tansu";

#[test]
fn an_idle_cluster_serves_after_its_timeout_has_passed() {
    let tansu = format!("{}/{TANSU}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(&tansu).exists(),
        "{tansu} absent: run scripts/fetch-tansu.sh (scripts/test.sh does)"
    );
    let dir = temp("idle");
    let (keys, model) = (dir.join("keys"), dir.join("tiny"));
    marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
    let (k, m) = (keys.to_str().unwrap(), model.to_str().unwrap());
    assert!(marill(&["keys", "generate", "--out", k])
        .status()
        .unwrap()
        .success());

    let kport = free_port();
    let url = format!("tcp://127.0.0.1:{kport}");
    let mut procs = Procs(Vec::new());
    procs.0.push(
        std::process::Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/", "--silent"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", kport)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = |name: &str| std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let ep = || format!("tcp://127.0.0.1:{}", free_port());
    let (dp, dh, peer, cp, ch) = (ep(), ep(), ep(), ep(), ep());
    let timeout = ["--idle-timeout-s", "2"];
    let dealer = ["dealer", "--keys", k, "--provider-endpoint", &dp];
    procs.0.push(
        marill(&dealer)
            .args(["--helper-endpoint", &dh])
            .args(timeout)
            .stderr(log("dealer"))
            .spawn()
            .unwrap(),
    );
    for (role, d, c) in [("provider", &dp, &cp), ("helper", &dh, &ch)] {
        procs.0.push(
            marill(&["worker", "--role", role, "--keys", k, "--model", m])
                .args(["--control-endpoint", c, "--peer-endpoint", &peer])
                .args(["--dealer-endpoint", d])
                .args(timeout)
                .stderr(log(role))
                .spawn()
                .unwrap(),
        );
    }
    let brokers = format!("127.0.0.1:{kport}");
    let fast = [
        "--kafka-set",
        "session.timeout.ms=1000",
        "--kafka-set",
        "heartbeat.interval.ms=300",
    ];
    procs.0.push(
        marill(&["coordinator", "--brokers", &brokers, "--keys", k])
            .args(["--pair", &format!("{cp},{ch}")])
            .args(fast)
            .stderr(log("coordinator"))
            .spawn()
            .unwrap(),
    );

    // idle for several timeouts: nobody may give up
    std::thread::sleep(Duration::from_secs(8));
    for (i, c) in procs.0.iter_mut().enumerate() {
        assert!(
            c.try_wait().unwrap().is_none(),
            "process {i} exited while idle (logs in {})",
            dir.display()
        );
    }

    let out = marill(&["client", "generate", "--brokers", &brokers, "--keys", k])
        .args([
            "--model",
            m,
            "--prompt",
            "an idle cluster",
            "--max-new-tokens",
            "3",
        ])
        .args(["--check", "--timeout-s", "120"])
        .args(fast)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "generation failed:\n{stderr}");
    assert_agrees(&stderr, 0.05);
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

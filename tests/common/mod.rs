//! Helpers shared by the end-to-end tests (each test binary uses a subset of them).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};

/// Kills the processes it holds when dropped (a failing test leaves nothing behind).
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP port free at the time of asking, below the kernel's ephemeral range (so another
/// process's outgoing connection cannot take it before it is bound) and not handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 6_000) as u16;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(k < 6_000, "no free port");
        let port = base + k;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The `marill` binary with `args`.
pub fn marill(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_marill"));
    c.args(args);
    c
}

/// A fresh temporary directory name for this test process.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("marill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Checks the `--check` line of a private generation: every token equal to plaintext and the
/// max abs logit error below `bound`. The line reads
/// "plaintext check: next-token agreement A/B, max abs logit error E".
pub fn assert_agrees(stderr: &str, bound: f64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("plaintext check"))
        .unwrap_or_else(|| panic!("no check line in {stderr}"));
    let agree = line
        .split("agreement ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap();
    let (a, b) = agree.split_once('/').unwrap();
    assert_eq!(a, b, "secure and plaintext tokens differ: {line}");
    let err: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(err < bound, "logit error too large: {line}");
}

/// Starts tansu (in-memory storage) on a free port and waits until it accepts connections;
/// returns the process and its `127.0.0.1:port`.
pub fn start_tansu() -> (Child, String) {
    use std::process::Stdio;
    let tansu = format!("{}/target/tools/tansu", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&tansu).exists(),
        "{tansu} absent: run scripts/fetch-tansu.sh (scripts/test.sh does)"
    );
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&tansu)
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
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "tansu did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, format!("127.0.0.1:{port}"))
}

/// A cluster of separate processes on 127.0.0.1 for fault tests: tansu, and per pair a dealer,
/// a provider and a helper on a tiny random model, fresh keys; the coordinator is started by
/// the test ([`TestCluster::coordinator`]) so that it can be killed and restarted. Each process
/// logs to `<dir>/<name>.log`; everything is killed when dropped.
pub struct TestCluster {
    /// the broker
    pub tansu: Child,
    /// per pair: dealer, provider, helper
    pub pairs: Vec<[Child; 3]>,
    /// coordinators started by the test
    pub coordinators: Vec<Child>,
    /// `host:port` of the broker
    pub brokers: String,
    /// key directory
    pub keys: PathBuf,
    /// the tiny model's directory
    pub model: PathBuf,
    /// control endpoints per pair
    pub control: Vec<(String, String)>,
    /// per pair: the dealer's provider and helper endpoints and the peer endpoint
    pub links: Vec<[String; 3]>,
    /// the workers' extra arguments
    pub worker_args: Vec<String>,
    /// logs and files
    pub dir: PathBuf,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let all = std::iter::once(&mut self.tansu)
            .chain(self.pairs.iter_mut().flatten())
            .chain(self.coordinators.iter_mut());
        for c in all {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Kafka settings that make consumer-group joins fast on tansu.
pub const FAST_GROUP: [&str; 4] = [
    "--kafka-set",
    "session.timeout.ms=1000",
    "--kafka-set",
    "heartbeat.interval.ms=300",
];

impl TestCluster {
    /// Starts tansu and `pairs` worker pairs with their dealers.
    pub fn start(name: &str, pairs: usize) -> Self {
        Self::start_with(name, pairs, &[])
    }

    /// [`TestCluster::start`] with extra arguments for every worker.
    pub fn start_with(name: &str, pairs: usize, worker_args: &[&str]) -> Self {
        let dir = temp(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, model) = (dir.join("keys"), dir.join("tiny"));
        marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
        let k = keys.to_str().unwrap().to_string();
        assert!(marill(&["keys", "generate", "--out", &k])
            .status()
            .unwrap()
            .success());
        let (tansu, brokers) = start_tansu();
        let mut c = TestCluster {
            tansu,
            pairs: Vec::new(),
            coordinators: Vec::new(),
            brokers,
            keys,
            model,
            control: Vec::new(),
            links: Vec::new(),
            worker_args: worker_args.iter().map(|a| a.to_string()).collect(),
            dir,
        };
        let ep = || format!("tcp://127.0.0.1:{}", free_port());
        for i in 0..pairs {
            let (dp, dh, peer, cp, ch) = (ep(), ep(), ep(), ep(), ep());
            let dealer = marill(&["dealer", "--keys", &k, "--provider-endpoint", &dp])
                .args(["--helper-endpoint", &dh])
                .stderr(c.log(&format!("dealer-{i}")))
                .spawn()
                .unwrap();
            c.control.push((cp, ch));
            c.links.push([dp, dh, peer]);
            let (p, h) = (c.worker(i, "provider"), c.worker(i, "helper"));
            c.pairs.push([dealer, p, h]);
        }
        c
    }

    /// Starts pair `i`'s worker of `role` (again, after a fault: same endpoints and keys).
    pub fn worker(&self, i: usize, role: &str) -> Child {
        let [dp, dh, peer] = &self.links[i];
        let (cp, ch) = &self.control[i];
        let (d, ctl) = if role == "provider" {
            (dp, cp)
        } else {
            (dh, ch)
        };
        marill(&["worker", "--role", role])
            .args(["--keys", self.keys.to_str().unwrap()])
            .args(["--model", self.model.to_str().unwrap()])
            .args(["--control-endpoint", ctl, "--peer-endpoint", peer])
            .args(["--dealer-endpoint", d])
            .args(&self.worker_args)
            .stderr(self.log(&format!("{role}-{i}")))
            .spawn()
            .unwrap()
    }

    /// A log file in the cluster's directory.
    pub fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
    }

    /// Starts a coordinator over every pair (its log: `coordinator-<n>.log`); returns its index.
    pub fn coordinator(&mut self) -> usize {
        self.coordinator_with(&[])
    }

    /// [`TestCluster::coordinator`] with extra arguments.
    pub fn coordinator_with(&mut self, extra: &[&str]) -> usize {
        let n = self.coordinators.len();
        let mut cmd = marill(&["coordinator", "--brokers", &self.brokers]);
        cmd.args(["--keys", self.keys.to_str().unwrap()]);
        for (p, h) in &self.control {
            cmd.args(["--pair", &format!("{p},{h}")]);
        }
        cmd.args(FAST_GROUP)
            .args(extra)
            .stderr(self.log(&format!("coordinator-{n}")));
        self.coordinators.push(cmd.spawn().unwrap());
        n
    }

    /// `marill client batch` against this cluster (not started).
    pub fn batch(&self, sessions: usize, tokens: usize, timeout_s: u64) -> Command {
        let mut cmd = marill(&["client", "batch", "--brokers", &self.brokers]);
        cmd.args(["--keys", self.keys.to_str().unwrap()])
            .args(["--model", self.model.to_str().unwrap()])
            .args(["--prompts", &sessions.to_string()])
            .args(["--tokens", &tokens.to_string()])
            .args(["--timeout-s", &timeout_s.to_string()])
            .args(FAST_GROUP);
        cmd
    }
}

/// `GET /metrics` at `addr`, retried until the endpoint answers (20 s at most).
pub fn scrape(addr: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            if s.read_to_string(&mut out).is_ok() && out.contains(" 200 ") {
                return out;
            }
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no /metrics at {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

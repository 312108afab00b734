//! Helpers shared by the end-to-end tests (each test binary uses a subset of them).

#![allow(dead_code)]

pub mod gateway;
pub mod grafana;
pub mod proxy;

use marill_coordinator::KafkaSettings;
use marill_proto::job::{JobResult, Outcome, RESULTS_TOPIC};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Where a test broker keeps its log: `--storage-engine` and the environment the engine reads.
/// A durable store owns the S3-protocol server it stores in and stops it when dropped.
pub struct BrokerStore {
    /// the `--storage-engine` URL
    pub engine: String,
    /// environment for tansu (the S3 endpoint and credentials)
    env: Vec<(&'static str, String)>,
    /// the S3-protocol server, if this store started one
    server: Option<Child>,
}

impl Drop for BrokerStore {
    fn drop(&mut self) {
        if let Some(s) = &mut self.server {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl BrokerStore {
    /// In-memory storage (the default of `scripts/fetch-tansu.sh`'s build): a restarted broker
    /// starts empty. `MARILL_TEST_TANSU_STORAGE` names another engine.
    pub fn memory() -> Self {
        let engine =
            std::env::var("MARILL_TEST_TANSU_STORAGE").unwrap_or_else(|_| "memory://tansu/".into());
        BrokerStore {
            engine,
            env: Vec::new(),
            server: None,
        }
    }

    /// Storage that outlives the broker: bucket `tansu` of an S3-protocol server (moto, from
    /// `scripts/fetch-s3-server.sh`) started on a free port of 127.0.0.1 and kept until the
    /// store is dropped. `MARILL_TEST_TANSU_STORAGE` names another engine instead (e.g. the
    /// SQLite build of `scripts/build-tansu-sqlite.sh` with `sqlite://tansu-test.db`).
    pub fn durable() -> Self {
        if std::env::var("MARILL_TEST_TANSU_STORAGE").is_ok() {
            return Self::memory();
        }
        let server = std::env::var("MARILL_TEST_S3_SERVER").unwrap_or_else(|_| {
            format!(
                "{}/target/tools/moto/bin/moto_server",
                env!("CARGO_MANIFEST_DIR")
            )
        });
        assert!(
            std::path::Path::new(&server).exists(),
            "{server} absent: run scripts/fetch-s3-server.sh (scripts/test.sh does)"
        );
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let store = BrokerStore {
            engine: "s3://tansu/".into(),
            env: vec![
                ("AWS_ENDPOINT", endpoint),
                ("AWS_ALLOW_HTTP", "true".into()),
                ("AWS_ACCESS_KEY_ID", "marill-test".into()),
                ("AWS_SECRET_ACCESS_KEY", "marill-test".into()),
                ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ],
            server: Some(child),
        };
        create_bucket(port, "tansu");
        store
    }
}

/// Creates `bucket` on the S3-protocol server at `127.0.0.1:port` (a plain `PUT /bucket`),
/// waiting up to 30 s for the server to accept connections.
fn create_bucket(port: u16, bucket: &str) {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let req = format!(
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            let status = answer.lines().next().unwrap_or_default();
            assert!(
                status.contains(" 200"),
                "creating bucket {bucket}: {status}"
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the S3-protocol server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts tansu (in-memory storage) on a free port and waits until it accepts connections;
/// returns the process and its `127.0.0.1:port`.
pub fn start_tansu() -> (Child, String) {
    let port = free_port();
    (
        start_tansu_on(port, port, &BrokerStore::memory()),
        format!("127.0.0.1:{port}"),
    )
}

/// Starts tansu behind a [`proxy::Proxy`]: it listens on a free port and advertises the
/// proxy's, so every client's connection goes through the proxy (to cut the broker off);
/// returns the process, the proxy and the proxy's `127.0.0.1:port`.
pub fn start_tansu_proxied(store: &BrokerStore) -> (Child, proxy::Proxy, String) {
    let port = free_port();
    let px = proxy::Proxy::start(port);
    let advertised = proxy::port_of(&px.endpoint());
    let child = start_tansu_on(port, advertised, store);
    (child, px, format!("127.0.0.1:{advertised}"))
}

/// Starts tansu on `port` of 127.0.0.1, advertising `advertised`, storing in `store`, and waits
/// until it accepts connections. The binary is `scripts/fetch-tansu.sh`'s unless
/// `MARILL_TEST_TANSU` names another.
pub fn start_tansu_on(port: u16, advertised: u16, store: &BrokerStore) -> Child {
    let tansu = std::env::var("MARILL_TEST_TANSU")
        .unwrap_or_else(|_| format!("{}/target/tools/tansu", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&tansu).exists(),
        "{tansu} absent: run scripts/fetch-tansu.sh (scripts/test.sh does)"
    );
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let start = Instant::now();
    loop {
        let mut child = Command::new(&tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &store.engine, "--silent"])
            .envs(store.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return child;
            }
            // a restart may find the port still held for a moment: start it again
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tansu did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "tansu did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
    /// per pair, where the helper connects for the peer link: the provider's peer endpoint,
    /// or a [`proxy::Proxy`] in front of it ([`TestCluster::start_proxied`])
    pub helper_peer: Vec<String>,
    /// per pair, the proxy on the peer link (empty unless started proxied)
    pub proxies: Vec<proxy::Proxy>,
    /// per pair, the provider's and the helper's `/metrics` address (`host:port`)
    pub metrics: Vec<[String; 2]>,
    /// per pair, the dealer's `/metrics` address (`host:port`)
    pub dealer_metrics: Vec<String>,
    /// the proxy every connection to the broker goes through
    /// ([`TestCluster::start_broker_proxied`])
    pub broker_proxy: Option<proxy::Proxy>,
    /// where the broker keeps its log (kept across [`TestCluster::restart_broker`])
    pub broker_store: BrokerStore,
    /// Kafka settings for the coordinators and clients besides [`FAST_GROUP`]
    pub kafka_args: Vec<String>,
}

/// What [`TestCluster`] puts proxies on.
#[derive(Clone, Copy, Default)]
pub struct Proxied {
    /// every helper's peer link
    pub peer: bool,
    /// every connection to the broker
    pub broker: bool,
}

/// How [`TestCluster`] starts: proxies, and whether the broker's log outlives a restart.
#[derive(Clone, Copy, Default)]
struct ClusterOpts {
    proxied: Proxied,
    durable_broker: bool,
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
        Self::start_opts(name, pairs, worker_args, ClusterOpts::default())
    }

    /// [`TestCluster::start`] with a broker whose log outlives a restart
    /// ([`BrokerStore::durable`]), for [`TestCluster::restart_broker`].
    pub fn start_durable_broker(name: &str, pairs: usize) -> Self {
        let opts = ClusterOpts {
            durable_broker: true,
            ..Default::default()
        };
        Self::start_opts(name, pairs, &[], opts)
    }

    /// Kills the broker with SIGKILL and starts it again on the same port and storage (a
    /// broker reached directly: behind `broker_proxy` it listens on another port than
    /// `brokers` names).
    pub fn restart_broker(&mut self) {
        assert!(
            self.broker_proxy.is_none(),
            "restart_broker: the broker is proxied"
        );
        self.tansu.kill().unwrap();
        self.tansu.wait().unwrap();
        let port: u16 = self.brokers.rsplit(':').next().unwrap().parse().unwrap();
        self.tansu = start_tansu_on(port, port, &self.broker_store);
    }

    /// [`TestCluster::start_with`] with every helper's peer link through a [`proxy::Proxy`]
    /// (`proxies[i]` for pair `i`), to delay, stall or cut it.
    pub fn start_proxied(name: &str, pairs: usize, worker_args: &[&str]) -> Self {
        let proxied = Proxied {
            peer: true,
            broker: false,
        };
        let opts = ClusterOpts {
            proxied,
            ..Default::default()
        };
        Self::start_opts(name, pairs, worker_args, opts)
    }

    /// [`TestCluster::start`] with every connection to the broker through `broker_proxy`.
    pub fn start_broker_proxied(name: &str, pairs: usize) -> Self {
        let proxied = Proxied {
            peer: false,
            broker: true,
        };
        let opts = ClusterOpts {
            proxied,
            ..Default::default()
        };
        Self::start_opts(name, pairs, &[], opts)
    }

    fn start_opts(name: &str, pairs: usize, worker_args: &[&str], opts: ClusterOpts) -> Self {
        let proxied = opts.proxied;
        let dir = temp(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (keys, model) = (dir.join("keys"), dir.join("tiny"));
        marill_model::tiny::write_tiny_model(&model, &Default::default()).unwrap();
        let k = keys.to_str().unwrap().to_string();
        assert!(marill(&["keys", "generate", "--out", &k])
            .status()
            .unwrap()
            .success());
        let broker_store = if opts.durable_broker {
            BrokerStore::durable()
        } else {
            BrokerStore::memory()
        };
        let (tansu, brokers, broker_proxy) = if proxied.broker {
            let (t, px, b) = start_tansu_proxied(&broker_store);
            (t, b, Some(px))
        } else {
            let port = free_port();
            let t = start_tansu_on(port, port, &broker_store);
            (t, format!("127.0.0.1:{port}"), None)
        };
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
            helper_peer: Vec::new(),
            proxies: Vec::new(),
            metrics: Vec::new(),
            dealer_metrics: Vec::new(),
            broker_proxy,
            broker_store,
            // fetches that find nothing new are held up to 500 ms by the broker instead of
            // 10 ms: each one lists the partition's objects on the S3 server
            kafka_args: if opts.durable_broker {
                vec!["--kafka-set".into(), "fetch.wait.max.ms=500".into()]
            } else {
                Vec::new()
            },
        };
        let ep = || format!("tcp://127.0.0.1:{}", free_port());
        for i in 0..pairs {
            let (dp, dh, peer, cp, ch) = (ep(), ep(), ep(), ep(), ep());
            c.control.push((cp, ch));
            let addr = || format!("127.0.0.1:{}", free_port());
            c.metrics.push([addr(), addr()]);
            c.dealer_metrics.push(addr());
            if proxied.peer {
                let px = proxy::Proxy::start(proxy::port_of(&peer));
                c.helper_peer.push(px.endpoint());
                c.proxies.push(px);
            } else {
                c.helper_peer.push(peer.clone());
            }
            c.links.push([dp, dh, peer]);
            let dealer = c.dealer(i, &format!("dealer-{i}"));
            let (p, h) = (c.worker(i, "provider"), c.worker(i, "helper"));
            c.pairs.push([dealer, p, h]);
        }
        c
    }

    /// Starts pair `i`'s dealer (again, after a fault: same endpoints, keys and metrics
    /// address), logging to `<log>.log`.
    pub fn dealer(&self, i: usize, log: &str) -> Child {
        let [dp, dh, _] = &self.links[i];
        marill(&["dealer", "--keys", self.keys.to_str().unwrap()])
            .args(["--provider-endpoint", dp, "--helper-endpoint", dh])
            .args(["--metrics-addr", &self.dealer_metrics[i]])
            .stderr(self.log(log))
            .spawn()
            .unwrap()
    }

    /// Starts pair `i`'s worker of `role` (again, after a fault: same endpoints and keys).
    pub fn worker(&self, i: usize, role: &str) -> Child {
        let [dp, dh, peer] = &self.links[i];
        let (cp, ch) = &self.control[i];
        let (d, ctl, peer, metrics) = if role == "provider" {
            (dp, cp, peer, &self.metrics[i][0])
        } else {
            (dh, ch, &self.helper_peer[i], &self.metrics[i][1])
        };
        marill(&["worker", "--role", role])
            .args(["--keys", self.keys.to_str().unwrap()])
            .args(["--model", self.model.to_str().unwrap()])
            .args(["--control-endpoint", ctl, "--peer-endpoint", peer])
            .args(["--dealer-endpoint", d])
            .args(["--metrics-addr", metrics])
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
        // every job taken, handed to a pair and answered is in the log
        cmd.args(FAST_GROUP)
            .args(&self.kafka_args)
            .args(extra)
            .env("MARILL_LOG", "info,marill_coordinator=debug")
            .stderr(self.log(&format!("coordinator-{n}")));
        self.coordinators.push(cmd.spawn().unwrap());
        n
    }

    /// `sessions` sessions of `tokens` tokens, 4 at a time, 60 s per step, output captured.
    pub fn spawn_batch(&self, sessions: usize, tokens: usize) -> Child {
        self.spawn_batch_replacing(sessions, tokens, 0)
    }

    /// [`TestCluster::spawn_batch`] whose client re-places a failed session up to `replace`
    /// times.
    pub fn spawn_batch_replacing(&self, sessions: usize, tokens: usize, replace: u32) -> Child {
        self.batch_replacing(sessions, tokens, 60, replace)
            .args(["--concurrency", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `sessions` sessions of `tokens` tokens, 4 at a time, and checks that all finish
    /// equal to plaintext (`what` names the batch in the failure).
    pub fn serve_batch(&self, sessions: usize, tokens: usize, what: &str) {
        let out = self
            .batch(sessions, tokens, 60)
            .args(["--concurrency", "4"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}",
            self.logs(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The logs' directory, for assertion messages.
    pub fn logs(&self) -> String {
        self.dir.display().to_string()
    }

    /// The text of `<name>.log` so far.
    pub fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Waits until `<name>.log` contains `needle` (`secs` at most).
    pub fn wait_log(&self, name: &str, needle: &str, secs: u64) {
        let start = Instant::now();
        while !self.log_text(name).contains(needle) {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "no {needle:?} in {name}.log within {secs} s ({})",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Steps pair `i`'s provider ran to completion.
    pub fn steps_done(&self, i: usize) -> f64 {
        metric(
            &self.metrics[i][0],
            "marill_worker_steps_total{outcome=\"done\"}",
        )
    }

    /// Waits until pair `i`'s provider has run `n` steps to completion (`secs` at most).
    pub fn wait_steps(&self, i: usize, n: f64, secs: u64) {
        let start = Instant::now();
        while self.steps_done(i) < n {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "pair {i} ran fewer than {n} steps within {secs} s ({})",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until pair `i`'s worker of `role` (0 provider, 1 helper) has exited by itself
    /// (`secs` at most): a worker whose 2PC step failed exits for its supervisor.
    pub fn wait_exit(&mut self, i: usize, role: usize, secs: u64) -> Duration {
        let start = Instant::now();
        let logs = self.logs();
        let w = &mut self.pairs[i][1 + role];
        while w.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "pair {i}'s {} still runs after {secs} s ({logs})",
                ["provider", "helper"][role]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// Starts pair `i`'s two workers again (as their supervisor would; both must have exited
    /// or been killed) and waits until coordinator `n` has it back in service; returns how long
    /// that took. The coordinator says "worker pair back in service" when it had given the pair
    /// up (its probes failed for a step timeout), or "worker pair ready" when the restarted
    /// workers answered a probe before that: either counts, if logged after the restart.
    pub fn restart_pair(&mut self, i: usize, n: usize) -> Duration {
        let start = Instant::now();
        let name = format!("coordinator-{n}");
        let lines = [
            format!("worker pair back in service pair={i}"),
            format!("worker pair ready pair={i} "),
        ];
        let count = |c: &Self| {
            let text = c.log_text(&name);
            lines
                .iter()
                .map(|l| text.matches(l.as_str()).count())
                .sum::<usize>()
        };
        let before = count(self);
        for role in [1, 2] {
            let _ = self.pairs[i][role].kill();
            let _ = self.pairs[i][role].wait();
        }
        self.pairs[i][1] = self.worker(i, "provider");
        self.pairs[i][2] = self.worker(i, "helper");
        while count(self) == before {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "pair {i} not back in service in {name}.log within 90 s ({})",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        start.elapsed()
    }

    /// `marill client batch` against this cluster (not started).
    pub fn batch(&self, sessions: usize, tokens: usize, timeout_s: u64) -> Command {
        self.batch_replacing(sessions, tokens, timeout_s, 0)
    }

    /// [`TestCluster::batch`] whose client re-places a failed session up to `replace` times
    /// (the fault tests otherwise see each failure at the client: 0).
    pub fn batch_replacing(
        &self,
        sessions: usize,
        tokens: usize,
        timeout_s: u64,
        replace: u32,
    ) -> Command {
        let mut cmd = marill(&["client", "batch", "--brokers", &self.brokers]);
        cmd.args(["--replace-attempts", &replace.to_string()]);
        cmd.args(["--keys", self.keys.to_str().unwrap()])
            .args(["--model", self.model.to_str().unwrap()])
            .args(["--prompts", &sessions.to_string()])
            .args(["--tokens", &tokens.to_string()])
            .args(["--timeout-s", &timeout_s.to_string()])
            .args(FAST_GROUP)
            .args(&self.kafka_args);
        cmd
    }
}

/// The value of the series `name` (with its labels as scraped, e.g.
/// `marill_worker_step_running{phase="decode"}`) at `addr`, 0 where absent.
pub fn metric(addr: &str, name: &str) -> f64 {
    scrape(addr)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
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

/// What a batch printed: sessions finished identical, differing, and failure lines.
pub fn outcome(stderr: &str) -> (usize, usize, Vec<String>) {
    let count = |pat: &str| stderr.lines().filter(|l| l.contains(pat)).count();
    let failed = stderr
        .lines()
        .filter(|l| l.starts_with("failed: "))
        .map(str::to_string)
        .collect();
    (
        count(": identical true"),
        count(": identical false"),
        failed,
    )
}

/// Waits for a batch and checks that every one of its `sessions` is accounted for: finished
/// identical to plaintext or failed with a reason (none left without an outcome: no "no
/// result within"); returns the number finished and the failure lines.
pub fn accounted(batch: Child, sessions: usize, logs: &str) -> (usize, Vec<String>) {
    let out = batch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    let (finished, differing, failed) = outcome(&stderr);
    assert_eq!(differing, 0, "a session differs from plaintext ({logs})");
    assert_eq!(
        finished + failed.len(),
        sessions,
        "sessions unaccounted for ({logs})"
    );
    for f in &failed {
        assert!(
            !f.contains("no result for job"),
            "a job was left without an outcome: {f} ({logs})"
        );
    }
    (finished, failed)
}

/// The results published so far, by job id.
pub fn results(brokers: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut by_job: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let all = marill_coordinator::kafka::read_tail(
        &KafkaSettings::new(brokers),
        RESULTS_TOPIC,
        100_000,
        Duration::from_secs(20),
    )
    .unwrap();
    for (key, payload) in all {
        by_job
            .entry(String::from_utf8_lossy(&key).into_owned())
            .or_default()
            .push(payload);
    }
    by_job
}

/// Every job id has one payload on `marill.results`, however often it was published.
pub fn assert_one_result_per_job(brokers: &str, logs: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let published = results(brokers);
    for (job, payloads) in &published {
        assert!(
            payloads.windows(2).all(|w| w[0] == w[1]),
            "job {job} has {} different results ({logs})",
            payloads.len()
        );
    }
    published
}

/// Waits until at least `n` results are published.
pub fn wait_for_results(brokers: &str, n: usize, logs: &str) {
    let start = Instant::now();
    while results(brokers).len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "fewer than {n} results; logs in {logs}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the series `name` reads 1 at `addr` (`secs` at most), e.g. a worker's
/// `marill_worker_step_running{phase="prefill"}`.
pub fn wait_metric_one(addr: &str, name: &str, secs: u64, logs: &str) {
    let start = Instant::now();
    while metric(addr, name) != 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{name} never 1 at {addr} within {secs} s ({logs})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The failed results published so far.
pub fn failed_results(brokers: &str) -> Vec<JobResult> {
    results(brokers)
        .values()
        .filter_map(|p| JobResult::decode(&p[0]).ok())
        .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
        .collect()
}

/// Waits for the first failed result (60 s after `since` at most: the batches' job deadline);
/// returns how long after `since` it was seen, and the result.
pub fn first_failure(brokers: &str, since: Instant, logs: &str) -> (Duration, JobResult) {
    loop {
        if let Some(r) = failed_results(brokers).into_iter().next() {
            return (since.elapsed(), r);
        }
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "no failed result within the job's deadline ({logs})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) under `target/models/smollm2/`, where
/// `scripts/fetch-smollm2.sh` puts it.
pub const SMOLLM2: &str = "target/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The path of SmolLM2-135M for the tests that run the real model. A missing model fails the
/// test (never a silent pass): `scripts/test.sh` and CI fetch it first.
pub fn smollm2() -> String {
    let m = format!("{}/{SMOLLM2}", env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::path::Path::new(&m).is_file(),
        "{m} absent: this test needs SmolLM2-135M; fetch it with `bash scripts/fetch-smollm2.sh` \
         (scripts/test.sh does)"
    );
    m
}

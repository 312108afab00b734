//! Starts a whole cluster as separate processes on 127.0.0.1 — a Kafka-protocol broker (tansu),
//! one dealer per worker pair, the pairs' provider and helper workers, the coordinator — with
//! fresh keys; everything is killed when the handle is dropped. Used by `marill bench cluster`.

use anyhow::{bail, Context, Result};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running cluster; dropping it kills every process and removes the keys.
pub struct Launched {
    procs: Vec<Child>,
    /// the broker's address
    pub brokers: String,
    /// the key directory
    pub keys: PathBuf,
}

impl Drop for Launched {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.keys);
    }
}

/// A TCP port for a process about to bind it: below the kernel's ephemeral range (32768 and
/// up on Linux), so an outgoing connection of another process cannot take it meanwhile, never
/// handed out twice by this process, and bindable when asked.
pub fn free_port() -> Result<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().expect("port registry");
    let given = given.get_or_insert_with(HashSet::new);
    // where the search starts (not a secret: spreads concurrent processes over the range)
    let start = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
    for k in 0..12_000u64 {
        let port = 20_000 + ((start.wrapping_mul(2_654_435_761) + k) % 12_000) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free TCP port in 20000..32000")
}

/// Kafka settings that make consumer-group joins fast on tansu.
pub const FAST_GROUP: [(&str, &str); 2] = [
    ("session.timeout.ms", "1000"),
    ("heartbeat.interval.ms", "300"),
];

/// Starts tansu, `pairs` worker pairs with their dealers, and a coordinator; each pair runs up
/// to `lanes` sessions at once; `model_args` are the workers' model options; each process's
/// stderr goes to `<logs>/<process>.log`.
pub fn launch(
    tansu: &Path,
    pairs: usize,
    lanes: u32,
    model_args: &[String],
    logs: &Path,
) -> Result<Launched> {
    if !tansu.exists() {
        bail!("{} absent: run scripts/fetch-tansu.sh", tansu.display());
    }
    let keys = std::env::temp_dir().join(format!(
        "marill-cluster-{}-{}",
        std::process::id(),
        free_port()?
    ));
    crate::net::keys::write_all(&keys)?;
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut l = Launched {
        procs: Vec::new(),
        brokers: format!("127.0.0.1:{port}"),
        keys,
    };
    std::fs::create_dir_all(logs)?;
    let log_to = |c: &mut Command, name: &str| -> Result<()> {
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join(format!("{name}.log")))?);
        Ok(())
    };
    let mut broker = Command::new(tansu);
    broker.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
        "--storage-engine",
        "memory://tansu/",
        "--silent",
    ]);
    broker.stdout(Stdio::null()).stderr(Stdio::null());
    l.procs.push(broker.spawn().context("starting tansu")?);
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("tansu did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exe = std::env::current_exe()?;
    let k = l.keys.display().to_string();
    let ep = || -> Result<String> { Ok(format!("tcp://127.0.0.1:{}", free_port()?)) };
    let mut pair_args = Vec::new();
    for i in 0..pairs {
        let (dp, dh, peer, cp, ch) = (ep()?, ep()?, ep()?, ep()?, ep()?);
        let mut dealer = Command::new(&exe);
        dealer.args([
            "dealer",
            "--keys",
            &k,
            "--provider-endpoint",
            &dp,
            "--helper-endpoint",
            &dh,
            "--lanes",
            &lanes.to_string(),
        ]);
        log_to(&mut dealer, &format!("dealer-{i}"))?;
        l.procs.push(dealer.spawn()?);
        for (role, d, c) in [("provider", &dp, &cp), ("helper", &dh, &ch)] {
            let mut w = Command::new(&exe);
            w.args([
                "worker",
                "--role",
                role,
                "--keys",
                &k,
                "--control-endpoint",
                c,
                "--peer-endpoint",
                &peer,
                "--dealer-endpoint",
                d,
                "--sessions",
                &lanes.to_string(),
            ]);
            w.args(model_args);
            log_to(&mut w, &format!("{role}-{i}"))?;
            l.procs.push(w.spawn()?);
        }
        pair_args.extend(["--pair".to_string(), format!("{cp},{ch}")]);
    }
    let mut coord = Command::new(&exe);
    coord.args(["coordinator", "--brokers", &l.brokers, "--keys", &k]);
    coord.args(&pair_args);
    for (key, v) in FAST_GROUP {
        coord.args(["--kafka-set", &format!("{key}={v}")]);
    }
    // every job taken, handed to a pair and answered is in its log (a job that never gets
    // a result shows where it stopped)
    if std::env::var_os("MARILL_LOG").is_none() {
        coord.env("MARILL_LOG", "info,marill_coordinator=debug");
    }
    log_to(&mut coord, "coordinator")?;
    l.procs.push(coord.spawn()?);
    Ok(l)
}

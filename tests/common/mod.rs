//! Helpers shared by the end-to-end tests (each test binary uses a subset of them).

#![allow(dead_code)]

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

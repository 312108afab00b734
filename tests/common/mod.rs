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

/// A TCP port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

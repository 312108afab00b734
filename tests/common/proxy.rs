//! A TCP proxy on 127.0.0.1 for link faults between two real processes: it forwards each
//! connection's bytes both ways and can delay every chunk (a slow peer), hold them (a stalled
//! link), drop every connection and refuse new ones (a cut link), and record what the
//! connecting side sent on its first connection (to replay it later). Threads end when the
//! proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How chunks pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// at once, each after this delay
    Forward(Duration),
    /// held until the mode changes
    Paused,
}

struct Shared {
    mode: Mutex<Mode>,
    changed: Condvar,
    /// new connections are closed at once, live ones were shut down
    cut: AtomicBool,
    stop: AtomicBool,
    /// both ends of every connection, to shut them down on a cut
    conns: Mutex<Vec<TcpStream>>,
    /// bytes forwarded, both directions
    bytes: AtomicU64,
    /// what the connecting side sent on the first connection
    recorded: Mutex<Vec<u8>>,
    connections: AtomicU64,
}

/// A running proxy from `endpoint()` to a target port.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

/// The port of a `tcp://host:port` endpoint.
pub fn port_of(endpoint: &str) -> u16 {
    endpoint.rsplit(':').next().unwrap().parse().unwrap()
}

impl Proxy {
    /// Listens on a port of 127.0.0.1 the kernel picks (held from the start: no other process
    /// can take it between choosing and binding) and forwards every connection to
    /// `target_port`.
    pub fn start(target_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Forward(Duration::ZERO)),
            changed: Condvar::new(),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
            bytes: AtomicU64::new(0),
            recorded: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || accept(listener, target_port, s));
        Proxy { port, shared }
    }

    /// `tcp://127.0.0.1:port` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Forwards every chunk after `d` (zero: at once); releases a stall.
    pub fn delay(&self, d: Duration) {
        self.set(Mode::Forward(d));
    }

    /// Holds every chunk until [`Proxy::delay`] is called (a stalled link; connections stay
    /// open).
    pub fn pause(&self) {
        self.set(Mode::Paused);
    }

    fn set(&self, m: Mode) {
        *self.shared.mode.lock().unwrap() = m;
        self.shared.changed.notify_all();
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Bytes forwarded so far (both directions).
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted and forwarded so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// What the connecting side sent on the first connection so far.
    pub fn recorded(&self) -> Vec<u8> {
        self.shared.recorded.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        self.shared.changed.notify_all();
    }
}

fn accept(listener: TcpListener, target: u16, s: Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if s.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        client.set_nonblocking(false).unwrap();
        let first = s.connections.fetch_add(1, Ordering::SeqCst) == 0;
        {
            let mut conns = s.conns.lock().unwrap();
            conns.push(client.try_clone().unwrap());
            conns.push(server.try_clone().unwrap());
        }
        for (from, to, record) in [
            (
                client.try_clone().unwrap(),
                server.try_clone().unwrap(),
                first,
            ),
            (server, client, false),
        ] {
            let s = s.clone();
            std::thread::spawn(move || pump(from, to, record, s));
        }
    }
}

/// Copies `from` to `to` chunk by chunk, as the mode says; ends when either side closes.
fn pump(mut from: TcpStream, mut to: TcpStream, record: bool, s: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut mode = s.mode.lock().unwrap();
        while *mode == Mode::Paused
            && !s.stop.load(Ordering::SeqCst)
            && !s.cut.load(Ordering::SeqCst)
        {
            mode = s.changed.wait(mode).unwrap();
        }
        let Mode::Forward(delay) = *mode else { break };
        drop(mode);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if s.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if record {
            s.recorded.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        s.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

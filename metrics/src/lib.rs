//! Prometheus metrics for Marill's processes: every component registers its series in one
//! [`prometheus::Registry`] and serves them as text on `GET /metrics` ([`serve`]). Names follow
//! `marill_<component>_<name>_<unit>` (`_total` for counters, `_seconds`, `_bytes`), plus
//! `marill_build_info{component, version}` = 1. Series carry counts, sizes and durations only:
//! never a share, a key, a prompt or a job's content.

#![deny(missing_docs)]

pub mod memory;

pub use prometheus;

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use thiserror::Error;

/// Metrics failures.
#[derive(Debug, Error)]
pub enum MetricsError {
    /// A series could not be registered (a name clash: a programming error).
    #[error("registering a metric: {0}")]
    Register(#[from] prometheus::Error),
    /// The endpoint could not bind.
    #[error("serving metrics on {addr}: {why}")]
    Bind {
        /// the address
        addr: String,
        /// why
        why: String,
    },
}

/// A registry with `marill_build_info{component, version} 1` in it.
pub fn registry(component: &str) -> Result<Registry, MetricsError> {
    let r = Registry::new();
    let info = IntGaugeVec::new(
        Opts::new(
            "marill_build_info",
            "Build of this Marill process (always 1)",
        ),
        &["component", "version"],
    )?;
    info.with_label_values(&[component, env!("CARGO_PKG_VERSION")])
        .set(1);
    r.register(Box::new(info))?;
    Ok(r)
}

/// Registers `metric` in `r` and returns it.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    metric: M,
) -> Result<M, MetricsError> {
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// The registry's series in the Prometheus text format.
pub fn render(r: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&r.gather(), &mut out)
        .expect("text encoding into memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// A running `/metrics` endpoint; stops when dropped.
pub struct MetricsServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (with the actual port when asked for port 0).
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// [`serve`] when an address is given (a process started without one serves no endpoint),
/// saying where on standard error as `<who>: metrics on http://ADDR/metrics`; the handle stops
/// the endpoint when dropped.
pub fn serve_if(
    addr: Option<&str>,
    r: Registry,
    who: &str,
) -> Result<Option<MetricsServer>, MetricsError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let s = serve(addr, r)?;
    tracing::info!("{who}: metrics on http://{}/metrics", s.addr());
    Ok(Some(s))
}

/// Serves `GET /metrics` (and `GET /healthz`) for `r` on `addr` (e.g. `0.0.0.0:9100`) from a
/// background thread; other paths get 404.
pub fn serve(addr: &str, r: Registry) -> Result<MetricsServer, MetricsError> {
    let server = tiny_http::Server::http(addr).map_err(|e| MetricsError::Bind {
        addr: addr.to_string(),
        why: e.to_string(),
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .map(|a| a.to_string())
        .unwrap_or_else(|| addr.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let resp = match (req.method(), req.url()) {
                    (tiny_http::Method::Get, "/metrics") => {
                        let ct = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            TextEncoder::new().format_type().as_bytes(),
                        )
                        .expect("static header");
                        tiny_http::Response::from_string(render(&r)).with_header(ct)
                    }
                    (tiny_http::Method::Get, "/healthz") => tiny_http::Response::from_string("ok"),
                    _ => tiny_http::Response::from_string("not found").with_status_code(404),
                };
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| MetricsError::Bind {
            addr: addr.to_string(),
            why: e.to_string(),
        })?;
    Ok(MetricsServer {
        addr: bound,
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;
    use std::io::{Read, Write};

    fn get(addr: &str, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_the_registry_and_build_info() {
        let r = registry("test").unwrap();
        let c = register(
            &r,
            IntCounter::new("marill_test_things_total", "things").unwrap(),
        )
        .unwrap();
        c.inc_by(3);
        let srv = serve("127.0.0.1:0", r).unwrap();
        let body = get(srv.addr(), "/metrics");
        assert!(
            body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
            "{body}"
        );
        assert!(body.contains("marill_test_things_total 3"), "{body}");
        assert!(
            body.contains(&format!(
                "marill_build_info{{component=\"test\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{body}"
        );
        assert!(get(srv.addr(), "/nope").contains("404"));
        assert!(get(srv.addr(), "/healthz").ends_with("ok"));
    }
}

//! The ZAP handler (ZeroMQ RFC 27) of a server link: admits CURVE clients whose public key is
//! on the allow-list and refuses every other handshake.

use crate::{zmq_err, TransportError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running handler; stops when dropped.
pub(crate) struct ZapHandler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZapHandler {
    /// Binds the handler in `ctx` (before any server socket of `ctx` binds) for `allow`
    /// (Z85 public keys).
    pub(crate) fn start(ctx: &zmq::Context, allow: &[String]) -> Result<Self, TransportError> {
        let allowed: Vec<Vec<u8>> = allow
            .iter()
            .map(|k| {
                zmq::z85_decode(k).map_err(|_| TransportError::Key {
                    path: "allow-list".into(),
                    why: "not a Z85 key".into(),
                })
            })
            .collect::<Result<_, _>>()?;
        let sock = ctx.socket(zmq::REP).map_err(zmq_err("zap socket"))?;
        sock.set_rcvtimeo(100).map_err(zmq_err("zap timeout"))?;
        sock.set_linger(0).map_err(zmq_err("zap linger"))?;
        sock.bind("inproc://zeromq.zap.01")
            .map_err(zmq_err("zap bind"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let req = match sock.recv_multipart(0) {
                    Ok(r) => r,
                    Err(zmq::Error::EAGAIN) => continue,
                    Err(_) => return,
                };
                // version, request id, domain, address, identity, mechanism, credentials...
                let ok = req.len() >= 7
                    && req[0] == b"1.0"
                    && req[5] == b"CURVE"
                    && allowed.iter().any(|k| *k == req[6]);
                let id = req.get(1).cloned().unwrap_or_default();
                let (code, text): (&[u8], &[u8]) = if ok {
                    (b"200", b"OK")
                } else {
                    (b"400", b"key not allowed")
                };
                let reply: Vec<&[u8]> = vec![b"1.0", &id, code, text, b"", b""];
                if sock.send_multipart(reply, 0).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

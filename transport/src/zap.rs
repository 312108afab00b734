//! The ZAP handler (ZeroMQ RFC 27) of a server link: admits CURVE clients whose public key is
//! on the allow-list and refuses every other handshake.
//!
//! Fail closed: every CURVE server socket sets `ZMQ_ZAP_ENFORCE_DOMAIN` ([`enforce_domain`]),
//! so libzmq refuses a handshake when no handler is bound (without it, libzmq 4.3 admits any
//! client then, the legacy "Stonehouse" behaviour), and the handler thread survives interrupted
//! calls (a signal delivered to it is `EINTR`, not the end of the handler).

use crate::{zmq_err, TransportError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// `ZMQ_ZAP_ENFORCE_DOMAIN` of zmq.h (libzmq 4.3; the `zmq` crate has no setter for it).
const ZMQ_ZAP_ENFORCE_DOMAIN: std::os::raw::c_int = 93;

/// Sets `ZMQ_ZAP_ENFORCE_DOMAIN` on a CURVE server socket (before it binds): a handshake with
/// no ZAP handler to answer it is refused instead of admitted.
pub(crate) fn enforce_domain(sock: &mut zmq::Socket) -> Result<(), TransportError> {
    let on: std::os::raw::c_int = 1;
    // SAFETY: a live socket owned by `sock`; `optval` points to an int of the given size,
    // which libzmq copies before returning.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            ZMQ_ZAP_ENFORCE_DOMAIN,
            &on as *const std::os::raw::c_int as *const std::os::raw::c_void,
            std::mem::size_of::<std::os::raw::c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(TransportError::Zmq {
            what: "ZAP_ENFORCE_DOMAIN (needed to refuse clients when no ZAP handler answers; \
                   libzmq 4.3 or later)",
            err: zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }),
        })
    }
}

/// Receives one whole request; `Ok(None)` when nothing came within the socket's timeout or the
/// wait was interrupted (the caller looks at its stop flag and waits again).
fn recv_request(sock: &zmq::Socket) -> Result<Option<Vec<Vec<u8>>>, zmq::Error> {
    let first = match sock.recv_bytes(0) {
        Ok(f) => f,
        Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut parts = vec![first];
    // the rest of a message is there already; an interrupted receive consumed nothing
    while sock.get_rcvmore()? {
        loop {
            match sock.recv_bytes(0) {
                Ok(p) => break parts.push(p),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(Some(parts))
}

/// Sends one whole reply, retrying a frame whose send was interrupted (a failed send consumed
/// nothing).
fn send_reply(sock: &zmq::Socket, parts: &[&[u8]]) -> Result<(), zmq::Error> {
    for (i, part) in parts.iter().enumerate() {
        let flags = if i + 1 < parts.len() { zmq::SNDMORE } else { 0 };
        loop {
            match sock.send(*part, flags) {
                Ok(()) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

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
            // Runs until told to stop. Timeouts and interrupted calls (EINTR) are retried;
            // ETERM (context terminated) or any other failure ends the handler, and the
            // server socket's ZAP_ENFORCE_DOMAIN then refuses every handshake (fail closed).
            while !flag.load(Ordering::Relaxed) {
                let req = match recv_request(&sock) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
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
                if send_reply(&sock, &[b"1.0", &id, code, text, b"", b""]).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// The handler thread (tests deliver signals to it).
    #[cfg(test)]
    pub(crate) fn pthread(&self) -> std::os::unix::thread::RawPthread {
        use std::os::unix::thread::JoinHandleExt;
        self.thread.as_ref().expect("running").as_pthread_t()
    }

    /// Stops the handler thread (its socket closes and unbinds) while the server socket stays
    /// open: "no handler bound" (tests).
    #[cfg(test)]
    pub(crate) fn stop_thread(&mut self) {
        self.halt();
    }

    /// Tells the thread to stop and waits for it (at most one receive timeout).
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.halt();
    }
}

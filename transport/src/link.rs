//! One encrypted, mutually authenticated message link (a zeromq DEALER socket at each end).

use crate::keys::KeyPair;
use crate::zap::{self, ZapHandler};
use crate::{zmq_err, TransportError};
use marill_mpc::channel::{ChannelError, Transport};
use std::time::Duration;

/// Which end of the link this is.
#[derive(Clone, Debug)]
pub enum Role {
    /// binds `endpoint` (e.g. `tcp://127.0.0.1:7000`) and admits only the `allow`ed client keys
    Server {
        /// where to bind
        endpoint: String,
        /// Z85 public keys of admitted clients
        allow: Vec<String>,
    },
    /// connects to `endpoint` and talks only to the server holding `server_public`
    Client {
        /// where to connect
        endpoint: String,
        /// the server's Z85 public key (pinned)
        server_public: String,
    },
}

/// Limits of a link.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// a receive waits at most this long
    pub timeout: Duration,
    /// largest frame accepted or sent, in bytes
    pub max_frame: usize,
    /// name of the peer, for errors
    pub peer: String,
}

impl LinkConfig {
    /// Defaults: 120 s timeout, 1 GiB frames (a model's weight shares travel in one frame).
    pub fn new(peer: &str) -> Self {
        Self {
            timeout: Duration::from_secs(120),
            max_frame: 1 << 30,
            peer: peer.to_string(),
        }
    }
}

/// An open link. Messages are delivered whole, in order, encrypted and authenticated.
pub struct Link {
    sock: zmq::Socket,
    cfg: LinkConfig,
    endpoint: String,
    // kept alive for the socket's lifetime; dropped after it (field order)
    _zap: Option<ZapHandler>,
    _ctx: zmq::Context,
}

impl Link {
    /// Opens a link with this process's key pair `own`.
    pub fn open(role: Role, own: &KeyPair, cfg: LinkConfig) -> Result<Self, TransportError> {
        if !zmq::has("curve").unwrap_or(false) {
            return Err(TransportError::NoCurve);
        }
        let ctx = zmq::Context::new();
        let zap = match &role {
            Role::Server { allow, .. } => Some(ZapHandler::start(&ctx, allow)?),
            Role::Client { .. } => None,
        };
        let mut sock = ctx.socket(zmq::DEALER).map_err(zmq_err("socket"))?;
        sock.set_linger(1000).map_err(zmq_err("linger"))?;
        sock.set_maxmsgsize(cfg.max_frame as i64)
            .map_err(zmq_err("max message size"))?;
        sock.set_rcvtimeo(cfg.timeout.as_millis().min(i32::MAX as u128) as i32)
            .map_err(zmq_err("receive timeout"))?;
        sock.set_sndtimeo(cfg.timeout.as_millis().min(i32::MAX as u128) as i32)
            .map_err(zmq_err("send timeout"))?;
        sock.set_sndhwm(64)
            .map_err(zmq_err("send high-water mark"))?;
        sock.set_rcvhwm(64)
            .map_err(zmq_err("receive high-water mark"))?;
        sock.set_curve_publickey(own.public.as_bytes())
            .map_err(zmq_err("curve public key"))?;
        sock.set_curve_secretkey(own.secret().as_bytes())
            .map_err(zmq_err("curve secret key"))?;
        let endpoint = match role {
            Role::Server { endpoint, .. } => {
                sock.set_curve_server(true)
                    .map_err(zmq_err("curve server"))?;
                sock.set_zap_domain("marill")
                    .map_err(zmq_err("zap domain"))?;
                // no ZAP handler answering (its thread gone) refuses the client, never admits it
                zap::enforce_domain(&mut sock)?;
                sock.bind(&endpoint).map_err(zmq_err("bind"))?;
                sock.get_last_endpoint()
                    .ok()
                    .and_then(|e| e.ok())
                    .unwrap_or(endpoint)
            }
            Role::Client {
                endpoint,
                server_public,
            } => {
                sock.set_curve_serverkey(server_public.as_bytes())
                    .map_err(zmq_err("curve server key"))?;
                sock.connect(&endpoint).map_err(zmq_err("connect"))?;
                endpoint
            }
        };

        Ok(Self {
            sock,
            cfg,
            endpoint,
            _zap: zap,
            _ctx: ctx,
        })
    }

    /// The bound or connected endpoint (with the actual port when bound to port 0 / `*`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Closes the link at once, dropping what it has not delivered yet (by default a link
    /// closed tries for a second more). For a link whose other end is gone or restarting:
    /// what was queued for the previous process must not reach the next one.
    pub fn discard(self) {
        let _ = self.sock.set_linger(0);
    }

    /// The link's limits.
    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    /// The link's zeromq context (for in-process sockets beside it).
    pub(crate) fn context(&self) -> zmq::Context {
        self._ctx.clone()
    }

    /// The link's socket, for polling it beside other sockets.
    pub(crate) fn socket(&self) -> &zmq::Socket {
        &self.sock
    }

    /// Sends one message.
    pub fn send(&self, bytes: &[u8]) -> Result<(), TransportError> {
        if bytes.len() > self.cfg.max_frame {
            return Err(TransportError::TooLarge {
                got: bytes.len(),
                limit: self.cfg.max_frame,
            });
        }
        self.sock.send(bytes, 0).map_err(|e| match e {
            zmq::Error::EAGAIN => TransportError::Timeout {
                peer: self.cfg.peer.clone(),
                secs: self.cfg.timeout.as_secs(),
            },
            err => TransportError::Zmq { what: "send", err },
        })
    }

    /// Receives the next message (a timeout is an error).
    pub fn recv(&self) -> Result<Vec<u8>, TransportError> {
        self.sock.recv_bytes(0).map_err(|e| match e {
            zmq::Error::EAGAIN => TransportError::Timeout {
                peer: self.cfg.peer.clone(),
                secs: self.cfg.timeout.as_secs(),
            },
            err => TransportError::Zmq {
                what: "receive",
                err,
            },
        })
    }

    /// Receives with a shorter wait: `Ok(None)` when nothing arrived within `wait`.
    pub fn try_recv(&self, wait: Duration) -> Result<Option<Vec<u8>>, TransportError> {
        let ready = self
            .sock
            .poll(zmq::POLLIN, wait.as_millis().min(i64::MAX as u128) as i64)
            .map_err(zmq_err("poll"))?;
        if ready == 0 {
            return Ok(None);
        }
        self.recv().map(Some)
    }
}

/// The 2PC channel over a link (blocking inside the party's own thread, as the core library's
/// executor runs one party per thread).
impl Transport for Link {
    async fn send(&mut self, msg: Vec<u8>) -> Result<(), ChannelError> {
        Link::send(self, &msg).map_err(|e| ChannelError::Transport(e.to_string()))
    }

    async fn recv(&mut self) -> Result<Vec<u8>, ChannelError> {
        Link::recv(self).map_err(|e| ChannelError::Transport(e.to_string()))
    }
}

/// A server link on a free loopback port, with fresh keys, and clients of it (unit tests).
#[cfg(test)]
pub(crate) struct TestServer {
    /// the server end
    pub server: Link,
    server_keys: KeyPair,
    client_keys: KeyPair,
    cfg: LinkConfig,
}

#[cfg(test)]
impl TestServer {
    /// Opens the server end with `cfg`.
    pub fn new(cfg: LinkConfig) -> Self {
        let (server_keys, client_keys) =
            (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let server = Link::open(
            Role::Server {
                endpoint: "tcp://127.0.0.1:*".into(),
                allow: vec![client_keys.public.clone()],
            },
            &server_keys,
            cfg.clone(),
        )
        .unwrap();
        Self {
            server,
            server_keys,
            client_keys,
            cfg,
        }
    }

    /// A new client link to the server end.
    pub fn client(&self) -> Link {
        Link::open(
            Role::Client {
                endpoint: self.server.endpoint().into(),
                server_public: self.server_keys.public.clone(),
            },
            &self.client_keys,
            self.cfg.clone(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marill_mpc::channel::Channel;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    fn cfg(peer: &str, secs: u64) -> LinkConfig {
        LinkConfig {
            timeout: Duration::from_secs(secs),
            max_frame: 1 << 20,
            peer: peer.into(),
        }
    }

    fn server(own: &KeyPair, allow: &[&KeyPair]) -> Link {
        Link::open(
            Role::Server {
                endpoint: "tcp://127.0.0.1:*".into(),
                allow: allow.iter().map(|k| k.public.clone()).collect(),
            },
            own,
            cfg("client", 5),
        )
        .unwrap()
    }

    fn client(own: &KeyPair, endpoint: &str, server_pub: &str, secs: u64) -> Link {
        Link::open(
            Role::Client {
                endpoint: endpoint.into(),
                server_public: server_pub.into(),
            },
            own,
            cfg("server", secs),
        )
        .unwrap()
    }

    #[test]
    fn channel_round_trip_with_counters() {
        let (sk, ck) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let s = server(&sk, &[&ck]);
        let c = client(&ck, s.endpoint(), &sk.public, 5);
        let t = std::thread::spawn(move || {
            futures::executor::block_on(async move {
                let mut ch = Channel::new(s);
                ch.exchange(&[1, 2, 3], 64).await.unwrap()
            })
        });
        let got = futures::executor::block_on(async move {
            let mut ch = Channel::new(c);
            let v = ch.exchange(&[7, 8, 9], 64).await.unwrap();
            (v, ch.stats())
        });
        assert_eq!(got.0, vec![1, 2, 3]);
        assert_eq!(t.join().unwrap(), vec![7, 8, 9]);
        assert_eq!((got.1.bytes_sent, got.1.rounds), (24, 1));
    }

    #[test]
    fn a_key_off_the_allow_list_gets_nothing_through() {
        let (sk, ck, intruder) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let s = server(&sk, &[&ck]);
        let bad = client(&intruder, s.endpoint(), &sk.public, 1);
        bad.send(b"let me in").unwrap(); // queued; the handshake is refused
        assert!(s.try_recv(Duration::from_millis(1500)).unwrap().is_none());
        assert!(matches!(bad.recv(), Err(TransportError::Timeout { .. })));
    }

    /// Whether a message from a new client holding `who` reaches server `s` within `wait`.
    fn gets_through(s: &Link, server_pub: &str, who: &KeyPair, wait: Duration) -> bool {
        let c = client(who, s.endpoint(), server_pub, 1);
        let msg = who.public.as_bytes().to_vec();
        c.send(&msg).unwrap();
        let got = s.try_recv(wait).unwrap();
        c.discard();
        if let Some(m) = &got {
            assert_eq!(*m, msg);
        }
        got.is_some()
    }

    extern "C" fn ignore_signal(_: libc::c_int) {}

    /// Signals delivered to the ZAP thread interrupt its blocking receive (EINTR, as the
    /// handler is installed without SA_RESTART); the handler survives them, so an unknown key
    /// is still refused and the allowed key still admitted.
    #[test]
    fn signals_to_the_zap_thread_neither_open_nor_close_the_door() {
        let (sk, ck, intruder) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let s = server(&sk, &[&ck]);
        // SAFETY: a no-op handler for SIGUSR1 (nothing else in this crate uses it); the thread
        // signalled is the ZAP thread, alive (or at worst exited but not yet joined).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = 0; // no SA_RESTART
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
            let zap_thread = s._zap.as_ref().unwrap().pthread();
            for _ in 0..10 {
                libc::pthread_kill(zap_thread, libc::SIGUSR1);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            !gets_through(&s, &sk.public, &intruder, Duration::from_millis(1500)),
            "an unknown key got in after the ZAP thread was signalled"
        );
        assert!(gets_through(&s, &sk.public, &ck, Duration::from_secs(5)));
    }

    /// With no ZAP handler bound (its thread stopped, the server socket still open), libzmq
    /// must refuse every CURVE client (ZAP_ENFORCE_DOMAIN), not admit any (fail closed).
    #[test]
    fn with_no_zap_handler_bound_every_client_is_refused() {
        let (sk, ck, intruder) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let mut s = server(&sk, &[&ck]);
        assert!(gets_through(&s, &sk.public, &ck, Duration::from_secs(5)));
        s._zap.as_mut().unwrap().stop_thread();
        assert!(
            !gets_through(&s, &sk.public, &intruder, Duration::from_millis(1500)),
            "an unknown key got in with no ZAP handler bound"
        );
        assert!(!gets_through(
            &s,
            &sk.public,
            &ck,
            Duration::from_millis(1500)
        ));
    }

    #[test]
    fn a_wrong_pinned_server_key_fails() {
        let (sk, ck, other) = (
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
            KeyPair::generate().unwrap(),
        );
        let s = server(&sk, &[&ck]);
        let c = client(&ck, s.endpoint(), &other.public, 1);
        c.send(b"hello").unwrap();
        assert!(s.try_recv(Duration::from_millis(1500)).unwrap().is_none());
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (sk, ck) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let s = server(&sk, &[&ck]);
        let c = client(&ck, s.endpoint(), &sk.public, 5);
        let e = c.send(&vec![0u8; (1 << 20) + 1]).unwrap_err();
        assert!(matches!(e, TransportError::TooLarge { .. }));
    }

    /// A TCP relay between client and server records the bytes on the wire: the payload never
    /// appears in them, while the messages arrive intact.
    #[test]
    fn the_wire_carries_no_plaintext() {
        let (sk, ck) = (KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let s = server(&sk, &[&ck]);
        let port: u16 = s.endpoint().rsplit(':').next().unwrap().parse().unwrap();
        let relay = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_port = relay.local_addr().unwrap().port();
        let wire = Arc::new(Mutex::new(Vec::<u8>::new()));
        let w = wire.clone();
        std::thread::spawn(move || {
            let (mut a, _) = relay.accept().unwrap();
            let mut b = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
            let w2 = w.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = b2.read(&mut buf) {
                    if n == 0 || a2.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    w2.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
            let mut buf = [0u8; 4096];
            while let Ok(n) = a.read(&mut buf) {
                if n == 0 || b.write_all(&buf[..n]).is_err() {
                    break;
                }
                w.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let c = client(&ck, &format!("tcp://127.0.0.1:{relay_port}"), &sk.public, 5);
        let secret = b"THE-SECRET-SHARE-0123456789-THE-SECRET-SHARE".repeat(4);
        c.send(&secret).unwrap();
        assert_eq!(s.recv().unwrap(), secret);
        s.send(&secret).unwrap();
        assert_eq!(c.recv().unwrap(), secret);
        let seen = wire.lock().unwrap().clone();
        assert!(seen.len() > 2 * secret.len(), "the relay saw the traffic");
        assert!(!seen.windows(16).any(|w| w == &secret[..16]));
    }
}

//! The test origin: a real HTTP (or TLS) server that records every request, checks the
//! shared secret and can misbehave on purpose. A panic in any of its threads is raised
//! again when it drops, so it fails the test instead of vanishing.

use std::any::Any;
use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::config::SECRET;
use super::http::{read_message, Conn, Message};
use super::pki::Pki;

/// How long an origin connection may wait for the next byte.
const ORIGIN_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an origin in [`OriginMode::Hang`] holds a request without answering.
const HANG: Duration = Duration::from_secs(30);

/// How the test origin behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginMode {
    /// Check the secret, answer 200 (or 401 without it).
    Normal,
    /// Accept and read the request, never answer.
    Hang,
    /// Answer like `Normal`, after this many milliseconds.
    SlowMs(u64),
    /// Answer with bytes that are not HTTP.
    Garbage,
    /// Send headers announcing a 1000-byte body, 10 bytes of it, then close.
    CutMidBody,
    /// Read nothing for this many milliseconds after accepting, then behave normally.
    SlowReadMs(u64),
}

/// What the origin's threads share with the [`Origin`] handle.
struct Shared {
    requests: Mutex<Vec<Message>>,
    secret: Mutex<String>,
    stop: AtomicBool,
    /// The thread serving each accepted connection.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// A second handle on each connection still being served, to cut it short on drop
    /// (removed when served, so the connection closes when its thread is done with it).
    open: Mutex<HashMap<usize, TcpStream>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleep for `d`, or less if the origin is dropped meanwhile.
    fn pause(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(Duration::from_millis(10)));
        }
    }
}

/// Lock `m` even if a panicking thread poisoned it (the panic itself is re-raised on drop).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A real HTTP origin that records every request and requires the shared secret.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Origin {
    /// Start a plain-HTTP origin.
    pub fn start() -> Origin {
        Origin::start_with(None, OriginMode::Normal)
    }

    /// Start an origin, with TLS when `pki` is given.
    pub fn start_with(pki: Option<&Pki>, mode: OriginMode) -> Origin {
        Origin::serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), pki, mode)
    }

    /// Start a plain-HTTP origin on `addr`: the address of an origin stopped before
    /// (dropped), to bring "the same server" back.
    pub fn start_at(addr: SocketAddr) -> Origin {
        Origin::start_at_with(addr, None)
    }

    /// [`Origin::start_at`], with TLS when `pki` is given.
    pub fn start_at_with(addr: SocketAddr, pki: Option<&Pki>) -> Origin {
        Origin::serve_on(TcpListener::bind(addr).unwrap(), pki, OriginMode::Normal)
    }

    /// Serve on `listener`.
    fn serve_on(listener: TcpListener, pki: Option<&Pki>, mode: OriginMode) -> Origin {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            secret: Mutex::new(SECRET.to_string()),
            stop: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
        });
        let tls = pki.map(Pki::server_config);
        let accepting = shared.clone();
        let accept = thread::spawn(move || {
            for (id, stream) in listener.incoming().enumerate() {
                if accepting.stopping() {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(ORIGIN_READ_TIMEOUT));
                let Ok(socket) = stream.try_clone() else {
                    continue;
                };
                lock(&accepting.open).insert(id, socket);
                let (shared, tls) = (accepting.clone(), tls.clone());
                let thread = thread::spawn(move || {
                    if let Some(cfg) = tls {
                        if let Ok(c) = rustls::ServerConnection::new(cfg) {
                            serve(Box::new(rustls::StreamOwned::new(c, stream)), &shared, mode);
                        }
                    } else {
                        serve(Box::new(stream), &shared, mode);
                    }
                    lock(&shared.open).remove(&id);
                });
                lock(&accepting.threads).push(thread);
            }
        });
        Origin {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Change the secret the origin accepts.
    pub fn set_secret(&self, secret: &str) {
        *lock(&self.shared.secret) = secret.to_string();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Message> {
        lock(&self.shared.requests).clone()
    }

    /// The last request received.
    pub fn last(&self) -> Message {
        self.requests()
            .pop()
            .expect("the origin received no request")
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Number of requests received for paths starting with `prefix`.
    pub fn count_path(&self, prefix: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path().starts_with(prefix))
            .count()
    }
}

impl Drop for Origin {
    /// Stop accepting, cut every connection short, join every thread and re-raise the
    /// first panic among them (unless the test is already panicking).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, blocked in accept(): it sees `stop` and returns.
        let _ = TcpStream::connect(self.addr);
        let mut panic: Option<Box<dyn Any + Send>> = None;
        let accept = self.accept.take();
        if !thread::panicking() {
            if let Some(Err(p)) = accept.map(JoinHandle::join) {
                panic = Some(p);
            }
        }
        // Connection threads blocked in a read wake up on shutdown; pauses watch `stop`.
        for socket in lock(&self.shared.open).values() {
            let _ = socket.shutdown(Shutdown::Both);
        }
        if thread::panicking() {
            return;
        }
        for t in std::mem::take(&mut *lock(&self.shared.threads)) {
            if let Err(p) = t.join() {
                panic.get_or_insert(p);
            }
        }
        if let Some(p) = panic {
            std::panic::resume_unwind(p);
        }
    }
}

/// Serve requests on one connection until it closes, as `mode` says.
fn serve(conn: Box<dyn Conn>, shared: &Shared, mode: OriginMode) {
    if let OriginMode::SlowReadMs(ms) = mode {
        shared.pause(Duration::from_millis(ms));
    }
    let mut r = BufReader::new(conn);
    while let Ok(Some(req)) = read_message(&mut r, false) {
        let ok = req.all("x-shared-secret") == [lock(&shared.secret).clone()];
        lock(&shared.requests).push(req.clone());
        match mode {
            OriginMode::Hang => {
                shared.pause(HANG);
                return;
            }
            OriginMode::SlowMs(ms) => shared.pause(Duration::from_millis(ms)),
            OriginMode::Garbage => {
                let _ = r.get_mut().write_all(b"this is not http at all\r\n\r\n");
                return;
            }
            OriginMode::CutMidBody => {
                let _ = r.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n0123456789",
                );
                let _ = r.get_mut().flush();
                return;
            }
            OriginMode::Normal | OriginMode::SlowReadMs(_) => {}
        }
        let (status, body) = if ok {
            (
                "200 OK",
                format!("{{\"ok\":true,\"path\":\"{}\"}}", req.path()),
            )
        } else {
            (
                "401 Unauthorized",
                "{\"detail\":\"bad secret\"}".to_string(),
            )
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).is_err() || r.get_mut().flush().is_err() {
            return;
        }
    }
}

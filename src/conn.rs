//! Client connections: the PROXY protocol header from trusted balancers, a deadline for
//! every request head, a floor for body rates.
//!
//! Before anything else, a connection from a `server.trusted_proxies` peer may start
//! with a PROXY protocol header naming the real client ([`proxy_header`]).
//!
//! Pingora 0.9 applies its read timeouts to each read, so a client that sends
//! one byte of its request head every few seconds, or trickles a body, holds a
//! connection indefinitely. keygate hands the proxy each accepted connection
//! wrapped in a [`DeadlineStream`] that enforces, on the bytes the client sends:
//!
//! - `server.client_header_timeout_seconds`: from the first byte of a request
//!   head (from the connection's start for the first request) to the end of the
//!   head. Past it keygate answers `408 request_timeout` (a problem document,
//!   then close), or closes without a word when nothing was received.
//! - `server.client_body_min_rate_bytes_per_second`: while a request body is
//!   read, the time spent *waiting on the client* may not exceed
//!   `client_body_timeout_seconds` (the grace) plus one second per `rate` bytes
//!   received, as Apache's `mod_reqtimeout` `body=…,MinRate=…` does. Time the
//!   proxy spends not reading (an origin pushing back) does not count.
//!
//! The wrapper does not parse HTTP (a second parser would be a desync risk of
//! its own): the proxy phases tell it where a head ends ([`DeadlineStream::head_done`]),
//! where a body ends ([`DeadlineStream::body_done`]) and where a request ends
//! ([`DeadlineStream::request_done`]). Both limits are read from the live state
//! whenever a head or body starts, so a reload changes them for the next one.
//! The TLS handshake happens before the wrapper sees the connection and stays
//! under Pingora's own fixed handshake timeout.
//!
//! Over the ~400-line guideline because the deadline stream's read path and its timers
//! are one state machine.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

mod delegate;
pub mod proxy_header;

pub use proxy_header::ProxyHeaderReader;

use crate::state::SharedState;

/// Longest time keygate spends writing a 408 to a client that stopped reading.
const TIMEOUT_RESPONSE_WRITE: Duration = Duration::from_secs(2);

const HEAD_FIRST: u8 = 0;
const IDLE: u8 = 1;
const HEAD: u8 = 2;
const BODY: u8 = 3;
const RESPONSE: u8 = 4;

/// What keygate does when a client is too slow: supplied by the proxy, which owns
/// problem documents, logging and metrics.
pub trait TimeoutReporter: Send + Sync {
    /// Record a request head from `client` that did not complete in time and return the
    /// bytes of a complete `408` response to send, or `None` to close without a word
    /// (nothing of the request was `received`).
    fn head_timeout(&self, received: bool, client: Option<std::net::IpAddr>) -> Option<Vec<u8>>;
    /// Record a request body from `client` cut for arriving below the minimum rate.
    fn body_timeout(&self, client: Option<std::net::IpAddr>);
}

/// A client connection with request-head deadlines and a body rate floor.
pub struct DeadlineStream {
    inner: Stream,
    /// Set by the proxy phases (see the module documentation).
    mode: AtomicU8,
    /// Bytes arrived while a response was in progress (a pipelined next request).
    early_bytes: AtomicBool,
    /// The body was cut for its rate: the proxy answers 408 if it still can.
    body_cut: AtomicBool,
    shared: SharedState,
    reporter: Arc<dyn TimeoutReporter>,
    client: Option<std::net::IpAddr>,
    // Owned by poll_read.
    seen_mode: u8,
    head_deadline: Option<Instant>,
    head_bytes: usize,
    body_bytes: u64,
    body_waited: Duration,
    wait_start: Option<Instant>,
    min_rate: u64,
    grace: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    reply: Option<(Vec<u8>, usize, Instant)>,
    failed: bool,
}

impl std::fmt::Debug for DeadlineStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStream")
            .field("inner", &self.inner)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl DeadlineStream {
    /// Wrap an accepted connection; limits are read from `shared` as heads and bodies start.
    pub fn new(inner: Stream, shared: SharedState, reporter: Arc<dyn TimeoutReporter>) -> Self {
        let client = inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let header_timeout = shared.load().limits.client_header_timeout;
        DeadlineStream {
            inner,
            mode: AtomicU8::new(HEAD_FIRST),
            early_bytes: AtomicBool::new(false),
            body_cut: AtomicBool::new(false),
            shared,
            reporter,
            client,
            seen_mode: HEAD_FIRST,
            head_deadline: Some(Instant::now() + header_timeout),
            head_bytes: 0,
            body_bytes: 0,
            body_waited: Duration::ZERO,
            wait_start: None,
            min_rate: 0,
            grace: Duration::ZERO,
            timer: None,
            reply: None,
            failed: false,
        }
    }

    /// The wrapper under a session's stream, if keygate accepted the connection.
    pub fn of(stream: Option<&Stream>) -> Option<&DeadlineStream> {
        stream.and_then(|s| (**s).as_any().downcast_ref::<DeadlineStream>())
    }

    /// The request head was parsed; `has_body` says whether a body follows.
    pub fn head_done(&self, has_body: bool) {
        self.mode
            .store(if has_body { BODY } else { RESPONSE }, Ordering::Relaxed);
    }

    /// The request body was read to its end.
    pub fn body_done(&self) {
        self.mode.store(RESPONSE, Ordering::Relaxed);
    }

    /// The request is finished (logged); the next bytes start a new request head.
    pub fn request_done(&self) {
        self.mode.store(IDLE, Ordering::Relaxed);
    }

    /// Whether this request's body was cut for arriving too slowly.
    pub fn body_was_cut(&self) -> bool {
        self.body_cut.load(Ordering::Relaxed)
    }

    /// Arm the timer for `at` and poll it; `Ready` when the deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        let at = tokio::time::Instant::from_std(at);
        match &mut self.timer {
            Some(t) => {
                if t.deadline() != at {
                    t.as_mut().reset(at);
                }
            }
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
        match &mut self.timer {
            Some(t) => t.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// Start a mode the phases switched to.
    fn enter(&mut self, mode: u8, now: Instant) {
        self.seen_mode = mode;
        self.wait_start = None;
        match mode {
            BODY => {
                self.body_bytes = 0;
                self.body_waited = Duration::ZERO;
                let limits = self.shared.load().limits;
                self.min_rate = limits.client_body_min_rate;
                self.grace = limits.client_body_timeout;
                self.head_deadline = None;
            }
            IDLE if self.early_bytes.swap(false, Ordering::Relaxed) => {
                self.start_head(now);
            }
            _ => self.head_deadline = None,
        }
    }

    fn start_head(&mut self, now: Instant) {
        self.seen_mode = HEAD;
        self.mode.store(HEAD, Ordering::Relaxed);
        self.head_bytes = 0;
        self.head_deadline = Some(now + self.shared.load().limits.client_header_timeout);
    }

    /// Write the prepared 408 (if any), then fail the read.
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((buf, off, until)) = &mut self.reply {
            let until = *until;
            if Instant::now() >= until {
                break;
            }
            if *off < buf.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &buf[*off..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                    Poll::Ready(Ok(n)) => *off += n,
                    Poll::Pending => {
                        ready!(self.poll_deadline(cx, until));
                        break;
                    }
                }
            } else {
                match Pin::new(&mut self.inner).poll_flush(cx) {
                    Poll::Pending => {
                        ready!(self.poll_deadline(cx, until));
                        break;
                    }
                    Poll::Ready(_) => break,
                }
            }
        }
        self.reply = None;
        self.failed = true;
        Poll::Ready(Err(timed_out("request head not received in time")))
    }

    fn head_timed_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.reporter.head_timeout(self.head_bytes > 0, self.client) {
            Some(response) => {
                self.reply = Some((response, 0, Instant::now() + TIMEOUT_RESPONSE_WRITE));
                self.poll_reply(cx)
            }
            None => {
                // Nothing of this request arrived: close without a word.
                self.failed = true;
                Poll::Ready(Err(timed_out("no request received in time")))
            }
        }
    }

    fn body_cut(&mut self) -> Poll<io::Result<()>> {
        self.reporter.body_timeout(self.client);
        self.body_cut.store(true, Ordering::Relaxed);
        self.failed = true;
        Poll::Ready(Err(timed_out(
            "request body arrived slower than the minimum rate",
        )))
    }

    /// Waiting time allowed for a body of `bytes` so far.
    fn body_allowance(&self) -> Duration {
        self.grace + Duration::from_secs_f64(self.body_bytes as f64 / self.min_rate as f64)
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.reply.is_some() {
            return this.poll_reply(cx);
        }
        if this.failed {
            return Poll::Ready(Err(timed_out("connection timed out")));
        }
        let mode = this.mode.load(Ordering::Relaxed);
        if mode != this.seen_mode {
            this.enter(mode, Instant::now());
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = buf.filled().len() - before;
        match this.seen_mode {
            IDLE => {
                if got > 0 {
                    this.start_head(Instant::now());
                    this.head_bytes = got;
                }
                polled
            }
            RESPONSE => {
                if got > 0 {
                    this.early_bytes.store(true, Ordering::Relaxed);
                }
                polled
            }
            HEAD_FIRST | HEAD => {
                this.head_bytes += got;
                let Some(deadline) = this.head_deadline else {
                    return polled;
                };
                match polled {
                    Poll::Ready(r) => Poll::Ready(r),
                    Poll::Pending => {
                        if Instant::now() >= deadline || this.poll_deadline(cx, deadline).is_ready()
                        {
                            this.head_timed_out(cx)
                        } else {
                            Poll::Pending
                        }
                    }
                }
            }
            _ => {
                // BODY
                if this.min_rate == 0 {
                    return polled;
                }
                let now = Instant::now();
                match polled {
                    Poll::Ready(r) => {
                        if let Some(start) = this.wait_start.take() {
                            this.body_waited += now.saturating_duration_since(start);
                        }
                        this.body_bytes += got as u64;
                        if this.body_waited > this.body_allowance() {
                            return this.body_cut();
                        }
                        Poll::Ready(r)
                    }
                    Poll::Pending => {
                        let start = *this.wait_start.get_or_insert(now);
                        let spent = this.body_waited + now.saturating_duration_since(start);
                        let allowance = this.body_allowance();
                        if spent >= allowance {
                            return this.body_cut();
                        }
                        let at = now + (allowance - spent);
                        if this.poll_deadline(cx, at).is_ready() {
                            return this.body_cut();
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The proxy application as Pingora's listeners see it: a plain connection's PROXY
/// header is read (see [`ProxyHeaderReader`]; TLS listeners read it before their
/// handshake), then every accepted connection is wrapped in a [`DeadlineStream`] before
/// the HTTP proxy reads from it.
pub struct DeadlineApp<A> {
    inner: Arc<A>,
    shared: SharedState,
    reporter: Arc<dyn TimeoutReporter>,
    proxy_header: Arc<ProxyHeaderReader>,
}

impl<A> DeadlineApp<A> {
    /// Wrap `inner` (Pingora's HTTP proxy app), reading limits from `shared` and PROXY
    /// headers through `proxy_header`.
    pub fn new(
        inner: A,
        shared: SharedState,
        reporter: Arc<dyn TimeoutReporter>,
        proxy_header: Arc<ProxyHeaderReader>,
    ) -> Self {
        DeadlineApp {
            inner: Arc::new(inner),
            shared,
            reporter,
            proxy_header,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for DeadlineApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = self.proxy_header.read_plain(stream).await?;
        let wrapped = DeadlineStream::new(stream, self.shared.clone(), self.reporter.clone());
        self.inner.process_new(Box::new(wrapped), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

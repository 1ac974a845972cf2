//! Reading the PROXY protocol header an L4 balancer sends before anything else.
//!
//! With `server.proxy_protocol` `optional` or `required`, a connection to a proxy
//! listener from a `server.trusted_proxies` peer is read for a header
//! ([`crate::proxy_protocol`]) before HTTP, and on TLS listeners before the TLS
//! handshake (through Pingora's pre-TLS hook, [`PreTlsProcess`]). The client it names
//! replaces the peer address in the connection's socket digest, so everything that
//! asks Pingora for the client address (the brute-force limiter, the access log,
//! `X-Forwarded-For`, the trusted-proxy walk) sees the real client. Bytes read past the
//! header (the request or the ClientHello, often in the same segment) are put back.
//!
//! A connection from any other peer is not read at all: a header it sends reaches the
//! HTTP parser (`400`, closed) or the TLS handshake (fails, closed) as the garbage it
//! is, and is never believed. A malformed header, a missing one while `required`, a
//! peer that closes mid-header, or one that takes longer than
//! `server.client_header_timeout_seconds` to send it: the connection is closed.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use tokio::io::AsyncReadExt;

use crate::config::ProxyProtocolMode;
use crate::metrics::ProxyProtocolCounters;
use crate::proxy_protocol::{self, HeaderError, Parsed};
use crate::state::SharedState;

/// Why a connection was closed while its PROXY header was read.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The header was malformed.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// `required`, and the connection started with something else.
    #[error("no PROXY protocol header from a trusted peer (server.proxy_protocol: required)")]
    Missing,
    /// The peer closed the connection before the header was complete.
    #[error("connection closed inside the PROXY protocol header")]
    Closed,
    /// The peer closed the connection without sending a byte (a balancer's TCP health
    /// check does): not counted as refused.
    #[error("connection closed before any byte")]
    Empty,
    /// The header did not arrive within `client_header_timeout_seconds`.
    #[error("PROXY protocol header not received within {0:?}")]
    TimedOut(Duration),
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads PROXY headers from trusted peers, per the live state; shared by the plain
/// listeners ([`super::DeadlineApp`]) and the TLS listeners (the pre-TLS hook).
pub struct ProxyHeaderReader {
    shared: SharedState,
    counters: Option<ProxyProtocolCounters>,
}

impl ProxyHeaderReader {
    /// Read according to `shared` (mode, trusted proxies and header timeout are read
    /// for each connection, so a reload applies to the next one); count outcomes in
    /// `counters` when given.
    pub fn new(shared: SharedState, counters: Option<ProxyProtocolCounters>) -> Self {
        ProxyHeaderReader { shared, counters }
    }

    /// Read the header from an accepted TCP connection, if its peer is trusted and the
    /// mode asks for one; on success the connection's peer address is the client the
    /// header names (unchanged when it names none) and every byte after the header is
    /// still to be read.
    ///
    /// # Errors
    /// [`Refused`]: the connection must be closed.
    pub async fn read(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let (mode, timeout) = {
            let state = self.shared.load();
            let peer = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
            let trusted = peer.is_some_and(|p| state.trusted_proxies.contains(p));
            if state.proxy_protocol == ProxyProtocolMode::Off || !trusted {
                return Ok(());
            }
            (state.proxy_protocol, state.limits.client_header_timeout)
        };
        let outcome = tokio::time::timeout(timeout, read_header(stream, mode))
            .await
            .unwrap_or(Err(Refused::TimedOut(timeout)));
        if let Some(c) = &self.counters {
            match &outcome {
                Ok(true) => c.header.inc(),
                Ok(false) => c.none.inc(),
                Err(Refused::Empty) => {}
                Err(_) => c.refused.inc(),
            }
        }
        if let Err(e) = &outcome {
            log::debug!(target: "keygate::conn", "PROXY protocol: {e}; connection closed");
        }
        outcome.map(|_| ())
    }

    /// [`Self::read`] for a stream Pingora accepted on a plain listener; streams of TLS
    /// listeners (read before their handshake) pass unchanged. `None`: close it.
    pub async fn read_plain(&self, stream: Stream) -> Option<Stream> {
        if !stream.as_any().is::<L4Stream>() {
            return Some(stream);
        }
        let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        self.read(&mut l4).await.ok()?;
        Some(l4)
    }
}

/// Read until a header is complete (`true`), or the bytes are not one (`false`, put
/// back, for `optional`).
async fn read_header(stream: &mut L4Stream, mode: ProxyProtocolMode) -> Result<bool, Refused> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match proxy_protocol::parse(&buf)? {
            Parsed::Header { source, len } => {
                stream.rewind(buf.get(len..).unwrap_or_default());
                if let Some(client) = source {
                    set_peer(stream, client);
                }
                return Ok(true);
            }
            Parsed::NotProxy if mode == ProxyProtocolMode::Required => {
                return Err(Refused::Missing)
            }
            Parsed::NotProxy => {
                stream.rewind(&buf);
                return Ok(false);
            }
            Parsed::Incomplete => {}
        }
        // The parser decides within MAX_HEADER_BYTES, so `buf` stays bounded.
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(if buf.is_empty() {
                Refused::Empty
            } else {
                Refused::Closed
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Make `client` the connection's peer address for everyone who asks Pingora.
fn set_peer(stream: &mut L4Stream, client: SocketAddr) {
    use std::os::fd::AsRawFd;
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    // A fresh cell: `set` cannot fail.
    let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(client)));
    stream.set_socket_digest(digest);
}

#[async_trait]
impl PreTlsProcess for ProxyHeaderReader {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.read(stream).await.map_err(|e| {
            pingora::Error::because(pingora::ErrorType::AcceptError, "PROXY protocol", e)
        })
    }
}

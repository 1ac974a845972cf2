//! Raw HTTP/1.1 on the wire: a message parser, a keep-alive client (plain TCP, TLS, or
//! from a chosen loopback address) and one-shot GETs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};

/// How long one client read may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Something to read from and write to (plain TCP or TLS).
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A parsed HTTP request or response head plus body.
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Request line or status line.
    pub start: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Message {
    /// The response status code.
    pub fn status(&self) -> u16 {
        self.start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The request path (for requests).
    pub fn path(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    /// The first value of header `name`, as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// All values of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one HTTP/1.1 message; `None` on a clean close before any byte.
pub fn read_message(
    r: &mut impl BufRead,
    is_response_to_head: bool,
) -> std::io::Result<Option<Message>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let mut m = Message {
        start: start.trim_end().to_string(),
        ..Default::default()
    };
    loop {
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof in headers",
            ));
        }
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if let Some(i) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..i]).to_ascii_lowercase();
            let value = line[i + 1..].trim_ascii().to_vec();
            m.headers.push((name, value));
        }
    }
    if is_response_to_head || m.status() == 204 || m.status() == 304 {
        return Ok(Some(m));
    }
    let chunked = m
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk size")
                })?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = m.header("content-length") {
        let n: usize = len.parse().unwrap_or(0);
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        m.body = body;
    } else if m.start.starts_with("HTTP/") {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

/// One client connection that can send several requests (keep-alive).
pub struct Client {
    r: BufReader<Box<dyn Conn>>,
    /// The TCP socket underneath (a second handle on it, also under TLS).
    tcp: TcpStream,
    tls: bool,
}

impl Client {
    fn plain(s: TcpStream) -> Client {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            tcp: s.try_clone().unwrap(),
            r: BufReader::new(Box::new(s)),
            tls: false,
        }
    }

    /// Connect over plain TCP.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::plain(TcpStream::connect(addr).unwrap())
    }

    /// Connect from a chosen local loopback address (e.g. 127.0.0.2), to be another client.
    pub fn connect_from(local: &str, addr: SocketAddr) -> Client {
        Client::plain(socket_from(local).connect_std(addr))
    }

    /// Connect over TLS, trusting `ca` for `name`.
    pub fn connect_tls(addr: SocketAddr, ca: &CertificateDer<'static>, name: &str) -> Client {
        Client::connect_tls_after(addr, b"", ca, name)
    }

    /// Connect over TCP, send `preface` (e.g. a PROXY protocol header), then speak TLS,
    /// trusting `ca` for `name`.
    pub fn connect_tls_after(
        addr: SocketAddr,
        preface: &[u8],
        ca: &CertificateDer<'static>,
        name: &str,
    ) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from(name.to_string()).unwrap(),
        )
        .unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(preface).unwrap();
        Client {
            tcp: s.try_clone().unwrap(),
            r: BufReader::new(Box::new(rustls::StreamOwned::new(conn, s))),
            tls: true,
        }
    }

    /// Whether the server closed the connection (EOF or reset) within `within`; bytes
    /// arriving meanwhile are discarded. No single read outlasts `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.tcp.set_read_timeout(Some(left)).unwrap();
            match self.r.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => break true,
            }
        };
        // A reset socket may refuse the option; nothing reads from it any more then.
        let _ = self.tcp.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }

    /// Send raw bytes, reporting a closed connection instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.r.get_mut().write_all(bytes)?;
        self.r.get_mut().flush()
    }

    /// A second handle on a plain-TCP connection, to write from another thread.
    pub fn try_clone_stream(&self) -> TcpStream {
        assert!(!self.tls, "a plain TCP client");
        self.tcp.try_clone().unwrap()
    }

    /// Send raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.r.get_mut().write_all(bytes).unwrap();
        self.r.get_mut().flush().unwrap();
    }

    /// Read one response.
    pub fn read(&mut self) -> std::io::Result<Option<Message>> {
        read_message(&mut self.r, false)
    }

    /// Read one response to a `HEAD` request (no body, whatever its length says).
    pub fn read_head(&mut self) -> std::io::Result<Option<Message>> {
        read_message(&mut self.r, true)
    }

    /// Send a GET for `path` with extra `headers` and read the response.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Message {
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str("Host: gateway.test\r\n");
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.send_raw(req.as_bytes());
        self.read()
            .unwrap()
            .expect("connection closed before a response")
    }
}

/// GET `path` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Message {
    Client::connect(addr).get(path, headers)
}

/// A socket bound to `local` (an address in 127.0.0.0/8) before connecting.
pub struct BoundSocket(SocketAddr);

/// A socket to connect from `local` (std has no bind-before-connect; tokio's TcpSocket does).
pub fn socket_from(local: &str) -> BoundSocket {
    BoundSocket(format!("{local}:0").parse().unwrap())
}

impl BoundSocket {
    /// Connect to `addr` from the bound local address.
    pub fn connect_std(&self, addr: SocketAddr) -> TcpStream {
        // tokio's TcpSocket supports bind-before-connect without an extra dependency.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(self.0).unwrap();
            let stream = sock.connect(addr).await.unwrap();
            let s = stream.into_std().unwrap();
            s.set_nonblocking(false).unwrap();
            s
        })
    }
}

/// Assert that `m` is keygate's problem document for `status` and `code` (RFC 9457, with
/// the request id of its `x-request-id` header), and return its body.
pub fn assert_problem(m: &Message, status: u16, code: &str) -> String {
    assert_eq!(m.status(), status, "{}", m.text());
    assert_eq!(
        m.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let body = m.text();
    assert!(body.contains(&format!("\"code\":\"{code}\"")), "{body}");
    assert!(body.contains(&format!("\"status\":{status}")), "{body}");
    assert!(body.contains("\"type\":\"about:blank\""), "{body}");
    let rid = m
        .header("x-request-id")
        .expect("x-request-id on keygate's own answers");
    assert!(
        body.contains(&format!("\"request_id\":\"{rid}\"")),
        "{body}"
    );
    body
}

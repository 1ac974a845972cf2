//! Test harness: a recording origin, the real keygate binary, and a raw HTTP client.
//!
//! Everything binds `127.0.0.1:0` (or a port reserved that way), waits for
//! readiness by polling with a deadline, and cleans up on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// The secret every test gateway and origin share.
pub const SECRET: &str = "test-shared-secret-0123456789abcdef";
const READY_DEADLINE: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Something to read from and write to (plain TCP or TLS).
pub trait Conn: Read + Write + Send {}
impl<T: Read + Write + Send> Conn for T {}

/// A temporary directory removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// Create a fresh directory unique to this test.
    pub fn new() -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "keygate-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }

    /// Write `name` with `contents`; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// The path of `name` inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ports handed to keygate come from below the kernel's ephemeral range (32768+ on
/// Linux), so a port checked free here and bound by keygate a moment later can never be
/// taken meanwhile by a socket that binds `:0` (test origins, clients).
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for keygate to listen on (see [`PORT_RANGE`]).
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let span = usize::from(PORT_RANGE.end - PORT_RANGE.start);
    // Start somewhere different in each test process.
    let offset = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let i = (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORT_RANGE.start + i as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

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
    tcp: Option<TcpStream>,
}

impl Client {
    /// Connect over plain TCP.
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            tcp: s.try_clone().ok(),
            r: BufReader::new(Box::new(s)),
        }
    }

    /// Connect from a chosen local loopback address (e.g. 127.0.0.2), to be another client.
    pub fn connect_from(local: &str, addr: SocketAddr) -> Client {
        let sock = socket_from(local);
        let s = sock.connect_std(addr);
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            tcp: s.try_clone().ok(),
            r: BufReader::new(Box::new(s)),
        }
    }

    /// Whether the server closed the connection (EOF) within `within`.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.r.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    continue
                }
                Err(_) => return true,
            }
        }
        false
    }

    /// Connect over TLS, trusting `ca` for `name`.
    pub fn connect_tls(addr: SocketAddr, ca: &CertificateDer<'static>, name: &str) -> Client {
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
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            tcp: None,
            r: BufReader::new(Box::new(rustls::StreamOwned::new(conn, s))),
        }
    }

    /// Send raw bytes, reporting a closed connection instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.r.get_mut().write_all(bytes)?;
        self.r.get_mut().flush()
    }

    /// A second handle on a plain-TCP connection, to write from another thread.
    pub fn try_clone_stream(&self) -> TcpStream {
        self.tcp
            .as_ref()
            .expect("a plain TCP client")
            .try_clone()
            .unwrap()
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

/// Certificates for TLS tests: a private CA and a leaf for `localhost`/127.0.0.1.
pub struct Pki {
    /// CA certificate, PEM.
    pub ca_pem: String,
    /// CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Leaf private key, PEM.
    pub key_pem: String,
    leaf_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    /// Generate a CA and a leaf signed by it.
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keygate test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        Pki {
            ca_pem: ca.pem(),
            ca_der: ca.der().clone(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            key_der: leaf_key.serialize_der(),
        }
    }

    /// A self-signed certificate that is its own CA (`CA:TRUE`), as `openssl req -x509`
    /// makes, for `names` (DNS names or IP addresses), valid between the two dates.
    pub fn self_signed(names: &[&str], valid: (i32, i32)) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("origin"),
        );
        params.not_before = rcgen::date_time_ymd(valid.0, 1, 1);
        params.not_after = rcgen::date_time_ymd(valid.1, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A certificate and key made elsewhere (e.g. by the `openssl` command), PEM; the
    /// certificate is also its own trust anchor.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Pki {
        use rustls::pki_types::pem::PemObject;
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let key_der = match key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("expected a PKCS#8 key, got {other:?}"),
        };
        Pki {
            ca_pem: cert_pem.to_string(),
            ca_der: leaf.clone(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            leaf_der: leaf,
            key_der,
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone()], key)
            .unwrap(),
        )
    }
}

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

/// A real HTTP origin that records every request and requires the shared secret.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Message>>>,
    secret: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// Start a plain-HTTP origin.
    pub fn start() -> Origin {
        Origin::start_with(None, OriginMode::Normal)
    }

    /// Start an origin, with TLS when `pki` is given.
    pub fn start_with(pki: Option<&Pki>, mode: OriginMode) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let secret = Arc::new(Mutex::new(SECRET.to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let tls = pki.map(Pki::server_config);
        let (reqs, stop2, secret2) = (requests.clone(), stop.clone(), secret.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let reqs = reqs.clone();
                let secret = secret2.clone();
                let tls = tls.clone();
                thread::spawn(move || {
                    let conn: Box<dyn Conn> = match tls {
                        Some(cfg) => match rustls::ServerConnection::new(cfg) {
                            Ok(c) => Box::new(rustls::StreamOwned::new(c, stream)),
                            Err(_) => return,
                        },
                        None => Box::new(stream),
                    };
                    serve(conn, &reqs, &secret, mode);
                });
            }
        });
        Origin {
            addr,
            requests,
            secret,
            stop,
        }
    }

    /// Change the secret the origin accepts.
    pub fn set_secret(&self, secret: &str) {
        *self.secret.lock().unwrap() = secret.to_string();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Message> {
        self.requests.lock().unwrap().clone()
    }

    /// The last request received.
    pub fn last(&self) -> Message {
        self.requests()
            .pop()
            .expect("the origin received no request")
    }

    /// Number of requests received.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    conn: Box<dyn Conn>,
    reqs: &Mutex<Vec<Message>>,
    secret: &Mutex<String>,
    mode: OriginMode,
) {
    if let OriginMode::SlowReadMs(ms) = mode {
        thread::sleep(Duration::from_millis(ms));
    }
    let mut r = BufReader::new(conn);
    while let Ok(Some(req)) = read_message(&mut r, false) {
        let ok = req.all("x-shared-secret") == [secret.lock().unwrap().clone()];
        reqs.lock().unwrap().push(req.clone());
        match mode {
            OriginMode::Hang => {
                thread::sleep(Duration::from_secs(30));
                return;
            }
            OriginMode::SlowMs(ms) => thread::sleep(Duration::from_millis(ms)),
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

/// A keygate process started from the real binary.
pub struct Gateway {
    /// The plain-HTTP listener.
    pub addr: SocketAddr,
    child: Child,
    stderr: PathBuf,
}

/// Path of the keygate binary under test.
pub fn keygate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keygate")
}

/// A `keygate` command with a clean environment for the secret.
pub fn keygate() -> Command {
    let mut c = Command::new(keygate_bin());
    c.env_remove("KEYGATE_SHARED_SECRET")
        .env("KEYGATE_LOG", "info");
    c
}

/// Run `keygate ARGS --config CONFIG` with the test secret in the environment.
pub fn keygate_with_config(args: &[&str], config: &std::path::Path) -> std::process::Output {
    keygate()
        .args(args)
        .arg("--config")
        .arg(config)
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .output()
        .unwrap()
}

/// Run `keygate run` on `config` (with `env`) expecting it to refuse to start: exit 64.
/// Returns what it printed on stderr.
pub fn run_refused(config: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = keygate()
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    err
}

/// The standard config with upstream `origin` reached over TLS, trusting `ca_file`.
pub fn tls_origin_config(origin: SocketAddr, ca_file: &str) -> String {
    config(origin).replace(
        &format!("address: \"{origin}\","),
        &format!("address: \"{origin}\", tls: true, sni: localhost, ca_file: {ca_file},"),
    )
}

/// The text of a command's standard output and error.
pub fn texts(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Gateway {
    /// Start keygate reading its secret from a file holding `secret_file` (not the environment).
    pub fn start_with_secret_file(
        dir: &TestDir,
        config: &str,
        keys: &str,
        secret_file: &str,
    ) -> Gateway {
        dir.write("secret", secret_file);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = config
            .replace("{listen}", &addr.to_string())
            .replace("env: KEYGATE_SHARED_SECRET", "file: secret");
        let config = dir.write("keygate.yaml", &config);
        dir.write("keys.yaml", keys);
        Gateway::spawn(dir, config, addr, &[])
    }

    /// Start keygate with `config` (YAML text, `{listen}` is replaced by a free address) and `keys`.
    pub fn start(dir: &TestDir, config: &str, keys: &str) -> Gateway {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = dir.write(
            "keygate.yaml",
            &config.replace("{listen}", &addr.to_string()),
        );
        dir.write("keys.yaml", keys);
        Gateway::spawn(dir, config, addr, &[("KEYGATE_SHARED_SECRET", SECRET)])
    }

    /// Spawn the binary for an existing config and wait until `addr` accepts connections.
    pub fn spawn(
        dir: &TestDir,
        config: PathBuf,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Gateway {
        let stderr = dir.path("keygate.stderr");
        let mut cmd = keygate();
        cmd.args(["run", "--config"])
            .arg(&config)
            .envs(env.iter().copied());
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut g = Gateway {
            addr,
            child,
            stderr,
        };
        g.wait_ready(addr);
        // Signals sent before the reloader listens would be ignored: wait for it too.
        g.wait_log("ready to reload the configuration on SIGHUP", 1);
        g
    }

    /// Wrap a keygate child the test started itself (its stderr in `stderr`); waits until
    /// `addr` accepts connections.
    pub fn adopt(child: Child, addr: SocketAddr, stderr: PathBuf) -> Gateway {
        let mut g = Gateway {
            addr,
            child,
            stderr,
        };
        g.wait_ready(addr);
        g
    }

    /// Poll until `addr` accepts a connection, or panic with the log after the deadline.
    pub fn wait_ready(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "keygate exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "keygate did not listen on {addr} within {READY_DEADLINE:?}:\n{}",
            self.log()
        );
    }

    /// Everything keygate wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A standard config: routes for every auth mode, upstream `origin` at `origin`.
pub fn config(origin: SocketAddr) -> String {
    format!(
        r#"
server:
  listen: ["{{listen}}"]
  threads: 1
  metrics_listen: ""
secret:
  env: KEYGATE_SHARED_SECRET
auth:
  keys_file: keys.yaml
upstreams:
  origin: {{ address: "{origin}", connect_timeout_ms: 1000, read_timeout_ms: 1500 }}
routes:
  - {{ name: public, path_prefix: /public, upstream: origin, auth: none }}
  - {{ name: maybe, path_prefix: /maybe, upstream: origin, auth: optional }}
  - {{ name: admin, path_prefix: /admin, upstream: origin, auth: required }}
  - {{ name: api, host: gateway.test, path_prefix: /, upstream: origin, auth: required }}
"#
    )
}

/// Test keys: name → (plain key, keys.yaml snippet).
pub struct Keys {
    /// Plain keys by label.
    pub plain: HashMap<&'static str, String>,
    /// The keys.yaml text.
    pub yaml: String,
}

/// A keys file with: `good` (acme, all routes but admin), `admin` (ops, all routes),
/// `expired`, `disabled` (key disabled), `offconsumer` (consumer disabled), `imported`
/// (a key without the keygate prefix).
pub fn keys() -> Keys {
    let mut plain = HashMap::new();
    for label in ["good", "admin", "expired", "disabled", "offconsumer"] {
        plain.insert(label, keygate::apikey::generate().unwrap());
    }
    plain.insert("imported", "legacy-system-key-0001".to_string());
    let d = |l: &str| hex::encode(keygate::apikey::digest(plain[l].as_bytes()));
    let yaml = format!(
        r#"
consumers:
  - id: acme
    name: ACME Corp
    routes: [api, maybe, public]
    keys:
      - {{ id: acme-good, sha256: "{}" }}
      - {{ id: acme-expired, sha256: "{}", expires_at: 2020-01-01T00:00:00Z }}
      - {{ id: acme-disabled, sha256: "{}", disabled: true }}
      - {{ id: acme-imported, sha256: "{}" }}
  - id: ops
    keys:
      - {{ id: ops-1, sha256: "{}" }}
  - id: gone
    disabled: true
    keys:
      - {{ id: gone-1, sha256: "{}" }}
"#,
        d("good"),
        d("expired"),
        d("disabled"),
        d("imported"),
        d("admin"),
        d("offconsumer"),
    );
    Keys { plain, yaml }
}

impl Gateway {
    /// Send SIGHUP (reload) to the gateway.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Poll until the log contains `needle` `n` times, or panic after the deadline.
    pub fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= n {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("log never had {n}× {needle:?}:\n{}", self.log());
    }
}

impl Gateway {
    /// Send `signal` (e.g. "TERM") to the gateway.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }
}

/// Fetch `/metrics` from a metrics listener and return the body.
pub fn scrape(addr: SocketAddr) -> String {
    let r = Client::connect(addr).get("/metrics", &[("Host", "metrics")]);
    assert_eq!(r.status(), 200);
    r.text()
}

/// The value of the sample whose line starts with `series` (name plus labels), or 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Scrape until `series` reaches `value` (metrics are recorded after the response is sent),
/// then return the exposition; panics with the last scrape after the deadline.
pub fn scrape_until(addr: SocketAddr, series: &str, value: f64) -> String {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let text = scrape(addr);
        if sample(&text, series) == value || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A socket bound to `local` (an address in 127.0.0.0/8) before connecting.
pub struct BoundSocket(std::net::SocketAddr);

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

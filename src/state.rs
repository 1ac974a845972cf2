//! The runtime snapshot the request path reads: validated, prepared, immutable.
//!
//! [`load`] reads `keygate.yaml`, the keys file and the secret, checks them as a
//! whole (collecting *every* problem before failing) and builds a [`State`]:
//! routes with parsed matchers, upstreams as ready-to-clone `HttpPeer`s, the key
//! index, and pre-built header values. Nothing string-typed or optional that the
//! request path would have to re-check survives into `State`. A `State` is never
//! mutated; a reload builds a new one and swaps it in ([`SharedState`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora::upstreams::peer::HttpPeer;

use crate::config::{
    resolve_relative, AuthMode, Config, ConfigError, ConsumerConfig, KeysFile, Location, Problem,
    SecretConfig,
};
use crate::forwarded::TrustedProxies;
use crate::keystore::{decode_digest, KeyIndex, KeyIndexBuilder};
use crate::metrics::Handles;
use crate::timestamp;
use crate::tls::{ExpectedName, OriginTrust};

/// The state shared by every request and replaced whole by a reload.
pub type SharedState = Arc<ArcSwap<State>>;

/// Headers keygate owns on the way to the origin; client-sent copies are always removed.
pub use crate::headers::IDENTITY as IDENTITY_HEADERS;

/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Why header names with `_` are refused in the configuration.
const UNDERSCORE: &str =
    "header names containing `_` are removed from every request (as nginx does); use `-`";
/// Longest key id accepted (it is forwarded in a header and logged).
const MAX_ID_LEN: usize = 128;

/// One route, ready to match.
#[derive(Debug)]
pub struct Route {
    /// The configured name.
    pub name: String,
    /// Lower-case host to match, without port; `None` matches any host.
    pub host: Option<String>,
    /// Path prefix, matched at a segment boundary.
    pub path_prefix: String,
    /// Index into [`State::upstreams`].
    pub upstream: usize,
    /// How keys are treated.
    pub auth: AuthMode,
    /// Match `path_prefix` without regard to ASCII case (the upstream's origin does).
    pub case_insensitive: bool,
}

impl Route {
    /// Whether this route matches a request for `host` (canonical: lower-case, no port,
    /// no trailing dot) and `path` (canonical, see [`crate::path::canonical`]).
    pub fn matches(&self, host: &[u8], path: &[u8]) -> bool {
        if let Some(h) = &self.host {
            if !h.as_bytes().eq_ignore_ascii_case(host) {
                return false;
            }
        }
        let prefix = self.path_prefix.as_bytes();
        let starts = match path.get(..prefix.len()) {
            Some(head) if self.case_insensitive => head.eq_ignore_ascii_case(prefix),
            Some(head) => head == prefix,
            None => false,
        };
        if !starts {
            return false;
        }
        // Segment boundary: "/api" matches "/api" and "/api/x", not "/apix".
        prefix.ends_with(b"/") || matches!(path.get(prefix.len()), None | Some(b'/'))
    }
}

/// One upstream, with its peer built once at load.
pub struct Upstream {
    /// The configured name.
    pub name: String,
    /// The peer cloned for each request (address already resolved).
    pub peer: HttpPeer,
    /// `Host` to send instead of the client's, when configured.
    pub host_header: Option<HeaderValue>,
    /// How the origin's certificate is verified, for TLS upstreams.
    pub trust: Option<Arc<OriginTrust>>,
    /// The origin matches paths without regard to ASCII case.
    pub case_insensitive_paths: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("address", &self.peer._address)
            .finish()
    }
}

/// One consumer with its identity headers pre-built.
#[derive(Debug)]
pub struct Consumer {
    /// The configured id.
    pub id: String,
    /// `x-consumer-id` value.
    pub id_header: HeaderValue,
    /// `x-consumer-username` value, when a name is set.
    pub name_header: Option<HeaderValue>,
    /// Every key of this consumer is disabled.
    pub disabled: bool,
    /// `allowed[route_index]`; `None` means all routes.
    pub allowed: Option<Box<[bool]>>,
}

impl Consumer {
    /// Whether this consumer may use route `route`.
    pub fn may_use(&self, route: usize) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|a| a.get(route).copied().unwrap_or(false))
    }
}

/// The shared secret header, ready to insert. Its `Debug` never shows the value.
pub struct Secret {
    /// Header name.
    pub header: HeaderName,
    /// The same name as shared bytes, for inserting without a copy per request.
    pub header_case: Bytes,
    /// Header value, marked sensitive.
    pub value: HeaderValue,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {{ header: {}, value: <redacted> }}", self.header)
    }
}

/// One credential source, parsed.
#[derive(Debug, Clone)]
pub struct Source {
    /// Header to read.
    pub header: HeaderName,
    /// Required scheme (e.g. `Bearer`), compared case-insensitively.
    pub scheme: Option<Box<[u8]>>,
}

/// Counts for `keygate check` and the key gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Usable keys.
    pub active: usize,
    /// Keys past their expiry.
    pub expired: usize,
    /// Keys disabled directly or through their consumer.
    pub disabled: usize,
}

/// Per-request limits, reloadable.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Idle seconds allowed between requests on a client connection.
    pub keepalive_timeout_seconds: u64,
    /// Longest wait for the next piece of a request body.
    pub client_body_timeout: Duration,
    /// Longest time from the first byte of a request head to its end.
    pub client_header_timeout: Duration,
    /// Minimum request-body rate in bytes per second; 0 disables.
    pub client_body_min_rate: u64,
    /// Largest request line plus headers, in bytes.
    pub max_request_header_bytes: usize,
    /// Most request headers.
    pub max_request_headers: usize,
    /// Brute-force policy.
    pub brute_force: crate::limiter::Policy,
}

/// Everything the request path needs, validated and prepared.
#[derive(Debug)]
pub struct State {
    /// Routes in match order.
    pub routes: Vec<Route>,
    /// Upstreams referenced by routes.
    pub upstreams: Vec<Upstream>,
    /// Consumers referenced by keys.
    pub consumers: Vec<Consumer>,
    /// The key index.
    pub keys: KeyIndex,
    /// The shared secret.
    pub secret: Secret,
    /// Credential sources, in order.
    pub sources: Vec<Source>,
    /// Metric handles for this state's routes, consumers and upstreams.
    pub handles: Handles,
    /// Request limits and timeouts.
    pub limits: Limits,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
}

impl State {
    /// Find the first route matching `host` (no port) and `path`.
    pub fn route(&self, host: &[u8], path: &[u8]) -> Option<usize> {
        self.routes.iter().position(|r| r.matches(host, path))
    }

    /// Count keys by state at time `now` (Unix seconds).
    pub fn key_counts(&self, now: i64) -> KeyCounts {
        let mut c = KeyCounts::default();
        for e in self.keys.entries() {
            let consumer_disabled = self
                .consumers
                .get(e.consumer as usize)
                .is_none_or(|c| c.disabled);
            if e.disabled || consumer_disabled {
                c.disabled += 1;
            } else if e.expires_at <= now {
                c.expired += 1;
            } else {
                c.active += 1;
            }
        }
        c
    }
}

/// A loaded configuration: the file model (for restart-only settings) and the runtime state.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed `keygate.yaml`.
    pub config: Config,
    /// The state built from it.
    pub state: State,
    /// Non-fatal remarks (e.g. a short secret), never containing secrets.
    pub warnings: Vec<String>,
}

/// Read and validate `keygate.yaml`, its keys file and its secret, and build the state.
pub fn load(config_path: &Path) -> Result<Loaded, ConfigError> {
    let config = Config::load(config_path)?;
    let keys_path = resolve_relative(config_path, &config.auth.keys_file);
    let keys_text = crate::config::read(&keys_path)?;
    if keys_text.trim().is_empty() {
        // Most likely caught between truncation and write: never read it as "no keys".
        return Err(ConfigError::one(
            &keys_path,
            "",
            "the keys file is empty (caught mid-write?); write `consumers: []` to run with no keys",
        ));
    }
    let secret = read_secret(&config.secret, config_path)?;
    let mut warnings = Vec::new();
    if secret.len() < 16 {
        warnings.push(format!(
            "the shared secret is only {} characters long; use at least 32 random characters",
            secret.len()
        ));
    }
    // About 90 bytes of YAML or JSON per key: reserve once instead of growing a million times.
    let capacity = keys_text.len() / 90;
    let state = build_with(
        &config,
        config_path,
        &keys_path,
        secret.as_bytes(),
        capacity,
        |add| crate::config::for_each_consumer(&keys_text, &keys_path, add),
    )?;
    Ok(Loaded {
        config,
        state,
        warnings,
    })
}

/// Read the secret from the environment variable or file the config names.
pub fn read_secret(sc: &SecretConfig, config_path: &Path) -> Result<String, ConfigError> {
    let field = |f: &str| format!("secret.{f}");
    match (&sc.env, &sc.file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(ConfigError::one(
                config_path,
                field("env"),
                format!("environment variable {var} is empty; keygate never proxies without the shared secret"),
            )),
            Err(_) => Err(ConfigError::one(
                config_path,
                field("env"),
                format!("environment variable {var} is not set; keygate never proxies without the shared secret"),
            )),
        },
        (None, Some(file)) => {
            let path = resolve_relative(config_path, file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::one(
                    config_path,
                    field("file"),
                    format!("cannot read secret file {}: {e}", path.display()),
                )
            })?;
            let v = text.strip_suffix('\n').unwrap_or(&text);
            let v = v.strip_suffix('\r').unwrap_or(v);
            if v.is_empty() {
                return Err(ConfigError::one(
                    config_path,
                    field("file"),
                    format!("secret file {} is empty; keygate never proxies without the shared secret", path.display()),
                ));
            }
            Ok(v.to_string())
        }
        _ => Err(ConfigError::one(
            config_path,
            "secret",
            "set exactly one of `env` and `file`",
        )),
    }
}

/// Collects problems so every one is reported, not just the first.
struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    fn add(&mut self, file: &Path, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            at: Location {
                file: file.to_path_buf(),
                line_col: None,
                field: field.into(),
            },
            message: message.into(),
        });
    }
}

/// Whether `s` is a valid id: 1–128 of `[A-Za-z0-9._-]`.
pub fn valid_id(s: &str) -> bool {
    const OK: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let c = i as u8;
            t[i] = c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-';
            i += 1;
        }
        t
    };
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| OK[usize::from(b)])
}

/// Split `host:port` / `[v6]:port` into host and port.
fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// Build the state from parsed files, checking everything that needs the whole picture.
pub fn build(
    config: &Config,
    config_path: &Path,
    keys: &KeysFile,
    keys_path: &Path,
    secret: &[u8],
) -> Result<State, ConfigError> {
    let capacity = keys.consumers.iter().map(|c| c.keys.len()).sum();
    build_with(config, config_path, keys_path, secret, capacity, |add| {
        for (ci, c) in keys.consumers.iter().enumerate() {
            add(ci, c);
        }
        Ok(())
    })
}

/// Something that hands consumers to the state builder one at a time.
type Feed<'f> = &'f mut dyn FnMut(usize, &ConsumerConfig);

/// Build the state, taking consumers from `feed` (a parsed file or a streaming parser).
/// `key_capacity` is a hint for how many keys to expect.
fn build_with(
    config: &Config,
    config_path: &Path,
    keys_path: &Path,
    secret: &[u8],
    key_capacity: usize,
    feed: impl FnOnce(Feed<'_>) -> Result<(), ConfigError>,
) -> Result<State, ConfigError> {
    let mut p = Problems { list: Vec::new() };
    let cfg = config_path;

    // server: validated here so `check` reports it, though only a restart applies it.
    if config.server.listen.is_empty() && config.server.tls_listen.is_empty() {
        p.add(
            cfg,
            "server.listen",
            "no listener: set `listen` or `tls_listen`",
        );
    }
    for (i, a) in config.server.listen.iter().enumerate() {
        if a.parse::<SocketAddr>().is_err() {
            p.add(
                cfg,
                format!("server.listen[{i}]"),
                format!("`{a}` is not an ip:port address"),
            );
        }
    }
    for (i, t) in config.server.tls_listen.iter().enumerate() {
        let f = format!("server.tls_listen[{i}]");
        if t.address.parse::<SocketAddr>().is_err() {
            p.add(
                cfg,
                format!("{f}.address"),
                format!("`{}` is not an ip:port address", t.address),
            );
        }
        let cert = resolve_relative(cfg, &t.cert);
        let key = resolve_relative(cfg, &t.key);
        if cert.to_str().is_none() || key.to_str().is_none() {
            p.add(cfg, &f, "paths must be UTF-8");
        } else if let Err(e) = crate::tls::check_listener_files(&cert, &key) {
            p.add(cfg, &f, e);
        }
    }
    if config.server.threads == 0 {
        p.add(cfg, "server.threads", "must be at least 1");
    }
    for (field, value) in [
        (
            "keepalive_timeout_seconds",
            config.server.keepalive_timeout_seconds,
        ),
        (
            "client_body_timeout_seconds",
            config.server.client_body_timeout_seconds,
        ),
        (
            "client_header_timeout_seconds",
            config.server.client_header_timeout_seconds,
        ),
        (
            "max_request_header_bytes",
            config.server.max_request_header_bytes as u64,
        ),
        (
            "max_request_headers",
            config.server.max_request_headers as u64,
        ),
    ] {
        if value == 0 {
            p.add(cfg, format!("server.{field}"), "must be greater than 0");
        }
    }
    if config.auth.brute_force.max_failures > 0 && config.auth.brute_force.window_seconds == 0 {
        p.add(
            cfg,
            "auth.brute_force.window_seconds",
            "must be greater than 0",
        );
    }
    let trusted_proxies = match TrustedProxies::parse(&config.server.trusted_proxies) {
        Ok(t) => t,
        Err((i, bad)) => {
            p.add(
                cfg,
                format!("server.trusted_proxies[{i}]"),
                format!("`{bad}` is not an IP address or CIDR block (e.g. 10.0.0.0/8)"),
            );
            TrustedProxies::default()
        }
    };
    let ml = &config.server.metrics_listen;
    if !ml.is_empty() && ml.parse::<SocketAddr>().is_err() {
        p.add(
            cfg,
            "server.metrics_listen",
            format!("`{ml}` is not an ip:port address (or empty to disable)"),
        );
    }

    // secret
    let secret_header = HeaderName::from_bytes(config.secret.header.as_bytes()).ok();
    if secret_header.is_none() {
        p.add(
            cfg,
            "secret.header",
            format!("`{}` is not a valid header name", config.secret.header),
        );
    }
    let secret_value = HeaderValue::from_bytes(secret)
        .ok()
        .filter(|_| secret.iter().all(|b| b.is_ascii_graphic()));
    if secret_value.is_none() {
        p.add(
            cfg,
            "secret",
            "the secret must be printable ASCII without spaces",
        );
    }
    if let Some(h) = &secret_header {
        if h.as_str().contains('_') {
            p.add(cfg, "secret.header", UNDERSCORE);
        }
        if IDENTITY_HEADERS.contains(&h.as_str()) {
            p.add(
                cfg,
                "secret.header",
                "must not be one of keygate's identity headers",
            );
        }
    }

    // sources
    let mut sources = Vec::new();
    let mut seen_headers = HashSet::new();
    if config.auth.sources.is_empty() {
        p.add(
            cfg,
            "auth.sources",
            "at least one credential source is needed",
        );
    }
    for (i, s) in config.auth.sources.iter().enumerate() {
        let f = format!("auth.sources[{i}].header");
        match HeaderName::from_bytes(s.header.as_bytes()) {
            Ok(h) => {
                if !seen_headers.insert(h.clone()) {
                    p.add(cfg, &f, format!("`{}` is listed twice", s.header));
                }
                if h.as_str().contains('_') {
                    p.add(cfg, &f, UNDERSCORE);
                }
                if Some(&h) == secret_header.as_ref() || crate::headers::is_client_claim(h.as_str())
                {
                    p.add(
                        cfg,
                        &f,
                        "must not be the secret header or a header keygate removes from clients",
                    );
                }
                let scheme = match &s.scheme {
                    Some(sc)
                        if sc.is_empty()
                            || !sc
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)) =>
                    {
                        p.add(
                            cfg,
                            format!("auth.sources[{i}].scheme"),
                            format!("`{sc}` is not a valid auth scheme"),
                        );
                        None
                    }
                    Some(sc) => Some(sc.as_bytes().to_vec().into_boxed_slice()),
                    None => None,
                };
                sources.push(Source { header: h, scheme });
            }
            Err(_) => p.add(
                cfg,
                &f,
                format!("`{}` is not a valid header name", s.header),
            ),
        }
    }

    // upstreams
    let mut upstreams = Vec::new();
    let mut upstream_index = HashMap::new();
    for (name, u) in &config.upstreams {
        let f = format!("upstreams.{name}");
        if !valid_id(name) {
            p.add(cfg, &f, "names may contain only A-Z a-z 0-9 . _ -");
        }
        let Some((host, port)) = split_host_port(&u.address) else {
            p.add(
                cfg,
                format!("{f}.address"),
                format!("`{}` is not host:port", u.address),
            );
            continue;
        };
        let addr = match (host, port).to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                p.add(
                    cfg,
                    format!("{f}.address"),
                    format!("cannot resolve `{host}`"),
                );
                continue;
            }
        };
        // The name the certificate must carry: `sni` when set, else the address's host.
        let expected = match (u.sni.as_str(), host.parse::<IpAddr>()) {
            ("", Ok(ip)) => ExpectedName::Ip(ip),
            ("", Err(_)) => ExpectedName::Dns(host.to_string()),
            (sni, _) => match sni.parse::<IpAddr>() {
                Ok(ip) => ExpectedName::Ip(ip),
                Err(_) => ExpectedName::Dns(sni.to_string()),
            },
        };
        // SNI carries DNS names only (RFC 6066 §3).
        let sni = match &expected {
            ExpectedName::Dns(n) => n.clone(),
            ExpectedName::Ip(_) => String::new(),
        };
        let mut peer = HttpPeer::new(addr, u.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
        o.total_connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
        o.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        o.write_timeout = Some(Duration::from_millis(u.read_timeout_ms));
        o.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
        if u.connect_timeout_ms == 0 || u.read_timeout_ms == 0 {
            p.add(cfg, &f, "timeouts must be greater than 0");
        }
        let ca = match &u.ca_file {
            Some(_) if !u.tls => {
                p.add(
                    cfg,
                    format!("{f}.ca_file"),
                    "only meaningful with `tls: true`",
                );
                None
            }
            Some(ca) => match crate::tls::load_pem_certs(&resolve_relative(cfg, ca)) {
                Ok(certs) => Some(certs),
                Err(e) => {
                    p.add(cfg, format!("{f}.ca_file"), e);
                    continue;
                }
            },
            None => None,
        };
        let mut trust = None;
        if u.tls {
            match OriginTrust::new(ca.as_deref(), expected) {
                Ok(t) => {
                    // keygate verifies the certificate itself (see `crate::tls`): Pingora's
                    // in-handshake check cannot verify IP SANs or name a failure's reason.
                    let t = Arc::new(t);
                    o.verify_cert = false;
                    o.verify_hostname = false;
                    o.upstream_tls_handshake_complete_hook =
                        Some(crate::tls::verification_hook(t.clone()));
                    peer.group_key = t.fingerprint();
                    trust = Some(t);
                }
                Err(e) => p.add(cfg, format!("{f}.ca_file"), e),
            }
        }
        let host_header = match &u.host_header {
            Some(h) => match HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => Some(v),
                _ => {
                    p.add(
                        cfg,
                        format!("{f}.host_header"),
                        format!("`{h}` is not a valid Host"),
                    );
                    None
                }
            },
            None => None,
        };
        upstream_index.insert(name.as_str(), upstreams.len());
        upstreams.push(Upstream {
            name: name.clone(),
            peer,
            host_header,
            trust,
            case_insensitive_paths: u.case_insensitive_paths,
        });
    }

    // routes
    let mut routes = Vec::new();
    let mut route_index = HashMap::new();
    if config.routes.is_empty() {
        p.add(cfg, "routes", "at least one route is needed");
    }
    for (i, r) in config.routes.iter().enumerate() {
        let f = format!("routes[{i}]");
        if !valid_id(&r.name) {
            p.add(
                cfg,
                format!("{f}.name"),
                "names may contain only A-Z a-z 0-9 . _ -",
            );
        }
        if route_index.insert(r.name.as_str(), i).is_some() {
            p.add(
                cfg,
                format!("{f}.name"),
                format!("route `{}` is defined twice", r.name),
            );
        }
        match crate::path::canonical(r.path_prefix.as_bytes()) {
            Ok(None) => {}
            Ok(Some(c)) => p.add(
                cfg,
                format!("{f}.path_prefix"),
                format!(
                    "`{}` is not in canonical form; keygate routes on canonical paths, write `{}`",
                    r.path_prefix,
                    String::from_utf8_lossy(&c)
                ),
            ),
            Err(_) if !r.path_prefix.starts_with('/') => {
                p.add(cfg, format!("{f}.path_prefix"), "must start with `/`")
            }
            Err(e) => p.add(
                cfg,
                format!("{f}.path_prefix"),
                format!(
                    "`{}` can never match a request: keygate refuses such paths ({e:?})",
                    r.path_prefix
                ),
            ),
        }
        let host = match &r.host {
            Some(h) => match crate::host::canonical(h.as_bytes()) {
                Ok(a) if a.as_bytes() == a.host() => {
                    Some(String::from_utf8_lossy(a.host()).into_owned())
                }
                _ => {
                    p.add(
                        cfg,
                        format!("{f}.host"),
                        format!("`{h}` is not a host name (no port, no scheme)"),
                    );
                    None
                }
            },
            None => None,
        };
        let upstream = match upstream_index.get(r.upstream.as_str()) {
            Some(&u) => u,
            None => {
                if !config.upstreams.contains_key(&r.upstream) {
                    p.add(
                        cfg,
                        format!("{f}.upstream"),
                        format!("unknown upstream `{}`", r.upstream),
                    );
                }
                0
            }
        };
        routes.push(Route {
            name: r.name.clone(),
            host,
            path_prefix: r.path_prefix.clone(),
            upstream,
            auth: r.auth,
            case_insensitive: upstreams
                .get(upstream)
                .is_some_and(|u| u.case_insensitive_paths),
        });
    }

    // consumers and keys, streamed one consumer at a time
    let mut keys = KeysBuilder::new(keys_path, &route_index, config.routes.len(), key_capacity);
    if let Err(e) = feed(&mut |ci, c| keys.add(ci, c)) {
        match e {
            ConfigError::Invalid(list) => p.list.extend(list),
            read => return Err(read),
        }
    }
    let (consumers, index, problems) = keys.finish();
    p.list.extend(problems.list);

    if !p.list.is_empty() {
        return Err(ConfigError::Invalid(p.list));
    }
    let (Some(header), Some(mut value)) = (secret_header, secret_value) else {
        return Err(ConfigError::one(cfg, "secret", "invalid secret"));
    };
    value.set_sensitive(true);
    Ok(State {
        routes,
        upstreams,
        consumers,
        keys: index,
        secret: Secret {
            header_case: Bytes::copy_from_slice(header.as_str().as_bytes()),
            header,
            value,
        },
        sources,
        handles: Handles::default(),
        trusted_proxies,
        limits: Limits {
            keepalive_timeout_seconds: config.server.keepalive_timeout_seconds,
            client_body_timeout: Duration::from_secs(config.server.client_body_timeout_seconds),
            client_header_timeout: Duration::from_secs(config.server.client_header_timeout_seconds),
            client_body_min_rate: config.server.client_body_min_rate_bytes_per_second,
            max_request_header_bytes: config.server.max_request_header_bytes,
            max_request_headers: config.server.max_request_headers,
            brute_force: crate::limiter::Policy {
                max_failures: config.auth.brute_force.max_failures,
                window_seconds: config.auth.brute_force.window_seconds,
            },
        },
    })
}

/// Builds consumers and the key index one consumer at a time, collecting problems.
struct KeysBuilder<'a> {
    file: &'a Path,
    route_index: &'a HashMap<&'a str, usize>,
    n_routes: usize,
    consumers: Vec<Consumer>,
    consumer_ids: HashSet<String>,
    index: KeyIndexBuilder,
    problems: Problems,
}

impl<'a> KeysBuilder<'a> {
    fn new(
        file: &'a Path,
        route_index: &'a HashMap<&'a str, usize>,
        n_routes: usize,
        capacity: usize,
    ) -> Self {
        KeysBuilder {
            file,
            route_index,
            n_routes,
            consumers: Vec::new(),
            consumer_ids: HashSet::new(),
            index: KeyIndexBuilder::with_capacity(capacity),
            problems: Problems { list: Vec::new() },
        }
    }

    fn add(&mut self, ci: usize, c: &ConsumerConfig) {
        let kp = self.file;
        let p = &mut self.problems;
        let f = |leaf: &str| format!("consumers[{ci}]{leaf}");
        if !valid_id(&c.id) {
            p.add(
                kp,
                f(".id"),
                "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
            );
        }
        if !self.consumer_ids.insert(c.id.clone()) {
            p.add(
                kp,
                f(".id"),
                format!("consumer `{}` is defined twice", c.id),
            );
        }
        let name_header = match &c.name {
            Some(n) => match HeaderValue::from_str(n) {
                Ok(v) if n.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) => Some(v),
                _ => {
                    p.add(kp, f(".name"), "must be printable ASCII");
                    None
                }
            },
            None => None,
        };
        let allowed = c.routes.as_ref().map(|names| {
            let mut allowed = vec![false; self.n_routes].into_boxed_slice();
            for (ri, n) in names.iter().enumerate() {
                match self.route_index.get(n.as_str()) {
                    Some(&idx) => allowed[idx] = true,
                    None => p.add(
                        kp,
                        f(&format!(".routes[{ri}]")),
                        format!("unknown route `{n}`"),
                    ),
                }
            }
            allowed
        });
        let consumer_idx = u32::try_from(self.consumers.len()).unwrap_or(u32::MAX);
        for (ki, k) in c.keys.iter().enumerate() {
            // Field paths are built only when a problem is reported (1M keys, 1M strings).
            let kf = |leaf: &str| format!("consumers[{ci}].keys[{ki}]{leaf}");
            if !valid_id(&k.id) {
                p.add(
                    kp,
                    kf(".id"),
                    "ids may contain only A-Z a-z 0-9 . _ - (at most 128)",
                );
                continue;
            }
            if !self.index.insert_id(&k.id) {
                p.add(kp, kf(".id"), format!("key id `{}` is used twice", k.id));
            }
            let mut digest = [0u8; 32];
            if !decode_digest(k.sha256.as_bytes(), &mut digest) {
                p.add(
                    kp,
                    kf(".sha256"),
                    "must be 64 hex characters (the SHA-256 of the key; see `keygate hash`)",
                );
                continue;
            }
            let expires_at = match &k.expires_at {
                Some(t) => {
                    match timestamp::parse_rfc3339(t) {
                        Some(t) => t,
                        None => {
                            p.add(kp, kf(".expires_at"), format!("`{t}` is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z"));
                            continue;
                        }
                    }
                }
                None => i64::MAX,
            };
            if let Some((other_id, same)) = self.index.conflict(&digest) {
                let message = if same {
                    format!("the same key digest is already used by key `{other_id}`")
                } else {
                    format!("digest collides with key `{other_id}` in its first 8 bytes; generate a new key")
                };
                p.add(kp, kf(".sha256"), message);
                continue;
            }
            if !self
                .index
                .push(digest, expires_at, consumer_idx, &k.id, k.disabled)
            {
                p.add(kp, kf(""), "too many keys");
            }
        }
        self.consumers.push(Consumer {
            id: c.id.clone(),
            id_header: HeaderValue::from_str(&c.id).unwrap_or(HeaderValue::from_static("invalid")),
            name_header,
            disabled: c.disabled,
            allowed,
        });
    }

    fn finish(self) -> (Vec<Consumer>, KeyIndex, Problems) {
        (self.consumers, self.index.finish(), self.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    pub(crate) const CONFIG: &str = r#"
secret: { env: KG_UNUSED }
auth: { keys_file: keys.yaml }
upstreams:
  origin: { address: "127.0.0.1:8000" }
routes:
  - { name: admin, path_prefix: /admin, upstream: origin, auth: required }
  - { name: public, path_prefix: /public, upstream: origin, auth: none }
  - { name: api, path_prefix: /, upstream: origin, auth: required }
"#;

    fn keys_yaml() -> String {
        format!(
            r#"
consumers:
  - id: acme
    name: ACME Corp
    routes: [api]
    keys:
      - {{ id: acme-1, sha256: "{}" }}
      - {{ id: acme-old, sha256: "{}", expires_at: 2020-01-01T00:00:00Z }}
  - id: off
    disabled: true
    keys:
      - {{ id: off-1, sha256: "{}" }}
"#,
            hex::encode(crate::apikey::digest(b"key-one")),
            hex::encode(crate::apikey::digest(b"key-old")),
            hex::encode(crate::apikey::digest(b"key-off")),
        )
    }

    fn build_from(config: &str, keys: &str) -> Result<State, ConfigError> {
        let c = Config::from_yaml(config, Path::new("keygate.yaml"))?;
        let k = KeysFile::from_yaml(keys, Path::new("keys.yaml"))?;
        build(
            &c,
            Path::new("keygate.yaml"),
            &k,
            Path::new("keys.yaml"),
            b"0123456789abcdef",
        )
    }

    #[test]
    fn builds_and_counts() {
        let s = build_from(CONFIG, &keys_yaml()).unwrap();
        assert_eq!(s.routes.len(), 3);
        assert_eq!(s.keys.len(), 3);
        let c = s.key_counts(timestamp::now_unix());
        assert_eq!(
            c,
            KeyCounts {
                active: 1,
                expired: 1,
                disabled: 1
            }
        );
        let (idx, e) = s.keys.lookup(&crate::apikey::digest(b"key-one")).unwrap();
        assert_eq!(s.keys.id(idx), "acme-1");
        assert_eq!(s.keys.id_header(idx).unwrap(), "acme-1");
        assert_eq!(s.consumers[e.consumer as usize].id, "acme");
        assert!(s.keys.lookup(&crate::apikey::digest(b"nope")).is_none());
    }

    #[test]
    fn route_matching_respects_segments_and_order() {
        let s = build_from(CONFIG, &keys_yaml()).unwrap();
        assert_eq!(s.route(b"x", b"/admin"), Some(0));
        assert_eq!(s.route(b"x", b"/admin/users"), Some(0));
        assert_eq!(s.route(b"x", b"/adminx"), Some(2));
        assert_eq!(s.route(b"x", b"/public/a"), Some(1));
        assert_eq!(s.route(b"x", b"/"), Some(2));
        assert!(s.consumers[0].may_use(2));
        assert!(!s.consumers[0].may_use(0));
        assert!(s.consumers[1].may_use(0));
    }

    #[test]
    fn every_problem_is_reported_with_file_and_field() {
        let config = CONFIG.replace(
            "upstream: origin, auth: none",
            "upstream: nowhere, auth: none",
        );
        let keys = format!(
            "{}  - id: acme\n    keys:\n      - {{ id: acme-1, sha256: \"zz\" }}\n      - {{ id: dup, sha256: \"{}\" }}\n      - {{ id: when, sha256: \"{}\", expires_at: tomorrow }}\n",
            keys_yaml(),
            hex::encode(crate::apikey::digest(b"key-one")),
            hex::encode(crate::apikey::digest(b"key-x")),
        );
        let err = build_from(&config, &keys).unwrap_err();
        let s = err.to_string();
        for want in [
            "keygate.yaml: routes[1].upstream: unknown upstream `nowhere`",
            "keys.yaml: consumers[2].id: consumer `acme` is defined twice",
            "keys.yaml: consumers[2].keys[0].id: key id `acme-1` is used twice",
            "keys.yaml: consumers[2].keys[0].sha256: must be 64 hex characters",
            "keys.yaml: consumers[2].keys[1].sha256: the same key digest is already used by key `acme-1`",
            "keys.yaml: consumers[2].keys[2].expires_at: `tomorrow` is not an RFC 3339",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        // Digests never appear in messages.
        assert!(!s.contains(&hex::encode(crate::apikey::digest(b"key-one"))));
    }

    #[test]
    fn unknown_route_in_allow_list_and_bad_ids() {
        let keys = "consumers:\n  - id: \"bad id\"\n    routes: [nope]\n    keys: []\n";
        let s = build_from(CONFIG, keys).unwrap_err().to_string();
        assert!(s.contains("consumers[0].id: ids may contain only"), "{s}");
        assert!(
            s.contains("consumers[0].routes[0]: unknown route `nope`"),
            "{s}"
        );
    }

    #[test]
    fn secret_must_be_present_and_printable() {
        let c = Config::from_yaml(CONFIG, Path::new("keygate.yaml")).unwrap();
        let k = KeysFile::default();
        let err = build(
            &c,
            Path::new("keygate.yaml"),
            &k,
            Path::new("keys.yaml"),
            b"has space",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("secret"), "{err}");
        assert!(!err.contains("has space"), "secret leaked: {err}");
        let sc = SecretConfig {
            header: "x-shared-secret".into(),
            env: Some("KG_SURELY_UNSET_VAR".into()),
            file: None,
        };
        let err = read_secret(&sc, Path::new("keygate.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret.env: environment variable KG_SURELY_UNSET_VAR is not set"),
            "{err}"
        );
        let sc = SecretConfig {
            header: "x".into(),
            env: None,
            file: Some("/nonexistent/secret".into()),
        };
        let err = read_secret(&sc, Path::new("keygate.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret.file: cannot read secret file /nonexistent/secret"),
            "{err}"
        );
        let sc = SecretConfig {
            header: "x".into(),
            env: Some("A".into()),
            file: Some("b".into()),
        };
        assert!(read_secret(&sc, Path::new("k")).is_err());
    }

    #[test]
    fn tls_upstream_defaults_sni_to_host() {
        let config = CONFIG.replace(
            r#"origin: { address: "127.0.0.1:8000" }"#,
            r#"origin: { address: "localhost:8443", tls: true }"#,
        );
        let s = build_from(&config, &keys_yaml()).unwrap();
        assert_eq!(s.upstreams[0].peer.sni, "localhost");
    }
}

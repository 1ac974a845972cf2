//! Upstreams: servers resolved once, a peer built once per server, origin TLS trust
//! prepared, health checks validated, and each server's health carried over from the
//! previous state when the server remains.
//!
//! Over the ~400-line guideline because validating and preparing an upstream (servers,
//! addresses, TLS trust, health checks, ejection) is one procedure whose problems are
//! reported together.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use openssl::x509::X509;
use pingora::upstreams::peer::HttpPeer;

use super::address::{scheme_problem, split_host_port, Setting};
use super::problems::Problems;
use super::{valid_id, State};
use crate::balance::{Availability, Balancer, Ejection, Policy, MAX_SERVERS, MAX_WEIGHT};
use crate::config::{
    resolve_relative, BalanceConfig, Config, HealthCheckConfig, UpstreamConfig,
    DEFAULT_HEALTHY_STATUSES, DEFAULT_SERVER_WEIGHT,
};
use crate::logging::Throttle;
use crate::tls::{ExpectedName, OriginTrust};

/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The shortest health-check interval, in milliseconds.
const MIN_HEALTH_INTERVAL_MS: u64 = 100;
/// The longest health-check interval, in milliseconds (an hour).
const MAX_HEALTH_INTERVAL_MS: u64 = 3_600_000;
/// The largest health-check threshold.
const MAX_THRESHOLD: u32 = 100;
/// The longest passive ejection, in seconds (an hour).
const MAX_EJECT_SECONDS: u64 = 3_600;
/// The longest health-check path, in bytes.
const MAX_HEALTH_PATH: usize = 2048;

/// One upstream: its servers, how one is chosen, and how they are probed.
pub struct Upstream {
    /// The configured name.
    pub name: String,
    /// Its servers (one for `address`), in configuration order.
    pub servers: Box<[Server]>,
    /// Chooses a server for each request; its indices are those of `servers`.
    pub balancer: Balancer,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheck>,
    /// `Host` to send instead of the client's, when configured.
    pub host_header: Option<HeaderValue>,
    /// The origin matches paths without regard to ASCII case.
    pub case_insensitive_paths: bool,
    /// Limits the warning about this origin rejecting authenticated requests (a wrong
    /// shared secret) to one a minute; starts afresh with each loaded configuration.
    pub rejection_warning: Throttle,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .finish()
    }
}

impl Upstream {
    /// Server `i`, if there is one.
    pub fn server(&self, i: usize) -> Option<&Server> {
        self.servers.get(i)
    }
}

/// One server of an upstream, with its peer built once at load.
pub struct Server {
    /// The address as configured: its metric label, its name in logs, and (with the
    /// upstream's name and the resolved address) what carries its health over a reload.
    pub address: String,
    /// The address it resolved to at load.
    pub resolved: SocketAddr,
    /// The peer cloned for each request.
    pub peer: HttpPeer,
    /// How its certificate is verified, for TLS upstreams.
    pub trust: Option<Arc<OriginTrust>>,
    /// `Host` of health probes: the upstream's `host_header`, else `address`.
    pub probe_host: HeaderValue,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.address, self.resolved)
    }
}

/// Active health checks of an upstream's servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Path (and query) of the HTTP `GET` probe; `None`: a TCP (and TLS) connect.
    pub path: Option<String>,
    /// Time between two probes of a server.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Consecutive passed probes that bring an unhealthy server back.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a healthy server out.
    pub unhealthy_threshold: u32,
    /// Inclusive ranges of statuses that pass the HTTP probe.
    pub healthy_statuses: Vec<(u16, u16)>,
}

impl HealthCheck {
    /// Whether an HTTP probe answered with `status` passes.
    pub fn passes(&self, status: u16) -> bool {
        self.healthy_statuses
            .iter()
            .any(|&(from, to)| (from..=to).contains(&status))
    }
}

/// The health of one server as the telemetry listener exports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus<'a> {
    /// The upstream's name.
    pub upstream: &'a str,
    /// The server's configured address.
    pub address: &'a str,
    /// Whether it takes requests now (not failing health checks, not ejected).
    pub up: bool,
}

impl State {
    /// Every server of every upstream and whether it takes requests at `now` (on
    /// [`crate::balance::now_ms`]).
    pub fn server_statuses(&self, now: u64) -> Vec<ServerStatus<'_>> {
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.servers
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| ServerStatus {
                        upstream: &u.name,
                        address: &s.address,
                        up: u.balancer.availability(i, now) == Availability::Up,
                    })
            })
            .collect()
    }
}

/// Every upstream, and upstream names to indices. Servers that remain from
/// `previous` (same upstream name, address and resolved address) keep their health.
pub(super) fn upstreams<'c>(
    config: &'c Config,
    cfg: &Path,
    previous: Option<&State>,
    p: &mut Problems,
) -> (Vec<Upstream>, HashMap<&'c str, usize>) {
    let mut upstreams = Vec::new();
    let mut index = HashMap::new();
    for (name, u) in &config.upstreams {
        let before = previous.and_then(|s| s.upstreams.iter().find(|o| &o.name == name));
        if let Some(up) = upstream(name, u, cfg, before, p) {
            index.insert(name.as_str(), upstreams.len());
            upstreams.push(up);
        }
    }
    (upstreams, index)
}

/// One upstream; `None` (with problems added) when a server's address or the TLS
/// files are unusable.
fn upstream(
    name: &str,
    u: &UpstreamConfig,
    cfg: &Path,
    before: Option<&Upstream>,
    p: &mut Problems,
) -> Option<Upstream> {
    let f = format!("upstreams.{name}");
    if !valid_id(name) {
        p.add(cfg, &f, "names may contain only A-Z a-z 0-9 . _ -");
    }
    if u.connect_timeout_ms == 0 || u.read_timeout_ms == 0 {
        p.add(cfg, &f, "timeouts must be greater than 0");
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
    let health_check = u
        .health_check
        .as_ref()
        .map(|h| health_check(h, cfg, &format!("{f}.health_check"), p));
    let eject = ejection(u, cfg, &f, p);
    if !u.tls && u.ca_file.is_some() {
        p.add(
            cfg,
            format!("{f}.ca_file"),
            "only meaningful with `tls: true`",
        );
    }
    // (configured address, weight, its field path)
    let listed: Vec<(&str, u32, String)> = match (&u.address, &u.servers) {
        (Some(a), None) => vec![(a.as_str(), DEFAULT_SERVER_WEIGHT, format!("{f}.address"))],
        (None, Some(servers)) => {
            if servers.is_empty() {
                p.add(cfg, format!("{f}.servers"), "at least one server is needed");
            }
            if servers.len() > MAX_SERVERS {
                p.add(
                    cfg,
                    format!("{f}.servers"),
                    format!("at most {MAX_SERVERS} servers per upstream"),
                );
            }
            servers
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let sf = format!("{f}.servers[{i}]");
                    if !(1..=MAX_WEIGHT).contains(&s.weight) {
                        p.add(
                            cfg,
                            format!("{sf}.weight"),
                            format!("must be 1 to {MAX_WEIGHT}"),
                        );
                    }
                    if servers[..i].iter().any(|o| o.address == s.address) {
                        p.add(
                            cfg,
                            format!("{sf}.address"),
                            format!("`{}` is listed twice", s.address),
                        );
                    }
                    (s.address.as_str(), s.weight, format!("{sf}.address"))
                })
                .collect()
        }
        (Some(_), Some(_)) => {
            p.add(
                cfg,
                &f,
                "set `address` (one server) or `servers` (several), not both",
            );
            return None;
        }
        (None, None) => {
            p.add(
                cfg,
                &f,
                "needs `address` (one server) or `servers: [{address, weight}]`",
            );
            return None;
        }
    };
    let ca = match (&u.ca_file, u.tls) {
        (Some(ca), true) => match crate::tls::load_pem_certs(&resolve_relative(cfg, ca)) {
            Ok(certs) => Some(certs),
            Err(e) => {
                p.add(cfg, format!("{f}.ca_file"), e);
                return None;
            }
        },
        _ => None,
    };
    let mut trusts = Trusts {
        ca: ca.as_deref(),
        by_name: HashMap::new(),
    };
    let mut servers = Vec::with_capacity(listed.len());
    let mut health = Vec::with_capacity(listed.len());
    for (address, weight, field) in &listed {
        let Some(s) = server(u, address, field, &host_header, &mut trusts, cfg, p) else {
            continue;
        };
        // Two spellings of one socket would split its health and let a retry go back to
        // the server that just failed.
        if let Some(other) = servers.iter().find(|o: &&Server| o.resolved == s.resolved) {
            p.add(
                cfg,
                field,
                format!(
                    "`{address}` is the same server as `{}` (both {}); list each server once",
                    other.address, s.resolved
                ),
            );
            continue;
        }
        // The same server in the previous state keeps its health (a changed weight too).
        let kept = before.and_then(|b| {
            let i = b
                .servers
                .iter()
                .position(|o| o.address == s.address && o.resolved == s.resolved)?;
            b.balancer.health(i).cloned()
        });
        health.push((kept.unwrap_or_default(), *weight));
        servers.push(s);
    }
    if servers.len() != listed.len() || listed.is_empty() {
        return None;
    }
    let policy = match u.balance {
        BalanceConfig::RoundRobin => Policy::RoundRobin,
        BalanceConfig::LeastConnections => Policy::LeastConnections,
    };
    Some(Upstream {
        name: name.to_string(),
        balancer: Balancer::new(health, policy, health_check.is_some(), eject),
        servers: servers.into(),
        health_check,
        host_header,
        case_insensitive_paths: u.case_insensitive_paths,
        rejection_warning: Throttle::new(),
    })
}

/// The origin trust of one upstream's servers, one per expected name.
struct Trusts<'a> {
    ca: Option<&'a [X509]>,
    by_name: HashMap<ExpectedName, Arc<OriginTrust>>,
}

/// One server: its address resolved, its peer with the upstream's timeouts and TLS.
fn server(
    u: &UpstreamConfig,
    address: &str,
    field: &str,
    host_header: &Option<HeaderValue>,
    trusts: &mut Trusts<'_>,
    cfg: &Path,
    p: &mut Problems,
) -> Option<Server> {
    if let Some(message) = scheme_problem(address, Setting::Upstream) {
        p.add(cfg, field, message);
        return None;
    }
    let Some((host, port)) = split_host_port(address) else {
        p.add(cfg, field, format!("`{address}` is not host:port"));
        return None;
    };
    if port == 0 {
        p.add(
            cfg,
            field,
            format!("`{address}`: port 0 is not a server's port"),
        );
        return None;
    }
    let Ok(Some(resolved)) = (host, port).to_socket_addrs().map(|mut a| a.next()) else {
        p.add(cfg, field, format!("cannot resolve `{host}`"));
        return None;
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
    let mut peer = HttpPeer::new(resolved, u.tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
    o.total_connection_timeout = Some(Duration::from_millis(u.connect_timeout_ms));
    o.read_timeout = Some(Duration::from_millis(u.read_timeout_ms));
    o.write_timeout = Some(Duration::from_millis(u.read_timeout_ms));
    o.idle_timeout = Some(UPSTREAM_IDLE_TIMEOUT);
    let trust = if u.tls {
        let t = match trusts.by_name.get(&expected) {
            Some(t) => t.clone(),
            None => match OriginTrust::new(trusts.ca, expected.clone()) {
                Ok(t) => {
                    let t = Arc::new(t);
                    trusts.by_name.insert(expected, t.clone());
                    t
                }
                Err(e) => {
                    p.add(cfg, field, e);
                    return None;
                }
            },
        };
        // keygate verifies the certificate itself (see `crate::tls`): Pingora's
        // in-handshake check cannot verify IP SANs or name a failure's reason.
        o.verify_cert = false;
        o.verify_hostname = false;
        o.upstream_tls_handshake_complete_hook = Some(crate::tls::verification_hook(t.clone()));
        peer.group_key = t.fingerprint();
        Some(t)
    } else {
        None
    };
    let probe_host = match host_header {
        Some(h) => h.clone(),
        None => match HeaderValue::from_str(address) {
            Ok(v) => v,
            Err(_) => {
                p.add(cfg, field, format!("`{address}` is not a valid Host"));
                return None;
            }
        },
    };
    Some(Server {
        address: address.to_string(),
        resolved,
        peer,
        trust,
        probe_host,
    })
}

/// Passive ejection settings, checked.
fn ejection(u: &UpstreamConfig, cfg: &Path, f: &str, p: &mut Problems) -> Ejection {
    if u.eject_after_connect_failures > 0 && u.eject_seconds == 0 {
        p.add(
            cfg,
            format!("{f}.eject_seconds"),
            "must be greater than 0 (`eject_after_connect_failures: 0` turns ejection off)",
        );
    }
    if u.eject_seconds > MAX_EJECT_SECONDS {
        p.add(
            cfg,
            format!("{f}.eject_seconds"),
            format!("must be at most {MAX_EJECT_SECONDS} (an hour)"),
        );
    }
    Ejection {
        after_failures: u.eject_after_connect_failures,
        duration_ms: u.eject_seconds.saturating_mul(1000),
    }
}

/// A health check, checked; `f` is its field path.
fn health_check(h: &HealthCheckConfig, cfg: &Path, f: &str, p: &mut Problems) -> HealthCheck {
    if let Some(path) = &h.path {
        let ok = path.starts_with('/')
            && path.len() <= MAX_HEALTH_PATH
            && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !ok {
            p.add(
                cfg,
                format!("{f}.path"),
                format!("`{path}` is not a path (starting with `/`, printable ASCII without spaces or `#`, at most {MAX_HEALTH_PATH} bytes)"),
            );
        }
    }
    if !(MIN_HEALTH_INTERVAL_MS..=MAX_HEALTH_INTERVAL_MS).contains(&h.interval_ms) {
        p.add(
            cfg,
            format!("{f}.interval_ms"),
            format!("must be {MIN_HEALTH_INTERVAL_MS} to {MAX_HEALTH_INTERVAL_MS}"),
        );
    }
    if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
        p.add(
            cfg,
            format!("{f}.timeout_ms"),
            "must be greater than 0 and at most `interval_ms` (a probe ends before the next starts)",
        );
    }
    for (field, value) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if !(1..=MAX_THRESHOLD).contains(&value) {
            p.add(
                cfg,
                format!("{f}.{field}"),
                format!("must be 1 to {MAX_THRESHOLD}"),
            );
        }
    }
    let statuses = match &h.healthy_statuses {
        Some(list) => {
            if h.path.is_none() {
                p.add(
                    cfg,
                    format!("{f}.healthy_statuses"),
                    "only meaningful with `path` (an HTTP probe); without it the probe is a TCP connect",
                );
            }
            if list.is_empty() {
                p.add(
                    cfg,
                    format!("{f}.healthy_statuses"),
                    "at least one status or range is needed",
                );
            }
            for (i, s) in list.iter().enumerate() {
                if !(100..=599).contains(&s.from) || !(100..=599).contains(&s.to) || s.from > s.to {
                    p.add(
                        cfg,
                        format!("{f}.healthy_statuses[{i}]"),
                        "must be a status 100 to 599, or a range of them from low to high (\"200-399\")",
                    );
                }
            }
            list.iter().map(|s| (s.from, s.to)).collect()
        }
        None => vec![(DEFAULT_HEALTHY_STATUSES.from, DEFAULT_HEALTHY_STATUSES.to)],
    };
    HealthCheck {
        path: h.path.clone(),
        interval: Duration::from_millis(h.interval_ms),
        timeout: Duration::from_millis(h.timeout_ms),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        healthy_statuses: statuses,
    }
}

#[cfg(test)]
mod tests;

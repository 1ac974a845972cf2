//! Upstreams: addresses resolved once, peers built once, origin TLS trust prepared.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use pingora::upstreams::peer::HttpPeer;

use super::address::{scheme_problem, split_host_port, Setting};
use super::problems::Problems;
use super::{valid_id, Upstream};
use crate::config::{resolve_relative, Config, UpstreamConfig};
use crate::tls::{ExpectedName, OriginTrust};

/// How long an idle upstream connection is kept for reuse.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Every upstream, and upstream names to indices.
pub(super) fn upstreams<'c>(
    config: &'c Config,
    cfg: &Path,
    p: &mut Problems,
) -> (Vec<Upstream>, HashMap<&'c str, usize>) {
    let mut upstreams = Vec::new();
    let mut index = HashMap::new();
    for (name, u) in &config.upstreams {
        if let Some(up) = upstream(name, u, cfg, p) {
            index.insert(name.as_str(), upstreams.len());
            upstreams.push(up);
        }
    }
    (upstreams, index)
}

/// One upstream; `None` (with problems added) when its address or TLS files are unusable.
fn upstream(name: &str, u: &UpstreamConfig, cfg: &Path, p: &mut Problems) -> Option<Upstream> {
    let f = format!("upstreams.{name}");
    if !valid_id(name) {
        p.add(cfg, &f, "names may contain only A-Z a-z 0-9 . _ -");
    }
    if let Some(message) = scheme_problem(&u.address, Setting::Upstream) {
        p.add(cfg, format!("{f}.address"), message);
        return None;
    }
    let Some((host, port)) = split_host_port(&u.address) else {
        p.add(
            cfg,
            format!("{f}.address"),
            format!("`{}` is not host:port", u.address),
        );
        return None;
    };
    let Ok(Some(addr)) = (host, port).to_socket_addrs().map(|mut a| a.next()) else {
        p.add(
            cfg,
            format!("{f}.address"),
            format!("cannot resolve `{host}`"),
        );
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
    let trust = if u.tls {
        let t = Arc::new(trust(u, expected, cfg, &f, p)?);
        // keygate verifies the certificate itself (see `crate::tls`): Pingora's
        // in-handshake check cannot verify IP SANs or name a failure's reason.
        o.verify_cert = false;
        o.verify_hostname = false;
        o.upstream_tls_handshake_complete_hook = Some(crate::tls::verification_hook(t.clone()));
        peer.group_key = t.fingerprint();
        Some(t)
    } else {
        if u.ca_file.is_some() {
            p.add(
                cfg,
                format!("{f}.ca_file"),
                "only meaningful with `tls: true`",
            );
        }
        None
    };
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
    Some(Upstream {
        name: name.to_string(),
        peer,
        host_header,
        trust,
        case_insensitive_paths: u.case_insensitive_paths,
    })
}

/// What a TLS upstream's certificate is verified against.
fn trust(
    u: &UpstreamConfig,
    expected: ExpectedName,
    cfg: &Path,
    f: &str,
    p: &mut Problems,
) -> Option<OriginTrust> {
    let ca = match &u.ca_file {
        Some(ca) => match crate::tls::load_pem_certs(&resolve_relative(cfg, ca)) {
            Ok(certs) => Some(certs),
            Err(e) => {
                p.add(cfg, format!("{f}.ca_file"), e);
                return None;
            }
        },
        None => None,
    };
    match OriginTrust::new(ca.as_deref(), expected) {
        Ok(t) => Some(t),
        Err(e) => {
            p.add(cfg, format!("{f}.ca_file"), e);
            None
        }
    }
}

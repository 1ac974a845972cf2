//! Building a [`State`] from parsed files: validate everything, collect every problem.
//!
//! [`build_streaming`] is the orchestrator: one short function per section
//! (server settings, secret, credential sources, upstreams, routes, keys), each
//! adding what it finds wrong to one [`Problems`] list, so an operator sees
//! every problem of a configuration at once. Only a configuration without
//! problems becomes a [`State`].
//!
//! Over the ~400-line guideline because server settings, listeners and the secret are
//! validated here in one pass so that every problem is reported at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::address::{scheme_problem, Setting};
use super::keys::{Built, Context, KeysBuilder};
use super::problems::Problems;
use super::routes::routes;
use super::upstream::upstreams;
use super::{AdminToken, KeyWarning, Limits, Secret, Source, State};
use crate::config::{
    resolve_relative, Config, ConfigError, ConsumerConfig, KeysFile, ProxyProtocolMode,
};
use crate::forwarded::TrustedProxies;
use crate::headers;
use crate::metrics::Metrics;

/// The longest expiry warning window, in seconds (a year).
const MAX_WARNING_SECONDS: u64 = 366 * 86_400;

/// Why header names with `_` are refused in the configuration.
const UNDERSCORE: &str =
    "header names containing `_` are removed from every request (as nginx does); use `-`";

/// What a state is built from, besides the consumers.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The parsed `keygate.yaml`.
    pub config: &'a Config,
    /// Its path (for relative paths and error messages).
    pub config_path: &'a Path,
    /// The keys file's path (for error messages).
    pub keys_path: &'a Path,
    /// The shared secret's bytes.
    pub secret: &'a [u8],
    /// Where the state's metric handles come from; `None` records nothing (`check`,
    /// tests, benches).
    pub metrics: Option<&'a Metrics>,
    /// The state being replaced on reload: its counters and last-use times carry over.
    pub previous: Option<&'a State>,
    /// The admin listener's token, when `server.admin_token` is set.
    pub admin_token: Option<&'a [u8]>,
}

/// Build the state from a parsed keys file, checking everything that needs the whole
/// picture.
///
/// # Errors
/// [`ConfigError::Invalid`] with every problem found, each with file and field.
pub fn build(inputs: Inputs<'_>, keys: &KeysFile) -> Result<State, ConfigError> {
    let capacity = keys.consumers.iter().map(|c| c.keys.len()).sum();
    build_streaming(inputs, capacity, |add| {
        for (ci, c) in keys.consumers.iter().enumerate() {
            add(ci, c);
        }
        Ok(())
    })
}

/// Something that hands consumers to the state builder one at a time.
pub(super) type Feed<'f> = &'f mut dyn FnMut(usize, &ConsumerConfig);

/// Build the state, taking consumers from `feed` (a parsed file or a streaming parser).
/// `key_capacity` is a hint for how many keys to expect.
///
/// # Errors
/// [`ConfigError::Invalid`] with every problem found; a read error from `feed` as is.
pub(super) fn build_streaming(
    inputs: Inputs<'_>,
    key_capacity: usize,
    feed: impl FnOnce(Feed<'_>) -> Result<(), ConfigError>,
) -> Result<State, ConfigError> {
    let Inputs {
        config,
        config_path,
        ..
    } = inputs;
    let mut p = Problems::default();
    check_listeners(config, config_path, &mut p);
    let (limits, trusted_proxies) = limits(config, config_path, &mut p);
    let secret = secret(config, config_path, inputs.secret, &mut p);
    let sources = sources(
        config,
        config_path,
        secret.as_ref().map(|s| &s.header),
        &mut p,
    );
    let (upstreams, upstream_index) = upstreams(config, config_path, inputs.previous, &mut p);
    let routes = routes(config, config_path, &upstreams, &upstream_index, &mut p);
    let warning = warning(config, config_path, &mut p);
    let admin_token = admin(config, config_path, inputs.admin_token, &mut p);
    let fleet = super::store::fleet(config, config_path, inputs.previous, &mut p);

    let mut keys = KeysBuilder::new(
        Context {
            file: inputs.keys_path,
            routes: &routes,
            previous: inputs.previous,
        },
        key_capacity,
    );
    if let Err(e) = feed(&mut |ci, c| keys.add(ci, c)) {
        match e {
            ConfigError::Invalid(list) => p.list.extend(list),
            // A keys file that cannot be read is one problem among the others, at the
            // setting that names it.
            ConfigError::Read { path, source } => p.add(
                config_path,
                "auth.keys_file",
                format!("cannot read the keys file {}: {source}", path.display()),
            ),
        }
    }
    let Built {
        consumers,
        index,
        policies,
        last_use,
        problems,
    } = keys.finish();
    p.list.extend(problems.list);
    let scope_names = routes.scope_names;
    let routes = routes.routes;

    if !p.list.is_empty() {
        return Err(ConfigError::Invalid(p.list));
    }
    let Some(secret) = secret else {
        return Err(ConfigError::one(config_path, "secret", "invalid secret"));
    };
    let handles = inputs
        .metrics
        .map(|m| {
            let route_names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
            let upstream_labels: Vec<(&str, Vec<&str>)> = upstreams
                .iter()
                .map(|u| {
                    let servers = u.servers.iter().map(|s| s.address.as_str()).collect();
                    (u.name.as_str(), servers)
                })
                .collect();
            m.handles(
                &route_names,
                consumers.iter().map(|c| c.id.as_str()),
                &upstream_labels,
            )
        })
        .unwrap_or_default();
    Ok(State {
        routes,
        upstreams,
        consumers,
        keys: index,
        secret,
        sources,
        handles,
        limits,
        trusted_proxies,
        proxy_protocol: config.server.proxy_protocol,
        key_policies: policies,
        last_use,
        scope_names,
        warning,
        admin_token,
        fleet,
    })
}

/// The key-expiry warning: its window and the documentation link.
fn warning(config: &Config, cfg: &Path, p: &mut Problems) -> KeyWarning {
    let a = &config.auth;
    if a.key_expiry_warning_seconds > MAX_WARNING_SECONDS {
        p.add(
            cfg,
            "auth.key_expiry_warning_seconds",
            format!("must be at most {MAX_WARNING_SECONDS} (one year)"),
        );
    }
    let seconds = i64::try_from(a.key_expiry_warning_seconds.min(MAX_WARNING_SECONDS)).unwrap_or(0);
    let link = a.deprecation_link.as_ref().and_then(|url| {
        let ok = (url.starts_with("https://") || url.starts_with("http://"))
            && url.len() > "https://".len()
            && url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>\"\\`{}|^".contains(&b));
        if !ok {
            p.add(
                cfg,
                "auth.deprecation_link",
                format!("`{url}` is not an absolute http(s) URL"),
            );
            return None;
        }
        HeaderValue::from_str(&format!("<{url}>; rel=\"deprecation\"; type=\"text/html\"")).ok()
    });
    KeyWarning { seconds, link }
}

/// The admin listener: its address and token (the address is applied at start only).
fn admin(
    config: &Config,
    cfg: &Path,
    token: Option<&[u8]>,
    p: &mut Problems,
) -> Option<AdminToken> {
    let s = &config.server;
    if !s.admin_listen.is_empty() {
        if let Some(message) = scheme_problem(&s.admin_listen, Setting::Admin) {
            p.add(cfg, "server.admin_listen", message);
        } else if s.admin_listen.parse::<SocketAddr>().is_err() {
            p.add(
                cfg,
                "server.admin_listen",
                format!(
                    "`{}` is not an ip:port address (or empty to disable)",
                    s.admin_listen
                ),
            );
        }
        if s.admin_token.is_none() {
            p.add(
                cfg,
                "server.admin_token",
                "the admin listener needs a token: set `admin_token: { env | file | credential }`",
            );
        }
    }
    let token = token?;
    if token.len() < 16 || !token.iter().all(u8::is_ascii_graphic) {
        p.add(
            cfg,
            "server.admin_token",
            "the admin token must be at least 16 printable ASCII characters without spaces",
        );
        return None;
    }
    Some(AdminToken::new(token))
}

/// Listeners and process settings: validated here so `check` reports them, though only
/// a restart applies them.
fn check_listeners(config: &Config, cfg: &Path, p: &mut Problems) {
    let s = &config.server;
    if s.listen.is_empty() && s.tls_listen.is_empty() {
        p.add(
            cfg,
            "server.listen",
            "no listener: set `listen` or `tls_listen`",
        );
    }
    for (i, a) in s.listen.iter().enumerate() {
        check_listen(a, Setting::Listen, cfg, format!("server.listen[{i}]"), p);
    }
    for (i, t) in s.tls_listen.iter().enumerate() {
        let f = format!("server.tls_listen[{i}]");
        check_listen(
            &t.address,
            Setting::TlsListen,
            cfg,
            format!("{f}.address"),
            p,
        );
        let cert = resolve_relative(cfg, &t.cert);
        let key = resolve_relative(cfg, &t.key);
        if cert.to_str().is_none() || key.to_str().is_none() {
            p.add(cfg, &f, "paths must be UTF-8");
        } else if let Err(e) = crate::tls::check_listener_files(&cert, &key) {
            p.add(cfg, &f, e);
        }
    }
    if s.threads == 0 {
        p.add(cfg, "server.threads", "must be at least 1");
    }
    // The file itself is opened (and created) at start, not by `keygate check`.
    let dest = &s.access_log.destination;
    if dest.trim().is_empty() {
        p.add(
            cfg,
            "server.access_log.destination",
            "must be `stderr` or the path of a file",
        );
    } else if s.access_log.file(cfg).is_some_and(|f| f.is_dir()) {
        p.add(
            cfg,
            "server.access_log.destination",
            format!(
                "`{dest}` is a directory; name a file in it, e.g. `{}/access.log`",
                dest.trim_end_matches('/')
            ),
        );
    }
    let ml = &s.metrics_listen;
    if let Some(message) = scheme_problem(ml, Setting::Metrics) {
        p.add(cfg, "server.metrics_listen", message);
    } else if !ml.is_empty() && ml.parse::<SocketAddr>().is_err() {
        p.add(
            cfg,
            "server.metrics_listen",
            format!("`{ml}` is not an ip:port address (or empty to disable)"),
        );
    }
    // Listeners share sockets by port (SO_REUSEPORT): two services on one address would
    // take turns answering each other's clients.
    let mut all: Vec<(String, SocketAddr)> = Vec::new();
    let named = s
        .listen
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("server.listen[{i}]"), a.as_str()))
        .chain(s.tls_listen.iter().enumerate().map(|(i, t)| {
            (
                format!("server.tls_listen[{i}].address"),
                t.address.as_str(),
            )
        }))
        .chain([
            ("server.metrics_listen".to_string(), ml.as_str()),
            ("server.admin_listen".to_string(), s.admin_listen.as_str()),
        ]);
    for (field, text) in named {
        let Ok(addr) = text.parse::<SocketAddr>() else {
            continue;
        };
        let clash = all.iter().find(|(_, other)| {
            other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other_field, _)) = clash {
            p.add(
                cfg,
                &field,
                format!("`{text}` is already used by {other_field}; every listener needs an address of its own"),
            );
        }
        all.push((field, addr));
    }
}

/// A listen address must be `ip:port`, without a scheme.
fn check_listen(addr: &str, setting: Setting, cfg: &Path, field: String, p: &mut Problems) {
    if let Some(message) = scheme_problem(addr, setting) {
        p.add(cfg, field, message);
    } else if addr.parse::<SocketAddr>().is_err() {
        p.add(cfg, field, format!("`{addr}` is not an ip:port address"));
    }
}

/// The per-request limits and the trusted proxies (all live on reload).
fn limits(config: &Config, cfg: &Path, p: &mut Problems) -> (Limits, TrustedProxies) {
    let s = &config.server;
    for (field, value) in [
        ("keepalive_timeout_seconds", s.keepalive_timeout_seconds),
        ("client_body_timeout_seconds", s.client_body_timeout_seconds),
        (
            "client_header_timeout_seconds",
            s.client_header_timeout_seconds,
        ),
        (
            "max_request_header_bytes",
            s.max_request_header_bytes as u64,
        ),
        ("max_request_headers", s.max_request_headers as u64),
        (
            "access_log.flush_interval_ms",
            s.access_log.flush_interval_ms,
        ),
    ] {
        if value == 0 {
            p.add(cfg, format!("server.{field}"), "must be greater than 0");
        }
    }
    let bf = &config.auth.brute_force;
    if bf.max_failures > 0 && bf.window_seconds == 0 {
        p.add(
            cfg,
            "auth.brute_force.window_seconds",
            "must be greater than 0",
        );
    }
    let trusted = match TrustedProxies::parse(&s.trusted_proxies) {
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
    if s.proxy_protocol != ProxyProtocolMode::Off && s.trusted_proxies.is_empty() {
        p.add(
            cfg,
            "server.proxy_protocol",
            "a PROXY protocol header is only read from server.trusted_proxies peers; list the balancers there (or set `off`)",
        );
    }
    let limits = Limits {
        keepalive_timeout: Duration::from_secs(s.keepalive_timeout_seconds),
        client_body_timeout: Duration::from_secs(s.client_body_timeout_seconds),
        client_header_timeout: Duration::from_secs(s.client_header_timeout_seconds),
        client_body_min_rate: s.client_body_min_rate_bytes_per_second,
        max_request_header_bytes: s.max_request_header_bytes,
        max_request_headers: s.max_request_headers,
        brute_force: crate::limiter::Policy {
            max_failures: bf.max_failures,
            window_seconds: bf.window_seconds,
        },
    };
    (limits, trusted)
}

/// The shared secret header, ready to insert; `None` (with problems added) when invalid.
fn secret(config: &Config, cfg: &Path, secret: &[u8], p: &mut Problems) -> Option<Secret> {
    let header = HeaderName::from_bytes(config.secret.header.as_bytes()).ok();
    match &header {
        None => p.add(
            cfg,
            "secret.header",
            format!("`{}` is not a valid header name", config.secret.header),
        ),
        Some(h) if h.as_str().contains('_') => p.add(cfg, "secret.header", UNDERSCORE),
        Some(h) if headers::IDENTITY.contains(&h.as_str()) => p.add(
            cfg,
            "secret.header",
            "must not be one of keygate's identity headers",
        ),
        Some(_) => {}
    }
    let value = HeaderValue::from_bytes(secret)
        .ok()
        .filter(|_| secret.iter().all(|b| b.is_ascii_graphic()));
    if value.is_none() {
        p.add(
            cfg,
            "secret",
            "the secret must be printable ASCII without spaces",
        );
    }
    let (header, mut value) = (header?, value?);
    value.set_sensitive(true);
    Some(Secret { header, value })
}

/// Where keys are read from, in order.
fn sources(
    config: &Config,
    cfg: &Path,
    secret_header: Option<&HeaderName>,
    p: &mut Problems,
) -> Vec<Source> {
    let mut sources = Vec::new();
    let mut seen = HashSet::new();
    if config.auth.sources.is_empty() {
        p.add(
            cfg,
            "auth.sources",
            "at least one credential source is needed",
        );
    }
    for (i, s) in config.auth.sources.iter().enumerate() {
        let f = format!("auth.sources[{i}].header");
        let Ok(h) = HeaderName::from_bytes(s.header.as_bytes()) else {
            p.add(
                cfg,
                &f,
                format!("`{}` is not a valid header name", s.header),
            );
            continue;
        };
        if !seen.insert(h.clone()) {
            p.add(cfg, &f, format!("`{}` is listed twice", s.header));
        }
        if h.as_str().contains('_') {
            p.add(cfg, &f, UNDERSCORE);
        }
        if Some(&h) == secret_header || headers::is_client_claim(h.as_str()) {
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
    sources
}

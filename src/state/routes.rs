//! Routes: validated names, canonical hosts and path prefixes, resolved upstreams.
//!
//! Over the ~400-line guideline because validating and preparing routes (match, methods,
//! rewrites, timeouts, limits, CORS) is one procedure whose problems are reported
//! together.

use std::collections::HashMap;
use std::path::Path;

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::problems::Problems;
use super::{policy, valid_id, PrefixRewrite, Route, Upstream};
use crate::access::{self, Methods, Scopes, MAX_SCOPES};
use crate::config::{Config, CorsConfig, RouteConfig};
use crate::cors;

/// The routes of a configuration and what consumers refer to them by.
pub(super) struct Routes<'c> {
    /// Routes in match order.
    pub(super) routes: Vec<Route>,
    /// Route names to indices (for allow-lists).
    pub(super) index: HashMap<&'c str, usize>,
    /// Scope names routes require, by bit.
    pub(super) scope_names: Vec<String>,
    /// Scope names to bits.
    pub(super) scope_bits: HashMap<String, u32>,
}

/// Routes in match order, route names to indices, and the scopes they require.
pub(super) fn routes<'c>(
    config: &'c Config,
    cfg: &Path,
    upstreams: &[Upstream],
    upstream_index: &HashMap<&str, usize>,
    p: &mut Problems,
) -> Routes<'c> {
    let mut routes = Vec::new();
    let mut route_index = HashMap::new();
    let mut scope_names: Vec<String> = Vec::new();
    let mut scope_bits: HashMap<String, u32> = HashMap::new();
    let mut limit_slots = 0;
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
        check_path_prefix(&r.path_prefix, cfg, &f, p);
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
        let mut scopes = Scopes::default();
        for (si, name) in r.scopes.iter().enumerate() {
            if !access::valid_scope(name) {
                p.add(
                    cfg,
                    format!("{f}.scopes[{si}]"),
                    "scope names are 1-64 of A-Z a-z 0-9 . _ - : /",
                );
                continue;
            }
            let next = scope_bits.len() as u32;
            let bit = *scope_bits.entry(name.clone()).or_insert_with(|| {
                scope_names.push(name.clone());
                next
            });
            if bit as usize >= MAX_SCOPES {
                p.add(
                    cfg,
                    format!("{f}.scopes[{si}]"),
                    format!("routes may require at most {MAX_SCOPES} distinct scopes"),
                );
                continue;
            }
            scopes.0 |= 1 << bit;
        }
        if !r.scopes.is_empty() && r.auth != crate::config::AuthMode::Required {
            p.add(
                cfg,
                format!("{f}.scopes"),
                "scopes need `auth: required` (a request without a key could not have them)",
            );
        }
        let default_rate = policy::rate(
            &r.default_rate_limit,
            cfg,
            &|| format!("{f}.default_rate_limit"),
            p,
        );
        let default_quota =
            policy::quota(&r.default_quota, cfg, &|| format!("{f}.default_quota"), p);
        if r.auth == crate::config::AuthMode::None
            && (default_rate.is_some() || default_quota.is_some())
        {
            p.add(
                cfg,
                format!("{f}.auth"),
                "default limits count consumers, and an `auth: none` route has none: use `auth: required` or `optional`, or drop the limits",
            );
        }
        if !r.consumer_limits && (default_rate.is_some() || default_quota.is_some()) {
            p.add(
                cfg,
                format!("{f}.consumer_limits"),
                "a route that opts out of consumer limits cannot set default limits",
            );
        }
        let limit_slot = (default_rate.is_some() || default_quota.is_some()).then(|| {
            limit_slots += 1;
            limit_slots - 1
        });
        let methods = policy::methods(&r.methods, cfg, &|| format!("{f}.methods"), p);
        let method_names = method_names(methods);
        let allow = HeaderValue::from_str(&method_names.join(", "))
            .unwrap_or(HeaderValue::from_static("GET"));
        if method_names.is_empty() {
            p.add(
                cfg,
                format!("{f}.methods"),
                "a route needs at least one method",
            );
        }
        let rewrite = rewrite(r, cfg, &f, p);
        let timeout = |v: Option<u64>, field: &str, p: &mut Problems| match v {
            Some(0) => {
                p.add(cfg, format!("{f}.{field}"), "must be greater than 0");
                None
            }
            v => v.map(Duration::from_millis),
        };
        let connect_timeout = timeout(r.connect_timeout_ms, "connect_timeout_ms", p);
        let read_timeout = timeout(r.read_timeout_ms, "read_timeout_ms", p);
        let cors = r
            .cors
            .as_ref()
            .and_then(|c| cors_policy(c, &method_names, cfg, &format!("{f}.cors"), p));
        routes.push(Route {
            name: r.name.clone(),
            host,
            path_prefix: r.path_prefix.clone(),
            upstream,
            auth: r.auth,
            case_insensitive: upstreams
                .get(upstream)
                .is_some_and(|u| u.case_insensitive_paths),
            scopes,
            default_rate,
            default_quota,
            limit_slot,
            consumer_limits: r.consumer_limits,
            methods,
            allow,
            forwarded_prefix: rewrite
                .as_ref()
                .filter(|rw| rw.prefix.is_empty() && r.path_prefix != "/")
                .and_then(|_| HeaderValue::from_str(&r.path_prefix).ok()),
            rewrite,
            connect_timeout,
            read_timeout,
            max_request_body: r.max_request_body_bytes,
            cors,
        });
    }
    Routes {
        routes,
        index: route_index,
        scope_names,
        scope_bits,
    }
}

/// The names of the methods in `m`, in [`access::METHOD_NAMES`] order.
fn method_names(m: Methods) -> Vec<&'static str> {
    let all = [
        http::Method::GET,
        http::Method::HEAD,
        http::Method::POST,
        http::Method::PUT,
        http::Method::PATCH,
        http::Method::DELETE,
        http::Method::OPTIONS,
    ];
    access::METHOD_NAMES
        .iter()
        .zip(all.iter())
        .filter(|(_, method)| m.allows(method))
        .map(|(name, _)| *name)
        .collect()
}

/// The route's path rewrite: `strip_prefix` or `rewrite_prefix` (not both).
fn rewrite(r: &RouteConfig, cfg: &Path, f: &str, p: &mut Problems) -> Option<PrefixRewrite> {
    match (&r.rewrite_prefix, r.strip_prefix) {
        (Some(_), true) => {
            p.add(
                cfg,
                format!("{f}.rewrite_prefix"),
                "set `strip_prefix` or `rewrite_prefix`, not both",
            );
            None
        }
        (None, true) => Some(PrefixRewrite {
            prefix: String::new(),
        }),
        (Some(to), false) => {
            let canonical =
                to.starts_with('/') && matches!(crate::path::canonical(to.as_bytes()), Ok(None));
            if !canonical {
                p.add(
                    cfg,
                    format!("{f}.rewrite_prefix"),
                    format!("`{to}` must be a canonical path starting with `/`"),
                );
                return None;
            }
            Some(PrefixRewrite {
                prefix: to.trim_end_matches('/').to_string(),
            })
        }
        (None, false) => None,
    }
}

/// A comma-separated header value of header names, or `None` (with a problem) when one
/// is not a header name.
fn header_names(names: &[String], cfg: &Path, field: &str, p: &mut Problems) -> Option<String> {
    for (i, n) in names.iter().enumerate() {
        if HeaderName::from_bytes(n.as_bytes()).is_err() {
            p.add(
                cfg,
                format!("{field}[{i}]"),
                format!("`{n}` is not a header name"),
            );
            return None;
        }
    }
    Some(
        names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Longest preflight cache time a route may set, in seconds (a day).
const MAX_CORS_MAX_AGE: u64 = 86_400;

/// A route's CORS policy, validated: origins, methods (within the route's), headers.
fn cors_policy(
    c: &CorsConfig,
    route_methods: &[&str],
    cfg: &Path,
    f: &str,
    p: &mut Problems,
) -> Option<cors::Policy> {
    let problems = p.list.len();
    let origins = if c.allow_origins.iter().any(|o| o == "*") {
        if c.allow_origins.len() > 1 {
            p.add(cfg, format!("{f}.allow_origins"), "`*` stands alone");
        }
        if c.allow_credentials {
            p.add(
                cfg,
                format!("{f}.allow_credentials"),
                "credentials are never allowed for any origin (`*`): list the origins",
            );
        }
        cors::Origins::Any
    } else {
        if c.allow_origins.is_empty() {
            p.add(
                cfg,
                format!("{f}.allow_origins"),
                "list at least one origin, or `*`",
            );
        }
        for (i, o) in c.allow_origins.iter().enumerate() {
            if !cors::valid_origin(o) {
                p.add(
                    cfg,
                    format!("{f}.allow_origins[{i}]"),
                    format!("`{o}` is not an origin such as https://app.example.com (scheme, host, a port only when it is not the scheme's default; no path)"),
                );
            }
        }
        cors::Origins::List(
            c.allow_origins
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        )
    };
    let methods: Vec<&str> = match &c.allow_methods {
        None => route_methods.to_vec(),
        Some(list) => {
            let m = policy::methods(&c.allow_methods, cfg, &|| format!("{f}.allow_methods"), p);
            let names = method_names(m);
            if list.is_empty() {
                p.add(
                    cfg,
                    format!("{f}.allow_methods"),
                    "list at least one method, or leave it out for the route's",
                );
            }
            for (i, name) in list.iter().enumerate() {
                if !route_methods.contains(&name.as_str())
                    && access::METHOD_NAMES.contains(&name.as_str())
                {
                    p.add(
                        cfg,
                        format!("{f}.allow_methods[{i}]"),
                        format!("`{name}` is not one of the route's `methods`"),
                    );
                }
            }
            names
        }
    };
    let allow_headers = c
        .allow_headers
        .as_ref()
        .and_then(|h| header_names(h, cfg, &format!("{f}.allow_headers"), p));
    let mut exposed: Vec<String> = cors::EXPOSED.iter().map(|s| s.to_string()).collect();
    exposed.extend(c.expose_headers.iter().cloned());
    let expose = header_names(&exposed, cfg, &format!("{f}.expose_headers"), p);
    if c.max_age_seconds > MAX_CORS_MAX_AGE {
        p.add(
            cfg,
            format!("{f}.max_age_seconds"),
            format!("must be at most {MAX_CORS_MAX_AGE} (browsers cap it lower still)"),
        );
    }
    if p.list.len() > problems {
        return None;
    }
    Some(cors::Policy {
        origins,
        methods: HeaderValue::from_str(&methods.join(", ")).ok()?,
        method_names: methods.iter().map(|m| m.to_string()).collect(),
        allow_headers: allow_headers.and_then(|h| HeaderValue::from_str(&h).ok()),
        expose: HeaderValue::from_str(&expose?).ok()?,
        max_age: HeaderValue::from(c.max_age_seconds),
        credentials: c.allow_credentials,
    })
}

/// A route prefix must be a canonical path, or no request could ever match it.
fn check_path_prefix(prefix: &str, cfg: &Path, f: &str, p: &mut Problems) {
    // A prefix matches at segment boundaries, so `/admin` covers `/admin/...`; with a
    // trailing slash the bare `/admin` would escape it to a later, perhaps open, route.
    if prefix.len() > 1 && prefix.ends_with('/') {
        p.add(
            cfg,
            format!("{f}.path_prefix"),
            format!(
                "write `{}` without the trailing `/`: a prefix matches at segment boundaries, and with the slash `{}` itself would fall through to a later route",
                prefix.trim_end_matches('/'),
                prefix.trim_end_matches('/')
            ),
        );
        return;
    }
    match crate::path::canonical(prefix.as_bytes()) {
        Ok(None) => {}
        Ok(Some(c)) => p.add(
            cfg,
            format!("{f}.path_prefix"),
            format!(
                "`{prefix}` is not in canonical form; keygate routes on canonical paths, write `{}`",
                String::from_utf8_lossy(&c)
            ),
        ),
        Err(_) if !prefix.starts_with('/') => {
            p.add(cfg, format!("{f}.path_prefix"), "must start with `/`")
        }
        Err(e) => p.add(
            cfg,
            format!("{f}.path_prefix"),
            format!("`{prefix}` can never match a request: keygate refuses such paths ({e:?})"),
        ),
    }
}

/// A route's path prefix for joining: `/` as empty, so `"" + "/x"` is `/x`.
fn joinable(prefix: &str) -> &str {
    if prefix == "/" {
        ""
    } else {
        prefix
    }
}

/// Whether `short` is `long` or a segment-wise prefix of it (both joinable).
fn covers(short: &str, long: &str, fold: bool) -> bool {
    let head = long.get(..short.len());
    let same = head.is_some_and(|h| {
        if fold {
            h.eq_ignore_ascii_case(short)
        } else {
            h == short
        }
    });
    same && (long.len() == short.len() || short.is_empty() || long.as_bytes()[short.len()] == b'/')
}

/// What two routes must agree on for it not to matter which of them a request used.
fn restrictions(r: &Route) -> impl PartialEq + '_ {
    (
        (r.auth, &r.host, r.methods, r.scopes),
        (
            r.max_request_body,
            r.consumer_limits,
            r.default_rate,
            r.default_quota,
        ),
        r.cors.is_some(),
    )
}

/// Pairs of routes to one upstream that reach the same origin paths from different
/// client paths (because one of them strips or rewrites its prefix) while they differ in
/// what they allow (auth, host, methods, scopes, body limit, limits, CORS) or in who may
/// use them (`routes` allow-lists): through the laxer one, a client gets around the
/// other. Each is described in one warning, for `check`, start and reload.
pub fn origin_overlaps(state: &super::State) -> Vec<String> {
    let routes = &state.routes;
    let mut out = Vec::new();
    let origin_prefix = |r: &Route| -> String {
        match &r.rewrite {
            Some(rw) => rw.prefix.clone(),
            None => joinable(&r.path_prefix).to_string(),
        }
    };
    for (ai, a) in routes.iter().enumerate() {
        for (bi, b) in routes.iter().enumerate().skip(ai + 1) {
            if a.upstream != b.upstream || (a.rewrite.is_none() && b.rewrite.is_none()) {
                continue;
            }
            let fold = a.case_insensitive || b.case_insensitive;
            let (oa, ob) = (origin_prefix(a), origin_prefix(b));
            let long = if covers(&oa, &ob, fold) {
                ob.clone()
            } else if covers(&ob, &oa, fold) {
                oa.clone()
            } else {
                continue;
            };
            let via_a = format!("{}{}", joinable(&a.path_prefix), &long[oa.len()..]);
            let via_b = format!("{}{}", joinable(&b.path_prefix), &long[ob.len()..]);
            let same_path = if fold {
                via_a.eq_ignore_ascii_case(&via_b)
            } else {
                via_a == via_b
            };
            if same_path {
                continue;
            }
            let lists_differ = state
                .consumers
                .iter()
                .any(|c| c.allowed.as_ref().is_some_and(|l| l.get(ai) != l.get(bi)))
                || state
                    .key_policies
                    .iter()
                    .any(|k| k.allowed.as_ref().is_some_and(|l| l.get(ai) != l.get(bi)));
            if restrictions(a) == restrictions(b) && !lists_differ {
                continue;
            }
            let shown = |p: &str| {
                if p.is_empty() {
                    "/".to_string()
                } else {
                    p.to_string()
                }
            };
            out.push(format!(
                "routes `{}` and `{}` both reach `{}…` at their upstream, from `{}…` and `{}…`, but differ in what they allow or who may use them: a client can take the laxer one; give them prefixes that do not overlap at the origin, or the same settings",
                a.name,
                b.name,
                shown(&long),
                shown(&via_a),
                shown(&via_b),
            ));
        }
    }
    out
}

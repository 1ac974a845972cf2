//! Routes: validated names, canonical hosts and path prefixes, resolved upstreams.

use std::collections::HashMap;
use std::path::Path;

use super::problems::Problems;
use super::{policy, valid_id, Route, Upstream};
use crate::access::{self, Scopes, MAX_SCOPES};
use crate::config::Config;

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
        });
    }
    Routes {
        routes,
        index: route_index,
        scope_names,
        scope_bits,
    }
}

/// A route prefix must be a canonical path, or no request could ever match it.
fn check_path_prefix(prefix: &str, cfg: &Path, f: &str, p: &mut Problems) {
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

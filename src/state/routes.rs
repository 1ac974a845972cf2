//! Routes: validated names, canonical hosts and path prefixes, resolved upstreams.

use std::collections::HashMap;
use std::path::Path;

use super::problems::Problems;
use super::{valid_id, Route, Upstream};
use crate::config::Config;

/// Routes in match order, and route names to indices (for consumer allow-lists).
pub(super) fn routes<'c>(
    config: &'c Config,
    cfg: &Path,
    upstreams: &[Upstream],
    upstream_index: &HashMap<&str, usize>,
    p: &mut Problems,
) -> (Vec<Route>, HashMap<&'c str, usize>) {
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
    (routes, route_index)
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

//! `limits.store`: validating the shared store's settings and keeping its [`Fleet`]
//! view across reloads.
//!
//! The store's connection is made once, at start (`crate::fleet`); a reload keeps the
//! running store (and its view) whatever the file now says about the connection, and
//! applies only `on_error`. A store added or removed by a reload takes effect at the
//! next restart (the reloader warns).

use std::path::Path;
use std::sync::Arc;

use super::problems::Problems;
use super::State;
use crate::config::{Config, OnErrorConfig, RedisConfig};
use crate::limits::{Fleet, OnError};

/// Shortest and longest `timeout_ms`.
const TIMEOUT_MS: (u64, u64) = (1, 5_000);
/// Shortest and longest `sync_interval_ms`.
const SYNC_INTERVAL_MS: (u64, u64) = (10, 60_000);
/// Longest `key_prefix`.
const MAX_PREFIX: usize = 64;

/// The runtime value of `on_error`.
pub fn on_error(c: OnErrorConfig) -> OnError {
    match c {
        OnErrorConfig::Local => OnError::Local,
        OnErrorConfig::Open => OnError::Open,
        OnErrorConfig::Closed => OnError::Closed,
    }
}

/// Check `limits.store` and return the store view the state shares: the previous
/// state's when there was one (a reload keeps the running store), else a new one when
/// the file configures a store.
pub(super) fn fleet(
    config: &Config,
    cfg: &Path,
    previous: Option<&State>,
    p: &mut Problems,
) -> Option<Arc<Fleet>> {
    let store = config.limits.store.as_ref();
    if let Some(s) = store {
        check_redis(&s.redis, cfg, p);
    }
    let on_error = store.map_or(OnError::Local, |s| on_error(s.on_error));
    match previous {
        Some(prev) => {
            let fleet = prev.fleet.clone();
            if let (Some(f), Some(_)) = (&fleet, store) {
                f.set_on_error(on_error);
            }
            fleet
        }
        None => store.map(|_| Arc::new(Fleet::new(on_error))),
    }
}

/// Every problem with `limits.store.redis`.
fn check_redis(r: &RedisConfig, cfg: &Path, p: &mut Problems) {
    let field = |leaf: &str| format!("limits.store.redis.{leaf}");
    if let Err(why) = check_url(&r.url) {
        p.add(cfg, field("url"), why);
    }
    if !(TIMEOUT_MS.0..=TIMEOUT_MS.1).contains(&r.timeout_ms) {
        p.add(
            cfg,
            field("timeout_ms"),
            format!("must be {} to {}", TIMEOUT_MS.0, TIMEOUT_MS.1),
        );
    }
    if !(SYNC_INTERVAL_MS.0..=SYNC_INTERVAL_MS.1).contains(&r.sync_interval_ms) {
        p.add(
            cfg,
            field("sync_interval_ms"),
            format!("must be {} to {}", SYNC_INTERVAL_MS.0, SYNC_INTERVAL_MS.1),
        );
    } else if r.timeout_ms >= r.sync_interval_ms {
        p.add(
            cfg,
            field("timeout_ms"),
            "must be less than sync_interval_ms (a sync must end before the next begins)",
        );
    }
    let prefix_ok = !r.key_prefix.is_empty()
        && r.key_prefix.len() <= MAX_PREFIX
        && r.key_prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix_ok {
        p.add(
            cfg,
            field("key_prefix"),
            format!("must be 1 to {MAX_PREFIX} printable ASCII characters without spaces"),
        );
    }
}

/// Whether `url` is a `redis://` or `rediss://` URL the client accepts, without a
/// password (which belongs in `password`, never in a URL that could be logged). The
/// message never repeats the URL (it might hold a password).
fn check_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        return Err("must start with redis:// or rediss:// (TLS)".into());
    }
    let info = url
        .into_connection_info()
        .map_err(|_| "is not a valid Redis URL (redis://host:port/db)".to_string())?;
    if info.redis_settings().password().is_some() {
        return Err(
            "must not contain a password: set limits.store.redis.password ({ env | file | credential })"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls_are_redis_or_rediss_without_a_password() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "rediss://cache.example:6380",
            "redis://user@127.0.0.1/2",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis://:hunter2@127.0.0.1",
            "redis://user:hunter2@127.0.0.1",
            "redis://",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}

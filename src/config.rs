//! The configuration *files*: what `keygate.yaml` and `keys.yaml` may contain.
//!
//! This module describes the files and nothing else. Every struct is strict
//! (`deny_unknown_fields`), every default is a named constant, and parsing is
//! split from reading (`from_yaml` takes text, `load` takes a path) so tests can
//! feed inline YAML. Semantic checks that need the whole picture (unknown route
//! names, duplicate digests, the secret being present) live in [`crate::state`],
//! which turns a parsed file into the runtime snapshot the request path reads.

mod compat;
mod error;
mod json;
mod parse;
mod secret;
mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use error::{ConfigError, Location, Problem};
pub use parse::{
    locate_in_file, locate_in_text, parse_yaml, parse_yaml_compat, read, resolve_relative,
};
pub use secret::{SecretConfig, SecretSource};
pub use stream::{for_each_consumer, stream_consumers};

/// Default plain-HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default Prometheus listen address (served by the operations layer).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default number of worker threads.
pub const DEFAULT_THREADS: usize = 2;
/// Default time given to in-flight requests on SIGTERM, in seconds.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u64 = 10;
/// Default size of the upstream keep-alive pool (connections kept per process).
pub const DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE: usize = 1024;
/// Default header carrying the shared secret to the origin.
pub const DEFAULT_SECRET_HEADER: &str = "x-shared-secret";
/// Default upstream connect timeout, in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default upstream read timeout, in milliseconds.
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 30_000;
/// Default idle time allowed between requests on a client connection, in seconds.
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECONDS: u64 = 60;
/// Default longest wait for the next piece of a request body, in seconds.
pub const DEFAULT_CLIENT_BODY_TIMEOUT_SECONDS: u64 = 30;
/// Default limit on the request line plus headers, in bytes.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;
/// Default time allowed for a whole request head, in seconds.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_SECONDS: u64 = 30;
/// Default minimum request-body rate, in bytes per second (as Apache's `mod_reqtimeout`).
pub const DEFAULT_CLIENT_BODY_MIN_RATE_BYTES_PER_SECOND: u64 = 500;
/// Default interval between writes of buffered access-log lines, in milliseconds.
pub const DEFAULT_ACCESS_LOG_FLUSH_INTERVAL_MS: u64 = 50;
/// Default limit on the number of request headers.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Default failed authentications allowed per client address per window.
pub const DEFAULT_BRUTE_FORCE_MAX_FAILURES: u32 = 20;
/// Default brute-force window, in seconds.
pub const DEFAULT_BRUTE_FORCE_WINDOW_SECONDS: u32 = 60;
/// Default number of counters in the brute-force table (8 bytes each).
pub const DEFAULT_BRUTE_FORCE_TABLE_SLOTS: usize = 65_536;

/// The main file, `keygate.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, threads and process settings (changes need a restart).
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the shared secret for the origin comes from.
    pub secret: SecretConfig,
    /// Where keys are and how clients present them.
    pub auth: AuthConfig,
    /// Named origins keygate forwards to.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Ordered routes; the first match wins.
    pub routes: Vec<RouteConfig>,
}

/// `server:` — listeners and process settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain-HTTP listen addresses (`ip:port`). Default `["127.0.0.1:8080"]`.
    pub listen: Vec<String>,
    /// TLS listeners. Default none.
    pub tls_listen: Vec<TlsListenConfig>,
    /// Worker threads. Default 2.
    pub threads: usize,
    /// Prometheus listen address; empty disables it. Default `127.0.0.1:9464`.
    pub metrics_listen: String,
    /// Seconds in-flight requests get to finish after SIGTERM. Default 10.
    pub grace_period_seconds: u64,
    /// Upstream connections kept alive for reuse. Default 1024; keep it above peak concurrency.
    pub upstream_keepalive_pool_size: usize,
    /// Idle seconds allowed between requests on a client connection (and per read while
    /// the next request's headers arrive). Default 60.
    pub keepalive_timeout_seconds: u64,
    /// Longest wait, in seconds, for the next piece of a request body. Default 30.
    pub client_body_timeout_seconds: u64,
    /// Seconds allowed from the first byte of a request head (the connection's start,
    /// for the first request) to its end; past it keygate answers 408. Default 30.
    pub client_header_timeout_seconds: u64,
    /// Minimum request-body rate in bytes per second: the time keygate waits on the
    /// client for a body may not exceed `client_body_timeout_seconds` plus one second
    /// per this many bytes received; 0 disables. Default 500.
    pub client_body_min_rate_bytes_per_second: u64,
    /// Proxies (CIDR blocks or addresses) whose `X-Forwarded-*` headers are believed.
    /// Default none: keygate is the first hop.
    pub trusted_proxies: Vec<String>,
    /// Request line plus headers larger than this get 431. Default 32768.
    pub max_request_header_bytes: usize,
    /// More request headers than this get 431. Default 100.
    pub max_request_headers: usize,
    /// The access log.
    pub access_log: AccessLogConfig,
}

/// `server.access_log:` — how access-log lines leave the process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// How often, in milliseconds, the buffered lines of every worker thread are written
    /// out (lines are never written on the request path). Default 50. Every buffered
    /// line is written at exit whatever this is.
    pub flush_interval_ms: u64,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            flush_interval_ms: DEFAULT_ACCESS_LOG_FLUSH_INTERVAL_MS,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN.to_string()],
            tls_listen: Vec::new(),
            threads: DEFAULT_THREADS,
            metrics_listen: DEFAULT_METRICS_LISTEN.to_string(),
            grace_period_seconds: DEFAULT_GRACE_PERIOD_SECONDS,
            upstream_keepalive_pool_size: DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE,
            keepalive_timeout_seconds: DEFAULT_KEEPALIVE_TIMEOUT_SECONDS,
            client_body_timeout_seconds: DEFAULT_CLIENT_BODY_TIMEOUT_SECONDS,
            client_header_timeout_seconds: DEFAULT_CLIENT_HEADER_TIMEOUT_SECONDS,
            client_body_min_rate_bytes_per_second: DEFAULT_CLIENT_BODY_MIN_RATE_BYTES_PER_SECOND,
            trusted_proxies: Vec::new(),
            access_log: AccessLogConfig::default(),
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
        }
    }
}

/// One TLS listener: address plus PEM certificate chain and private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenConfig {
    /// `ip:port` to listen on.
    pub address: String,
    /// PEM certificate chain (leaf first). Relative to the config file's folder.
    pub cert: PathBuf,
    /// PEM private key. Relative to the config file's folder.
    pub key: PathBuf,
}

/// `auth:` — the keys file and the credential sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The keys file, relative to the config file's folder.
    pub keys_file: PathBuf,
    /// Where clients present keys, tried together (two different keys are ambiguous).
    /// Default: `Authorization: Bearer <key>`, then `x-api-key: <key>`.
    #[serde(default = "default_sources")]
    pub sources: Vec<SourceConfig>,
    /// Brute-force resistance: failed authentications per client address.
    #[serde(default)]
    pub brute_force: BruteForceConfig,
}

/// `auth.brute_force:` — block addresses that keep presenting bad keys.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BruteForceConfig {
    /// Failed authentications (invalid, expired, disabled, ambiguous) allowed per client
    /// address per window before it gets 429; 0 disables. Default 20.
    pub max_failures: u32,
    /// Window length in seconds. Default 60.
    pub window_seconds: u32,
    /// Counters in the tracking table (8 bytes each; restart to change). Default 65536.
    pub table_slots: usize,
}

impl Default for BruteForceConfig {
    fn default() -> Self {
        BruteForceConfig {
            max_failures: DEFAULT_BRUTE_FORCE_MAX_FAILURES,
            window_seconds: DEFAULT_BRUTE_FORCE_WINDOW_SECONDS,
            table_slots: DEFAULT_BRUTE_FORCE_TABLE_SLOTS,
        }
    }
}

/// One place a client may present a key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Header name.
    pub header: String,
    /// Optional auth scheme (`Bearer`): the value must be `<scheme> <key>`, scheme case-insensitive.
    #[serde(default)]
    pub scheme: Option<String>,
}

/// The default credential sources.
pub fn default_sources() -> Vec<SourceConfig> {
    vec![
        SourceConfig {
            header: "authorization".to_string(),
            scheme: Some("Bearer".to_string()),
        },
        SourceConfig {
            header: "x-api-key".to_string(),
            scheme: None,
        },
    ]
}

/// One named origin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port`; a name is resolved once at load, never per request.
    pub address: String,
    /// Connect with TLS. Default false.
    #[serde(default)]
    pub tls: bool,
    /// TLS server name to send and verify. Default: the host part of `address`.
    #[serde(default)]
    pub sni: String,
    /// PEM file of CA certificates to trust instead of the system roots (private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Replace the `Host` header sent to this origin. Default: keep the client's `Host`.
    #[serde(default)]
    pub host_header: Option<String>,
    /// Connect timeout in milliseconds. Default 2000.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Read timeout (time between bytes from the origin) in milliseconds. Default 30000.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// The origin matches paths without regard to ASCII case (IIS, ASP.NET Core,
    /// Express's default router): routes to it then match their `path_prefix` the
    /// same way, so `/ADMIN` cannot slip past a `/admin` route. Default false.
    #[serde(default)]
    pub case_insensitive_paths: bool,
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

fn default_read_timeout_ms() -> u64 {
    DEFAULT_READ_TIMEOUT_MS
}

/// How a route treats API keys.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// A valid key is required.
    Required,
    /// A presented key must be valid; no key passes as anonymous.
    Optional,
    /// Keys are not checked.
    None,
}

/// One route: which requests it matches, where they go, how they authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique route name (used in consumer allow-lists and metrics).
    pub name: String,
    /// Match only this `Host` (case-insensitive, port ignored). Default: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Match paths starting with this prefix at a segment boundary. Default `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Upstream name.
    pub upstream: String,
    /// `required`, `optional` or `none`.
    pub auth: AuthMode,
}

fn default_path_prefix() -> String {
    "/".to_string()
}

/// The keys file, `keys.yaml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    /// Consumers and their keys.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
}

/// One consumer (a client application or team).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Unique id, `[A-Za-z0-9._-]`; forwarded as `x-consumer-id`.
    pub id: String,
    /// Optional display name; forwarded as `x-consumer-username`.
    #[serde(default)]
    pub name: Option<String>,
    /// Disable every key of this consumer. Default false.
    #[serde(default)]
    pub disabled: bool,
    /// Route names this consumer may use. Absent: all routes.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// The consumer's keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// One API key, stored as its SHA-256 digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Unique id across the file; logged and forwarded, never the key.
    pub id: String,
    /// Hex SHA-256 of the key (64 hex characters).
    pub sha256: String,
    /// Optional expiry, RFC 3339 (e.g. `2027-01-01T00:00:00Z`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Disable this key. Default false.
    #[serde(default)]
    pub disabled: bool,
}

impl Config {
    /// Parse `keygate.yaml` text; `file` is only used in error messages.
    pub fn from_yaml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        parse_yaml(text, file)
    }

    /// Read and parse `keygate.yaml`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::from_yaml(&read(path)?, path)
    }

    /// What can still be read from a `keygate.yaml` text that does not parse: the keys
    /// file, and the route names when they can be read, so that the keys file is
    /// checked all the same and its problems reported with the others.
    pub fn salvage(text: &str) -> Option<(PathBuf, Option<Vec<String>>)> {
        #[derive(Deserialize)]
        struct Salvage {
            auth: Option<SalvageAuth>,
            routes: Option<Vec<SalvageRoute>>,
        }
        #[derive(Deserialize)]
        struct SalvageAuth {
            keys_file: Option<PathBuf>,
        }
        #[derive(Deserialize)]
        struct SalvageRoute {
            name: String,
        }
        let s: Salvage = crate::yaml::from_str(text).ok()?;
        let routes = s.routes.map(|r| r.into_iter().map(|r| r.name).collect());
        Some((s.auth?.keys_file?, routes))
    }
}

impl KeysFile {
    /// Parse `keys.yaml` text; `file` is only used in error messages.
    ///
    /// # Errors
    /// Every problem found, each with line, column and field path.
    pub fn from_yaml(text: &str, file: &Path) -> Result<KeysFile, ConfigError> {
        let mut consumers = Vec::new();
        for_each_consumer(text, file, &mut |_, c| consumers.push(c.clone()))?;
        Ok(KeysFile { consumers })
    }
}

#[cfg(test)]
mod tests;

//! The configuration *files*: what `keygate.yaml` and `keys.yaml` may contain.
//!
//! This module describes the files and nothing else. Every struct is strict
//! (`deny_unknown_fields`), every default is a named constant, and parsing is
//! split from reading (`from_yaml` takes text, `load` takes a path) so tests can
//! feed inline YAML. Semantic checks that need the whole picture (unknown route
//! names, duplicate digests, the secret being present) live in [`crate::state`],
//! which turns a parsed file into the runtime snapshot the request path reads.
//!
//! Over the ~400-line guideline because the file model is one documented type per YAML
//! section, each field with its unit and default: it mirrors the README's configuration
//! reference in one place (parsing, errors, secrets and streaming live in `config/`).

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
pub use stream::{for_each_consumer, stream_consumers, Streamed};

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
/// Default weight of an upstream server.
pub const DEFAULT_SERVER_WEIGHT: u32 = 1;
/// Default consecutive connect failures that eject an upstream server.
pub const DEFAULT_EJECT_AFTER_CONNECT_FAILURES: u32 = 3;
/// Default time an ejected upstream server gets no requests, in seconds.
pub const DEFAULT_EJECT_SECONDS: u64 = 10;
/// Default time between two health probes of a server, in milliseconds.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
/// Default time a health probe may take, in milliseconds.
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
/// Default consecutive passed probes that bring a server back.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default consecutive failed probes that take a server out.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default statuses of an HTTP health probe that count as healthy.
pub const DEFAULT_HEALTHY_STATUSES: StatusRange = StatusRange { from: 200, to: 399 };
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
/// Default access-log destination: standard error.
pub const DEFAULT_ACCESS_LOG_DESTINATION: &str = "stderr";
/// Default limit on the number of request headers.
pub const DEFAULT_MAX_REQUEST_HEADERS: usize = 100;
/// Default failed authentications allowed per client address per window.
pub const DEFAULT_BRUTE_FORCE_MAX_FAILURES: u32 = 20;
/// Default brute-force window, in seconds.
pub const DEFAULT_BRUTE_FORCE_WINDOW_SECONDS: u32 = 60;
/// Default number of counters in the brute-force table (8 bytes each).
pub const DEFAULT_BRUTE_FORCE_TABLE_SLOTS: usize = 65_536;
/// Default time a browser may cache a CORS preflight answer, in seconds.
pub const DEFAULT_CORS_MAX_AGE_SECONDS: u64 = 600;
/// Default warning window before a key's `expires_at`, in seconds (7 days).
pub const DEFAULT_KEY_EXPIRY_WARNING_SECONDS: u64 = 7 * 24 * 3600;

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
    /// Where consumer and key limits are counted. Default: in this instance alone.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// Default `limits.store.redis.timeout_ms`: the longest any store call may take.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 20;
/// Default `limits.store.redis.sync_interval_ms`: how often counts are exchanged.
pub const DEFAULT_STORE_SYNC_INTERVAL_MS: u64 = 250;
/// Default `limits.store.redis.key_prefix`.
pub const DEFAULT_STORE_KEY_PREFIX: &str = "keygate:";

fn default_store_timeout_ms() -> u64 {
    DEFAULT_STORE_TIMEOUT_MS
}

fn default_store_sync_interval_ms() -> u64 {
    DEFAULT_STORE_SYNC_INTERVAL_MS
}

fn default_store_key_prefix() -> String {
    DEFAULT_STORE_KEY_PREFIX.to_string()
}

/// `limits:` — where consumer and key limits are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// A store shared by every instance of a fleet; absent: each instance counts alone.
    #[serde(default)]
    pub store: Option<LimitStoreConfig>,
}

/// `limits.store:` — the shared store and what to do while it is away.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitStoreConfig {
    /// The Redis (or Valkey) server.
    pub redis: RedisConfig,
    /// What limits do while the store is unreachable, slow or failing: `local` (each
    /// instance enforces its share), `open` (admit), `closed` (refuse with 503).
    /// Default `local`. Takes effect on reload.
    #[serde(default)]
    pub on_error: OnErrorConfig,
}

/// `limits.store.on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnErrorConfig {
    /// Each instance enforces the limit divided by the live instances.
    #[default]
    Local,
    /// Admit.
    Open,
    /// Refuse with 503 `limits_unavailable`.
    Closed,
}

/// `limits.store.redis:` — how to reach the store (changes need a restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://host:port/db` (TLS); a user name may be
    /// given (`redis://user@host`), a password may not (use `password`).
    pub url: String,
    /// Where the password comes from (`{ env | file | credential }`); default none.
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// The longest one store call may take, in milliseconds: 1 to 5000. Default 20.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
    /// How often counts are exchanged with the store, in milliseconds: 10 to 60000.
    /// Default 250.
    #[serde(default = "default_store_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Prefix of every store key keygate writes: 1 to 64 printable characters without
    /// spaces. Default `keygate:`.
    #[serde(default = "default_store_key_prefix")]
    pub key_prefix: String,
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
    /// Whether connections from `trusted_proxies` peers to the proxy listeners (`listen`
    /// and `tls_listen`) start with a PROXY protocol header (v1 or v2) naming the client,
    /// as L4 balancers send: `off`, `optional` or `required`. Other peers' connections
    /// are never read for one. Default `off`. Reloads live.
    pub proxy_protocol: ProxyProtocolMode,
    /// Request line plus headers larger than this get 431. Default 32768.
    pub max_request_header_bytes: usize,
    /// More request headers than this get 431. Default 100.
    pub max_request_headers: usize,
    /// The access log.
    pub access_log: AccessLogConfig,
    /// Admin listener address (`ip:port`) serving `GET /keys`; empty disables it.
    /// Default empty. Keep it on loopback (`127.0.0.1:9465`); restart to change.
    pub admin_listen: String,
    /// Where the admin listener's bearer token comes from (`{ env | file | credential }`);
    /// required when `admin_listen` is set. Re-read on reload.
    pub admin_token: Option<SecretSource>,
    /// Reload when `keygate.yaml`, the keys file or a secret file changes, as SIGHUP
    /// does, by watching their folders (inotify). Default false. Applied live: a
    /// reload that turns it on or off starts or stops the watch.
    pub watch_files: bool,
}

/// `server.proxy_protocol`: whether a trusted peer's connection starts with a PROXY
/// protocol header (HAProxy's proxy-protocol.txt, v1 text or v2 binary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolMode {
    /// No header is read: the bytes are HTTP (or TLS) from the first one.
    #[default]
    Off,
    /// A trusted peer may send a header; a connection without one is served with the
    /// peer as the client.
    Optional,
    /// A trusted peer must send a header; a connection without one is closed.
    Required,
}

/// `server.access_log:` — how access-log lines are written and where they go (all
/// three need a restart to change).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// How often, in milliseconds, the buffered lines of every worker thread are written
    /// out (lines are never written on the request path). Default 50. Every buffered
    /// line is written at exit whatever this is.
    pub flush_interval_ms: u64,
    /// `text` (`key=value` pairs) or `json` (one object per line). Default `text`.
    pub format: AccessLogFormat,
    /// `stderr` (with keygate's other lines: the journal under systemd), or the path of
    /// a file, relative to the config file's folder, opened for appending (created with
    /// mode 0640 if missing) and reopened on SIGUSR1. Default `stderr`.
    pub destination: String,
}

/// `server.access_log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// `2026-… INFO  keygate::access: method=GET path=/x status=200 …`
    #[default]
    Text,
    /// `{"timestamp":"2026-…","level":"INFO","target":"keygate::access","method":"GET",…}`
    Json,
}

impl AccessLogConfig {
    /// The file the access log goes to (resolved against the folder of `config_path`),
    /// or `None` for stderr.
    pub fn file(&self, config_path: &Path) -> Option<PathBuf> {
        (self.destination != DEFAULT_ACCESS_LOG_DESTINATION)
            .then(|| resolve_relative(config_path, Path::new(&self.destination)))
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            flush_interval_ms: DEFAULT_ACCESS_LOG_FLUSH_INTERVAL_MS,
            format: AccessLogFormat::default(),
            destination: DEFAULT_ACCESS_LOG_DESTINATION.to_string(),
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
            proxy_protocol: ProxyProtocolMode::Off,
            access_log: AccessLogConfig::default(),
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            admin_listen: String::new(),
            admin_token: None,
            watch_files: false,
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
    /// Seconds before a key's `expires_at` during which responses to it carry
    /// `Deprecation` and `Sunset`, and it counts in `keygate_keys_expiring_soon`.
    /// Default 604800 (7 days); 0 disables the warning.
    #[serde(default = "default_key_expiry_warning_seconds")]
    pub key_expiry_warning_seconds: u64,
    /// An `https://` (or `http://`) page for clients about key rotation, sent as
    /// `Link: <url>; rel="deprecation"` with the warning. Default none.
    #[serde(default)]
    pub deprecation_link: Option<String>,
}

fn default_key_expiry_warning_seconds() -> u64 {
    DEFAULT_KEY_EXPIRY_WARNING_SECONDS
}

/// `rate_limit:` — at most `requests` per sliding window of `window_seconds`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests allowed per window: 1 to 4294967295.
    pub requests: u64,
    /// Window length in seconds: 1 to 86400 (use a `quota` for longer periods).
    pub window_seconds: u64,
}

/// A quota period: calendar `day` or `month`, in UTC.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// 00:00:00 UTC to the next midnight.
    Day,
    /// The first of the month, 00:00:00 UTC, to the first of the next.
    Month,
}

/// `quota:` — at most `requests` per calendar `period` (UTC).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests allowed per period: 1 to 4294967295.
    pub requests: u64,
    /// `day` or `month`.
    pub period: QuotaPeriod,
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

/// One named origin: one server (`address`) or several (`servers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of the one server; a name is resolved once at load, never per
    /// request. Exactly one of `address` and `servers`.
    #[serde(default)]
    pub address: Option<String>,
    /// Several servers sharing the load, by weight. Exactly one of `address` and `servers`.
    #[serde(default)]
    pub servers: Option<Vec<UpstreamServerConfig>>,
    /// How a server is chosen: `round_robin` (weighted, the default) or
    /// `least_connections` (fewest requests in flight per unit of weight).
    #[serde(default)]
    pub balance: BalanceConfig,
    /// Active health checks of every server. Default none: servers are taken out only
    /// by passive ejection.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Consecutive failed connections (refused, timed out, TLS failures) after which a
    /// server is ejected for `eject_seconds`; 0 disables passive ejection. Default 3.
    #[serde(default = "default_eject_after_connect_failures")]
    pub eject_after_connect_failures: u32,
    /// How long an ejected server gets no requests, in seconds. Default 10.
    #[serde(default = "default_eject_seconds")]
    pub eject_seconds: u64,
    /// Connect with TLS. Default false.
    #[serde(default)]
    pub tls: bool,
    /// TLS server name to send and verify. Default: the host part of each server's address.
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

/// `upstreams.<name>.servers[]:` — one server of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServerConfig {
    /// `host:port`; a name is resolved once at load, never per request.
    pub address: String,
    /// Its share of the requests relative to the other servers: 1 to 1000. Default 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// `upstreams.<name>.balance`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceConfig {
    /// Weighted round robin, interleaved (weights 3 and 1 give a a b a, not a a a b).
    #[default]
    RoundRobin,
    /// The server with the fewest requests in flight per unit of weight.
    LeastConnections,
}

/// `upstreams.<name>.health_check:` — how keygate probes each server.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path (and query) of an HTTP `GET` probe, e.g. `/healthz`; it carries the shared
    /// secret. Absent: the probe is a TCP connect (plus the TLS handshake and
    /// certificate check for `tls: true`).
    #[serde(default)]
    pub path: Option<String>,
    /// Time between two probes of a server, in milliseconds. Default 2000.
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    /// Time a probe may take (connect, TLS, answer), in milliseconds; at most
    /// `interval_ms`. Default 1000.
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passed probes that bring an unhealthy server back. Default 2.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a healthy server out. Default 3.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses of the HTTP probe that count as healthy: codes (`204`) and ranges
    /// (`"200-399"`). Default `["200-399"]`; only with `path`.
    #[serde(default)]
    pub healthy_statuses: Option<Vec<StatusRange>>,
}

/// A status code or an inclusive range of them, written `204` or `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// The first status of the range.
    pub from: u16,
    /// The last status of the range (equal to `from` for a single code).
    pub to: u16,
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = StatusRange;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status code (204) or a range of them (\"200-399\")")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<StatusRange, E> {
                let code = u16::try_from(v)
                    .map_err(|_| E::custom(format!("`{v}` is not a status code")))?;
                Ok(StatusRange {
                    from: code,
                    to: code,
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusRange, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("`{v}` is not a status code")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<StatusRange, E> {
                let bad = || {
                    E::custom(format!(
                        "`{v}` is not a status code or a range like 200-399"
                    ))
                };
                let (from, to) = v.split_once('-').unwrap_or((v, v));
                let from = from.trim().parse().map_err(|_| bad())?;
                let to = to.trim().parse().map_err(|_| bad())?;
                Ok(StatusRange { from, to })
            }
        }
        d.deserialize_any(Visit)
    }
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}

fn default_read_timeout_ms() -> u64 {
    DEFAULT_READ_TIMEOUT_MS
}

fn default_weight() -> u32 {
    DEFAULT_SERVER_WEIGHT
}

fn default_eject_after_connect_failures() -> u32 {
    DEFAULT_EJECT_AFTER_CONNECT_FAILURES
}

fn default_eject_seconds() -> u64 {
    DEFAULT_EJECT_SECONDS
}

fn default_health_interval_ms() -> u64 {
    DEFAULT_HEALTH_INTERVAL_MS
}

fn default_health_timeout_ms() -> u64 {
    DEFAULT_HEALTH_TIMEOUT_MS
}

fn default_healthy_threshold() -> u32 {
    DEFAULT_HEALTHY_THRESHOLD
}

fn default_unhealthy_threshold() -> u32 {
    DEFAULT_UNHEALTHY_THRESHOLD
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
    /// Scopes a key needs for this route (all of them); a key without them gets 403.
    /// Default none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Rate limit for each consumer that has no `rate_limit` of its own, counted per
    /// consumer on this route. Default none.
    #[serde(default)]
    pub default_rate_limit: Option<RateLimitConfig>,
    /// Quota for each consumer that has no `quota` of its own, counted per consumer
    /// on this route. Default none.
    #[serde(default)]
    pub default_quota: Option<QuotaConfig>,
    /// Whether consumer and key limits apply on this route; `false` opts the route out
    /// (its requests are neither limited nor counted). Default true.
    #[serde(default = "default_true")]
    pub consumer_limits: bool,
    /// Methods this route serves; another method on a matching host and path gets 405
    /// (never a later route). Default: all that keygate forwards.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Remove `path_prefix` from the path sent to the origin (`/v1/orders` → `/orders`).
    /// Default false.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Replace `path_prefix` by this in the path sent to the origin (`/v1/orders` →
    /// `/internal/orders`). Default none.
    #[serde(default)]
    pub rewrite_prefix: Option<String>,
    /// Connect timeout for this route, in milliseconds, instead of the upstream's.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout for this route, in milliseconds, instead of the upstream's.
    #[serde(default)]
    pub read_timeout_ms: Option<u64>,
    /// Largest request body, in bytes; larger gets 413. Default: no limit.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Cross-origin resource sharing for browsers: answer preflights without a key and
    /// add the CORS response headers. Default none (no CORS).
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

/// `routes[].cors:` — which browser origins may call this route, and how.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`, `scheme://host[:port]`), or `["*"]`.
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for. Default: the route's `methods`, else the
    /// methods keygate forwards.
    #[serde(default)]
    pub allow_methods: Option<Vec<String>>,
    /// Request headers a preflight may ask for. Default: the ones it asks for.
    #[serde(default)]
    pub allow_headers: Option<Vec<String>>,
    /// Response headers scripts may read, besides keygate's own (`x-request-id`,
    /// `RateLimit`, `RateLimit-Policy`, `Retry-After`, `Deprecation`, `Sunset`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds. Default 600.
    #[serde(default = "default_cors_max_age")]
    pub max_age_seconds: u64,
    /// Allow credentials (cookies, `Authorization` set by the browser). Default false;
    /// never together with `"*"`.
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_cors_max_age() -> u64 {
    DEFAULT_CORS_MAX_AGE_SECONDS
}

fn default_true() -> bool {
    true
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
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// HTTP methods this consumer may use (`GET` allows `HEAD`). Absent: all.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Scopes granted to this consumer's keys. Default none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The consumer's id in another system; forwarded as `x-consumer-custom-id`.
    #[serde(default)]
    pub custom_id: Option<String>,
    /// Group names; forwarded comma-separated as `x-consumer-groups`.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Rate limit shared by all this consumer's keys on all routes.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Quota shared by all this consumer's keys on all routes.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
    /// The consumer's keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
}

/// One API key, stored as its SHA-256 digest.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Optional start of validity, RFC 3339: before it the key is invalid.
    #[serde(default)]
    pub not_before: Option<String>,
    /// Narrow the consumer's routes for this key. Absent: the consumer's.
    #[serde(default)]
    pub routes: Option<Vec<String>>,
    /// Narrow the consumer's methods for this key. Absent: the consumer's.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Narrow the consumer's scopes for this key. Absent: the consumer's.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// A rate limit for this key alone, on top of the consumer's.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// A quota for this key alone, on top of the consumer's.
    #[serde(default)]
    pub quota: Option<QuotaConfig>,
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

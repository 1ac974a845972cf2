//! `keygate demo`: the gateway in front of a built-in origin, ready in seconds.
//!
//! Everything is generated fresh (a key, a secret) and kept in memory; nothing
//! is written to disk. The configuration goes through the same validation and
//! state building as a real one.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use pingora::services::listening::Service;

use crate::apikey;
use crate::config::{
    default_sources, AuthConfig, AuthMode, Config, ConsumerConfig, KeyConfig, KeysFile,
    RouteConfig, SecretConfig, SecretSource, ServerConfig, UpstreamConfig,
    DEFAULT_CONNECT_TIMEOUT_MS, DEFAULT_READ_TIMEOUT_MS, DEFAULT_SECRET_HEADER,
};
use crate::metrics::Metrics;
use crate::origin::DemoOrigin;
use crate::server;
use crate::state::{self, Loaded};

/// Errors that stop the demo before it starts.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The listen address is not `ip:port`.
    #[error("--listen `{0}` is not an ip:port address")]
    BadListen(String),
    /// The listen address is taken.
    #[error("cannot listen on {0}: {1}; pass another address with --listen 127.0.0.1:PORT")]
    InUse(SocketAddr, std::io::Error),
    /// Setting up failed.
    #[error("{0}")]
    Setup(String),
}

/// Start the demo on `listen`; never returns unless setup fails.
pub fn run(listen: &str) -> Result<(), DemoError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| DemoError::BadListen(listen.to_string()))?;
    drop(TcpListener::bind(addr).map_err(|e| DemoError::InUse(addr, e))?);
    let origin_addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::Setup(format!("no free port for the demo origin: {e}")))?;

    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    let key = apikey::generate().map_err(|e| setup(&e))?;
    let secret = apikey::random_base62(40).map_err(|e| setup(&e))?;

    let config = Config {
        server: ServerConfig {
            listen: vec![addr.to_string()],
            threads: 1,
            metrics_listen: String::new(),
            ..ServerConfig::default()
        },
        // The demo hands its generated secret to the state directly; this source is
        // never read.
        secret: SecretConfig {
            header: DEFAULT_SECRET_HEADER.into(),
            source: SecretSource::Env("KEYGATE_DEMO_SECRET".into()),
        },
        auth: AuthConfig {
            keys_file: "(demo)".into(),
            sources: default_sources(),
            brute_force: Default::default(),
            key_expiry_warning_seconds: crate::config::DEFAULT_KEY_EXPIRY_WARNING_SECONDS,
            deprecation_link: None,
        },
        upstreams: BTreeMap::from([(
            "demo-origin".to_string(),
            UpstreamConfig {
                address: Some(origin_addr.to_string()),
                servers: None,
                balance: Default::default(),
                health_check: None,
                eject_after_connect_failures: crate::config::DEFAULT_EJECT_AFTER_CONNECT_FAILURES,
                eject_seconds: crate::config::DEFAULT_EJECT_SECONDS,
                tls: false,
                sni: String::new(),
                ca_file: None,
                host_header: None,
                connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
                read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
                case_insensitive_paths: false,
            },
        )]),
        limits: crate::config::LimitsConfig::default(),
        routes: vec![
            demo_route("public", "/public", AuthMode::None),
            demo_route("api", "/", AuthMode::Required),
        ],
    };
    let keys = KeysFile {
        consumers: vec![ConsumerConfig {
            id: "demo".into(),
            name: Some("Demo Consumer".into()),
            keys: vec![KeyConfig {
                id: "demo-key-1".into(),
                sha256: hex::encode(apikey::digest(key.as_bytes())),
                ..KeyConfig::default()
            }],
            ..ConsumerConfig::default()
        }],
    };
    let metrics = Arc::new(Metrics::register(prometheus::Registry::new()).map_err(|e| setup(&e))?);
    let state = state::build(
        state::Inputs {
            config: &config,
            config_path: Path::new("(demo)"),
            keys_path: Path::new("(demo)"),
            secret: secret.as_bytes(),
            metrics: Some(&metrics),
            previous: None,
            admin_token: None,
        },
        &keys,
    )
    .map_err(|e| setup(&e))?;
    let mut gateway = server::assemble(
        Loaded {
            config,
            state,
            warnings: Vec::new(),
            digests: None,
        },
        metrics,
        None,
        Default::default(),
        Default::default(),
    )
    .map_err(|e| setup(&e))?;

    let header = HeaderName::from_static(DEFAULT_SECRET_HEADER);
    let mut origin = Service::new(
        "keygate demo origin".to_string(),
        DemoOrigin::new(header, secret.into_bytes()),
    );
    origin.add_tcp(&origin_addr.to_string());
    gateway.add_service(origin);

    println!(
        "keygate demo: gateway on http://{addr} in front of a built-in origin on http://{origin_addr}\n\
         (the origin answers 401 to anything without the shared secret keygate adds)\n\n\
         API key for consumer `demo` (generated now, kept only in memory):\n  {key}\n\n\
         Try it:\n\
         \x20 curl -i http://{addr}/hello -H 'Authorization: Bearer {key}'   # 200, the origin sees your identity\n\
         \x20 curl -i http://{addr}/hello -H 'x-api-key: {key}'              # 200, same key in x-api-key\n\
         \x20 curl -i http://{addr}/hello                                     # 401 missing_api_key\n\
         \x20 curl -i http://{addr}/hello -H 'x-api-key: kg_wrong'            # 401 invalid_api_key\n\
         \x20 curl -i http://{addr}/public/info                               # 200, auth: none route\n\
         \x20 curl -i http://{origin_addr}/hello                                # 401 from the origin itself: no secret\n\n\
         Press Ctrl-C to stop."
    );
    gateway.run_forever();
}

/// A demo route to the demo origin: `name` on `path_prefix` with `auth`, nothing else set.
fn demo_route(name: &str, path_prefix: &str, auth: AuthMode) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        host: None,
        path_prefix: path_prefix.into(),
        upstream: "demo-origin".into(),
        auth,
        scopes: Vec::new(),
        default_rate_limit: None,
        default_quota: None,
        consumer_limits: true,
        methods: None,
        strip_prefix: false,
        rewrite_prefix: None,
        connect_timeout_ms: None,
        read_timeout_ms: None,
        max_request_body_bytes: None,
        cors: None,
    }
}

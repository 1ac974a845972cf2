//! Config fixtures: the shared secret, the standard gateway config and a builder for its
//! variants, and the standard keys file.

use std::collections::HashMap;
use std::net::SocketAddr;

/// The secret every test gateway and origin share.
pub const SECRET: &str = "test-shared-secret-0123456789abcdef";

/// The standard routes (YAML flow-map contents, first match wins): one for every auth
/// mode, and a host-bound catch-all `api`, all to upstream `origin`.
pub const STANDARD_ROUTES: [&str; 4] = [
    "name: public, path_prefix: /public, upstream: origin, auth: none",
    "name: maybe, path_prefix: /maybe, upstream: origin, auth: optional",
    "name: admin, path_prefix: /admin, upstream: origin, auth: required",
    "name: api, host: gateway.test, path_prefix: /, upstream: origin, auth: required",
];

/// A keygate config, built from the standard one: listening on `{listen}` (filled in by
/// [`Gateway::start`](super::Gateway::start)) or a chosen address, one thread, no metrics
/// listener, the secret from `KEYGATE_SHARED_SECRET`, keys from `keys.yaml`, one upstream
/// `origin` (connect timeout 1 s, read timeout 1.5 s) and the [`STANDARD_ROUTES`].
///
/// ```ignore
/// GatewayConfig::new(origin.addr)
///     .server("keepalive_timeout_seconds: 1")
///     .auth("brute_force: { max_failures: 5, window_seconds: 3600 }")
///     .upstream("tls: true, sni: localhost, ca_file: trust.pem")
///     .metrics(maddr)
///     .yaml()
/// ```
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    listen: Option<SocketAddr>,
    threads: usize,
    metrics: Option<SocketAddr>,
    server: Vec<String>,
    secret_file: Option<String>,
    auth: Vec<String>,
    origin: SocketAddr,
    connect_timeout_ms: u64,
    read_timeout_ms: u64,
    upstream: Vec<String>,
    servers: Vec<(SocketAddr, u32)>,
    upstreams: Vec<(String, String)>,
    routes: Vec<String>,
}

impl GatewayConfig {
    /// The standard config, with upstream `origin` at `origin`.
    pub fn new(origin: SocketAddr) -> GatewayConfig {
        GatewayConfig {
            listen: None,
            threads: 1,
            metrics: None,
            server: Vec::new(),
            secret_file: None,
            auth: Vec::new(),
            origin,
            connect_timeout_ms: 1000,
            read_timeout_ms: 1500,
            upstream: Vec::new(),
            servers: Vec::new(),
            upstreams: Vec::new(),
            routes: STANDARD_ROUTES.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// Listen on `addr` instead of leaving the `{listen}` placeholder (for configs run or
    /// checked without [`Gateway::start`](super::Gateway::start)).
    pub fn listen(mut self, addr: SocketAddr) -> GatewayConfig {
        self.listen = Some(addr);
        self
    }

    /// `server.threads` (1 by default).
    pub fn threads(mut self, threads: usize) -> GatewayConfig {
        self.threads = threads;
        self
    }

    /// Serve `/metrics` and `/healthz` on `addr` (`server.metrics_listen`).
    pub fn metrics(mut self, addr: SocketAddr) -> GatewayConfig {
        self.metrics = Some(addr);
        self
    }

    /// Add a setting under `server:`, e.g. `"keepalive_timeout_seconds: 1"` (YAML as it
    /// would appear there, without indentation; several lines are indented together).
    pub fn server(mut self, setting: &str) -> GatewayConfig {
        self.server.push(setting.to_string());
        self
    }

    /// Read the secret from `path` (`secret.file`) instead of the environment.
    pub fn secret_file(mut self, path: &str) -> GatewayConfig {
        self.secret_file = Some(path.to_string());
        self
    }

    /// Add a setting under `auth:`, e.g.
    /// `"brute_force: { max_failures: 5, window_seconds: 3600 }"`.
    pub fn auth(mut self, setting: &str) -> GatewayConfig {
        self.auth.push(setting.to_string());
        self
    }

    /// The `origin` upstream's `connect_timeout_ms` (1000 by default; TLS tests give the
    /// handshake more on a loaded machine).
    pub fn connect_timeout_ms(mut self, ms: u64) -> GatewayConfig {
        self.connect_timeout_ms = ms;
        self
    }

    /// The `origin` upstream's `read_timeout_ms` (1500 by default).
    pub fn read_timeout_ms(mut self, ms: u64) -> GatewayConfig {
        self.read_timeout_ms = ms;
        self
    }

    /// Add settings to the `origin` upstream's flow map, e.g.
    /// `"tls: true, sni: localhost, ca_file: trust.pem"` (an empty string adds nothing).
    pub fn upstream(mut self, settings: &str) -> GatewayConfig {
        if !settings.is_empty() {
            self.upstream.push(settings.to_string());
        }
        self
    }

    /// Give the `origin` upstream several servers (`servers: [{address, weight}]`)
    /// instead of the one `address`.
    pub fn servers(mut self, servers: &[(SocketAddr, u32)]) -> GatewayConfig {
        self.servers = servers.to_vec();
        self
    }

    /// Add another upstream `name` with `settings` (flow-map contents), e.g.
    /// `("dead", "address: \"127.0.0.1:9\"")`.
    pub fn extra_upstream(mut self, name: &str, settings: &str) -> GatewayConfig {
        self.upstreams
            .push((name.to_string(), settings.to_string()));
        self
    }

    /// Replace the routes with `routes`, in order (each the contents of a YAML flow map,
    /// e.g. `"name: api, path_prefix: /, upstream: origin, auth: required"`).
    pub fn routes(mut self, routes: &[&str]) -> GatewayConfig {
        self.routes = routes.iter().map(|r| r.to_string()).collect();
        self
    }

    /// The config file's text.
    pub fn yaml(&self) -> String {
        let listen = self
            .listen
            .map_or_else(|| "{listen}".to_string(), |a| a.to_string());
        let metrics = self.metrics.map(|a| a.to_string()).unwrap_or_default();
        let mut lines = vec![
            String::new(),
            "server:".to_string(),
            format!("  listen: [\"{listen}\"]"),
            format!("  threads: {}", self.threads),
            format!("  metrics_listen: \"{metrics}\""),
        ];
        let indented = |text: &str| text.lines().map(|l| format!("  {l}")).collect::<Vec<_>>();
        lines.extend(self.server.iter().flat_map(|s| indented(s)));
        lines.push("secret:".to_string());
        lines.push(match &self.secret_file {
            Some(path) => format!("  file: {path}"),
            None => "  env: KEYGATE_SHARED_SECRET".to_string(),
        });
        lines.push("auth:".to_string());
        lines.push("  keys_file: keys.yaml".to_string());
        lines.extend(self.auth.iter().flat_map(|s| indented(s)));
        lines.push("upstreams:".to_string());
        let extra: String = self.upstream.iter().map(|s| format!(", {s}")).collect();
        let address = if self.servers.is_empty() {
            format!("address: \"{}\"", self.origin)
        } else {
            let list: Vec<String> = self
                .servers
                .iter()
                .map(|(a, w)| format!("{{ address: \"{a}\", weight: {w} }}"))
                .collect();
            format!("servers: [ {} ]", list.join(", "))
        };
        lines.push(format!(
            "  origin: {{ {address}, connect_timeout_ms: {}, read_timeout_ms: {}{extra} }}",
            self.connect_timeout_ms, self.read_timeout_ms
        ));
        for (name, settings) in &self.upstreams {
            lines.push(format!("  {name}: {{ {settings} }}"));
        }
        lines.push("routes:".to_string());
        for route in &self.routes {
            lines.push(format!("  - {{ {route} }}"));
        }
        lines.push(String::new());
        lines.join("\n")
    }
}

/// The standard config (see [`GatewayConfig`]) with upstream `origin` at `origin`.
pub fn config(origin: SocketAddr) -> String {
    GatewayConfig::new(origin).yaml()
}

/// Test keys: name → (plain key, keys.yaml snippet).
pub struct Keys {
    /// Plain keys by label.
    pub plain: HashMap<&'static str, String>,
    /// The keys.yaml text.
    pub yaml: String,
}

/// A keys file with: `good` (acme, all routes but admin), `admin` (ops, all routes),
/// `expired`, `disabled` (key disabled), `offconsumer` (consumer disabled), `imported`
/// (a key without the keygate prefix).
pub fn keys() -> Keys {
    let mut plain = HashMap::new();
    for label in ["good", "admin", "expired", "disabled", "offconsumer"] {
        plain.insert(label, keygate::apikey::generate().unwrap());
    }
    plain.insert("imported", "legacy-system-key-0001".to_string());
    let d = |l: &str| hex::encode(keygate::apikey::digest(plain[l].as_bytes()));
    let yaml = format!(
        r#"
consumers:
  - id: acme
    name: ACME Corp
    routes: [api, maybe, public]
    keys:
      - {{ id: acme-good, sha256: "{}" }}
      - {{ id: acme-expired, sha256: "{}", expires_at: 2020-01-01T00:00:00Z }}
      - {{ id: acme-disabled, sha256: "{}", disabled: true }}
      - {{ id: acme-imported, sha256: "{}" }}
  - id: ops
    keys:
      - {{ id: ops-1, sha256: "{}" }}
  - id: gone
    disabled: true
    keys:
      - {{ id: gone-1, sha256: "{}" }}
"#,
        d("good"),
        d("expired"),
        d("disabled"),
        d("imported"),
        d("admin"),
        d("offconsumer"),
    );
    Keys { plain, yaml }
}

//! Loading: read `keygate.yaml`, its keys file and its secret, then build the state.

use std::path::Path;

use sha2::Digest;

use super::build::{build_streaming, Inputs};
use super::keys::check_keys_file;
use super::State;
use crate::config::{
    locate_in_file, locate_in_text, parse_yaml_compat, resolve_relative, Config, ConfigError,
    Location, Problem, SecretSource,
};
use crate::metrics::Metrics;

/// Secrets shorter than this get a warning at every load.
pub const SHORT_SECRET: usize = 32;

/// A loaded configuration: the file model (for restart-only settings) and the runtime state.
#[derive(Debug)]
pub struct Loaded {
    /// The parsed `keygate.yaml`.
    pub config: Config,
    /// The state built from it.
    pub state: State,
    /// Non-fatal remarks (e.g. a short secret), never containing secrets.
    pub warnings: Vec<String>,
    /// SHA-256 of the two files this was loaded from; `None` for a state built without
    /// files (the demo).
    pub digests: Option<FileDigests>,
}

/// SHA-256 (FIPS 180-4) digests of the contents of the files a configuration was
/// loaded from, exactly as read: the same value `sha256sum FILE` prints for the file
/// that was loaded. Secrets are never hashed: a digest of a secret could be checked
/// against guesses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigests {
    /// `keygate.yaml`.
    pub config: [u8; 32],
    /// The keys file (it holds only key digests, never keys).
    pub keys: [u8; 32],
    /// When reading the files began: a change after it may not be in these contents.
    pub read_at: std::time::SystemTime,
}

impl FileDigests {
    /// The digest of `keygate.yaml` in lower-case hex (64 characters).
    pub fn config_hex(&self) -> String {
        hex::encode(self.config)
    }

    /// The digest of the keys file in lower-case hex (64 characters).
    pub fn keys_hex(&self) -> String {
        hex::encode(self.keys)
    }
}

/// `config_sha256=HEX keys_sha256=HEX`, as logged at start-up and on each reload.
impl std::fmt::Display for FileDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config_sha256={} keys_sha256={}",
            self.config_hex(),
            self.keys_hex()
        )
    }
}

/// Read and validate `keygate.yaml` at `config_path`, its keys file and its secret, and
/// build the state, with metric handles from `metrics` when given.
///
/// # Errors
/// [`ConfigError::Read`] for a file that cannot be read; [`ConfigError::Invalid`] with
/// every problem found otherwise (an empty keys file included: it is most likely caught
/// mid-write).
pub fn load(config_path: &Path, metrics: Option<&Metrics>) -> Result<Loaded, ConfigError> {
    load_with_secret(config_path, metrics, None)
}

/// [`load`], reading the shared secret from `secret` instead of the configured source
/// when given (`keygate check --secret-file`: check a production configuration outside
/// the service, whose secret comes from a credential only the service sees).
///
/// # Errors
/// As [`load`].
pub fn load_with_secret(
    config_path: &Path,
    metrics: Option<&Metrics>,
    secret: Option<&SecretSource>,
) -> Result<Loaded, ConfigError> {
    load_inner(config_path, metrics, Secrets::Read(secret), None)
}

/// [`load`] without reading any secret (the shared secret and admin token are replaced
/// by placeholders), for tools that only look at routes and keys: `keygate keys`.
///
/// # Errors
/// As [`load`], minus secret problems.
pub fn load_without_secrets(config_path: &Path) -> Result<Loaded, ConfigError> {
    load_inner(config_path, None, Secrets::Placeholders, None)
}

/// Where a load's secrets come from.
#[derive(Clone, Copy)]
enum Secrets<'a> {
    /// The configured sources, or this file for the shared secret.
    Read(Option<&'a SecretSource>),
    /// Placeholders: nothing is read (the state must never serve).
    Placeholders,
}

/// Stands in for secrets in a state that never serves.
const PLACEHOLDER: &str = "placeholder-never-served-0123456789";

/// [`load`] for a reload: rate-limit counters and last-use times of the consumers and
/// keys that remain carry over from `previous`.
///
/// # Errors
/// As [`load`].
pub fn reload(
    config_path: &Path,
    metrics: Option<&Metrics>,
    previous: &State,
) -> Result<Loaded, ConfigError> {
    load_inner(config_path, metrics, Secrets::Read(None), Some(previous))
}

fn load_inner(
    config_path: &Path,
    metrics: Option<&Metrics>,
    secrets: Secrets<'_>,
    previous: Option<&State>,
) -> Result<Loaded, ConfigError> {
    let read_at = std::time::SystemTime::now();
    let text = crate::config::read(config_path)?;
    let config_sha256: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
    let (config, lenient) = match parse_yaml_compat::<Config>(&text, config_path) {
        Ok(parsed) => parsed,
        Err(ConfigError::Invalid(mut list)) => {
            // The keys file is checked all the same, so that every problem is reported
            // at once, as long as `keygate.yaml` still says where it is.
            if let Some((keys_file, routes)) = Config::salvage(&text) {
                let keys_path = resolve_relative(config_path, &keys_file);
                list.extend(check_keys_file(&keys_path, routes.as_deref()));
                list = cap(list);
                locate_in_file(&keys_path, &mut list);
            }
            return Err(ConfigError::Invalid(finish(cap(list), config_path)));
        }
        Err(e) => return Err(e),
    };
    let keys_path = resolve_relative(config_path, &config.auth.keys_file);
    // A secret that cannot be read is one problem among the others: the rest is still
    // checked (with a placeholder that never serves), so that all are reported at once.
    let mut secret_problems = Vec::new();
    let mut read = |source: &SecretSource, field: &str| {
        read_secret(source, config_path, field).unwrap_or_else(|e| {
            match e {
                ConfigError::Invalid(list) => secret_problems.extend(list),
                other => secret_problems.push(Problem {
                    at: Location {
                        file: config_path.to_path_buf(),
                        line_col: None,
                        field: field.to_string(),
                    },
                    message: other.to_string(),
                }),
            }
            PLACEHOLDER.to_string()
        })
    };
    let (secret, admin_token) = match secrets {
        Secrets::Read(secret) => {
            let source = secret.unwrap_or(&config.secret.source);
            let admin = config
                .server
                .admin_token
                .as_ref()
                .map(|source| read(source, "server.admin_token"));
            // Read here only to check it (the store's client reads it again at start):
            // `keygate check` then says what `run` would refuse, with its line.
            if let Some(password) = config
                .limits
                .store
                .as_ref()
                .and_then(|s| s.redis.password.as_ref())
            {
                drop(read(password, "limits.store.redis.password"));
            }
            (read(source, "secret"), admin)
        }
        Secrets::Placeholders => (
            PLACEHOLDER.to_string(),
            config
                .server
                .admin_token
                .as_ref()
                .map(|_| PLACEHOLDER.to_string()),
        ),
    };
    let mut warnings: Vec<String> = lenient.into_iter().collect();
    let admin = &config.server.admin_listen;
    if admin
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| !a.ip().is_loopback())
    {
        warnings.push(format!("server.admin_listen {admin} is not a loopback address: anyone who can reach it and holds the token can list keys"));
    }
    if secret.len() < SHORT_SECRET {
        warnings.push(format!(
            "the shared secret is only {} characters long; use at least {SHORT_SECRET} random characters",
            secret.len()
        ));
    }
    // About 90 bytes of YAML or JSON per key: reserve once instead of growing a million times.
    let capacity = std::fs::metadata(&keys_path).map_or(0, |m| m.len() as usize / 90);
    let inputs = Inputs {
        config: &config,
        config_path,
        keys_path: &keys_path,
        secret: secret.as_bytes(),
        metrics,
        previous,
        admin_token: admin_token.as_deref().map(str::as_bytes),
    };
    let mut streamed = None;
    let state = build_streaming(inputs, capacity, |add| {
        streamed = Some(crate::config::stream_consumers(&keys_path, add)?);
        Ok(())
    });
    let keys_sha256 = streamed.as_ref().map(|s| s.sha256);
    warnings.extend(streamed.and_then(|s| s.warning));
    let state = match (state, secret_problems.is_empty()) {
        (Ok(_), false) => Err(ConfigError::Invalid(secret_problems)),
        (Err(ConfigError::Invalid(mut list)), false) => {
            list.extend(secret_problems);
            Err(ConfigError::Invalid(list))
        }
        (state, _) => state,
    };
    match state {
        Ok(state) => {
            warnings.extend(super::origin_overlaps(&state));
            Ok(Loaded {
                config,
                state,
                warnings,
                digests: keys_sha256.map(|keys| FileDigests {
                    config: config_sha256,
                    keys,
                    read_at,
                }),
            })
        }
        Err(ConfigError::Invalid(list)) => {
            let mut list = cap(list);
            locate_in_text(&text, config_path, &mut list);
            locate_in_file(&keys_path, &mut list);
            Err(ConfigError::Invalid(finish(list, config_path)))
        }
        Err(e) => Err(e),
    }
}

/// The most problems listed; past it, one line counts the rest.
const MAX_LISTED: usize = 200;

/// Keep the first [`MAX_LISTED`] problems, and a line that counts the others.
fn cap(mut list: Vec<Problem>) -> Vec<Problem> {
    // Lines that already stand for unlisted problems are merged into one.
    let mut more = 0;
    let mut file = None;
    list.retain(|p| match p.unlisted() {
        Some(n) => {
            more += n;
            file.get_or_insert_with(|| p.at.file.clone());
            false
        }
        None => true,
    });
    if list.len() > MAX_LISTED {
        more += list.len() - MAX_LISTED;
        file = Some(list[MAX_LISTED].at.file.clone());
        list.truncate(MAX_LISTED);
    }
    if let (Some(file), true) = (file, more > 0) {
        list.push(Problem::more(&file, more));
    }
    list
}

/// The problems of a load, capped and in reading order: `keygate.yaml` first, then
/// the keys file, each by line (problems without a position last, as found).
fn finish(mut list: Vec<Problem>, config_path: &Path) -> Vec<Problem> {
    list.sort_by_key(|p| {
        (
            p.at.file != config_path,
            p.at.line_col.is_none(),
            p.at.line_col,
        )
    });
    list
}

/// Read a secret from its source. `field` names the configuration section in errors
/// (e.g. `secret`); relative files resolve against `config_path`'s folder; one trailing
/// newline (LF or CRLF) is trimmed.
///
/// # Errors
/// A problem naming `field.env` or `field.file` when the variable is unset or empty, or
/// the file is unreadable or empty: keygate never proxies without its secrets. The
/// message never contains the secret.
pub fn read_secret(
    source: &SecretSource,
    config_path: &Path,
    field: &str,
) -> Result<String, ConfigError> {
    match source {
        SecretSource::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            Ok(_) => Err(ConfigError::one(
                config_path,
                format!("{field}.env"),
                format!("environment variable {var} is empty; {}", needed(field)),
            )),
            Err(_) => Err(ConfigError::one(
                config_path,
                format!("{field}.env"),
                format!("environment variable {var} is not set; {}", needed(field)),
            )),
        },
        SecretSource::Credential(name) => {
            let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                return Err(ConfigError::one(
                    config_path,
                    format!("{field}.credential"),
                    format!("$CREDENTIALS_DIRECTORY is not set: the systemd credential `{name}` exists only inside the unit (LoadCredential={name}:...); outside it, check with `keygate check --secret-file FILE`"),
                ));
            };
            read_secret_file(
                &Path::new(&dir).join(name),
                config_path,
                &format!("{field}.credential"),
            )
        }
        SecretSource::File(file) => read_secret_file(
            &resolve_relative(config_path, file),
            config_path,
            &format!("{field}.file"),
        ),
    }
}

/// Why a missing secret stops keygate, for the field it was configured in.
fn needed(field: &str) -> &'static str {
    if field.starts_with("secret") {
        "keygate never proxies without the shared secret"
    } else {
        "keygate does not start without it"
    }
}

/// Read a secret from the file at `path`; `field` names the source in errors.
fn read_secret_file(path: &Path, config_path: &Path, field: &str) -> Result<String, ConfigError> {
    {
        {
            let path = path.to_path_buf();
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::one(
                    config_path,
                    field,
                    format!("cannot read secret file {}: {e}", path.display()),
                )
            })?;
            let v = text.strip_suffix('\n').unwrap_or(&text);
            let v = v.strip_suffix('\r').unwrap_or(v);
            if v.is_empty() {
                return Err(ConfigError::one(
                    config_path,
                    field,
                    format!("secret file {} is empty; {}", path.display(), needed(field)),
                ));
            }
            Ok(v.to_string())
        }
    }
}

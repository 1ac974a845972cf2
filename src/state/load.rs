//! Loading: read `keygate.yaml`, its keys file and its secret, then build the state.

use std::path::Path;

use super::build::{build_streaming, Inputs};
use super::State;
use crate::config::{resolve_relative, Config, ConfigError, SecretSource};
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
    let config = Config::load(config_path)?;
    let keys_path = resolve_relative(config_path, &config.auth.keys_file);
    let keys_text = crate::config::read(&keys_path)?;
    if keys_text.trim().is_empty() {
        // Most likely caught between truncation and write: never read it as "no keys".
        return Err(ConfigError::one(
            &keys_path,
            "",
            "the keys file is empty (caught mid-write?); write `consumers: []` to run with no keys",
        ));
    }
    let (secret, admin_token) = match secrets {
        Secrets::Read(secret) => {
            let source = secret.unwrap_or(&config.secret.source);
            let admin = match &config.server.admin_token {
                Some(source) => Some(read_secret(source, config_path, "server.admin_token")?),
                None => None,
            };
            (read_secret(source, config_path, "secret")?, admin)
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
    let mut warnings = Vec::new();
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
    let capacity = keys_text.len() / 90;
    let inputs = Inputs {
        config: &config,
        config_path,
        keys_path: &keys_path,
        secret: secret.as_bytes(),
        metrics,
        previous,
        admin_token: admin_token.as_deref().map(str::as_bytes),
    };
    let state = build_streaming(inputs, capacity, |add| {
        crate::config::for_each_consumer(&keys_text, &keys_path, add)
    })?;
    warnings.extend(super::origin_overlaps(&state));
    Ok(Loaded {
        config,
        state,
        warnings,
    })
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

//! Shared fixtures: states built from inline YAML, for unit tests, benches and fuzz targets.
//!
//! Not part of keygate's interface (hidden from its documentation); it exists so
//! the "parse a config and a keys file, build a `State`" recipe is written once.
//! Error messages name the files `keygate.yaml` and `keys.yaml`.

use std::path::Path;

use crate::config::{Config, ConfigError, KeysFile};
use crate::state::{self, Inputs, State};

/// The shared secret fixtures use (32 printable characters).
pub const SECRET: &[u8] = b"fixture-shared-secret-0123456789";

/// The SHA-256 of `key`, in hex, as a keys file holds it.
pub fn digest_hex(key: &str) -> String {
    hex::encode(crate::apikey::digest(key.as_bytes()))
}

/// Parse `config` (a `keygate.yaml`) and build a state with `keys`, without metrics.
///
/// # Errors
/// The configuration's problems, as `keygate check` reports them.
pub fn build_with_keys(config: &str, keys: &KeysFile) -> Result<State, ConfigError> {
    let c = Config::from_yaml(config, Path::new("keygate.yaml"))?;
    state::build(
        Inputs {
            config: &c,
            config_path: Path::new("keygate.yaml"),
            keys_path: Path::new("keys.yaml"),
            secret: SECRET,
            metrics: None,
            previous: None,
            admin_token: None,
        },
        keys,
    )
}

/// Parse `config` and `keys` (a `keys.yaml`) and build a state, without metrics.
///
/// # Errors
/// The configuration's problems, as `keygate check` reports them.
pub fn build(config: &str, keys: &str) -> Result<State, ConfigError> {
    let built =
        KeysFile::from_yaml(keys, Path::new("keys.yaml")).and_then(|k| build_with_keys(config, &k));
    match built {
        Err(ConfigError::Invalid(mut list)) => {
            // As `state::load` does: problems found while building get their lines.
            crate::config::locate_in_text(config, Path::new("keygate.yaml"), &mut list);
            crate::config::locate_in_text(keys, Path::new("keys.yaml"), &mut list);
            Err(ConfigError::Invalid(list))
        }
        other => other,
    }
}

/// [`build`], for inputs known to be valid.
///
/// # Panics
/// When the configuration is invalid: a fixture that does not build is a broken test.
pub fn state(config: &str, keys: &str) -> State {
    match build(config, keys) {
        Ok(s) => s,
        Err(e) => panic!("fixture does not build: {e}"),
    }
}

//! The command line: `run`, `check`, `keygen`, `hash`, `demo`.
//!
//! Operators' habits are kept: `-c/--config` names the file and `-t` is `check`,
//! as in nginx. The commands' logic lives here as plain functions returning text,
//! so tests call them without spawning a process.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::apikey;
use crate::config::ConfigError;
use crate::state::{self, valid_id};
use crate::timestamp;

/// Default configuration path.
pub const DEFAULT_CONFIG: &str = "/etc/keygate/keygate.yaml";

/// keygate: a self-hosted API-key gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file.
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Check the configuration and exit (same as `keygate check`).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run,
    /// Validate the configuration, keys file and secret, print a summary, exit 0 or 1.
    Check,
    /// Generate a new API key and print it with its keys.yaml entry.
    Keygen {
        /// The consumer the key is for.
        #[arg(long)]
        consumer: String,
        /// The key's id (default: CONSUMER-YYYYMMDD-RANDOM).
        #[arg(long)]
        key_id: Option<String>,
        /// Optional expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// Read a key on stdin and print its SHA-256 digest in hex.
    Hash,
    /// Start a demo: keygate in front of a built-in origin, with a fresh key and secret.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

/// Validate everything `run` would load and describe it in one line.
pub fn check(config: &Path) -> Result<String, ConfigError> {
    let loaded = state::load(config, None)?;
    let s = &loaded.state;
    let c = s.key_counts(timestamp::now_unix());
    let mut out = format!(
        "{}: ok: {} routes, {} upstreams, {} consumers, keys: {} active, {} expired, {} disabled",
        config.display(),
        s.routes.len(),
        s.upstreams.len(),
        s.consumers.len(),
        c.active,
        c.expired,
        c.disabled
    );
    if !s.keys.is_empty() {
        out.push_str(&format!(
            ", key store {} bytes ({} per key)",
            s.keys.heap_bytes(),
            s.keys.heap_bytes() / s.keys.len()
        ));
    }
    for w in loaded.warnings {
        out.push_str("\nwarning: ");
        out.push_str(&w);
    }
    Ok(out)
}

/// Errors from `keygen`.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    /// The consumer or key id has characters outside `[A-Za-z0-9._-]`.
    #[error("{0} may contain only A-Z a-z 0-9 . _ - (at most 128 characters)")]
    BadId(&'static str),
    /// The expiry is not RFC 3339.
    #[error("--expires-at `{0}` is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z")]
    BadExpiry(String),
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Random(getrandom::Error),
}

/// A freshly generated key and the text to print for it.
pub struct Keygen {
    /// The key (shown once).
    pub key: String,
    /// Its id.
    pub key_id: String,
    /// What to print: the key and a ready-to-paste keys.yaml entry.
    pub text: String,
}

/// Generate a key for `consumer`.
pub fn keygen(
    consumer: &str,
    key_id: Option<&str>,
    expires_at: Option<&str>,
) -> Result<Keygen, KeygenError> {
    if !valid_id(consumer) {
        return Err(KeygenError::BadId("--consumer"));
    }
    if let Some(t) = expires_at {
        if timestamp::parse_rfc3339(t).is_none() {
            return Err(KeygenError::BadExpiry(t.to_string()));
        }
    }
    let key_id = match key_id {
        Some(id) if valid_id(id) => id.to_string(),
        Some(_) => return Err(KeygenError::BadId("--key-id")),
        None => {
            let day = timestamp::format_rfc3339(timestamp::now_unix());
            let suffix = apikey::random_base62(4).map_err(KeygenError::Random)?;
            format!("{consumer}-{}-{suffix}", day[..10].replace('-', ""))
        }
    };
    let key = apikey::generate().map_err(KeygenError::Random)?;
    let digest = hex::encode(apikey::digest(key.as_bytes()));
    let mut text = format!(
        "# New API key for consumer `{consumer}`. It is shown only this once: hand it to the client now.\n{key}\n\n# Add this entry under the consumer `{consumer}` in keys.yaml, then reload keygate:\n      - id: {key_id}\n        sha256: \"{digest}\"\n"
    );
    if let Some(t) = expires_at {
        text.push_str(&format!("        expires_at: {t}\n"));
    }
    Ok(Keygen { key, key_id, text })
}

/// Read a key from `input` (surrounding whitespace trimmed) and return its hex digest.
pub fn hash(mut input: impl Read) -> std::io::Result<String> {
    let mut buf = Vec::new();
    input.read_to_end(&mut buf)?;
    let key = buf.trim_ascii();
    if key.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no key on standard input",
        ));
    }
    Ok(hex::encode(apikey::digest(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_entry_round_trips_through_hash() {
        let k = keygen("acme", Some("acme-1"), Some("2030-01-01T00:00:00Z")).unwrap();
        let digest = hash(format!("{}\n", k.key).as_bytes()).unwrap();
        assert!(
            k.text.contains(&format!("sha256: \"{digest}\"")),
            "{}",
            k.text
        );
        assert!(k.text.contains("- id: acme-1"));
        assert!(k.text.contains("expires_at: 2030-01-01T00:00:00Z"));
        // The printed entry parses as a keys file.
        let yaml = format!(
            "consumers:\n  - id: acme\n    keys:\n{}",
            k.text
                .split("keys.yaml, then reload keygate:\n")
                .nth(1)
                .unwrap()
        );
        let parsed = crate::config::KeysFile::from_yaml(&yaml, Path::new("k")).unwrap();
        assert_eq!(parsed.consumers[0].keys[0].sha256, digest);
    }

    #[test]
    fn keygen_defaults_and_errors() {
        let k = keygen("acme", None, None).unwrap();
        assert!(k.key_id.starts_with("acme-20"), "{}", k.key_id);
        assert!(keygen("bad id", None, None).is_err());
        assert!(keygen("a", Some("x y"), None).is_err());
        assert!(keygen("a", None, Some("soon")).is_err());
    }

    #[test]
    fn hash_trims_and_rejects_empty() {
        assert_eq!(
            hash(&b"abc\n"[..]).unwrap(),
            hash(&b"  abc\r\n"[..]).unwrap()
        );
        assert!(hash(&b"\n"[..]).is_err());
    }

    #[test]
    fn cli_parses_operator_habits() {
        let c = Cli::try_parse_from(["keygate", "-t", "-c", "/x.yaml"]).unwrap();
        assert!(c.test);
        assert_eq!(c.config, PathBuf::from("/x.yaml"));
        let c = Cli::try_parse_from(["keygate", "check", "--config", "a.yaml"]).unwrap();
        assert!(matches!(c.command, Some(Command::Check)));
        assert_eq!(c.config, PathBuf::from("a.yaml"));
        let c = Cli::try_parse_from(["keygate"]).unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.config, PathBuf::from(DEFAULT_CONFIG));
    }
}

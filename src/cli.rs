//! The command line: `run`, `check`, `reload`, `keygen`, `hash`, `demo`.
//!
//! Operators' habits are kept: `-c/--config` names the file and `-t` is `check`,
//! as in nginx. The commands' logic lives here as plain functions returning text,
//! so tests call them without spawning a process; what needs the operating
//! system (sending a signal) is passed in by `main`.
//!
//! Over the ~400-line guideline because one function per subcommand, each short, kept
//! together with the clap definitions they implement.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::apikey;
use crate::config::{ConfigError, SecretSource};
use crate::service::StatusFile;
use crate::state;

/// Default configuration path.
pub const DEFAULT_CONFIG: &str = "/etc/keygate/keygate.yaml";
/// Default keys file path (as the package installs it).
pub const DEFAULT_KEYS_FILE: &str = "/etc/keygate/keys.yaml";

/// keygate: a self-hosted API-key gateway on Pingora.
#[derive(Debug, Parser)]
#[command(name = "keygate", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file, for `keygate -c FILE` (run) and `keygate -t -c FILE` (check).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the configuration and exit (same as `keygate check`).
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The configuration file option of the commands that read it.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// Configuration file [default: /etc/keygate/keygate.yaml].
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Run {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArg,
        /// Write the outcome of the start and of every reload here, for `keygate reload
        /// --wait` [default: $RUNTIME_DIRECTORY/status when systemd sets it].
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
    },
    /// Validate the configuration, keys file and secret, print a summary, exit 0 or 1.
    Check {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArg,
        /// Read the shared secret from this file instead of the configured source (to
        /// check a service's configuration outside the service, e.g. the credential
        /// file its unit loads).
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Reload a running keygate: check the configuration, send it SIGHUP, and with
    /// `--wait` report the reload's own result (exit 1 when it was rejected).
    Reload {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArg,
        /// Wait for the reload to finish and report its result.
        #[arg(long)]
        wait: bool,
        /// The running keygate's process id [default: $MAINPID, as systemd sets it for
        /// ExecReload=].
        #[arg(long)]
        pid: Option<u32>,
        /// The running keygate's status file [default: $RUNTIME_DIRECTORY/status].
        #[arg(long, value_name = "FILE")]
        status_file: Option<PathBuf>,
        /// With --wait, give up after this many seconds.
        #[arg(long, default_value_t = 90)]
        timeout_seconds: u64,
        /// Signal without checking the configuration first.
        #[arg(long)]
        no_check: bool,
    },
    /// Generate a new API key and print it with its keys.yaml entry; with `--rotate`,
    /// a successor for an existing key and the old key's expiry after a grace period.
    Keygen {
        /// The consumer the key is for.
        #[arg(long, required_unless_present = "rotate")]
        consumer: Option<String>,
        /// Rotate this key: a new key for the same consumer, with the same routes,
        /// methods, scopes and limits, and `expires_at` on this one after `--grace`.
        #[arg(long, value_name = "KEY_ID", requires = "grace", conflicts_with_all = ["consumer", "append"])]
        rotate: Option<String>,
        /// With --rotate: how long the old key keeps working (e.g. 72h, 3d, 90m).
        #[arg(long, value_name = "DURATION", requires = "rotate")]
        grace: Option<String>,
        /// With --rotate: the keys file holding the key.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_KEYS_FILE, requires = "rotate")]
        keys_file: PathBuf,
        /// With --rotate: make both changes in the keys file (atomically, comments kept)
        /// instead of printing them.
        #[arg(long, requires = "rotate")]
        write: bool,
        /// The key's id (default: CONSUMER-YYYYMMDD-RANDOM).
        #[arg(long)]
        key_id: Option<String>,
        /// Optional expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
        /// Add the new consumer with this key to this YAML keys file (atomically, keeping
        /// comments); for an existing consumer or a JSON file, print what to add instead.
        #[arg(long, value_name = "KEYS_FILE")]
        append: Option<PathBuf>,
    },
    /// List keys: id, consumer, state, validity and limit usage (never a digest), from
    /// the files; a running keygate's admin listener (`GET /keys`) adds last use.
    Keys {
        #[command(flatten)]
        #[allow(missing_docs)]
        config: ConfigArg,
        /// Only this consumer's keys.
        #[arg(long)]
        consumer: Option<String>,
        /// Only keys in this state: active, expiring, pending, expired, disabled.
        #[arg(long)]
        state: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read a key on stdin and print its SHA-256 digest in hex.
    Hash,
    /// Print the keygate(1) man page or shell completions (for packagers).
    Generate {
        /// What to print.
        #[command(subcommand)]
        what: Generated,
    },
    /// Start a demo: keygate in front of a built-in origin, with a fresh key and secret.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
}

/// What `keygate generate` prints.
#[derive(Debug, Subcommand)]
pub enum Generated {
    /// The keygate(1) man page, in roff.
    Man,
    /// Completions for a shell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Print `what` (a man page or completions, generated from these very definitions).
///
/// # Errors
/// An I/O error writing to `out`.
pub fn generate(what: &Generated, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match what {
        Generated::Man => clap_mangen::Man::new(cmd).render(out),
        Generated::Completions { shell } => {
            let mut cmd = cmd;
            clap_complete::generate(*shell, &mut cmd, "keygate", out);
            Ok(())
        }
    }
}

impl Cli {
    /// The command to run: `run` when none was named, `check` with `-t`.
    pub fn into_command(self) -> Command {
        let top = ConfigArg {
            config: self.config,
        };
        match (self.test, self.command) {
            (true, _) => Command::Check {
                config: top,
                secret_file: None,
            },
            (false, None) => Command::Run {
                config: top,
                status_file: None,
            },
            (false, Some(c)) => c,
        }
    }
}

impl ConfigArg {
    /// The configuration path given, or [`DEFAULT_CONFIG`].
    pub fn path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }
}

/// Why `keygate keys` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A filter is malformed.
    #[error("--{0}")]
    Filter(String),
    /// The configuration or keys file has problems.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// `keygate keys`: the key listing of the configuration at `config`, offline (no last
/// use, limit usage at zero), as a table or JSON.
///
/// # Errors
/// Every problem of the configuration and keys file, or a bad `--state`.
pub fn keys(
    config: &Path,
    consumer: Option<&str>,
    key_state: Option<&str>,
    json: bool,
) -> Result<String, KeysError> {
    let filter = crate::keylist::Filter {
        consumer: consumer.map(str::to_string),
        state: key_state
            .map(crate::keylist::parse_state)
            .transpose()
            .map_err(KeysError::Filter)?,
        unused_days: None,
        // Offline, every key: the output is the operator's own file, not a server's memory.
        offset: 0,
        limit: usize::MAX,
    };
    let loaded = state::load_without_secrets(config)?;
    let listing = crate::keylist::list(
        &loaded.state,
        &filter,
        crate::timestamp::now_unix_ms(),
        false,
    );
    Ok(if json {
        String::from_utf8_lossy(&crate::keylist::json(&listing)).into_owned()
    } else {
        crate::keylist::text(&listing, false)
    })
}

/// Validate everything `run` would load and describe it in one line, followed by the
/// SHA-256 of `keygate.yaml` and of the keys file (`config_sha256=HEX  PATH`, one line
/// each) and any warnings; with `secret_file`, read the shared secret from that file
/// instead of the configured source.
///
/// # Errors
/// Every problem of the configuration, keys file and secret.
pub fn check(config: &Path, secret_file: Option<&Path>) -> Result<String, ConfigError> {
    let secret = secret_file.map(|f| SecretSource::File(f.to_path_buf()));
    let loaded = state::load_with_secret(config, None, secret.as_ref())?;
    let s = &loaded.state;
    let mut out = format!("{}: ok: {}", config.display(), crate::service::summary(s));
    if !s.keys.is_empty() {
        out.push_str(&format!(
            ", key store {} bytes ({} per key)",
            s.keys.heap_bytes(),
            s.keys.heap_bytes() / s.keys.len()
        ));
    }
    if let Some(d) = &loaded.digests {
        // The same digests `sha256sum` prints, and keygate exports once it runs
        // (`keygate_config_info`): compare an instance with the files it should serve.
        let keys = crate::config::resolve_relative(config, &loaded.config.auth.keys_file);
        out.push_str(&format!(
            "\nconfig_sha256={}  {}\nkeys_sha256={}  {}",
            d.config_hex(),
            config.display(),
            d.keys_hex(),
            keys.display()
        ));
    }
    for w in loaded.warnings {
        out.push_str("\nwarning: ");
        out.push_str(&w);
    }
    Ok(out)
}

/// Why `keygate reload` failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration does not validate: keygate was not signalled.
    #[error("{0}\nkeygate was not signalled; the running configuration is unchanged")]
    Invalid(ConfigError),
    /// No process id was given and `MAINPID` is not set.
    #[error("no process to reload: pass --pid (systemd sets $MAINPID for ExecReload=)")]
    NoPid,
    /// `--wait` without a status file to read.
    #[error("--wait needs the running keygate's status file: pass --status-file (systemd sets $RUNTIME_DIRECTORY from the unit's RuntimeDirectory=)")]
    NoStatusFile,
    /// The signal could not be sent.
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// The reload did not finish in time.
    #[error(
        "process {pid} did not report a reload within {timeout:?} (is {path} its status file?)"
    )]
    Timeout {
        /// The process.
        pid: u32,
        /// How long we waited.
        timeout: Duration,
        /// The status file read.
        path: String,
    },
    /// keygate rejected the new configuration and keeps serving the previous one.
    #[error("{0}")]
    Rejected(String),
}

/// What `keygate reload` was asked to do.
#[derive(Debug, Clone)]
pub struct ReloadRequest {
    /// The configuration to check first (`None`: do not check).
    pub check: Option<PathBuf>,
    /// The process to signal (`None`: `$MAINPID`).
    pub pid: Option<u32>,
    /// Wait for the result in this status file (`None`: do not wait).
    pub wait: Option<PathBuf>,
    /// How long to wait.
    pub timeout: Duration,
}

/// Reload a running keygate: check, signal with `send_sighup`, and wait for its verdict.
///
/// Returns the status line the running keygate reported (or a note that it was
/// signalled, without `--wait`).
///
/// # Errors
/// A [`ReloadError`] naming what failed; [`ReloadError::Rejected`] when keygate itself
/// rejected the new configuration (it keeps serving the previous one).
pub fn reload(
    req: &ReloadRequest,
    send_sighup: impl Fn(u32) -> std::io::Result<()>,
) -> Result<String, ReloadError> {
    if let Some(config) = &req.check {
        check(config, None).map_err(ReloadError::Invalid)?;
    }
    let pid = match req.pid {
        Some(p) => p,
        None => std::env::var("MAINPID")
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or(ReloadError::NoPid)?,
    };
    let status = req.wait.clone().map(StatusFile::new);
    let before = status
        .as_ref()
        .and_then(StatusFile::read)
        .filter(|s| s.pid == pid)
        .map(|s| s.generation);
    send_sighup(pid).map_err(|source| ReloadError::Signal { pid, source })?;
    let Some(status) = status else {
        return Ok(format!("signalled keygate (pid {pid}) to reload"));
    };
    let deadline = Instant::now() + req.timeout;
    loop {
        if let Some(s) = status.read().filter(|s| s.pid == pid) {
            if before.is_none_or(|g| s.generation > g) && s.generation > 0 {
                return if s.ok {
                    Ok(s.message)
                } else {
                    Err(ReloadError::Rejected(s.message))
                };
            }
        }
        if Instant::now() >= deadline {
            return Err(ReloadError::Timeout {
                pid,
                timeout: req.timeout,
                path: status.path().display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
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
    fn hash_trims_and_rejects_empty() {
        assert_eq!(
            hash(&b"abc\n"[..]).unwrap(),
            hash(&b"  abc\r\n"[..]).unwrap()
        );
        assert!(hash(&b"\n"[..]).is_err());
    }

    fn command(args: &[&str]) -> Command {
        Cli::try_parse_from(args).unwrap().into_command()
    }

    fn config_of(c: &Command) -> PathBuf {
        match c {
            Command::Run { config, .. }
            | Command::Check { config, .. }
            | Command::Reload { config, .. } => config.path(),
            _ => panic!("no config"),
        }
    }

    #[test]
    fn cli_parses_operator_habits() {
        let c = command(&["keygate", "-t", "-c", "/x.yaml"]);
        assert!(matches!(c, Command::Check { .. }));
        assert_eq!(config_of(&c), PathBuf::from("/x.yaml"));
        let c = command(&["keygate", "check", "--config", "a.yaml"]);
        assert!(matches!(c, Command::Check { .. }));
        assert_eq!(config_of(&c), PathBuf::from("a.yaml"));
        let c = command(&["keygate", "-c", "b.yaml"]);
        assert!(matches!(c, Command::Run { .. }));
        assert_eq!(config_of(&c), PathBuf::from("b.yaml"));
        let c = command(&["keygate"]);
        assert_eq!(config_of(&c), PathBuf::from(DEFAULT_CONFIG));
        let c = command(&["keygate", "reload", "--wait", "--pid", "7", "-c", "k.yaml"]);
        assert!(matches!(
            c,
            Command::Reload {
                wait: true,
                pid: Some(7),
                ..
            }
        ));
        // Commands that read no configuration do not offer the option.
        assert!(Cli::try_parse_from(["keygate", "keygen", "--consumer", "a", "-c", "x"]).is_err());
        assert!(Cli::try_parse_from(["keygate", "hash", "--config", "x"]).is_err());
    }

    #[test]
    fn man_page_and_completions_come_from_the_definitions() {
        let mut man = Vec::new();
        generate(&Generated::Man, &mut man).unwrap();
        let man = String::from_utf8(man).unwrap();
        assert!(
            man.starts_with(".ie") || man.contains(".TH keygate"),
            "{man}"
        );
        for sub in ["run", "check", "reload", "keygen", "hash", "demo"] {
            assert!(man.contains(sub), "man page lacks {sub}");
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            generate(&Generated::Completions { shell }, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("reload") && text.contains("secret-file"),
                "{shell:?}"
            );
        }
    }

    #[test]
    fn reload_reports_the_running_keygates_verdict() {
        let dir = std::env::temp_dir().join(format!("keygate-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status");
        let file = StatusFile::new(path.clone());
        let me = std::process::id();
        file.write(0, true, "serving");
        let req = ReloadRequest {
            check: None,
            pid: Some(me),
            wait: Some(path.clone()),
            timeout: Duration::from_secs(5),
        };
        // The "running keygate" answers the signal by writing its next generation.
        let ok = reload(&req, |_| {
            file.write(1, true, "serving: reloaded");
            Ok(())
        })
        .unwrap();
        assert_eq!(ok, "serving: reloaded");
        let err = reload(&req, |_| {
            file.write(2, false, "reload failed\n  keys.yaml: bad");
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(err, ReloadError::Rejected(ref m) if m.contains("keys.yaml: bad")),
            "{err}"
        );
        let quick = ReloadRequest {
            timeout: Duration::from_millis(200),
            ..req.clone()
        };
        assert!(matches!(
            reload(&quick, |_| Ok(())),
            Err(ReloadError::Timeout { .. })
        ));
        let no_pid = ReloadRequest { pid: None, ..req };
        if std::env::var_os("MAINPID").is_none() {
            assert!(matches!(
                reload(&no_pid, |_| Ok(())),
                Err(ReloadError::NoPid)
            ));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The `keygate` binary: parse the command line, load, run.
//!
//! Exit codes: 0 ok; 1 `check` or `reload` found problems, or start-up failed (a
//! listener could not be bound included); 64 invalid configuration for `run`
//! (EX_USAGE, as linkerd does).

mod sys;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keygate::cli::{self, Cli, Command, ReloadRequest};
use keygate::config::{AccessLogConfig, AccessLogFormat};
use keygate::metrics::Metrics;
use keygate::reload::LoadHooks;
use keygate::service::{self, Notifier, StatusFile};
use keygate::{demo, logging, server, state};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    sys::openssl_uses_mimalloc();
    keygate::tls::set_connection_tuning(sys::tune_upstream_tls);
    let command = Cli::parse().into_command();
    logging::init();
    match command {
        Command::Run {
            config,
            status_file,
        } => run(
            &config.path(),
            status_file.or_else(StatusFile::default_path),
        ),
        Command::Check {
            config,
            secret_file,
        } => match cli::check(&config.path(), secret_file.as_deref()) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Reload {
            config,
            wait,
            pid,
            status_file,
            timeout_seconds,
            no_check,
        } => {
            let status_file = status_file.or_else(StatusFile::default_path);
            if wait && status_file.is_none() {
                eprintln!("keygate: {}", cli::ReloadError::NoStatusFile);
                return ExitCode::FAILURE;
            }
            let req = ReloadRequest {
                check: (!no_check).then(|| config.path()),
                pid,
                wait: status_file.filter(|_| wait),
                timeout: Duration::from_secs(timeout_seconds),
            };
            report(
                cli::reload(&req, sys::send_sighup)
                    .map(|status| println!("{status}"))
                    .map_err(anyhow::Error::from),
            )
        }
        Command::Keygen {
            consumer,
            key_id,
            expires_at,
            append,
            rotate: Some(old),
            grace,
            keys_file,
            write,
        } => {
            let _ = (consumer, append);
            report(rotate(
                &keys_file,
                &old,
                grace.as_deref().unwrap_or(""),
                key_id.as_deref(),
                expires_at.as_deref(),
                write,
            ))
        }
        Command::Keygen {
            consumer,
            key_id,
            expires_at,
            append,
            ..
        } => report(keygen(
            consumer.as_deref().unwrap_or(""),
            key_id.as_deref(),
            expires_at.as_deref(),
            append.as_deref(),
        )),
        Command::Keys {
            config,
            consumer,
            state,
            json,
        } => report(
            cli::keys(&config.path(), consumer.as_deref(), state.as_deref(), json)
                .map(|t| print!("{t}"))
                .map_err(anyhow::Error::from),
        ),
        Command::Hash => report(
            cli::hash(std::io::stdin().lock())
                .map(|d| println!("{d}"))
                .context("cannot read the key from standard input"),
        ),
        Command::Demo { listen } => report(demo::run(&listen).map_err(anyhow::Error::from)),
        Command::Generate { what } => report(
            cli::generate(&what, &mut std::io::stdout().lock())
                .context("cannot write to standard output"),
        ),
    }
}

/// `keygate run`: load, check the listeners, serve until stopped, write every log line.
fn run(config: &Path, status_file: Option<PathBuf>) -> ExitCode {
    sys::ignore_signals_until_handled();
    service::exit_on_listener_failure();
    let metrics = match Metrics::register(prometheus::Registry::new()) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            eprintln!("keygate: cannot register metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let loaded = match state::load(config, Some(&metrics)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("keygate: refusing to start: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    sys::release_memory();
    if let Err(e) = service::probe_listeners(&loaded.config.server) {
        eprintln!("keygate: refusing to start: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = open_access_log(config, &loaded.config.server.access_log) {
        eprintln!("keygate: refusing to start: {e:#}");
        return ExitCode::FAILURE;
    }
    for w in &loaded.warnings {
        log::warn!("{w}");
    }
    let hooks = LoadHooks {
        release_memory: sys::release_memory,
        background_priority: sys::background_priority,
    };
    let notifier = Notifier::new(status_file.map(StatusFile::new));
    match server::assemble(loaded, metrics, Some(config.to_path_buf()), hooks, notifier) {
        Ok(gateway) => {
            log::info!(
                "keygate {} starting with {}",
                env!("CARGO_PKG_VERSION"),
                config.display()
            );
            // `run` returns once the server stopped (SIGTERM after its grace period, or
            // SIGINT at once): then every buffered access-log line is written.
            gateway.run(pingora::server::RunArgs::default());
            log::info!(target: "keygate::service", "stopped");
            logging::flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keygate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keygate keygen`: print the key once, and add it to a keys file when asked.
fn keygen(
    consumer: &str,
    key_id: Option<&str>,
    expires_at: Option<&str>,
    append: Option<&Path>,
) -> anyhow::Result<()> {
    let req = keygate::keygen::Request {
        consumer,
        key_id,
        expires_at,
    };
    let k = keygate::keygen::generate(&req, keygate::timestamp::now_unix())?;
    for w in &k.warnings {
        eprintln!("keygate: warning: {w}");
    }
    let Some(path) = append else {
        print!("{}", k.text());
        return Ok(());
    };
    match keygate::keygen::append(path, &k)? {
        keygate::keygen::Appended::Added => {
            println!(
                "# New API key for consumer `{consumer}`. It is shown only this once: hand it to the client now.\n{}\n",
                k.key
            );
            eprintln!(
                "keygate: added consumer `{consumer}` with key `{}` to {}; reload keygate to use it",
                k.key_id,
                path.display()
            );
        }
        keygate::keygen::Appended::Instructions(what) => {
            println!(
                "# New API key for consumer `{consumer}`. It is shown only this once: hand it to the client now.\n{}\n",
                k.key
            );
            eprintln!("keygate: {} was not changed.\n{what}", path.display());
        }
    }
    Ok(())
}

/// `keygate keygen --rotate`: print the new key once and the two edits, or make them.
fn rotate(
    keys_file: &Path,
    old: &str,
    grace: &str,
    key_id: Option<&str>,
    expires_at: Option<&str>,
    write: bool,
) -> anyhow::Result<()> {
    let grace = keygate::keygen::parse_grace(grace)?;
    let now = keygate::timestamp::now_unix();
    let r = keygate::keygen::rotate(keys_file, old, grace, key_id, expires_at, now)?;
    for w in &r.new.warnings {
        eprintln!("keygate: warning: {w}");
    }
    if !write {
        print!("{}", r.text());
        return Ok(());
    }
    match keygate::keygen::write_rotation(&r)? {
        keygate::keygen::Appended::Added => {
            println!(
                "# New API key for consumer `{}`, replacing `{old}`. It is shown only this once: hand it to the client now.\n{}\n",
                r.new.consumer, r.new.key
            );
            eprintln!(
                "keygate: added key `{}` to consumer `{}` and set `{old}` to expire at {} in {}; reload keygate to apply",
                r.new.key_id,
                r.new.consumer,
                r.old_expires_at,
                keys_file.display()
            );
        }
        keygate::keygen::Appended::Instructions(what) => {
            print!("{what}");
            anyhow::bail!(
                "{} was not changed: keygate does not edit it safely (JSON, a flow-style entry, or a key id used twice); make the two changes above by hand",
                keys_file.display()
            );
        }
    }
    Ok(())
}

/// Apply `server.access_log`: the format, the flush interval, and the destination, a
/// file opened now (so a path keygate cannot write is a start-up failure).
fn open_access_log(config: &Path, access_log: &AccessLogConfig) -> anyhow::Result<()> {
    logging::set_flush_interval(Duration::from_millis(access_log.flush_interval_ms));
    logging::set_format(match access_log.format {
        AccessLogFormat::Text => logging::Format::Text,
        AccessLogFormat::Json => logging::Format::Json,
    });
    if let Some(file) = access_log.file(config) {
        logging::set_destination(&logging::Destination::File(file.clone())).with_context(|| {
            format!(
                "cannot open the access log {} (server.access_log.destination)",
                file.display()
            )
        })?;
    }
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `keygate` binary: parse the command line, load, run.
//!
//! Exit codes: 0 ok, 1 `check` found problems or startup failed, 64 invalid
//! configuration for `run` (EX_USAGE, as linkerd does).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use keygate::cli::{self, Cli, Command};
use keygate::reload::LoadHooks;
use keygate::{demo, logging, server, state};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EX_USAGE: u8 = 64;

/// Ignore SIGHUP until the reloader installs its handler: its default action would kill
/// the process, and a `systemctl reload` can arrive while keygate is still starting.
fn ignore_sighup_until_ready() {
    // SAFETY: installs the predefined SIG_IGN disposition; no handler code runs.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}

/// Nice value of the reload thread: it yields to request threads whenever they run.
const RELOAD_NICE: libc::c_int = 10;

/// Lower the calling thread's priority (Linux: `setpriority` on a thread id sets that thread).
fn background_priority() {
    // SAFETY: plain syscalls with integer arguments; no memory is shared with the kernel.
    #[allow(unsafe_code)]
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, RELOAD_NICE);
    }
}

/// Give memory freed by a configuration load back to the OS.
///
/// mimalloc returns freed pages lazily, when the freeing thread allocates again; a
/// loading thread may never do so, and a million-key parse frees hundreds of MiB.
fn release_memory() {
    // SAFETY: mi_collect takes no pointers; it only purges the calling thread's heap.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

/// OpenSSL's allocations go to mimalloc too: with the system allocator, each upstream
/// TLS record's buffers (released when idle, `SSL_MODE_RELEASE_BUFFERS`) grew and trimmed
/// a glibc arena (`mprotect`) on every request.
fn openssl_uses_mimalloc() {
    use std::ffi::{c_char, c_int, c_void};
    extern "C" fn m(n: usize, _: *const c_char, _: c_int) -> *mut c_void {
        // SAFETY: mi_malloc has malloc's contract.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_malloc(n)
        }
    }
    extern "C" fn r(p: *mut c_void, n: usize, _: *const c_char, _: c_int) -> *mut c_void {
        // SAFETY: `p` comes from `m` or `r` (OpenSSL pairs its own calls).
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_realloc(p, n)
        }
    }
    extern "C" fn f(p: *mut c_void, _: *const c_char, _: c_int) {
        // SAFETY: `p` comes from `m` or `r`, or is null.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_free(p)
        }
    }
    #[allow(unsafe_code)]
    extern "C" {
        fn CRYPTO_set_mem_functions(
            m: extern "C" fn(usize, *const c_char, c_int) -> *mut c_void,
            r: extern "C" fn(*mut c_void, usize, *const c_char, c_int) -> *mut c_void,
            f: extern "C" fn(*mut c_void, *const c_char, c_int),
        ) -> c_int;
    }
    // SAFETY: called first thing in main, before OpenSSL has allocated anything (it
    // refuses, returning 0, once it has); the three functions are a consistent set.
    #[allow(unsafe_code)]
    unsafe {
        CRYPTO_set_mem_functions(m, r, f);
    }
}

/// Read whole TLS records from an origin in one system call instead of three (record
/// header, body, then a read that would block): OpenSSL's read-ahead, which Pingora's
/// connector leaves off and its upstream TCP streams do not buffer either.
fn tune_upstream_tls(ssl: &openssl::ssl::SslRef) {
    use foreign_types_shared::ForeignTypeRef;
    #[allow(unsafe_code)]
    extern "C" {
        fn SSL_set_read_ahead(s: *mut openssl_sys::SSL, yes: std::ffi::c_int);
    }
    // SAFETY: `ssl` is a live SSL* for the duration of the call; read-ahead is a plain flag.
    #[allow(unsafe_code)]
    unsafe {
        SSL_set_read_ahead(ssl.as_ptr(), 1)
    }
}

fn main() -> ExitCode {
    openssl_uses_mimalloc();
    keygate::tls::set_connection_tuning(tune_upstream_tls);
    let cli = Cli::parse();
    logging::init();
    let command = if cli.test {
        Command::Check
    } else {
        cli.command.unwrap_or(Command::Run)
    };
    match command {
        Command::Run => {
            ignore_sighup_until_ready();
            let metrics = match keygate::metrics::Metrics::register(prometheus::Registry::new()) {
                Ok(m) => std::sync::Arc::new(m),
                Err(e) => {
                    eprintln!("keygate: cannot register metrics: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let loaded = match state::load(&cli.config, Some(&metrics)) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("keygate: refusing to start: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            release_memory();
            logging::set_flush_interval(std::time::Duration::from_millis(
                loaded.config.server.access_log.flush_interval_ms,
            ));
            for w in &loaded.warnings {
                log::warn!("{w}");
            }
            let hooks = LoadHooks {
                release_memory,
                background_priority,
            };
            match server::assemble(loaded, metrics, Some(cli.config.clone()), hooks) {
                Ok(gateway) => {
                    log::info!(
                        "keygate {} starting with {}",
                        env!("CARGO_PKG_VERSION"),
                        cli.config.display()
                    );
                    // `run` returns once the server stopped (SIGTERM after its grace period,
                    // or SIGINT at once): then every buffered access-log line is written.
                    gateway.run(pingora::server::RunArgs::default());
                    logging::flush();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("keygate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check => match cli::check(&cli.config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen {
            consumer,
            key_id,
            expires_at,
        } => report(
            cli::keygen(&consumer, key_id.as_deref(), expires_at.as_deref())
                .map(|k| print!("{}", k.text))
                .map_err(anyhow::Error::from),
        ),
        Command::Hash => report(
            cli::hash(std::io::stdin().lock())
                .map(|d| println!("{d}"))
                .context("cannot read the key from standard input"),
        ),
        Command::Demo { listen } => report(demo::run(&listen).map_err(anyhow::Error::from)),
    }
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

//! The real keygate binary: started on a free loopback port and waited for, run as a
//! command, signalled, scraped for metrics; plus the temporary directory it runs in.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::config::{GatewayConfig, SECRET};
use super::http::Client;
use super::process::{eventually, wait_exit, ChildGuard, SpawnGuarded};

/// How long keygate may take to listen, to log an expected line, or to count a metric.
pub const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A temporary directory removed on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    /// Create a fresh directory unique to this test.
    pub fn new() -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "keygate-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }

    /// Write `name` with `contents`; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// The path of `name` inside.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ports handed to keygate come from below the kernel's ephemeral range (32768+ on
/// Linux), so a port checked free here and bound by keygate a moment later can never be
/// taken meanwhile by a socket that binds `:0` (test origins, clients).
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;

/// A free loopback port for keygate to listen on (see [`PORT_RANGE`]).
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let span = usize::from(PORT_RANGE.end - PORT_RANGE.start);
    // Start somewhere different in each test process.
    let offset = (std::process::id() as usize).wrapping_mul(7919) % span;
    for _ in 0..span {
        let i = (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = PORT_RANGE.start + i as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_RANGE:?}");
}

/// `127.0.0.1` with a [`free_port`]: an address for keygate to listen on.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Path of the keygate binary under test.
pub fn keygate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_keygate")
}

/// A `keygate` command with a clean environment for the secret.
pub fn keygate() -> Command {
    let mut c = Command::new(keygate_bin());
    c.env_remove("KEYGATE_SHARED_SECRET")
        .env("KEYGATE_LOG", "info");
    c
}

/// Run `keygate ARGS --config CONFIG` with the test secret in the environment.
pub fn keygate_with_config(args: &[&str], config: &Path) -> Output {
    keygate()
        .args(args)
        .arg("--config")
        .arg(config)
        .env("KEYGATE_SHARED_SECRET", SECRET)
        .output()
        .unwrap()
}

/// Run `keygate run` on `config` (with `env`) expecting it to refuse to start: exit 64.
/// Returns what it printed on stderr.
pub fn run_refused(config: &Path, env: &[(&str, &str)]) -> String {
    let out = keygate()
        .args(["run", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{err}");
    err
}

/// The text of a command's standard output and error.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A keygate process started from the real binary, killed when dropped.
pub struct Gateway {
    /// The plain-HTTP listener.
    pub addr: SocketAddr,
    child: ChildGuard,
    stderr: PathBuf,
}

impl Gateway {
    /// Start keygate with `config` (YAML text, `{listen}` is replaced by a free address) and `keys`.
    pub fn start(dir: &TestDir, config: &str, keys: &str) -> Gateway {
        let addr = free_addr();
        let config = dir.write(
            "keygate.yaml",
            &config.replace("{listen}", &addr.to_string()),
        );
        dir.write("keys.yaml", keys);
        Gateway::spawn(dir, config, addr, &[("KEYGATE_SHARED_SECRET", SECRET)])
    }

    /// Start keygate on `config` changed to read its secret from the file `secret` holding
    /// `secret` (and nothing in the environment).
    pub fn start_with_secret_file(
        dir: &TestDir,
        config: &GatewayConfig,
        keys: &str,
        secret: &str,
    ) -> Gateway {
        dir.write("secret", secret);
        let addr = free_addr();
        let config = dir.write(
            "keygate.yaml",
            &config.clone().secret_file("secret").listen(addr).yaml(),
        );
        dir.write("keys.yaml", keys);
        Gateway::spawn(dir, config, addr, &[])
    }

    /// Spawn the binary for an existing config and wait until `addr` accepts connections
    /// and the reloader listens for SIGHUP.
    pub fn spawn(
        dir: &TestDir,
        config: PathBuf,
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::spawn_with(dir, config, addr, &[], env)
    }

    /// [`Gateway::spawn`] with extra arguments to `keygate run` (e.g. `--status-file`).
    pub fn spawn_with(
        dir: &TestDir,
        config: PathBuf,
        addr: SocketAddr,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        let stderr = dir.path("keygate.stderr");
        let child = keygate()
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn_guarded()
            .unwrap();
        let mut g = Gateway {
            addr,
            child,
            stderr,
        };
        g.wait_ready(addr);
        // Signals sent before the reloader listens would be ignored: wait for it too.
        g.wait_log("ready to reload the configuration on SIGHUP", 1);
        g
    }

    /// Poll until `addr` accepts a connection; panic with the log if keygate exits first
    /// or after the deadline.
    pub fn wait_ready(&mut self, addr: SocketAddr) {
        eventually(
            &format!("keygate listening on {addr}"),
            READY_DEADLINE,
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "keygate exited with {status} before listening:\n{}",
                        self.log()
                    );
                }
                TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .map(drop)
                    .map_err(|e| format!("{e}; keygate's log:\n{}", self.log()))
            },
        );
    }

    /// Poll until the log contains `needle` `n` times, or panic with the log after the deadline.
    pub fn wait_log(&self, needle: &str, n: usize) {
        eventually(
            &format!("{n}× {needle:?} in keygate's log"),
            READY_DEADLINE,
            || {
                let log = self.log();
                if log.matches(needle).count() >= n {
                    Ok(())
                } else {
                    Err(log)
                }
            },
        );
    }

    /// Everything keygate wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGHUP (reload) to the gateway.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Stop the gateway with SIGTERM and wait until it has exited (its grace period must
    /// be short: see `server.grace_period_seconds`); then its log is complete.
    pub fn stop(&self) {
        self.signal("TERM");
        wait_exit(self.pid(), Duration::from_secs(20));
    }

    /// Send `signal` (e.g. "TERM") to the gateway.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }
}

/// Fetch `/metrics` from a metrics listener and return the body.
pub fn scrape(addr: SocketAddr) -> String {
    let r = Client::connect(addr).get("/metrics", &[("Host", "metrics")]);
    assert_eq!(r.status(), 200);
    r.text()
}

/// The value of the sample whose line starts with `series` (name plus labels), if any.
fn find_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of the sample whose line starts with `series` (name plus labels); panics with
/// the exposition when there is none (so a renamed series cannot read as 0).
pub fn sample(text: &str, series: &str) -> f64 {
    find_sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Scrape until `series` is present with `value` (metrics are recorded after the response
/// is sent), then return the exposition; panics with the last scrape after the deadline.
pub fn scrape_until(addr: SocketAddr, series: &str, value: f64) -> String {
    eventually(
        &format!("{series} reaching {value} on {addr}/metrics"),
        READY_DEADLINE,
        || {
            // The metrics listener may still be starting: a refused connection is retried.
            if let Err(e) = std::net::TcpStream::connect(addr) {
                return Err(format!("cannot connect: {e}"));
            }
            let text = scrape(addr);
            if find_sample(&text, series) == Some(value) {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
}

//! A real `redis-server` (Debian's package) on an ephemeral loopback port, without
//! persistence, killed by PID when dropped; and a minimal RESP client for the tests.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, ChildGuard, SpawnGuarded, TestDir, READY_DEADLINE};

/// A `redis-server` process.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Option<ChildGuard>,
    dir: TestDir,
}

impl Redis {
    /// Start a server on a free loopback port and wait until it answers `PING`.
    pub fn start() -> Redis {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut r = Redis {
            addr,
            child: None,
            dir: TestDir::new(),
        };
        r.restart();
        r
    }

    /// The `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Start the server again on the same port (after [`Redis::kill`]); empty, as no
    /// persistence is configured.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_guarded()
            .expect("redis-server (Debian package redis-server; ./dev deps installs it)");
        self.child = Some(child);
        eventually("redis-server answers PING", READY_DEADLINE, || {
            self.try_cmd(&["PING"]).filter(|r| r == "PONG")
        });
    }

    /// Kill the server (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Send one command; its reply as text (integers and bulk strings as their value,
    /// arrays as their items joined by spaces), or `None` when the server is unreachable.
    pub fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut r = BufReader::new(s);
        read_reply(&mut r)
    }

    /// [`Redis::try_cmd`], panicking when the server is unreachable.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|| panic!("redis {args:?}: no answer"))
    }
}

fn read_reply(r: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" | ":" => Some(rest.to_string()),
        "-" => Some(format!("ERR {rest}")),
        "$" => {
            let n: i64 = rest.parse().ok()?;
            if n < 0 {
                return Some(String::new());
            }
            let mut buf = vec![0u8; n as usize + 2];
            std::io::Read::read_exact(r, &mut buf).ok()?;
            buf.truncate(n as usize);
            String::from_utf8(buf).ok()
        }
        "*" => {
            let n: i64 = rest.parse().ok()?;
            let items: Option<Vec<String>> = (0..n.max(0)).map(|_| read_reply(r)).collect();
            items.map(|i| i.join(" "))
        }
        _ => None,
    }
}

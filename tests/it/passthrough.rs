//! What passes through keygate untouched, now that the rewrite edits plain header maps:
//! the request-target and the client's other fields on the way in, the origin's status
//! line, repeated fields, framing and body on the way out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::harness::*;

type Script = dyn Fn(&str) -> Vec<u8> + Send + Sync;

/// An origin that records each request head as raw bytes and answers with the bytes
/// `script` returns for its request line.
struct Scripted {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Scripted {
    fn start(script: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (h, s) = (heads.clone(), stop.clone());
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (h, script) = (h.clone(), script.clone());
                thread::spawn(move || serve(stream, &h, &*script));
            }
        });
        Scripted {
            addr,
            heads,
            stop,
            accept: Some(accept),
        }
    }

    /// The last request head received, as text (lossy).
    fn last(&self) -> String {
        let heads = self.heads.lock().unwrap();
        String::from_utf8_lossy(heads.last().expect("no request reached the origin")).into_owned()
    }

    /// The last request line, as bytes.
    fn last_line(&self) -> Vec<u8> {
        let heads = self.heads.lock().unwrap();
        let head = heads.last().expect("no request reached the origin");
        let end = head.windows(2).position(|w| w == b"\r\n").unwrap();
        head[..end].to_vec()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, heads: &Mutex<Vec<Vec<u8>>>, script: &Script) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let length = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let line = text.lines().next().unwrap_or("").to_string();
        heads.lock().unwrap().push(head);
        if text.to_ascii_lowercase().contains("expect: 100-continue") {
            let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        let mut body = vec![0; length];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if w.write_all(&script(&line)).is_err() || w.flush().is_err() {
            return;
        }
    }
}

/// A gateway with the standard routes (and `routes` before them) in front of `origin`.
fn gateway(dir: &TestDir, origin: SocketAddr, routes: &[&str]) -> Gateway {
    let mut all: Vec<&str> = routes.to_vec();
    all.extend(STANDARD_ROUTES);
    let cfg = GatewayConfig::new(origin).routes(&all).yaml();
    Gateway::start(dir, &cfg, &keys().yaml)
}

fn exchange(addr: SocketAddr, raw: &[u8], head_only: bool) -> Message {
    let mut c = Client::connect(addr);
    c.send_raw(raw);
    let m = if head_only { c.read_head() } else { c.read() };
    m.unwrap().expect("no response")
}

#[test]
fn repeated_origin_fields_reach_the_client_in_order_with_the_status_line() {
    let origin = Scripted::start(|line| {
        let status = match line.split(' ').nth(1).unwrap_or("") {
            "/public/custom" => "200 Fine Thanks",
            "/public/created" => "201 Created",
            "/public/odd" => "299 Whatever This Is",
            _ => "404 Gone Fishing",
        };
        format!(
            "HTTP/1.1 {status}\r\nSet-Cookie: a=1\r\nVary: Accept\r\nSet-Cookie: b=2\r\n\
             Link: <https://x.test/1>; rel=prev\r\nVary: Accept-Encoding\r\n\
             Link: <https://x.test/2>; rel=next\r\nSet-Cookie: c=3\r\nETag: \"v1\"\r\n\
             X-Origin-Thing: one\r\nX-Origin-Thing: two\r\nContent-Length: 2\r\n\r\nok"
        )
        .into_bytes()
    });
    let dir = TestDir::new();
    let gw = gateway(&dir, origin.addr, &[]);
    for (path, status) in [
        ("/public/custom", "HTTP/1.1 200 Fine Thanks"),
        ("/public/created", "HTTP/1.1 201 Created"),
        ("/public/odd", "HTTP/1.1 299 Whatever This Is"),
        ("/public/missing", "HTTP/1.1 404 Gone Fishing"),
    ] {
        let m = get(gw.addr, path, &[]);
        assert_eq!(m.start, status, "{path}");
        assert_eq!(m.all("set-cookie"), ["a=1", "b=2", "c=3"], "{path}");
        assert_eq!(m.all("vary"), ["Accept", "Accept-Encoding"], "{path}");
        assert_eq!(
            m.all("link"),
            [
                "<https://x.test/1>; rel=prev",
                "<https://x.test/2>; rel=next"
            ],
            "{path}"
        );
        assert_eq!(m.all("x-origin-thing"), ["one", "two"], "{path}");
        assert_eq!(m.all("etag"), ["\"v1\""], "{path}");
        assert_eq!(m.all("x-request-id").len(), 1, "{path}");
        assert_eq!(m.all("content-length"), ["2"], "{path}");
        assert_eq!(m.text(), "ok", "{path}");
    }
}

#[test]
fn head_204_304_chunked_and_100_continue_pass_through() {
    let origin = Scripted::start(|line| {
        let path = line.split(' ').nth(1).unwrap_or("");
        match path {
            "/public/head" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: \"h\"\r\n\r\n".to_vec()
            }
            "/public/nocontent" => b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec(),
            "/public/notmodified" => b"HTTP/1.1 304 Not Modified\r\nETag: \"n\"\r\n\r\n".to_vec(),
            "/public/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
                .to_vec(),
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody".to_vec(),
        }
    });
    let dir = TestDir::new();
    let gw = gateway(&dir, origin.addr, &[]);
    let head = exchange(
        gw.addr,
        b"HEAD /public/head HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        true,
    );
    assert_eq!(head.status(), 200);
    assert_eq!(head.all("content-length"), ["1234"]);
    assert_eq!(head.all("etag"), ["\"h\""]);
    assert!(head.header("transfer-encoding").is_none());
    let m = get(gw.addr, "/public/nocontent", &[]);
    assert_eq!((m.status(), m.all("x-a")), (204, vec!["1".to_string()]));
    let m = get(gw.addr, "/public/notmodified", &[]);
    assert_eq!(
        (m.status(), m.all("etag")),
        (304, vec!["\"n\"".to_string()])
    );
    let m = get(gw.addr, "/public/chunked", &[]);
    assert_eq!((m.status(), m.text().as_str()), (200, "abcdefg"));
    let mut c = Client::connect(gw.addr);
    c.send_raw(
        b"POST /public/upload HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: 3\r\n\
          Expect: 100-continue\r\n\r\nxyz",
    );
    // An interim 100 (head only), if the client sees one, then the origin's answer.
    let mut m = c.read_head().unwrap().expect("no response");
    if m.status() == 100 {
        m = c.read().unwrap().expect("no final response");
    }
    assert_eq!((m.status(), m.text().as_str()), (200, "body"));
}

#[test]
fn request_targets_and_client_fields_reach_the_origin_as_sent() {
    let origin = Scripted::start(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec());
    let dir = TestDir::new();
    let gw = gateway(&dir, origin.addr, &[]);
    // The query is forwarded as received; the path in its canonical form (`%41` is `A`).
    for (target, forwarded) in [
        (
            "/public/x?a=1&b=%20&c=%2F&d&e=%zz",
            "/public/x?a=1&b=%20&c=%2F&d&e=%zz",
        ),
        (
            "/public/a%41b?q=%E2%82%AC&r=%2f",
            "/public/aAb?q=%E2%82%AC&r=%2f",
        ),
        ("/public/a%20b?", "/public/a%20b?"),
        ("/public/x?q=a+b;c=d,e", "/public/x?q=a+b;c=d,e"),
    ] {
        let raw = format!(
            "GET {target} HTTP/1.1\r\nHost: gateway.test\r\nAccept: a\r\nX-Dup: 1\r\n\
             accept: b\r\nx-dup: 2\r\nCookie: c=1\r\nCookie: d=2\r\n\r\n"
        );
        let m = exchange(gw.addr, raw.as_bytes(), false);
        assert_eq!(m.status(), 200, "{target}");
        assert_eq!(
            String::from_utf8_lossy(&origin.last_line()),
            format!("GET {forwarded} HTTP/1.1"),
        );
        let seen = read_message(&mut origin.last().as_bytes(), false)
            .unwrap()
            .unwrap();
        assert_eq!(seen.all("accept"), ["a", "b"], "{target}");
        assert_eq!(seen.all("x-dup"), ["1", "2"], "{target}");
        assert_eq!(seen.all("cookie"), ["c=1", "d=2"], "{target}");
        assert_eq!(seen.all("x-shared-secret"), [SECRET], "{target}");
        assert_eq!(seen.all("x-anonymous-consumer"), ["true"], "{target}");
        assert_eq!(seen.all("x-request-id").len(), 1, "{target}");
        assert_eq!(seen.all("host").len(), 1, "{target}");
    }
}

#[test]
fn absolute_form_and_asterisk_targets_are_forwarded_as_before() {
    let origin = Scripted::start(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec());
    let dir = TestDir::new();
    let gw = gateway(&dir, origin.addr, &[]);
    let mut lines = Vec::new();
    let raws: [&[u8]; 4] = [
        b"GET http://gateway.test/public/abs?q=1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        b"GET /public/caf\xe9?q=\xff%41 HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
        b"GET http://gateway.test/public/caf\xe9?q=\xff HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    ];
    for raw in raws {
        let before = origin.heads.lock().unwrap().len();
        let m = exchange(gw.addr, raw, false);
        let after = origin.heads.lock().unwrap().len();
        let line = if after > before {
            String::from_utf8_lossy(&origin.last_line()).into_owned()
        } else {
            "-".to_string()
        };
        lines.push(format!("{} {line}", m.status()));
    }
    // Recorded from the build before the plain-header-map rewrite (b985167).
    assert_eq!(lines, EXPECTED_FORMS);
}

const EXPECTED_FORMS: [&str; 4] = [
    // Absolute-form reaches the origin in origin-form (keygate routes its canonical path).
    "200 GET /public/abs?q=1 HTTP/1.1",
    // An asterisk-form target, and raw bytes outside ASCII, are refused before routing.
    "400 -",
    "400 -",
    "400 -",
];

/// Send `raw` on a fresh connection; the response head as it came on the wire (names in
/// their spelling), with the request id and `Date` masked, and the body.
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let rid = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or("none")
        .to_string();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; if raw.starts_with(b"HEAD") { 0 } else { length }];
    r.read_exact(&mut body).unwrap();
    let text = format!("{head}\n{}", String::from_utf8_lossy(&body));
    text.replace(&rid, "RID")
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .map(|l| match l.split_once(": ") {
            // Seconds until the failure window ends: the time the test ran.
            Some((n, _)) if n.eq_ignore_ascii_case("retry-after") => format!("{n}: N"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn keygate_s_own_answers_are_the_same_bytes_as_before() {
    let origin = Origin::start();
    let dir = TestDir::new();
    let cfg = GatewayConfig::new(origin.addr)
        .auth("brute_force: { max_failures: 2, window_seconds: 3600 }")
        .extra_upstream("dead", "address: \"127.0.0.1:1\", connect_timeout_ms: 500")
        .routes(&[
            "name: c, path_prefix: /c, upstream: origin, auth: required, methods: [GET, POST], cors: { allow_origins: [\"https://app.example.com\"], expose_headers: [x-total-count], max_age_seconds: 300 }",
            "name: dead, path_prefix: /dead, upstream: dead, auth: none",
            "name: public, path_prefix: /public, upstream: origin, auth: none",
            "name: maybe, path_prefix: /maybe, upstream: origin, auth: optional",
            "name: api, host: gateway.test, path_prefix: /, upstream: origin, auth: required",
        ])
        .yaml();
    let gw = Gateway::start(&dir, &cfg, &keys().yaml);
    let h = "Host: gateway.test\r\n";
    let mut seen = Vec::new();
    for raw in [
        format!("GET /x HTTP/1.1\r\n{h}\r\n"),
        format!("HEAD /x HTTP/1.1\r\n{h}\r\n"),
        format!("GET /x HTTP/1.1\r\n{h}x-api-key: nope\r\n\r\n"),
        "GET /x HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n".to_string(),
        format!("DELETE /c/x HTTP/1.1\r\n{h}\r\n"),
        format!("OPTIONS /c/x HTTP/1.1\r\n{h}Origin: https://app.example.com\r\nAccess-Control-Request-Method: POST\r\n\r\n"),
        format!("OPTIONS /c/x HTTP/1.1\r\n{h}Origin: https://evil.example.com\r\nAccess-Control-Request-Method: POST\r\n\r\n"),
        format!("GET /c/x HTTP/1.1\r\n{h}Origin: https://app.example.com\r\n\r\n"),
        format!("POST /x HTTP/1.1\r\n{h}Content-Length: 100000\r\n\r\n"),
        format!("GET /dead/x HTTP/1.1\r\n{h}\r\n"),
        format!("TRACE /x HTTP/1.1\r\n{h}\r\n"),
        format!("GET /x HTTP/1.1\r\n{h}x-api-key: nope\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\n{h}x-api-key: nope\r\n\r\n"),
    ] {
        seen.push(raw_exchange(gw.addr, raw.as_bytes()));
    }
    let text = seen.join("\n----\n");
    let golden = include_str!("passthrough_answers.txt");
    if std::env::var_os("PASSTHROUGH_WRITE").is_some() {
        std::fs::write("tests/it/passthrough_answers.txt", &text).unwrap();
    }
    assert_eq!(text, golden);
}

#[test]
fn header_names_travel_in_lower_case_except_pingora_s_title_cased_dozen() {
    let origin = Scripted::start(|_| {
        b"HTTP/1.1 200 Fine\r\nX-Origin-Thing: one\r\nETag: \"v\"\r\nContent-Length: 0\r\n\r\n"
            .to_vec()
    });
    let dir = TestDir::new();
    let gw = gateway(&dir, origin.addr, &[]);
    let out = raw_exchange(
        gw.addr,
        b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nX-Client-Thing: 1\r\nUser-Agent: t\r\n\r\n",
    );
    // As README's "What the origin receives" says (names are case-insensitive).
    assert!(out.starts_with("HTTP/1.1 200 Fine\n"), "{out}");
    for line in ["x-origin-thing: one", "etag: \"v\"", "Content-Length: 0"] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    let seen = origin.last();
    for line in ["Host: gateway.test", "x-client-thing: 1", "user-agent: t"] {
        assert!(seen.lines().any(|l| l == line), "{line} in {seen}");
    }
}

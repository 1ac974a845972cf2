//! Instruction-count regression guard for keygate's per-request work, counted by callgrind.
//!
//! `cargo bench --bench icount` (or `./dev icount`) runs this binary once per case under
//! `valgrind --tool=callgrind`, counting only the instructions of a second pass over the
//! case (`--toggle-collect=*measured_pass*`, after an uncounted warm-up pass), and
//! compares instructions per operation with the committed baseline
//! `benches/icount.baseline`. Instruction counts do not depend on what else the machine
//! is doing (two runs give the same counts), so a tolerance of 5 % is enough where a
//! wall-clock figure moves ±15 %; it is not smaller because inlining decisions alone
//! moved a case whose code did not change by 2.3 %. The run fails when a case leaves its
//! tolerance either way: slower is a regression; faster means the baseline is stale and
//! would hide the next regression up to that amount.
//!
//! Counts depend on the compiler: the baseline records `rustc -V` and `valgrind --version`,
//! and under another toolchain the run prints the counts and a warning instead of judging
//! them (record a new baseline in a commit of its own).
//!
//! `cargo bench --bench icount -- --update` rewrites the baseline; commit it with a
//! message that says why the counts changed. `cargo test --all-targets` runs each case
//! a few times without valgrind, as a smoke test.
//!
//! Cases (10 keys; a request with a key in `x-api-key`, a host, a user agent, an accept):
//! - `decision_forward`, `decision_reject`: `admit`, the whole `request_filter` decision
//!   (header limits, host, path, route, brute-force table, authentication, limits) for a
//!   valid key and for an unknown one;
//! - `decision_forward_limits`: the same with a consumer rate limit and quota charged;
//! - `rewrite`: the header rewrite for the origin (`forwarded` and
//!   `rewrite_upstream_headers`) on the copy of the request head Pingora makes;
//! - `problem`: the 401 problem document, head and body;
//! - `access_log`: one access-log line for a forwarded request;
//! - `request_id`: a generated request id.

#![allow(clippy::unwrap_used)] // benchmark setup: a failed unwrap is a broken benchmark

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use keygate::admission::{admit, Admission};
use keygate::config::{ConsumerConfig, KeyConfig, KeysFile};
use keygate::fixture;
use keygate::forwarded::{self, Client};
use keygate::limiter::FailureLimiter;
use keygate::logging::{format_line, AccessRecord, Format};
use keygate::problem::Code;
use keygate::proxy::{problem_response, rewrite_upstream_headers, RequestCtx, Rewrite};
use keygate::request_id::new_request_id;
use keygate::state::State;
use pingora::http::RequestHeader;

// The same allocator as the keygate binary: allocation is part of the cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Allowed relative difference from the baseline, either way.
const TOLERANCE: f64 = 0.05;
/// Operations per case under callgrind (after a warm-up of the same number).
const ITERATIONS: u64 = 2_000;
const BASELINE: &str = "benches/icount.baseline";
const NOW_MS: i64 = 1_800_000_000_000;

const CONFIG: &str = r#"
secret: { env: UNUSED }
auth: { keys_file: keys.json, brute_force: { max_failures: 0 } }
upstreams: { origin: { address: "127.0.0.1:8000" } }
routes: [ { name: api, path_prefix: /, upstream: origin, auth: required } ]
"#;

const CASES: [&str; 7] = [
    "decision_forward",
    "decision_reject",
    "decision_forward_limits",
    "rewrite",
    "problem",
    "access_log",
    "request_id",
];

fn key(i: usize) -> String {
    format!("bench-key-{i:08}")
}

/// Ten consumers of one key each; with `limits`, each has a rate limit and a quota high
/// enough never to refuse.
fn state(limits: bool) -> State {
    let consumers = (0..10)
        .map(|c| ConsumerConfig {
            id: format!("c{c}"),
            name: Some("Bench".into()),
            rate_limit: limits.then_some(keygate::config::RateLimitConfig {
                requests: 4_000_000_000,
                window_seconds: 60,
            }),
            quota: limits.then_some(keygate::config::QuotaConfig {
                requests: 4_000_000_000,
                period: keygate::config::QuotaPeriod::Month,
            }),
            keys: vec![KeyConfig {
                id: format!("k{c}"),
                sha256: fixture::digest_hex(&key(c)),
                ..KeyConfig::default()
            }],
            ..ConsumerConfig::default()
        })
        .collect();
    fixture::build_with_keys(CONFIG, &KeysFile { consumers }).unwrap()
}

/// A request head as Pingora parses it (names keep their case).
fn request(key: &str) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/v1/items?limit=10", Some(8)).unwrap();
    r.append_header("Host", "api.example.com").unwrap();
    r.append_header("X-Api-Key", key).unwrap();
    r.append_header("User-Agent", "wrk/4.2").unwrap();
    r.append_header("Accept", "application/json").unwrap();
    r
}

const IP: Option<std::net::IpAddr> =
    Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));

/// Everything a case needs, built before anything is counted.
struct Fixture {
    limiter: FailureLimiter,
    plain: Arc<State>,
    limited: Arc<State>,
    good: RequestHeader,
    bad: RequestHeader,
    /// A forwarded request's context (for the rewrite).
    forwarded: RequestCtx,
    /// A rejected request's context (for the problem document).
    rejected: RequestCtx,
}

impl Fixture {
    fn new() -> Fixture {
        let limiter = FailureLimiter::new(1024);
        let plain = Arc::new(state(false));
        let limited = Arc::new(state(true));
        let good = request(&key(5));
        let bad = request("bench-not-a-valid-key-000000000000000");
        let ctx = |req: &RequestHeader| {
            let mut ctx = RequestCtx::new(plain.clone());
            ctx.request_id = HeaderValue::from_static("0123456789abcdef0123456789abcdef");
            ctx.client = Client {
                addr: IP,
                peer: IP,
                via_trusted_proxy: false,
            };
            ctx.decision = Some(admit(&plain, req, IP, &limiter, NOW_MS));
            ctx
        };
        let forwarded = ctx(&good);
        let rejected = ctx(&bad);
        assert!(matches!(forwarded.decision, Some(Admission::Forward(_))));
        assert!(matches!(rejected.decision, Some(Admission::Reject(_))));
        Fixture {
            limiter,
            plain,
            limited,
            good,
            bad,
            forwarded,
            rejected,
        }
    }
}

/// One pass of `n` operations of `case`; `heads` holds the request heads the rewrite
/// consumes (Pingora's copy of the request, made outside the count).
fn pass(fx: &Fixture, case: &str, n: u64, heads: &mut Vec<RequestHeader>) {
    match case {
        "decision_forward" | "decision_reject" | "decision_forward_limits" => {
            let (state, req) = match case {
                "decision_forward" => (&fx.plain, &fx.good),
                "decision_reject" => (&fx.plain, &fx.bad),
                _ => (&fx.limited, &fx.good),
            };
            for _ in 0..n {
                black_box(admit(state, black_box(req), IP, &fx.limiter, NOW_MS));
            }
        }
        "rewrite" => {
            let ctx = &fx.forwarded;
            let Some(Admission::Forward(forward)) = &ctx.decision else {
                unreachable!("checked when the fixture was built");
            };
            while let Some(mut req) = heads.pop() {
                let fwd = forwarded::forwarded(&req.headers, &ctx.client, false, Some(8080), None);
                rewrite_upstream_headers(
                    &mut req,
                    Rewrite {
                        state: &ctx.state,
                        forward,
                        request_id: &ctx.request_id,
                        forwarded: fwd,
                    },
                )
                .unwrap();
                drop(black_box(req));
            }
        }
        "problem" => {
            for _ in 0..n {
                let (head, body) = problem_response(
                    black_box(&fx.rejected),
                    Code::InvalidApiKey,
                    &http::Method::GET,
                    true,
                    NOW_MS,
                )
                .unwrap();
                black_box((head, body));
            }
        }
        "access_log" => {
            let mut out = String::with_capacity(512);
            let record = AccessRecord {
                method: Some("GET"),
                path: Some(b"/v1/items"),
                status: 200,
                route: Some("api"),
                consumer: Some("c5"),
                key_id: Some("k5"),
                code: None,
                duration: Duration::from_micros(1234),
                request_id: b"0123456789abcdef0123456789abcdef",
                client: IP,
                error: None,
                key_expires_at: None,
                upstream_server: Some("127.0.0.1:8000"),
                retried_from: None,
            };
            for _ in 0..n {
                out.clear();
                format_line(Format::Text, black_box(&record), &mut out);
                black_box(&out);
            }
        }
        "request_id" => {
            for _ in 0..n {
                black_box(new_request_id());
            }
        }
        other => panic!("unknown case {other}"),
    }
}

/// The uncounted pass: warms lazily built statics and the allocator's caches.
#[inline(never)]
fn warm_up_pass(fx: &Fixture, case: &str, n: u64, heads: &mut Vec<RequestHeader>) {
    PASSES.fetch_add(1, Ordering::Relaxed);
    pass(fx, case, n, heads);
}

/// The counted pass: callgrind collects only inside this function (`--toggle-collect`).
#[inline(never)]
fn measured_pass(fx: &Fixture, case: &str, n: u64, heads: &mut Vec<RequestHeader>) {
    pass(fx, case, n, heads);
    // Keeps the two passes distinct functions (identical ones are merged into one symbol).
    PASSES.fetch_add(2, Ordering::Relaxed);
}

/// Passes run (see `measured_pass`).
static PASSES: AtomicU64 = AtomicU64::new(0);

/// Run `case` `n` times uncounted, then `n` times counted.
fn run_case(case: &str, n: u64) {
    let fx = Fixture::new();
    let copies = |fx: &Fixture| (0..n).map(|_| fx.good.clone()).collect::<Vec<_>>();
    let mut heads = copies(&fx);
    warm_up_pass(&fx, case, n, &mut heads);
    let mut heads = copies(&fx);
    measured_pass(&fx, case, n, &mut heads);
}

/// Instructions per operation of `case`, counted by callgrind inside `measured_pass`.
fn count(exe: &Path, case: &str, out_dir: &Path) -> f64 {
    let out = out_dir.join(format!("callgrind.{case}"));
    let status = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--collect-atstart=no",
            "--toggle-collect=*measured_pass*",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        .arg(exe)
        .args(["--case", case, "--iterations", &ITERATIONS.to_string()])
        .env("ICOUNT_CHILD", "1")
        .output()
        .expect("valgrind runs (./dev deps installs it)");
    assert!(
        status.status.success(),
        "valgrind failed for {case}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let total: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("totals: ").or(l.strip_prefix("summary: ")))
        .and_then(|v| v.trim().parse().ok())
        .expect("a callgrind summary line");
    total as f64 / ITERATIONS as f64
}

/// The compiler and valgrind the counts come from: counts are only comparable under the
/// same two (`rustc -V`, `valgrind --version`).
fn toolchain() -> String {
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| format!("{cmd}: unknown"))
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    format!(
        "{}; {}",
        version(&rustc, "-V"),
        version("valgrind", "--version")
    )
}

/// The toolchain line of a baseline file (`# toolchain: …`).
fn baseline_toolchain(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix("# toolchain: ")
            .map(|t| t.trim().to_string())
    })
}

fn read_baseline(path: &Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn write_baseline(path: &Path, counts: &BTreeMap<String, f64>) {
    let mut text = String::from(
        "# Instructions per operation, counted by callgrind (cargo bench --bench icount).\n\
         # Update with `cargo bench --bench icount -- --update` and say why in the commit.\n",
    );
    text.push_str(&format!("# toolchain: {}\n", toolchain()));
    for (case, n) in counts {
        text.push_str(&format!("{case} {n:.0}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(case) = arg("--case") {
        let n = arg("--iterations")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        run_case(case, n);
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        // `cargo test --all-targets`: each case a few times, no valgrind.
        for case in CASES {
            run_case(case, 3);
        }
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let exe = std::env::current_exe().unwrap();
    let out_dir = root.join("target/icount");
    std::fs::create_dir_all(&out_dir).unwrap();
    let counts: BTreeMap<String, f64> = CASES
        .iter()
        .map(|c| (c.to_string(), count(&exe, c, &out_dir)))
        .collect();
    let baseline_path = root.join(BASELINE);
    if args.iter().any(|a| a == "--update") {
        write_baseline(&baseline_path, &counts);
        println!("wrote {}", baseline_path.display());
    }
    let baseline = read_baseline(&baseline_path);
    let here = toolchain();
    let comparable = baseline_toolchain(&baseline_path).is_none_or(|t| t == here);
    let mut failed = Vec::new();
    println!(
        "{:<26} {:>12} {:>12} {:>8}",
        "case", "instr/op", "baseline", "change"
    );
    for (case, n) in &counts {
        match baseline.get(case) {
            Some(&b) => {
                let change = n / b - 1.0;
                let flag = if change.abs() > TOLERANCE {
                    "  <- outside ±5 %"
                } else {
                    ""
                };
                println!(
                    "{case:<26} {n:>12.0} {b:>12.0} {:>+7.1}%{flag}",
                    change * 100.0
                );
                if change.abs() > TOLERANCE {
                    failed.push(case.clone());
                }
            }
            None => {
                println!("{case:<26} {n:>12.0} {:>12} {:>8}", "-", "new");
                failed.push(case.clone());
            }
        }
    }
    if !comparable {
        // Another compiler inlines differently: the counts cannot judge this code.
        eprintln!(
            "icount: the baseline was recorded with `{}`, this is `{here}`: counts are \
             not comparable, nothing is judged. Record a baseline for this toolchain \
             (`./dev icount --update`) in a commit of its own.",
            baseline_toolchain(&baseline_path).unwrap_or_default()
        );
        return;
    }
    if !failed.is_empty() {
        eprintln!(
            "instruction counts outside the baseline's ±{:.0} % for: {} \
             (a regression, or a stale baseline: see benches/icount.rs)",
            TOLERANCE * 100.0,
            failed.join(", ")
        );
        std::process::exit(1);
    }
}

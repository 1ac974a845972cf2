#!/usr/bin/env python3
"""Drive the load benchmark (see run.sh): start servers, run wrk, measure CPU per request.

CPU per request is the gateway process's user+system time (from /proc/<pid>/stat) over the
run divided by the requests wrk completed; peak RSS is VmHWM. Every gateway runs one worker
thread pinned to CPU 0; the origin (nginx, one worker) and wrk (-t1 -c64) share CPU 1, and so
does the redis-server that --store starts (so the store's own work is never charged to, nor
competes with, the gateway's core).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KEYGATE = os.environ.get("KEYGATE_BIN", os.path.join(ROOT, "target/release/keygate"))
PASSTHROUGH = os.environ.get("PASSTHROUGH_BIN", os.path.join(ROOT, "target/release/examples/passthrough"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SECRET = "bench-shared-secret-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline=30):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listening on {port}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def exit_on_signals():
    """SIGTERM and SIGHUP end the script through SystemExit, so `finally` blocks stop what it
    started (SIGINT already raises KeyboardInterrupt)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: sys.exit(128 + n))


class Server:
    def __init__(self, name, argv, port, cpu, env=None, log=None):
        self.name, self.port = name, port
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu)] + argv, env=full_env,
                                     stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
        try:
            wait_port(port)
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        # taskset execs the target, so the pid is the server's own.
        self.pid = self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def start_redis(work, cpu):
    """A redis-server on a free loopback port, pinned to `cpu`, without persistence."""
    port = free_port()
    d = os.path.join(work, f"redis-{port}")
    os.makedirs(d, exist_ok=True)
    return Server("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                            "--save", "", "--appendonly", "no", "--daemonize", "no",
                            "--dir", d, "--logfile", ""], port, cpu)


def redis_cmd(port, *args):
    """One command to the redis-server on `port`; a simple or bulk reply as text, an
    integer as int, an array as a list, an error raised. Enough RESP for INFO, GET, SCAN."""
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.sendall(f"*{len(args)}\r\n".encode()
                  + b"".join(f"${len(str(a).encode())}\r\n{a}\r\n".encode() for a in args))
        f = s.makefile("rb")

        def reply():
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:].decode()
            if kind == b"+":
                return rest
            if kind == b"-":
                raise RuntimeError(f"redis {args[0]}: {rest}")
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [reply() for _ in range(n)]
            raise RuntimeError(f"redis {args[0]}: unexpected reply {line!r}")
        return reply()


def redis_commands(port):
    """Commands the server has processed so far, per command (INFO commandstats), without
    the INFO calls that read them."""
    calls = {}
    for line in redis_cmd(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m and m.group(1) != "info":
            calls[m.group(1)] = int(m.group(2))
    return calls


def redis_delta(before, after):
    return {c: n - before.get(c, 0) for c, n in after.items() if n - before.get(c, 0)}


def store_section(redis_port, sync_ms, prefix):
    """The `limits:` block of keygate.yaml that shares limits through `redis_port`."""
    return (f'limits: {{ store: {{ redis: {{ url: "redis://127.0.0.1:{redis_port}/0",'
            f' sync_interval_ms: {sync_ms}, key_prefix: "{prefix}" }} }} }}\n')


def wait_store_up(metrics_port, name, deadline=15):
    """Wait until keygate's `keygate_limit_store_up` gauge is 1 (its first sync succeeded)."""
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r:
                if re.search(r"^keygate_limit_store_up 1\b", r.read().decode(), re.M):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{name}: keygate_limit_store_up never reached 1 (is the store reachable?)")


def nginx_conf(work, name, body):
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
{body}
}}
""")
    return conf


# Limits high enough never to refuse during a run: they are counted and announced, not hit.
LIMITS = {"rate_limit": {"requests": 4_000_000_000, "window_seconds": 60},
          "quota": {"requests": 4_000_000_000, "period": "month"}}


def make_keys(work, n, limits=False):
    keys = [f"bench-{hashlib.sha256(str(i).encode()).hexdigest()[:32]}" for i in range(n)]
    consumers = [{"id": f"c{c}", **(LIMITS if limits else {}),
                  "keys": [{"id": f"k{i}", "sha256": hashlib.sha256(keys[i].encode()).hexdigest()}
                           for i in range(c * 10, min(n, c * 10 + 10))]}
                 for c in range((n + 9) // 10)]
    kpath = os.path.join(work, f"keys-{n}{'-limits' if limits else ''}.json")
    with open(kpath, "w") as f:
        json.dump({"consumers": consumers}, f)
    mpath = os.path.join(work, f"keys-{n}.map")
    with open(mpath, "w") as f:
        for i, k in enumerate(keys):
            f.write(f'"{k}" "c{i // 10}";\n')
    return keys, kpath, mpath


def wrk(port, header, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "--latency",
                          "-H", header, f"http://127.0.0.1:{port}/v1/items"],
                         capture_output=True, text=True, check=True).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    return {"requests": reqs, "rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": "Socket errors" in out}


def measure(server, header, seconds, expect_2xx, redis_port=None):
    """Run wrk against `server` and charge the CPU time of `server.pid` to its requests.

    With `redis_port`, also count the commands that redis-server processed meanwhile
    (INFO commandstats before and after), per second of the run."""
    calls = redis_commands(redis_port) if redis_port else None
    t0 = time.monotonic()
    before = cpu_ticks(server.pid)
    r = wrk(server.port, header, seconds)
    used = cpu_ticks(server.pid) - before
    if redis_port:
        elapsed = time.monotonic() - t0
        delta = redis_delta(calls, redis_commands(redis_port))
        r["redis_cmds_per_s"] = sum(delta.values()) / elapsed
        r["redis_cmds"] = delta
    r["cpu_us_per_req"] = used / TICK * 1e6 / max(r["requests"], 1)
    r["rss_mib"] = hwm_kib(server.pid) / 1024
    ok = (r["non2xx"] == 0) if expect_2xx else (r["non2xx"] == r["requests"] or r["non2xx"] > 0)
    if not ok or r["errors"]:
        print(f"  warning: {server.name}: unexpected responses: {r}", file=sys.stderr)
    return r


def make_tls_origin_certs(work):
    """A private CA and a leaf for localhost (PEM files under work/tls); returns the CA file."""
    d = os.path.join(work, "tls")
    os.makedirs(d, exist_ok=True)
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=keygate bench CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr",
        "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "2", "-extfile", "ext.cnf")
    return os.path.join(d, "ca.pem")


def run_keygate(work, label, binary, kpath, upstream, upstream_extra, good, bad, seconds, record, what,
                redis_port=None, sync_ms=250):
    """Start `binary` with auth, metrics and access log on; measure the 200 (and 401) path.

    `upstream` is one address, or a list of addresses: servers of weight 1 with HTTP
    health checks. With `redis_port`, limits are shared through that redis-server
    (`limits.store`), measuring starts once keygate's first sync succeeded, and the
    server's commands per second are recorded with each run."""
    kport = free_port()
    mport = free_port()
    cfg = os.path.join(work, f"{label}.yaml")
    if isinstance(upstream, list):
        servers = ", ".join(f'{{ address: "{a}" }}' for a in upstream)
        where = f"servers: [ {servers} ], health_check: {{ path: /healthz }}"
    else:
        where = f'address: "{upstream}"'
    with open(cfg, "w") as f:
        f.write(f"""server: {{ listen: ["127.0.0.1:{kport}"], threads: 1, metrics_listen: "127.0.0.1:{mport}" }}
secret: {{ env: KEYGATE_SHARED_SECRET }}
auth: {{ keys_file: {kpath}, brute_force: {{ max_failures: 0 }} }}
upstreams: {{ origin: {{ {where}{upstream_extra} }} }}
routes: [ {{ name: api, path_prefix: /, upstream: origin, auth: required }} ]
""")
        if redis_port:
            # A prefix of its own per run: no count or heartbeat of an earlier run is seen.
            f.write(store_section(redis_port, sync_ms, f"bench-{kport}:"))
    with open(os.path.join(work, f"{label}.log"), "w") as log:
        kg = Server(label, [binary, "run", "-c", cfg], kport, 0,
                    env={"KEYGATE_SHARED_SECRET": SECRET, "KEYGATE_LOG": "info"}, log=log)
        try:
            if redis_port:
                wait_store_up(mport, label)
            record(f"{label} 200 ({what})", measure(kg, good, seconds, True, redis_port))
            if bad:
                record(f"{label} 401 ({what})", measure(kg, bad, seconds, False, redis_port))
        finally:
            kg.stop()


def pingap_conf(work, n, keys, origin_port, port):
    """pingap 0.13.1 as an API-key gateway: its `key_auth` plugin on `x-api-key` (hiding the
    credential from the origin), the shared secret added by the location, one worker thread,
    no access log (its default: the cheapest setting)."""
    d = os.path.join(work, f"pingap-{n}")
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "pingap.toml")
    with open(conf, "w") as f:
        f.write(f"""[basic]
threads = 1
log_level = "warn"
pid_file = "{d}/pingap.pid"
upgrade_sock = "{d}/upgrade.sock"
grace_period = "1s"
graceful_shutdown_timeout = "1s"

[upstreams.origin]
addrs = ["127.0.0.1:{origin_port}"]

[plugins.auth]
category = "key_auth"
header = "x-api-key"
hide_credentials = true
keys = [{", ".join(json.dumps(k) for k in keys)}]

[locations.api]
upstream = "origin"
plugins = ["auth"]
proxy_set_headers = ["x-shared-secret:{SECRET}"]

[servers.gw]
addr = "127.0.0.1:{port}"
locations = ["api"]
threads = 1
""")
    return conf


def reload_under_load(work, origin_port, args):
    """p99 latency with and without SIGHUP reloads of a large keys file, under load."""
    n = args.reload_keys
    keys, kpath, _ = make_keys(work, n)
    kport = free_port()
    cfg = os.path.join(work, "keygate-reload.yaml")
    with open(cfg, "w") as f:
        f.write(f"""server: {{ listen: ["127.0.0.1:{kport}"], threads: 1, metrics_listen: "" }}
secret: {{ env: KEYGATE_SHARED_SECRET }}
auth: {{ keys_file: {kpath}, brute_force: {{ max_failures: 0 }} }}
upstreams: {{ origin: {{ address: "127.0.0.1:{origin_port}" }} }}
routes: [ {{ name: api, path_prefix: /, upstream: origin, auth: required }} ]
""")
    log_path = os.path.join(work, "keygate-reload.log")
    with open(log_path, "w") as log:
        kg = Server("keygate", [KEYGATE, "run", "-c", cfg], kport, 0,
                    env={"KEYGATE_SHARED_SECRET": SECRET, "KEYGATE_LOG": "info"}, log=log)
        header = f"x-api-key: {keys[n // 3]}"
        seconds = 15
        base = wrk(kport, header, seconds)
        # One reload of the whole file, two seconds into a saturating run on the same core.
        proc = subprocess.Popen(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "--latency",
                                 "-H", header, f"http://127.0.0.1:{kport}/v1/items"],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        kg.proc.send_signal(signal.SIGHUP)
        reloads = 1
        out = proc.communicate()[0]
        took = []
        for _ in range(600):
            with open(log_path) as f:
                took = re.findall(r"configuration reloaded in (\d+) ms", f.read())
            if took:
                break
            time.sleep(0.05)
        # The same reload with the gateway idle.
        kg.proc.send_signal(signal.SIGHUP)
        for _ in range(600):
            with open(log_path) as f:
                idle = re.findall(r"configuration reloaded in (\d+) ms", f.read())
            if len(idle) > len(took):
                break
            time.sleep(0.05)
        kg.stop()
    took = took + idle[len(took):]
    def p99(text):
        m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", text)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"\nreload under load ({n} keys; reload took {took[0] if took else '?'} ms under saturating load,"
          f" {took[1] if len(took) > 1 else '?'} ms idle):"
          f" p99 {base['p99_ms']:.3f} ms without reloads, {p99(out):.3f} ms with"
          f" ({p99(out) / base['p99_ms']:.2f}x); failed requests during reloads: {non2xx.group(1) if non2xx else 0}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="0: only the reload-under-load phase")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--keys-large", type=int, default=100_000)
    ap.add_argument("--reload-keys", type=int, default=1_000_000,
                    help="keys for the reload-under-load phase (0 skips it)")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="another keygate binary (e.g. a release build of an earlier commit) measured"
                         " in the same rounds, on the same configurations, labelled 'baseline'")
    ap.add_argument("--pingap", metavar="BINARY",
                    help="also measure pingap (a build of pingap 0.13.1) with its key_auth plugin")
    ap.add_argument("--skip-peers", action="store_true",
                    help="measure only keygate (and --baseline): no nginx gateway, no Pingora floors")
    ap.add_argument("--limits", action="store_true",
                    help="also measure this keygate with a rate limit and a quota on every consumer"
                         " (set too high to refuse), labelled 'limits'")
    ap.add_argument("--two-servers", action="store_true",
                    help="also measure this keygate (200 path) with a two-server upstream: the same"
                         " nginx origin on two ports, weights 1:1, HTTP health checks; labelled"
                         " 'two-servers', compared with the one-server 'keygate' of the same rounds")
    ap.add_argument("--store", action="store_true",
                    help="also measure this keygate with the limits of --limits (implied) shared"
                         " through a redis-server the script starts (limits.store), labelled"
                         " 'store', compared with 'limits' (local) of the same rounds; reports the"
                         " Redis commands per second per instance")
    ap.add_argument("--sync-ms", type=int, default=250,
                    help="limits.store.redis.sync_interval_ms for --store (default 250, keygate's default)")
    args = ap.parse_args()
    if args.store:
        args.limits = True
    exit_on_signals()
    work = tempfile.mkdtemp(prefix="keygate-load-")
    servers = []
    try:
        origin_port = free_port()
        origin_port2 = free_port()
        tls_port = free_port()
        ca_file = make_tls_origin_certs(work)
        origin = Server("origin", [NGINX, "-c", nginx_conf(work, "origin", f"""
  access_log off;
  server {{ listen 127.0.0.1:{origin_port} reuseport; listen 127.0.0.1:{origin_port2} reuseport;
    keepalive_timeout 300s;
    location / {{ if ($http_x_shared_secret != "{SECRET}") {{ return 401; }}
                  default_type application/json; return 200 '{{"ok":true}}'; }} }}
  server {{ listen 127.0.0.1:{tls_port} ssl reuseport; keepalive_timeout 300s;
    ssl_certificate {work}/tls/leaf.pem; ssl_certificate_key {work}/tls/leaf.key;
    location / {{ if ($http_x_shared_secret != "{SECRET}") {{ return 401; }}
                  default_type application/json; return 200 '{{"ok":true}}'; }} }}""")], origin_port, 1)
        servers.append(origin)
        redis = None
        if args.store:
            # With the origin and wrk on CPU 1: the gateway's core 0 is left to the gateway.
            redis = start_redis(work, 1)
            servers.append(redis)
        keygates = [("keygate", KEYGATE)] + ([("baseline", args.baseline)] if args.baseline else [])
        results = {}
        sizes = [10, args.keys_large]
        keysets = {n: make_keys(work, n) for n in sizes}
        limited = {n: make_keys(work, n, limits=True)[1] for n in sizes} if args.limits else {}

        one = f"127.0.0.1:{origin_port}"
        two = [one, f"127.0.0.1:{origin_port2}"]

        def keygate_runs(n):
            """(label, binary, keys file, upstream, 401 too, redis port) for every keygate
            measured on `n` keys."""
            runs = [(label, binary, keysets[n][1], one, True, None) for label, binary in keygates]
            if args.limits:
                runs.append(("limits", KEYGATE, limited[n], one, True, None))
            if args.store:
                runs.append(("store", KEYGATE, limited[n], one, True, redis.port))
            if args.two_servers:
                runs.append(("two-servers", KEYGATE, keysets[n][1], two, False, None))
            return runs

        def good_hdr(n):
            return f"x-api-key: {keysets[n][0][n // 2]}"
        bad_hdr = "x-api-key: bench-not-a-valid-key-000000000000000"

        def record(label, r):
            results.setdefault(label, []).append(r)
            redis_note = ""
            if "redis_cmds" in r:
                each = " ".join(f"{c}={n}" for c, n in sorted(r["redis_cmds"].items()))
                redis_note = f"  redis {r['redis_cmds_per_s']:.1f} cmd/s ({each or 'none'})"
            print(f"  {label:<28} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
                  f"  {r['cpu_us_per_req']:.1f} us CPU/req  RSS {r['rss_mib']:.0f} MiB{redis_note}", flush=True)

        for rnd in range(args.rounds):
            print(f"round {rnd + 1}/{args.rounds}", flush=True)
            # direct to origin (the CPU figure is the origin's own)
            record("direct", measure(origin, f"x-shared-secret: {SECRET}", args.seconds, True))
            for label, binary in keygates:
                run_keygate(work, label, binary, keysets[10][1], f"127.0.0.1:{tls_port}",
                            f", tls: true, sni: localhost, ca_file: {ca_file}", good_hdr(10), None,
                            args.seconds, record, "TLS origin, 10 keys")
            if args.skip_peers:
                for n in sizes:
                    for label, binary, kpath, upstream, rejects, rport in keygate_runs(n):
                        run_keygate(work, label, binary, kpath, upstream, "", good_hdr(n),
                                    bad_hdr if rejects else None, args.seconds, record, f"{n} keys",
                                    rport, args.sync_ms)
                continue
            # the framework floor
            pport = free_port()
            p = Server("passthrough", [PASSTHROUGH, f"127.0.0.1:{pport}", f"127.0.0.1:{origin_port}", "1"], pport, 0)
            record("passthrough 200*", measure(p, f"x-shared-secret: {SECRET}", args.seconds, True))
            p.stop()
            rport = free_port()
            p = Server("pingora-401", [PASSTHROUGH, f"127.0.0.1:{rport}", f"127.0.0.1:{origin_port}", "1", "reject"], rport, 0)
            record("pingora 401 floor*", measure(p, "x-api-key: whatever", args.seconds, False))
            p.stop()
            for n in sizes:
                keys, kpath, mpath = keysets[n]
                gport = free_port()
                ng = Server("nginx", [NGINX, "-c", nginx_conf(work, f"nginx-{n}", f"""
  access_log {work}/nginx-{n}/access.log;
  map_hash_max_size {max(2048, 2 * n)}; map_hash_bucket_size 128;
  map $http_x_api_key $kg_consumer {{ default ""; include {mpath}; }}
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 128; }}
  server {{ listen 127.0.0.1:{gport}; keepalive_timeout 300s;
    location / {{
      default_type application/problem+json;
      if ($kg_consumer = "") {{ add_header www-authenticate 'Bearer realm="keygate"' always;
                               return 401 '{{"code":"invalid_api_key"}}'; }}
      proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header x-api-key ""; proxy_set_header authorization "";
      proxy_set_header x-shared-secret "{SECRET}"; proxy_set_header x-consumer-id $kg_consumer;
      proxy_set_header x-forwarded-for $proxy_add_x_forwarded_for;
      proxy_pass http://origin; }} }}""")], gport, 0)
                record(f"nginx 200 ({n} keys)", measure(ng, good_hdr(n), args.seconds, True))
                record(f"nginx 401 ({n} keys)", measure(ng, bad_hdr, args.seconds, False))
                ng.stop()
                if args.pingap:
                    pg_port = free_port()
                    pg = Server("pingap", [args.pingap, "-c", pingap_conf(work, n, keys, origin_port, pg_port)],
                                pg_port, 0)
                    record(f"pingap 200 ({n} keys)", measure(pg, good_hdr(n), args.seconds, True))
                    record(f"pingap 401 ({n} keys)", measure(pg, bad_hdr, args.seconds, False))
                    pg.stop()
                for label, binary, kp, upstream, rejects, rport in keygate_runs(n):
                    run_keygate(work, label, binary, kp, upstream, "", good_hdr(n),
                                bad_hdr if rejects else None, args.seconds, record, f"{n} keys",
                                rport, args.sync_ms)

        if args.reload_keys:
            reload_under_load(work, origin_port, args)
        if not results:
            return

        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0] if f not in ("errors", "redis_cmds")}
               for k, v in results.items()}
        print("\n| run | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB |")
        print("|---|---|---|---|---|---|")
        for k, m in med.items():
            print(f"| {k} | {m['rps']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['cpu_us_per_req']:.1f} | {m['rss_mib']:.0f} |")
        print()
        for n in sizes:
            if args.baseline:
                for path in ("200", "401"):
                    new, old = med[f"keygate {path} ({n} keys)"], med[f"baseline {path} ({n} keys)"]
                    print(f"{n} keys, {path} path: keygate/baseline CPU per request"
                          f" {new['cpu_us_per_req'] / old['cpu_us_per_req']:.3f}x")
                    if args.limits:
                        lim = med[f"limits {path} ({n} keys)"]
                        print(f"{n} keys, {path} path: limits/baseline CPU per request"
                              f" {lim['cpu_us_per_req'] / old['cpu_us_per_req']:.3f}x")
        if args.two_servers:
            for n in sizes:
                two_s, one_s = med[f"two-servers 200 ({n} keys)"], med[f"keygate 200 ({n} keys)"]
                rounds = zip(results[f"two-servers 200 ({n} keys)"], results[f"keygate 200 ({n} keys)"])
                each = ", ".join(f"{t['cpu_us_per_req'] / o['cpu_us_per_req']:.3f}x" for t, o in rounds)
                print(f"{n} keys, 200 path: two-servers/one-server CPU per request"
                      f" {two_s['cpu_us_per_req'] / one_s['cpu_us_per_req']:.3f}x (per round: {each})")
        if args.store:
            print(f"(store: limits.store.redis on a redis-server pinned to CPU 1, sync_interval_ms {args.sync_ms})")
            for n in sizes:
                for path in ("200", "401"):
                    st, lo = med[f"store {path} ({n} keys)"], med[f"limits {path} ({n} keys)"]
                    runs = results[f"store {path} ({n} keys)"]
                    each = ", ".join(f"{s['cpu_us_per_req'] / lo_['cpu_us_per_req']:.3f}x"
                                     for s, lo_ in zip(runs, results[f"limits {path} ({n} keys)"]))
                    cmds = ", ".join(f"{r['redis_cmds_per_s']:.1f}" for r in runs)
                    print(f"{n} keys, {path} path: store/limits CPU per request"
                          f" {st['cpu_us_per_req'] / lo['cpu_us_per_req']:.3f}x (per round: {each});"
                          f" Redis {st['redis_cmds_per_s']:.1f} commands/s for the one instance at"
                          f" {st['rps']:.0f} req/s (median; per round: {cmds})")
        if args.baseline:
            new, old = med["keygate 200 (TLS origin, 10 keys)"], med["baseline 200 (TLS origin, 10 keys)"]
            print(f"TLS origin, 200 path: keygate/baseline CPU per request"
                  f" {new['cpu_us_per_req'] / old['cpu_us_per_req']:.3f}x")
        if args.skip_peers:
            return
        floor = med["passthrough 200*"]["cpu_us_per_req"]
        floor401 = med["pingora 401 floor*"]["cpu_us_per_req"]
        for n in sizes:
            k2, n2 = med[f"keygate 200 ({n} keys)"]["cpu_us_per_req"], med[f"nginx 200 ({n} keys)"]["cpu_us_per_req"]
            k4, n4 = med[f"keygate 401 ({n} keys)"]["cpu_us_per_req"], med[f"nginx 401 ({n} keys)"]["cpu_us_per_req"]
            print(f"{n} keys: keygate/nginx CPU per request: 200 path {k2 / n2:.2f}x, 401 path {k4 / n4:.2f}x;"
                  f" keygate/Pingora floor: 200 path {k2 / floor:.2f}x, 401 path {k4 / floor401:.2f}x")
            if args.pingap:
                p2 = med[f"pingap 200 ({n} keys)"]["cpu_us_per_req"]
                p4 = med[f"pingap 401 ({n} keys)"]["cpu_us_per_req"]
                print(f"{n} keys: pingap/nginx CPU per request: 200 path {p2 / n2:.2f}x, 401 path {p4 / n4:.2f}x;"
                      f" keygate/pingap: 200 path {k2 / p2:.3f}x, 401 path {k4 / p4:.3f}x")
        if len(sizes) == 2:
            for path in ("200", "401"):
                small = med[f"keygate {path} ({sizes[0]} keys)"]["cpu_us_per_req"]
                large = med[f"keygate {path} ({sizes[1]} keys)"]["cpu_us_per_req"]
                print(f"keygate {path} path: {sizes[1]} keys / {sizes[0]} keys CPU per request {large / small:.3f}x")
        print("(* Pingora floors: a bare ProxyHttp that forwards with no key check, and one that answers"
              " a fixed 401 from request_filter; 'direct' CPU is the origin's own)")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Instructions per request of a whole gateway process, counted by callgrind.

    python3 benches/load/profile.py [--requests N] [--path 200|401] [--keys N] [--limits] [--tls]
                                    [--binary PATH] [--passthrough [reject]] [--pingap BINARY]
                                    [--out FILE]

Starts an nginx origin (as in run.py), the gateway under `valgrind --tool=callgrind`, warms
it up, zeroes callgrind's counters, sends exactly N requests on four keep-alive connections,
then dumps the counters: instructions per request is the dump's total over N, repeatable on
a noisy machine (callgrind counts instructions, not time). The dump (`--out`, default
target/profile/callgrind.<label>) is for `callgrind_annotate --inclusive=yes`, which shows
where the instructions go. Loopback only; stops by itself.
"""
import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the load benchmark's helpers: ports, nginx, keys files)

CONNECTIONS = 4


def drive(port, header, n, expect):
    """Send `n` GET requests spread over CONNECTIONS keep-alive connections; count statuses."""
    name, value = header.split(": ", 1)
    bad = []

    def one(count):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(count):
            c.request("GET", "/v1/items", headers={name: value})
            r = c.getresponse()
            r.read()
            if r.status != expect:
                bad.append(r.status)
        c.close()
    per = [n // CONNECTIONS + (1 if i < n % CONNECTIONS else 0) for i in range(CONNECTIONS)]
    threads = [threading.Thread(target=one, args=(k,)) for k in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if bad:
        raise SystemExit(f"unexpected statuses: {sorted(set(bad))} ({len(bad)} of {n})")


def total_instructions(path):
    with open(path) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--path", choices=("200", "401"), default="200")
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--limits", action="store_true", help="per-consumer rate limit and quota on")
    ap.add_argument("--tls", action="store_true", help="the origin over TLS (a private CA, as run.py)")
    ap.add_argument("--binary", default=run.KEYGATE)
    ap.add_argument("--pingap", metavar="BINARY",
                    help="profile pingap 0.13.1 with its key_auth plugin (as run.py --pingap) instead")
    ap.add_argument("--passthrough", nargs="?", const="forward", choices=("forward", "reject"),
                    help="profile the bare Pingora floor (examples/passthrough) instead")
    ap.add_argument("--out")
    args = ap.parse_args()
    run.exit_on_signals()
    work = tempfile.mkdtemp(prefix="keygate-profile-")
    servers = []
    try:
        origin_port = run.free_port()
        tls = ""
        upstream_extra = ""
        if args.tls:
            ca_file = run.make_tls_origin_certs(work)
            tls = (f" ssl; ssl_certificate {work}/tls/leaf.pem;"
                   f" ssl_certificate_key {work}/tls/leaf.key")
            upstream_extra = f", tls: true, sni: localhost, ca_file: {ca_file}"
        origin = run.Server("origin", [run.NGINX, "-c", run.nginx_conf(work, "origin", f"""
  access_log off;
  server {{ listen 127.0.0.1:{origin_port}{tls}; keepalive_timeout 300s;
    location / {{ if ($http_x_shared_secret != "{run.SECRET}") {{ return 401; }}
                  default_type application/json; return 200 '{{"ok":true}}'; }} }}""")], origin_port, 1)
        servers.append(origin)
        port = run.free_port()
        label = (f"passthrough-{args.passthrough}" if args.passthrough
                 else f"pingap-{args.path}-{args.keys}" if args.pingap
                 else f"keygate-{args.path}-{args.keys}{'-limits' if args.limits else ''}"
                 f"{'-tls' if args.tls else ''}")
        out = args.out or os.path.join(run.ROOT, "target", "profile", f"callgrind.{label}")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
        if args.passthrough:
            argv = [run.PASSTHROUGH, f"127.0.0.1:{port}", f"127.0.0.1:{origin_port}", "1"]
            if args.passthrough == "reject":
                argv.append("reject")
            header = (f"x-shared-secret: {run.SECRET}" if args.passthrough == "forward"
                      else "x-api-key: whatever")
            expect = 200 if args.passthrough == "forward" else 401
            env = {}
        elif args.pingap:
            keys, _, _ = run.make_keys(work, args.keys)
            argv = [args.pingap, "-c", run.pingap_conf(work, args.keys, keys, origin_port, port)]
            header = (f"x-api-key: {keys[args.keys // 2]}" if args.path == "200"
                      else "x-api-key: bench-not-a-valid-key-000000000000000")
            expect = int(args.path)
            env = {}
        else:
            keys, kpath, _ = run.make_keys(work, args.keys, limits=args.limits)
            cfg = os.path.join(work, "keygate.yaml")
            with open(cfg, "w") as f:
                f.write(f"""server: {{ listen: ["127.0.0.1:{port}"], threads: 1, metrics_listen: "127.0.0.1:{run.free_port()}" }}
secret: {{ env: KEYGATE_SHARED_SECRET }}
auth: {{ keys_file: {kpath}, brute_force: {{ max_failures: 0 }} }}
upstreams: {{ origin: {{ address: "127.0.0.1:{origin_port}"{upstream_extra} }} }}
routes: [ {{ name: api, path_prefix: /, upstream: origin, auth: required }} ]
""")
            argv = [args.binary, "run", "-c", cfg]
            header = (f"x-api-key: {keys[args.keys // 2]}" if args.path == "200"
                      else "x-api-key: bench-not-a-valid-key-000000000000000")
            expect = int(args.path)
            env = {"KEYGATE_SHARED_SECRET": run.SECRET, "KEYGATE_LOG": "info"}
        log = open(os.path.join(work, "gateway.log"), "w")
        gw = run.Server(label, valgrind + argv, port, 0, env=env, log=log)
        servers.append(gw)
        # Warm up: connection pools, lazily built statics, the allocator's caches.
        drive(port, header, 400, expect)
        subprocess.run(["callgrind_control", "-z", str(gw.pid)], check=True, capture_output=True)
        drive(port, header, args.requests, expect)
        subprocess.run(["callgrind_control", "-d", str(gw.pid)], check=True, capture_output=True)
        time.sleep(0.5)
        dumps = sorted((p for p in os.listdir(os.path.dirname(out))
                        if p.startswith(os.path.basename(out) + ".")),
                       key=lambda p: os.path.getmtime(os.path.join(os.path.dirname(out), p)))
        dump = os.path.join(os.path.dirname(out), dumps[-1]) if dumps else out
        per = total_instructions(dump) / args.requests
        print(f"{label}: {per:,.0f} instructions per request ({args.requests} requests; dump {dump})")
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

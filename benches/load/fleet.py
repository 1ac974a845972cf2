#!/usr/bin/env python3
"""Over-admission of a fleet: 1, 2 and 3 keygate instances sharing one consumer's rate limit
through one redis-server (limits.store), each driven at a steady rate.

    benches/load/fleet.py [--instances 1,2,3] [--limit 500] [--window 5] [--windows 3]
                          [--rate 200] [--conns 2] [--sync-ms 250]

One consumer with `rate_limit: {requests: LIMIT, window_seconds: WINDOW}` and one key. For
each fleet size N the script starts a fresh set of N instances (a key prefix of their own in
the store), waits for a window boundary on the store's clock (the redis-server runs on this
host, so that is this host's clock, which is the clock keygate numbers windows by), then
sends RATE requests per second to every instance (open loop: each of CONNS keep-alive
connections per instance sends at fixed times) for WINDOWS whole windows, and counts 200s
and 429s by the window each request was sent in. Window 1 starts fresh (nothing admitted
in the window before it: the fleet fills the limit as fast as it can, which is the case the
README's bound describes); later windows are steady state (the sliding window's weight of
the previous window keeps the admissions spread over the window).

Reported per window: admitted (200) across all instances, admitted / limit, refused (429),
anything else, admitted per instance, and the store's own count for the window (the
`rate:c:<consumer>:<window seconds>:<window number>` key, read two sync intervals after the
last request) as a cross-check. Summary per N: max and median of admitted / limit over the
windows, and the README's bound `limit + (N - 1) x r x sync_interval` (r = RATE, the rate
each instance is offered), against N x limit for N instances that do not share.

Keygate instances run one worker thread each, pinned to CPU 0; the origin (nginx, one
worker), the redis-server and this client are pinned to CPU 1. Loopback only; everything
started is stopped (by PID) on exit, SIGINT, SIGTERM or SIGHUP. The defaults take about
25 s per fleet size (3 windows of 5 s, plus up to one window waiting for a boundary).
"""
import argparse
import asyncio
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # importing run.py leaves no __pycache__ in the tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import (KEYGATE, NGINX, ROOT, SECRET, Server, exit_on_signals, free_port,  # noqa: E402
                 nginx_conf, redis_cmd, start_redis, store_section, wait_store_up)

CONSUMER = "acme"
KEY = "bench-fleet-" + hashlib.sha256(b"fleet").hexdigest()[:32]
RESPONSE_TIMEOUT = 5.0


async def read_response(reader):
    """Read one HTTP/1.1 response; (status, whether the server closes the connection)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length, chunked, close = 0, False, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and "close" in value:
            close = True
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


async def drive(ports, rate, conns, t_start, t_end):
    """Send `rate` requests per second to every port in `ports` over `conns` keep-alive
    connections each, at fixed times from `t_start` (wall clock) to `t_end`; a list of
    (instance index, send time, status), status 0 for a failed exchange."""
    results = []
    request = (f"GET /v1/items HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {KEY}\r\n"
               "\r\n").encode()

    async def connection(i, port, j):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        period = conns / rate
        at = t_start + j / rate
        try:
            while at < t_end:
                delay = at - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                try:
                    writer.write(request)
                    status, close = await asyncio.wait_for(read_response(reader), RESPONSE_TIMEOUT)
                except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError,
                        ValueError, IndexError):
                    status, close = 0, True
                results.append((i, sent, status))
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                at += period
        finally:
            writer.close()

    await asyncio.gather(*(connection(i, port, j) for i, port in enumerate(ports) for j in range(conns)))
    return results


def start_fleet(work, n, origin_port, redis_port, kpath, args, servers):
    """`n` keygate instances sharing limits through `redis_port` (a key prefix of their own
    per fleet); their ports, once every one has synced with the store."""
    prefix = f"fleet-{n}-{free_port()}:"
    fleet = []
    for i in range(n):
        kport, mport = free_port(), free_port()
        cfg = os.path.join(work, f"fleet-{n}-{i}.yaml")
        with open(cfg, "w") as f:
            f.write(f"""server: {{ listen: ["127.0.0.1:{kport}"], threads: 1, metrics_listen: "127.0.0.1:{mport}" }}
secret: {{ env: KEYGATE_SHARED_SECRET }}
auth: {{ keys_file: {kpath}, brute_force: {{ max_failures: 0 }} }}
upstreams: {{ origin: {{ address: "127.0.0.1:{origin_port}" }} }}
routes: [ {{ name: api, path_prefix: /, upstream: origin, auth: required }} ]
""")
            f.write(store_section(redis_port, args.sync_ms, prefix))
        with open(os.path.join(work, f"fleet-{n}-{i}.log"), "w") as log:
            kg = Server(f"keygate {i + 1}/{n}", [args.binary, "run", "-c", cfg], kport, 0,
                        env={"KEYGATE_SHARED_SECRET": SECRET, "KEYGATE_LOG": "info"}, log=log)
        servers.append(kg)
        fleet.append((kg, mport))
    for kg, mport in fleet:
        wait_store_up(mport, kg.name)
    return [kg.port for kg, _ in fleet], prefix


def measure_fleet(work, n, origin_port, redis_port, kpath, args, servers):
    started = len(servers)
    try:
        ports, prefix = start_fleet(work, n, origin_port, redis_port, kpath, args, servers)
        w = args.window
        # Start on a window boundary, at least half a second away (connections open first).
        first = math.floor((time.time() + 0.5) / w) + 1
        t_start, t_end = first * w, (first + args.windows) * w
        results = asyncio.run(drive(ports, args.rate, args.conns, t_start, t_end))
        # Two sync intervals: every instance has sent what it admitted to the store.
        time.sleep(2 * args.sync_ms / 1000 + 0.1)
        rows = []
        for k in range(args.windows):
            number = first + k
            got = [r for r in results if math.floor(r[1] / w) == number]
            admitted = sum(1 for r in got if r[2] == 200)
            stored = redis_cmd(redis_port, "GET", f"{prefix}rate:c:{CONSUMER}:{w}:{number}")
            rows.append({
                "window": k + 1, "admitted": admitted, "ratio": admitted / args.limit,
                "refused": sum(1 for r in got if r[2] == 429),
                "other": sum(1 for r in got if r[2] not in (200, 429)),
                "per_instance": [sum(1 for r in got if r[0] == i and r[2] == 200) for i in range(n)],
                "stored": int(stored) if stored is not None else 0,
            })
        return rows
    finally:
        for s in servers[started:]:
            s.stop()
        del servers[started:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", default="1,2,3", help="fleet sizes, comma-separated (default 1,2,3)")
    ap.add_argument("--limit", type=int, default=500, help="rate_limit.requests (default 500)")
    ap.add_argument("--window", type=int, default=5, help="rate_limit.window_seconds (default 5)")
    ap.add_argument("--windows", type=int, default=3, help="whole windows measured per fleet size (default 3)")
    ap.add_argument("--rate", type=float, default=200,
                    help="requests per second offered to each instance (default 200)")
    ap.add_argument("--conns", type=int, default=2, help="keep-alive connections per instance (default 2)")
    ap.add_argument("--sync-ms", type=int, default=250,
                    help="limits.store.redis.sync_interval_ms (default 250, keygate's default)")
    ap.add_argument("--binary", default=KEYGATE, help="keygate binary (default target/release/keygate)")
    args = ap.parse_args()
    sizes = [int(x) for x in args.instances.split(",")]
    if not os.path.exists(args.binary):
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "keygate"], cwd=ROOT, check=True)
    exit_on_signals()
    # The client shares CPU 1 with the origin and the store; the instances have CPU 0.
    os.sched_setaffinity(0, {1})
    work = tempfile.mkdtemp(prefix="keygate-fleet-")
    servers = []
    try:
        origin_port = free_port()
        servers.append(Server("origin", [NGINX, "-c", nginx_conf(work, "origin", f"""
  access_log off;
  server {{ listen 127.0.0.1:{origin_port}; keepalive_timeout 300s;
    location / {{ if ($http_x_shared_secret != "{SECRET}") {{ return 401; }}
                  default_type application/json; return 200 '{{"ok":true}}'; }} }}""")], origin_port, 1))
        redis = start_redis(work, 1)
        servers.append(redis)
        kpath = os.path.join(work, "keys.json")
        with open(kpath, "w") as f:
            json.dump({"consumers": [{
                "id": CONSUMER, "rate_limit": {"requests": args.limit, "window_seconds": args.window},
                "keys": [{"id": "k1", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}]}]}, f)
        print(f"limit {args.limit} per {args.window} s window; {args.rate:g} req/s offered to each instance"
              f" ({args.conns} connections); sync_interval_ms {args.sync_ms}; {args.windows} windows per fleet size",
              flush=True)
        summary = []
        for n in sizes:
            rows = measure_fleet(work, n, origin_port, redis.port, kpath, args, servers)
            print(f"N={n}:")
            for r in rows:
                fresh = " (fresh)" if r["window"] == 1 else ""
                print(f"  window {r['window']}{fresh}: admitted {r['admitted']} = {r['ratio']:.3f}x limit"
                      f" (store counted {r['stored']}), refused {r['refused']}, other {r['other']},"
                      f" per instance {'/'.join(map(str, r['per_instance']))}", flush=True)
                if r["other"]:
                    print(f"  warning: N={n} window {r['window']}: {r['other']} responses neither 200"
                          " nor 429 (or failed exchanges)", file=sys.stderr)
            bound = args.limit + (n - 1) * args.rate * args.sync_ms / 1000
            ratios = [r["ratio"] for r in rows]
            summary.append((n, max(ratios), statistics.median(ratios), ratios[0], bound))
        print(f"\n| instances | admitted / limit, max | median | fresh window | bound limit + (N-1)*r*sync"
              f" | bound / limit | unshared (N x limit) / limit |")
        print("|---|---|---|---|---|---|---|")
        for n, mx, med, fresh, bound in summary:
            print(f"| {n} | {mx:.3f} | {med:.3f} | {fresh:.3f} | {bound:.0f} | {bound / args.limit:.3f} | {n:.3f} |")
        print(f"(limit {args.limit} per {args.window} s, r = {args.rate:g} req/s offered per instance,"
              f" sync {args.sync_ms} ms, {args.windows} windows each)")
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Measure keygate with a million keys: cold start, SIGHUP reload time, and the key
# store's memory per key (RSS with N keys minus RSS with 0 keys, divided by N).
#
#   benches/load/keystore.sh [N]      (default N=1000000; loopback only, stops by itself)
#
# Needs a release build (cargo build --release) and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
BIN=target/release/keygate
[ -x "$BIN" ] || cargo build --release --quiet
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
export KEYGATE_SHARED_SECRET=bench-secret-0123456789abcdef

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
ms_now() { date +%s%3N; }

write_config() { # $1 = keys file name, $2 = port
  cat > "$WORK/keygate.yaml" <<YAML
server: { listen: ["127.0.0.1:$2"], metrics_listen: "", threads: 2 }
secret: { env: KEYGATE_SHARED_SECRET }
auth: { keys_file: $1 }
upstreams: { o: { address: "127.0.0.1:9" } }
routes: [ { name: api, upstream: o, auth: required } ]
YAML
}

start() { # $1 = keys file; prints "pid start_ms"
  local port; port=$(free_port)
  write_config "$1" "$port"
  local t0; t0=$(ms_now)
  "$BIN" run -c "$WORK/keygate.yaml" 2>"$WORK/log" &
  local pid=$!
  PIDS+=("$pid")
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.01; done
  echo "$pid $(( $(ms_now) - t0 ))"
}

echo '{"consumers": []}' > "$WORK/empty.json"
python3 benches/load/genkeys.py "$N" "$WORK/keys.json"
python3 benches/load/genkeys.py "$N" "$WORK/keys.yaml"
sleep 0.2

read -r pid0 start0 < <(start empty.json)
sleep 0.5; rss0=$(rss_kb "$pid0"); kill "$pid0"

for fmt in json yaml; do
  read -r pid startms < <(start "keys.$fmt")
  sleep 0.5; rss=$(rss_kb "$pid")
  # Reloads: time from SIGHUP to the "configuration reloaded" line, three times.
  reload=""
  for _ in 1 2 3; do
    before=$(grep -c "configuration reloaded" "$WORK/log" || true)
    t0=$(ms_now); kill -HUP "$pid"
    until [ "$(grep -c "configuration reloaded" "$WORK/log" || true)" -gt "$before" ]; do sleep 0.005; done
    reload="$reload${reload:+/}$(( $(ms_now) - t0 ))"
  done
  sleep 0.5; rss_after=$(rss_kb "$pid")
  per_key=$(( (rss - rss0) * 1024 / N ))
  printf '%-5s keys=%d cold_start_ms=%d reload_ms=%s rss_0_keys_kb=%d rss_kb=%d rss_after_reload_kb=%d bytes_per_key=%d\n' \
    "$fmt" "$N" "$startms" "$reload" "$rss0" "$rss" "$rss_after" "$per_key"
  kill "$pid"
done

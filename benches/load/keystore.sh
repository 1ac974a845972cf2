#!/usr/bin/env bash
# Measure keygate with a million keys: cold start, SIGHUP reload time, resident memory
# (VmRSS) once settled and its peak (VmHWM) while loading, and the key store's memory
# per key (RSS with N keys minus RSS with 0 keys, divided by N).
#
#   benches/load/keystore.sh [N]      (default N=1000000; loopback only, stops by itself)
#   FORMATS=json benches/load/keystore.sh   (only the JSON keys file; default "json yaml")
#
# The peak of each reload is measured on its own: before each SIGHUP the script resets
# the kernel's high-water mark (`echo 5 > /proc/PID/clear_refs`, Linux 4.0+), so VmHWM
# afterwards is the largest RSS reached while that reload ran (old and new state together).
# Needs a release build (cargo build --release) and python3; KEYGATE_BIN overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
BIN=${KEYGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/keygate}
[ -x "$BIN" ] || cargo build --release --quiet
WORK=$(mktemp -d)
# start() runs in a subshell (process substitution), so the pids it starts go to a file.
cleanup() { [ -f "$WORK/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$WORK/pids"; rm -rf "$WORK"; }
trap cleanup EXIT
export KEYGATE_SHARED_SECRET=bench-secret-0123456789abcdef

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
status_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; } # $1 = pid, $2 = VmRSS|VmHWM
mib() { echo $(( ($1 + 512) / 1024 )); }
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
  echo "$pid" >> "$WORK/pids"
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.01; done
  echo "$pid $(( $(ms_now) - t0 ))"
}

echo '{"consumers": []}' > "$WORK/empty.json"
python3 benches/load/genkeys.py "$N" "$WORK/keys.json"
python3 benches/load/genkeys.py "$N" "$WORK/keys.yaml"
ls -l "$WORK"/keys.* | awk '{printf "%s %.1f MB\n", $NF, $5 / 1e6}'
sleep 0.2

read -r pid0 start0 < <(start empty.json)
sleep 0.5; rss0=$(status_kb "$pid0" VmRSS); kill "$pid0"

for fmt in ${FORMATS:-json yaml}; do
  read -r pid startms < <(start "keys.$fmt")
  sleep 0.5
  rss=$(status_kb "$pid" VmRSS); peak=$(status_kb "$pid" VmHWM)
  # Reloads: time from SIGHUP to the "configuration reloaded" line, three times, each
  # with its own peak.
  reload="" reload_peak="" worst=0
  for _ in 1 2 3; do
    echo 5 > "/proc/$pid/clear_refs"
    before=$(grep -c "configuration reloaded" "$WORK/log" || true)
    t0=$(ms_now); kill -HUP "$pid"
    until [ "$(grep -c "configuration reloaded" "$WORK/log" || true)" -gt "$before" ]; do sleep 0.005; done
    reload="$reload${reload:+/}$(( $(ms_now) - t0 ))"
    sleep 0.5
    p=$(status_kb "$pid" VmHWM)
    reload_peak="$reload_peak${reload_peak:+/}$(mib "$p")"
    [ "$p" -gt "$worst" ] && worst=$p
  done
  rss_after=$(status_kb "$pid" VmRSS)
  per_key=$(( (rss - rss0) * 1024 / N ))
  printf '%-5s keys=%d cold_start_ms=%d reload_ms=%s rss_0_keys_mib=%d rss_mib=%d cold_start_peak_mib=%d reload_peak_mib=%s rss_after_reloads_mib=%d bytes_per_key=%d worst_peak/rss=%d.%02d\n' \
    "$fmt" "$N" "$startms" "$reload" "$(mib "$rss0")" "$(mib "$rss")" "$(mib "$peak")" "$reload_peak" \
    "$(mib "$rss_after")" "$per_key" $(( worst / rss )) $(( worst * 100 / rss % 100 ))
  kill "$pid"
done

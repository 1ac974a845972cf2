#!/usr/bin/env bash
# Load benchmark: direct-to-origin, nginx as an API-key gateway, a bare Pingora
# pass-through and keygate, side by side, interleaved over several rounds.
#
#   benches/load/run.sh [--rounds N] [--seconds S] [--keys-large N] [--skip-peers] [--pingap BINARY]
#                       [--baseline BINARY] [--limits] [--store [--sync-ms MS]] [--two-servers]
#                       [--reload-keys N]
#
# KEYGATE_BIN and PASSTHROUGH_BIN, when set, name the keygate and pass-through binaries to
# measure instead of this checkout's release builds.
#
# --pingap measures a pingap 0.13.1 binary (built from its source, not by this script) with
# its key_auth plugin beside nginx, at both key-set sizes (see README "Performance").
#
# --store also starts a redis-server (loopback, ephemeral port, no persistence, pinned to
# CPU 1) and measures keygate with its limits shared through it (see README "Performance").
#
# Installs nginx and wrk from Debian if missing, builds keygate and the pass-through in
# release mode, pins each gateway to CPU 0 and the origin and load generator to CPU 1,
# targets loopback only and stops by itself (about 3 minutes with the defaults).
set -euo pipefail
cd "$(dirname "$0")/../.."
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release --quiet --bin keygate --example passthrough
exec python3 benches/load/run.py "$@"

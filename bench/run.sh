#!/usr/bin/env bash
# authgate's benchmarks, all in one run on loopback: builds the dist-profile (release + LTO)
# binaries, starts the test servers (PostgreSQL, Keycloak), installs the
# load generators and oauth2-proxy once (cached), then runs bench/suite.py,
# which prints one table of figures, ratios and targets and writes
# results.json, table.md and chart.svg into .state/bench/.
#
# Usage: bench/run.sh [--publish] [--strict]
#        bench/run.sh --slow-clients
#   --publish  also copy the table and chart into BENCHMARKS.md and bench/latest.*
#   --strict   exit 1 when a target is missed (scenario failures always do)
#   --slow-clients  only the slow-client storm instead (bench/slow_clients.py:
#              builds authgate and the upstream, needs no test server and no
#              load generator): SLOW_CONNECTIONS=10000 SLOW_BYTE_EVERY=10
#              SLOW_STORM=60 SLOW_RATE=20 WORKERS
# Settings (environment): DURATION=10 SIGNIN_DURATION=15 WARMUP=2 CONNECTIONS=32
#   RATE=2000 RATE_ROUNDS=3 ISO_RATE=2000 SLOW_MS=5 IDLE_CONNECTIONS=10000
#   WORKERS=0 (authgate's worker threads and nginx's worker processes; 0: one per core)
#   BENCH_KEYCLOAK=1 (0: native only)
#   ONLY=throughput,api,signin,isolation,rate,memory,redis,tls,fwdauth,keycloak (default: all)
#   AUTHGATE_CACHE_DIR (tools cache), AUTHGATE_STATE_DIR (outputs, server state)
#   AUTHGATE_STOP_SERVICES=1 stops the test servers at the end.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
OUT=$STATE/bench
CACHE=${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}
TOOLS=$CACHE/bench
OHA_VERSION=1.16.0

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

publish=0 slow_clients=0 suite_args=()
for arg in "$@"; do
  case $arg in
    --publish) publish=1 ;;
    --strict) suite_args+=(--strict) ;;
    --slow-clients) slow_clients=1 ;;
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done
for v in DURATION SIGNIN_DURATION WARMUP CONNECTIONS RATE RATE_ROUNDS ISO_RATE SLOW_MS \
  IDLE_CONNECTIONS WORKERS SLOW_CONNECTIONS SLOW_BYTE_EVERY SLOW_STORM SLOW_RATE; do
  [[ ${!v:-1} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  if [[ ${AUTHGATE_STOP_SERVICES:-0} == 1 ]]; then
    scripts/services.sh stop || true
    keycloak/stop.sh || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the slow-client storm

if ((slow_clients)); then
  mkdir -p "$OUT"
  log "cargo build --profile dist --bin authgate --example upstream"
  cargo build --locked --profile dist --bin authgate --example upstream
  # The storm and authgate each hold a descriptor per slow connection.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  exec python3 bench/slow_clients.py --out "$OUT" \
    --authgate "$REPO/target/dist/authgate" \
    --upstream-bin "$REPO/target/dist/examples/upstream" \
    --connections "${SLOW_CONNECTIONS:-10000}" --byte-every "${SLOW_BYTE_EVERY:-10}" \
    --storm "${SLOW_STORM:-60}" --rate "${SLOW_RATE:-20}" --workers "${WORKERS:-0}"
fi

# ---------------------------------------------------------------- tools

rm -rf "$OUT"
mkdir -p "$OUT" "$TOOLS"
for tool in curl python3 psql cargo; do
  command -v "$tool" >/dev/null || die "$tool missing (run scripts/install-prereqs.sh)"
done
if ! command -v wrk >/dev/null; then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then die "wrk missing: apt-get install wrk"; fi
  log "installing wrk (apt-get)"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; } \
    >"$OUT/apt-wrk.log" 2>&1 || { tail -n 20 "$OUT/apt-wrk.log" >&2; die "apt-get install wrk failed"; }
fi
# nginx is the reference proxy of some rows; without it they are left out.
if ! command -v nginx >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  log "installing nginx, the reference proxy (apt-get)"
  # Debian starts an installed nginx on port 80; a policy forbids that.
  policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx-light; } \
    >"$OUT/apt-nginx.log" 2>&1 || log "apt-get install nginx-light failed: reference rows left out"
  if ((made_policy)); then rm -f "$policy"; fi
fi
NGINX=$(command -v nginx || true)
# perf traces authgate's own calls for one more fixed-rate round (where its
# added latency goes); without it that line is left out.
if ! command -v perf >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  log "installing perf (apt-get)"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf; } \
    >"$OUT/apt-perf.log" 2>&1 || log "apt-get install linux-perf failed: the breakdown is left out"
fi
PERF=$(command -v perf || true)
OHA=$TOOLS/oha/bin/oha
if [[ ! -x $OHA ]] || [[ $("$OHA" --version 2>/dev/null) != *"$OHA_VERSION"* ]]; then
  log "installing oha $OHA_VERSION (cargo install, once; a few minutes)"
  cargo install --locked --quiet --root "$TOOLS/oha" --version "$OHA_VERSION" oha \
    >"$OUT/oha-install.log" 2>&1 || { tail -n 20 "$OUT/oha-install.log" >&2; die "cargo install oha failed"; }
fi
# Idle connections for the memory scenario: the client needs a descriptor each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) > ${IDLE_CONNECTIONS:-10000} + 100)) ||
  die "open-file limit $(ulimit -n) is too low for IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}"

log "cargo build --profile dist --bin authgate --example upstream --example hash_time --example tcp_relay"
cargo build --locked --profile dist --bin authgate --example upstream --example hash_time --example tcp_relay

# ---------------------------------------------------------------- servers

log "starting the test servers (scripts/services.sh start)"
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"
keycloak_url=''
if [[ ${BENCH_KEYCLOAK:-1} == 1 ]]; then
  bench/oauth2_proxy.sh install >/dev/null
  log "starting Keycloak (keycloak/start.sh)"
  keycloak_url=$(keycloak/start.sh | tail -n 1)
fi

# ---------------------------------------------------------------- the suite

args=(
  --out "$OUT"
  --authgate "$REPO/target/dist/authgate"
  --upstream-bin "$REPO/target/dist/examples/upstream"
  --hash-time "$REPO/target/dist/examples/hash_time"
  --relay "$REPO/target/dist/examples/tcp_relay"
  --only "${ONLY:-}"
  --oha "$OHA"
  --keycloak "$keycloak_url"
  --nginx "$NGINX"
  --perf "$PERF"
  --database-url "$AUTHGATE_TEST_DATABASE_URL"
  --redis-url "${AUTHGATE_TEST_REDIS_URL:-}"
  --duration "${DURATION:-10}"
  --signin-duration "${SIGNIN_DURATION:-15}"
  --warmup "${WARMUP:-2}"
  --connections "${CONNECTIONS:-32}"
  --rate "${RATE:-2000}"
  --rate-rounds "${RATE_ROUNDS:-3}"
  --workers "${WORKERS:-0}"
  --iso-rate "${ISO_RATE:-2000}"
  --slow-ms "${SLOW_MS:-5}"
  --idle-connections "${IDLE_CONNECTIONS:-10000}"
  --command "bench/run.sh $*"
)
rc=0
python3 bench/suite.py "${args[@]}" "${suite_args[@]}" || rc=$?

if ((publish)) && [[ -f $OUT/results.json ]]; then
  cp "$OUT/results.json" bench/latest.json
  cp "$OUT/chart.svg" bench/latest.svg
  python3 bench/publish.py "$OUT/table.md" "$OUT/results.json" BENCHMARKS.md
  log "published: BENCHMARKS.md, bench/latest.json, bench/latest.svg"
fi
exit "$rc"

#!/usr/bin/env bash
# Load benchmark on loopback: wrk against the test upstream directly, through
# authgate (a public and an authenticated route), and authgate's own
# /health; prints one table and exits non-zero when any scenario had socket
# errors or error statuses. Everything it starts (upstream, authgate, wrk)
# is stopped on exit; the test servers stay up like after scripts/test.sh
# (AUTHGATE_STOP_SERVICES=1 stops them too).
# Usage: bench/run.sh   (DURATION=10 CONNECTIONS=32 THREADS=2 WARMUP=2)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
OUT=$STATE/bench

HOST=127.0.0.1
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
DB_NAME=authgate_bench
SECRET_KEY_BENCH=bench-secret-key-0123456789abcde
EMAIL=bench@example.com
USERNAME=bench
PASSWORD=benchmark-pass

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

log_tail() {
  if [[ -f $1 ]]; then
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 30 "$1" >&2 || true
    printf -- '---\n' >&2
  fi
}

for v in DURATION CONNECTIONS THREADS WARMUP; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
((DURATION > 0)) || die "DURATION must be at least 1"
((THREADS > 0 && CONNECTIONS >= THREADS)) || die "need THREADS >= 1 and CONNECTIONS >= THREADS"

# ---------------------------------------------------------------- cleanup

PIDS=()    # long-lived processes started here (upstream, authgate)
WRK_PID='' # the wrk run in progress, if any

# True while pid $1 runs: not a zombie, and not gone (our children are
# reaped by bash itself at any moment, so a vanished /proc entry means gone).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '/^State:/ { print $2; exit }' "/proc/$1/status" 2>/dev/null) || return 1
  [[ -n $state && $state != [ZX] ]]
}

# TERM, up to 10 s (authgate drains gracefully), then KILL; reaps the child.
stop_pid() {
  local pid=$1 i
  alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) did not stop on TERM, killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  if [[ -n $WRK_PID ]]; then stop_pid "$WRK_PID"; fi
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ ${AUTHGATE_STOP_SERVICES:-0} == 1 ]]; then
    scripts/services.sh stop || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- prerequisites

for tool in curl python3 psql; do
  command -v "$tool" >/dev/null || die "$tool missing (run scripts/install-prereqs.sh)"
done
if ! command -v wrk >/dev/null; then
  command -v apt-get >/dev/null || die "wrk missing and no apt-get: install wrk"
  [[ $(id -u) -eq 0 ]] || die "wrk missing: run 'apt-get install wrk' as root"
  log "installing wrk (apt-get)"
  mkdir -p "$OUT"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk; } \
    >"$OUT/apt-wrk.log" 2>&1; then
    log_tail "$OUT/apt-wrk.log"
    die "apt-get install wrk failed"
  fi
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- build and services

log "cargo build --release --bin authgate --example upstream"
cargo build --locked --release --bin authgate --example upstream
AUTHGATE_BIN=$REPO/target/release/authgate
UPSTREAM_BIN=$REPO/target/release/examples/upstream

log "starting the test servers (scripts/services.sh start)"
scripts/services.sh start
eval "$(scripts/services.sh env)"

rm -rf "$OUT"
mkdir -p "$OUT"

admin_url=$AUTHGATE_TEST_DATABASE_URL
db_url=${admin_url%/*}/$DB_NAME
log "fresh database $DB_NAME"
psql "$admin_url" -q -v ON_ERROR_STOP=1 \
  -c "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" \
  -c "CREATE DATABASE $DB_NAME" >"$OUT/psql.log" 2>&1 ||
  { log_tail "$OUT/psql.log"; die "could not create database $DB_NAME"; }

# ---------------------------------------------------------------- upstream

# The child opens its log itself: create it first, so that it can be read at once.
: >"$OUT/upstream.log"
"$UPSTREAM_BIN" --port 0 --name bench >"$OUT/upstream.log" 2>&1 &
PIDS+=("$!")
upstream_pid=$!
upstream_port=''
for ((i = 0; i < 100; i++)); do
  upstream_port=$(sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$OUT/upstream.log")
  [[ -n $upstream_port ]] && break
  alive "$upstream_pid" || { log_tail "$OUT/upstream.log"; die "upstream exited during startup"; }
  sleep 0.1
done
[[ -n $upstream_port ]] || { log_tail "$OUT/upstream.log"; die "upstream did not start"; }
UPSTREAM=http://$HOST:$upstream_port
log "upstream on $UPSTREAM"

# ---------------------------------------------------------------- authgate

routes=$OUT/routes.toml
cat >"$routes" <<EOF
[[routes]]
prefix = "/pub"
upstreams = ["$HOST:$upstream_port"]
policy = "public"

[[routes]]
prefix = "/api"
upstreams = ["$HOST:$upstream_port"]
policy = "authenticated"
EOF

app_port=$(free_port)
GATEWAY=http://$HOST:$app_port
# Run from $OUT so that no .env of the work tree is read; other authgate
# settings (APP_WORKERS, ...) pass through from the environment.
(
  cd "$OUT"
  exec env -u SMTP_HOST \
    AUTH_BACKEND=native \
    SECRET_KEY="$SECRET_KEY_BENCH" \
    DATABASE_URL="$db_url" \
    ROUTES_FILE="$routes" \
    APP_HOST="$HOST" \
    APP_PORT="$app_port" \
    APP_URL="$GATEWAY" \
    RATE_LIMIT_SIGNUP_PER_IP=off \
    RUST_LOG=warn \
    "$AUTHGATE_BIN" serve
) >"$OUT/authgate.log" 2>&1 &
PIDS+=("$!")
authgate_pid=$!
deadline=$((SECONDS + 60))
until curl -fsS --max-time 2 -o /dev/null "$GATEWAY/health" 2>/dev/null; do
  alive "$authgate_pid" || { log_tail "$OUT/authgate.log"; die "authgate exited during startup"; }
  ((SECONDS < deadline)) || { log_tail "$OUT/authgate.log"; die "authgate not ready after 60s"; }
  sleep 0.2
done
log "authgate on $GATEWAY (routes: $routes)"

# ---------------------------------------------------------------- token

signup=$(curl -sS --max-time 30 -X POST "$GATEWAY/users/signup" \
  -H 'Content-Type: application/json' \
  -d "{\"email\":\"$EMAIL\",\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}") ||
  die "POST /users/signup failed"
TOKEN=$(printf '%s' "$signup" | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin)["access_token"])
except Exception:
    sys.exit(1)
') || die "no access_token in the signup answer: $signup"
me_status=$(curl -s --max-time 10 -o "$OUT/me.json" -w '%{http_code}' \
  -H "Authorization: Bearer $TOKEN" "$GATEWAY/users/me") || true
[[ $me_status == 200 ]] || die "GET /users/me with the new token answered $me_status: $(cat "$OUT/me.json" 2>/dev/null)"
log "access token for $EMAIL works (GET /users/me: 200)"

# ---------------------------------------------------------------- load

# Latency as wrk prints it (us, ms, s, m) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v !~ /^[0-9.]+(us|ms|s|m)$/) { print "n/a"; exit }
    n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /m$/) n *= 60000; else n *= 1000
    printf "%.3f", n
  }'
}

# a / b with 2 decimals, "-" when either is missing or b is 0.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) { print "-"; exit }
    printf "%.2f", a / b
  }'
}

# run_wrk NAME URL [wrk args...]: warm-up (discarded), then the measured run
# into $OUT/wrk-NAME.txt. Runs in the background so that the traps can stop it.
run_wrk() {
  local name=$1 url=$2 rc=0
  shift 2
  local args=(--latency -t "$THREADS" -c "$CONNECTIONS" --timeout 5s "$@" "$url")
  if ((WARMUP > 0)); then
    wrk -d "${WARMUP}s" "${args[@]}" >"$OUT/wrk-$name-warmup.txt" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || true
    WRK_PID=''
  fi
  log "wrk $name: ${DURATION}s, $CONNECTIONS connections, $THREADS threads: $url"
  wrk -d "${DURATION}s" "${args[@]}" >"$OUT/wrk-$name.txt" 2>&1 &
  WRK_PID=$!
  wait "$WRK_PID" || rc=$?
  WRK_PID=''
  return "$rc"
}

# One request's status code (the gate for 3xx, which wrk does not count).
probe() {
  curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@" || true
}

names=(a-upstream b-gw-public c-gw-auth d-gw-health)
urls=("$UPSTREAM/bench" "$GATEWAY/pub/bench" "$GATEWAY/api/bench" "$GATEWAY/health")
declare -A rps p50 p99 non2xx errors status requests wrk_ok
auth=(-H "Authorization: Bearer $TOKEN")

for i in "${!names[@]}"; do
  name=${names[$i]} url=${urls[$i]} extra=()
  [[ $name == c-gw-auth ]] && extra=("${auth[@]}")
  status[$name]=$(probe "${extra[@]}" "$url")
  wrk_ok[$name]=1
  run_wrk "$name" "$url" "${extra[@]}" || wrk_ok[$name]=0
  f=$OUT/wrk-$name.txt
  rps[$name]=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  p50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
  p99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
  requests[$name]=$(awk '/ requests in / { print $1 }' "$f")
  # wrk's "Non-2xx or 3xx responses" counts statuses >= 400.
  non2xx[$name]=$(awk '/Non-2xx or 3xx responses:/ { n = $NF } END { print n + 0 }' "$f")
  errors[$name]=$(awk '/Socket errors:/ { gsub(",", ""); n = $4 + $6 + $8 + $10 } END { print n + 0 }' "$f")
done

# ---------------------------------------------------------------- report

base=${names[0]}
failed=0
printf '\n%s connections, %s threads, %ss per scenario (raw wrk output: %s)\n\n' \
  "$CONNECTIONS" "$THREADS" "$DURATION" "$OUT"
fmt='%-9s %-24s %6s %11s %9s %9s %9s %7s %8s %8s %8s  %s\n'
# shellcheck disable=SC2059
printf "$fmt" scenario request status req/s p50_ms p99_ms non-2xx errors 'rps/a' 'p50/a' 'p99/a' verdict
for i in "${!names[@]}"; do
  name=${names[$i]}
  verdict=ok
  if [[ ${wrk_ok[$name]} != 1 || -z ${rps[$name]} || ${requests[$name]:-0} == 0 ]]; then
    verdict="FAIL (wrk failed, see $OUT/wrk-$name.txt)"
  elif [[ ${status[$name]} != 2?? ]]; then
    verdict="FAIL (status ${status[$name]})"
  elif [[ ${non2xx[$name]} != 0 || ${errors[$name]} != 0 ]]; then
    verdict=FAIL
  fi
  [[ $verdict == ok ]] || failed=1
  req=${urls[$i]#http://"$HOST":*/}
  [[ $name == c-gw-auth ]] && req="$req +bearer"
  # shellcheck disable=SC2059
  printf "$fmt" "${name%%-*}" "GET /$req" "${status[$name]}" "${rps[$name]:-n/a}" \
    "${p50[$name]}" "${p99[$name]}" "${non2xx[$name]}" "${errors[$name]}" \
    "$(ratio "${rps[$name]}" "${rps[$base]}")" \
    "$(ratio "${p50[$name]}" "${p50[$base]}")" \
    "$(ratio "${p99[$name]}" "${p99[$base]}")" "$verdict"
done
printf '\n(a) upstream directly, (b) authgate public route, (c) authgate authenticated route, (d) authgate /health\n'

if ((failed)); then
  log "some scenarios failed (non-2xx answers or socket errors)"
  exit 1
fi
log "all scenarios ok"

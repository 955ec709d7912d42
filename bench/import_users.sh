#!/usr/bin/env bash
# Import benchmark: a legacy database of N users (default 100 000) moved into
# Keycloak by `authgate import-users`, beside Keycloak's partial import alone
# (the same users posted straight to partialImport by the script). Reports
# users per second and the peak resident size of authgate and of Keycloak;
# the goal is 100 000 users in under 15 minutes.
#
# It builds authgate (release), uses the test PostgreSQL (scripts/services.sh;
# database authgate_bench_import) and starts a private Keycloak of its own
# (a temporary state folder, port IMPORT_BENCH_KEYCLOAK_PORT), restarted on an
# empty realm before each phase, stopped at the end. Loopback only; each
# phase is bounded by PHASE_TIMEOUT. See bench/README.md.
#
# Usage: bench/import_users.sh
# Settings (environment):
#   USERS=100000             legacy users
#   BATCH_SIZE / CONCURRENCY authgate's batch size and batches in flight (default: authgate's own)
#   SWEEP=100x2,250x2        instead: each batch size × concurrency in turn
#   RAW=1                    0: leave out Keycloak's partial import alone
#   WARMUP=0                 other users imported before each phase, not measured (warm JIT)
#   PHASE_TIMEOUT=1800       seconds per phase
#   IMPORT_BENCH_KEYCLOAK_PORT=18180
#   JAVA_OPTS_KC_HEAP        the private Keycloak's heap (default: Keycloak's own)
#   AUTHGATE_STATE_DIR       outputs in $AUTHGATE_STATE_DIR/bench/import_users (default .state)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
OUT=$STATE/bench/import_users
PORT=${IMPORT_BENCH_KEYCLOAK_PORT:-18180}

log() { printf '[import bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[import bench] ERROR: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
  exit 0
fi
for v in USERS BATCH_SIZE CONCURRENCY RAW WARMUP PHASE_TIMEOUT IMPORT_BENCH_KEYCLOAK_PORT; do
  [[ ${!v:-1} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
[[ ${SWEEP:-} =~ ^([0-9]+x[0-9]+(,[0-9]+x[0-9]+)*)?$ ]] || die "SWEEP must read like 100x2,250x2 (got '$SWEEP')"
for tool in python3 psql cargo curl; do
  command -v "$tool" >/dev/null || die "$tool missing (run scripts/install-prereqs.sh)"
done

rm -rf "$OUT"
mkdir -p "$OUT"
KC_STATE=$(mktemp -d "${TMPDIR:-/tmp}/authgate-import-bench.XXXXXX")
keycloak() { AUTHGATE_STATE_DIR=$KC_STATE KEYCLOAK_PORT=$PORT "keycloak/$1.sh"; }
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  keycloak stop >/dev/null 2>&1 || true
  rm -rf "$KC_STATE"
  exit "$rc"
}
trap cleanup EXIT

log "cargo build --release --bin authgate"
cargo build --locked --release --bin authgate

log "starting the test servers (scripts/services.sh start)"
scripts/services.sh start >&2
eval "$(scripts/services.sh env)"

log "starting a private Keycloak on port $PORT (state in $KC_STATE)"
keycloak_url=$(keycloak start | tail -n 1)
kc_env="AUTHGATE_STATE_DIR=$KC_STATE KEYCLOAK_PORT=$PORT"

python3 bench/import_users.py \
  --authgate "$REPO/target/release/authgate" \
  --database-url "$AUTHGATE_TEST_DATABASE_URL" \
  --keycloak "$keycloak_url" \
  --keycloak-pid-file "$KC_STATE/keycloak/keycloak.pid" \
  --restart-keycloak "$kc_env keycloak/stop.sh && $kc_env keycloak/start.sh" \
  --users "${USERS:-100000}" \
  --batch-size "${BATCH_SIZE:-0}" \
  --concurrency "${CONCURRENCY:-0}" \
  --sweep "${SWEEP:-}" \
  --raw "${RAW:-1}" \
  --warmup "${WARMUP:-0}" \
  --timeout "${PHASE_TIMEOUT:-1800}" \
  --out "$OUT" | tee "$OUT/table.md"

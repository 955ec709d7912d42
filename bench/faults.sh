#!/usr/bin/env bash
# authgate's fault matrix (bench/faults.py): during the mix of bench/mix.py,
# round robin over two authgate replicas, each neighbour is stopped and
# started again, one at a time: PostgreSQL, Redis, the SMTP server (maildev),
# one of two upstreams, one replica (SIGTERM, started again), and in keycloak
# mode Keycloak. Every server is its own (ports from FAULTS_BASE_PORT, state in
# $AUTHGATE_STATE_DIR/faults, its own Keycloak): the shared test servers are
# never touched. Loopback only, bounded in time and rate.
#
# Usage: bench/faults.sh [--check] [--publish]
#   --check    exit 1 when a goal is missed (an answer outside the contract, a
#              hung request, good again 5 s or more after the return, a user
#              lost or half-written)
#   --publish  write the fault matrix of RELIABILITY.md
# Settings (environment): FAULTS_RATE=40 (requests/s) FAULTS_DOWN=10 (s each
#   neighbour stays away) FAULTS_SETTLE=20 (s watched after its return)
#   FAULTS_MODES=native,keycloak FAULTS_ONLY=postgres,redis,smtp,upstream,replica,keycloak
#   FAULTS_TIMEOUT=10 (client timeout, s) FAULTS_BASE_PORT=47500
#   SOAK_PROFILE=release (or dist: the benchmark's build; debug: no build) SOAK_PBKDF2_ROUNDS (default: authgate's)
#   AUTHGATE_BIN, UPSTREAM_BIN (default: the built target/<profile> ones)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}/faults
OUT=$STATE/out
PROFILE=${SOAK_PROFILE:-release}

log() { printf '[faults %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[faults] ERROR: %s\n' "$*" >&2; exit 1; }

args=()
for arg in "$@"; do
  case $arg in
    --check | --publish) args+=("$arg") ;;
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done
for v in FAULTS_RATE FAULTS_DOWN FAULTS_SETTLE FAULTS_TIMEOUT FAULTS_BASE_PORT SOAK_PBKDF2_ROUNDS; do
  [[ ${!v:-1} =~ ^[0-9]+$ ]] || die "$v must be a whole number (got '${!v}')"
done
for tool in python3 psql ss redis-server; do
  command -v "$tool" >/dev/null || die "$tool missing (run scripts/install-prereqs.sh)"
done

if [[ $PROFILE == release || $PROFILE == dist ]]; then
  log "cargo build --profile $PROFILE --bin authgate --example upstream"
  cargo build --locked --profile "$PROFILE" --bin authgate --example upstream
fi
BIN=$REPO/target/$PROFILE
mkdir -p "$OUT"

# The command as run, with the settings given in the environment.
settings=$(env | grep -E '^(FAULTS_|SOAK_)[A-Z0-9_]*=' | grep -v -e '_BIN=' -e '^FAULTS_BINARY_NOTE=' | sort | tr '\n' ' ' || true)
AUTHGATE_BIN=${AUTHGATE_BIN:-$BIN/authgate}
UPSTREAM_BIN=${UPSTREAM_BIN:-$BIN/examples/upstream}

exec python3 bench/faults.py --out "$OUT" --repo "$REPO" --state "$STATE" \
  --authgate "$AUTHGATE_BIN" --upstream-bin "$UPSTREAM_BIN" \
  --modes "${FAULTS_MODES:-native,keycloak}" --only "${FAULTS_ONLY:-}" \
  --rate "${FAULTS_RATE:-40}" --down "${FAULTS_DOWN:-10}" --settle "${FAULTS_SETTLE:-20}" \
  --timeout "${FAULTS_TIMEOUT:-10}" --base-port "${FAULTS_BASE_PORT:-47500}" \
  --pbkdf2-rounds "${SOAK_PBKDF2_ROUNDS:-0}" \
  --binary-note "${FAULTS_BINARY_NOTE:-$PROFILE build of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' with changes')}" \
  --command "${settings}bench/faults.sh $*" "${args[@]}"

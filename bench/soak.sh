#!/usr/bin/env bash
# authgate's soak (bench/soak.py): the realistic mix of bench/mix.py at a fixed
# rate for SOAK_SECONDS, against one authgate on servers of its own (its own
# PostgreSQL, Redis, maildev and two upstreams on ports from SOAK_BASE_PORT,
# state in $AUTHGATE_STATE_DIR/soak; keycloak mode starts its own Keycloak
# unless SOAK_KEYCLOAK_URL names one). Loopback only, bounded in time and rate.
#
# Usage: bench/soak.sh [--check] [--publish]
#   --check    exit 1 when a goal is missed (no 5xx, no hung request, p99 flat,
#              RSS and descriptors flat, nothing left behind)
#   --publish  write the soak section of RELIABILITY.md and bench/soak.svg
# Settings (environment): SOAK_SECONDS=600 (per mode) SOAK_RATE=40 (requests/s)
#   SOAK_MODES=native,keycloak SOAK_WARMUP=60 SOAK_TIMEOUT=10 (client timeout, s)
#   SOAK_BASE_PORT=47000 SOAK_PROFILE=release (or dist: the benchmark's build;
#   debug: no build, target/debug)
#   SOAK_PBKDF2_ROUNDS (default: authgate's)
#   AUTHGATE_BIN, UPSTREAM_BIN (default: the built target/<profile> ones) SOAK_KEYCLOAK_URL (default: its own)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
STATE=$STATE/${SOAK_STATE_NAME:-soak}
OUT=$STATE/out
PROFILE=${SOAK_PROFILE:-release}

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[soak] ERROR: %s\n' "$*" >&2; exit 1; }

args=()
for arg in "$@"; do
  case $arg in
    --check | --publish) args+=("$arg") ;;
    -h | --help) sed -n '2,/^[^#]/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $arg (see --help)" ;;
  esac
done
for v in SOAK_SECONDS SOAK_RATE SOAK_WARMUP SOAK_TIMEOUT SOAK_BASE_PORT SOAK_PBKDF2_ROUNDS; do
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
settings=$(env | grep -E '^(SOAK_)[A-Z0-9_]*=' | grep -v '_BIN=' | sort | tr '\n' ' ' || true)
AUTHGATE_BIN=${AUTHGATE_BIN:-$BIN/authgate}
UPSTREAM_BIN=${UPSTREAM_BIN:-$BIN/examples/upstream}

exec python3 bench/soak.py --out "$OUT" --repo "$REPO" --state "$STATE" \
  --authgate "$AUTHGATE_BIN" --upstream-bin "$UPSTREAM_BIN" \
  --modes "${SOAK_MODES:-native,keycloak}" --seconds "${SOAK_SECONDS:-600}" \
  --rate "${SOAK_RATE:-40}" --warmup "${SOAK_WARMUP:-60}" --timeout "${SOAK_TIMEOUT:-10}" \
  --base-port "${SOAK_BASE_PORT:-47000}" --pbkdf2-rounds "${SOAK_PBKDF2_ROUNDS:-0}" \
  --keycloak-url "${SOAK_KEYCLOAK_URL:-}" --profile "$PROFILE" \
  --command "${settings}bench/soak.sh $*" "${args[@]}"

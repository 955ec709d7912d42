#!/usr/bin/env bash
# Runs the test suite against real servers: starts them (idempotent):
# PostgreSQL, the mail servers and Keycloak; exports their connection
# settings, then `cargo test --locked --all-targets "$@"`.
# Services keep running afterwards unless AUTHGATE_STOP_SERVICES=1.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

phase() { printf '\n=== [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*"; }

if [[ ${AUTHGATE_STOP_SERVICES:-0} == 1 ]]; then
  trap 'phase "stopping services"; keycloak/stop.sh || true; scripts/services.sh stop || true' EXIT
fi

phase "starting services"
scripts/services.sh start
eval "$(scripts/services.sh env)"
scripts/services.sh status

phase "starting Keycloak"
AUTHGATE_TEST_KEYCLOAK_URL=$(keycloak/start.sh | tail -n 1)
export AUTHGATE_TEST_KEYCLOAK_URL
echo "Keycloak at $AUTHGATE_TEST_KEYCLOAK_URL"

phase "cargo test --locked --all-targets $*"
start=$SECONDS
cargo test --locked --all-targets "$@"
phase "cargo test finished ($((SECONDS - start))s)"

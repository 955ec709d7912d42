#!/usr/bin/env bash
# Runs the test suite against real servers: installs what is missing
# (scripts/install-prereqs.sh: quick when nothing is), starts the servers
# (idempotent): PostgreSQL, Redis, the mail servers, the test upstreams and
# Keycloak; exports their connection settings, then
# `cargo test --locked --all-targets "$@"`.
# Keycloak starts in the background while the tests compile.
# Services keep running afterwards unless AUTHGATE_STOP_SERVICES=1.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

phase() { printf '\n=== [%s] %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*"; }

if [[ ${AUTHGATE_STOP_SERVICES:-0} == 1 ]]; then
  trap 'phase "stopping services"; keycloak/stop.sh || true; scripts/services.sh stop || true' EXIT
fi

phase "prerequisites"
scripts/install-prereqs.sh

phase "starting services"
scripts/services.sh start
eval "$(scripts/services.sh env)"
scripts/services.sh status

phase "starting Keycloak (in the background)"
mkdir -p .state
keycloak_out=.state/keycloak-start.out
keycloak/start.sh >"$keycloak_out" &
keycloak_pid=$!

phase "building the tests"
start=$SECONDS
cargo test --locked --all-targets --no-run
phase "tests built ($((SECONDS - start))s)"

phase "waiting for Keycloak"
if ! wait "$keycloak_pid"; then
  echo "Keycloak did not start (see .state/keycloak/keycloak.log)" >&2
  exit 1
fi
AUTHGATE_TEST_KEYCLOAK_URL=$(tail -n 1 "$keycloak_out")
export AUTHGATE_TEST_KEYCLOAK_URL
echo "Keycloak at $AUTHGATE_TEST_KEYCLOAK_URL"

phase "cargo test --locked --all-targets $*"
start=$SECONDS
cargo test --locked --all-targets "$@"
phase "cargo test finished ($((SECONDS - start))s)"

#!/usr/bin/env bash
# Checks the live API against its own OpenAPI document: starts authgate
# (native backend) on a throwaway PostgreSQL database, then lets schemathesis
# (PyPI, pinned, in a venv under .state/) generate requests from
# /docs/json for every operation and check every answer: status code
# documented, body fits its schema, documented headers and content types, no
# 5xx, invalid input refused, 405 with Allow, tokens enforced.
#
# Usage: scripts/check-openapi.sh
#   AUTHGATE_TEST_DATABASE_URL  admin URL of the test PostgreSQL; when unset,
#                               scripts/services.sh start (idempotent) starts
#                               the test servers and provides it
#   AUTHGATE_BIN                the authgate binary (default: cargo build)
#   CHECK_OPENAPI_MAX_TIME      schemathesis' time budget in seconds (default 90)
#   CHECK_OPENAPI_SEED          a seed, to replay a run
# Exits non-zero when schemathesis finds a failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
WORK=$STATE/check-openapi
VENV=$STATE/schemathesis
SCHEMATHESIS=schemathesis==4.32.5
MAX_TIME=${CHECK_OPENAPI_MAX_TIME:-90}

log() { printf '[check-openapi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[check-openapi] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $MAX_TIME =~ ^[0-9]+$ ]] || die "CHECK_OPENAPI_MAX_TIME must be whole seconds"
mkdir -p "$WORK"
rm -rf "$WORK/report"

# ---------------------------------------------------------------- servers

if [[ -z ${AUTHGATE_TEST_DATABASE_URL:-} ]]; then
  scripts/services.sh start >&2
  eval "$(scripts/services.sh env)"
fi
command -v psql >/dev/null || die "psql missing (run scripts/install-prereqs.sh)"

# ---------------------------------------------------------------- schemathesis

stamp=$VENV/.authgate-reqs
if [[ ! -x $VENV/bin/st || ! -f $stamp || $(<"$stamp") != "$SCHEMATHESIS" ]]; then
  log "installing $SCHEMATHESIS into $VENV"
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install --disable-pip-version-check -q "$SCHEMATHESIS"; } \
    >"$WORK/pip-install.log" 2>&1; then
    tail -n 30 "$WORK/pip-install.log" >&2
    die "could not install $SCHEMATHESIS"
  fi
  echo "$SCHEMATHESIS" >"$stamp"
fi

# ---------------------------------------------------------------- authgate

if [[ -z ${AUTHGATE_BIN:-} ]]; then
  log "building authgate"
  AUTHGATE_BIN=$(cargo build --locked --bin authgate --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable"):
        print(message["executable"])
')
fi
[[ -x $AUTHGATE_BIN ]] || die "no authgate binary at '$AUTHGATE_BIN'"

DB_NAME=ag_openapi_$(python3 -c 'import secrets; print(secrets.token_hex(6))')
DB_URL=${AUTHGATE_TEST_DATABASE_URL%/*}/$DB_NAME
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
SERVER_PID=

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  psql "$AUTHGATE_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql "$AUTHGATE_TEST_DATABASE_URL" -qc "CREATE DATABASE $DB_NAME" >/dev/null

# The settings of the run, and nothing from the caller's environment or a
# .env file (authgate runs in $WORK). No SMTP_HOST: mail is not sent. Rate
# limits off: generated requests should reach the handlers, not the limiter.
SETTINGS=(
  PATH="$PATH"
  AUTH_BACKEND=native
  SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  DATABASE_URL="$DB_URL"
  APP_HOST=127.0.0.1
  APP_PORT="$PORT"
  APP_WORKERS=2
  PASSWORD_PBKDF2_ROUNDS=1000
  RATE_LIMIT_SIGNIN_PER_IP=off
  RATE_LIMIT_SIGNIN_PER_ACCOUNT=off
  RATE_LIMIT_SIGNUP_PER_IP=off
  RATE_LIMIT_EMAIL_PER_IP=off
  "RUST_LOG=info,pingora=warn,sqlx=warn"
  LOG_FORMAT=json
)

log "starting authgate on $BASE (database $DB_NAME)"
(cd "$WORK" && exec env -i "${SETTINGS[@]}" "$AUTHGATE_BIN" serve) >"$WORK/authgate.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 300; i++)); do
  curl -fsS -o /dev/null "$BASE/health" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK/authgate.log" >&2; die "authgate exited"; }
  sleep 0.1
done
curl -fsS -o /dev/null "$BASE/health" || die "authgate did not become healthy"
curl -fsS -o /dev/null -H 'accept: text/html' "$BASE/docs" || die "GET /docs failed"

# ---------------------------------------------------------------- the run

# schemathesis calls this for the token it sends: a signed-up user made admin
# with `authgate grant-role`, re-made whenever a generated request has deleted
# it or ended its sessions.
cat >"$WORK/auth_hook.py" <<'EOF'
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["CHECK_OPENAPI_BASE"]
BIN = os.environ["CHECK_OPENAPI_BIN"]
WORKDIR = os.environ["CHECK_OPENAPI_WORKDIR"]
SETTINGS = json.loads(os.environ["CHECK_OPENAPI_SETTINGS"])


def call(method, path, body=None, token=None):
    request = urllib.request.Request(BASE + path, method=method)
    if body is not None:
        request.data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, None


def new_admin():
    name = "openapi_" + secrets.token_hex(5)
    status, answer = call("POST", "/users/signup", {
        "email": name + "@example.com", "username": name, "password": secrets.token_hex(8)})
    if status != 200:
        raise RuntimeError(f"sign-up for the test token answered {status}")
    subprocess.run([BIN, "grant-role", name, "admin"], cwd=WORKDIR, env=SETTINGS,
                   check=True, capture_output=True, timeout=30)
    return answer["access_token"]


@schemathesis.auth(refresh_interval=5)
class AdminToken:
    token = None

    def get(self, case, context):
        if self.token is None or call("GET", "/users/me", token=self.token)[0] != 200:
            self.token = new_admin()
        return self.token

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = "Bearer " + data
EOF

# 413 (a body over MAX_BODY_BYTES) refuses a request as well as 422 does;
# 400 is how the contract answers valid input when an address is taken or a
# token is unknown.
cat >"$WORK/schemathesis.toml" <<'EOF'
# 501: a keycloak-mode feature (/auth/...) asked of this native-mode server,
# answered as its operation documents.
[checks.not_a_server_error]
expected-statuses = ["2XX", "3XX", "4XX", "501"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5XX"]

[checks.positive_data_acceptance]
expected-statuses = ["2XX", "3XX", "400", "401", "403", "404", "409", "413", "429", "5XX"]
EOF

# CPython 3.11 before 3.11.8 can fail with "SystemError: AST constructor
# recursion depth mismatch" when two threads build syntax trees at once
# (cpython issue 106905); hypothesis does that in schemathesis' worker
# threads. Such an interpreter gets one worker: fewer cases, no false alarm.
workers=2
if ! "$VENV/bin/python" -c 'import sys; v = sys.version_info; sys.exit((3, 11) <= v[:3] < (3, 11, 8))'; then
  workers=1
  log "$("$VENV/bin/python" -V) has CPython issue 106905 (fixed in 3.11.8): one schemathesis worker"
fi

settings_json=$(python3 -c 'import json, sys; print(json.dumps(dict(a.split("=", 1) for a in sys.argv[1:])))' "${SETTINGS[@]}")
seed=()
[[ -n ${CHECK_OPENAPI_SEED:-} ]] && seed=(--seed "$CHECK_OPENAPI_SEED")

log "schemathesis against $BASE/docs/json (up to ${MAX_TIME}s)"
start=$SECONDS
status=0
(cd "$WORK" && CHECK_OPENAPI_BASE=$BASE CHECK_OPENAPI_BIN=$AUTHGATE_BIN CHECK_OPENAPI_WORKDIR=$WORK \
  CHECK_OPENAPI_SETTINGS=$settings_json SCHEMATHESIS_HOOKS=$WORK/auth_hook.py \
  timeout --kill-after=10 $((MAX_TIME + 120)) "$VENV/bin/st" --config-file "$WORK/schemathesis.toml" \
  run "$BASE/docs/json" --checks all \
  --max-time "$MAX_TIME" --workers "$workers" --request-timeout 10 \
  --generation-database none --no-color \
  --report junit --report-dir "$WORK/report" "${seed[@]}") || status=$?
log "schemathesis finished in $((SECONDS - start))s with status $status (authgate log: $WORK/authgate.log)"
if grep -q '"level":"ERROR"' "$WORK/authgate.log"; then
  log "authgate logged errors:"
  grep '"level":"ERROR"' "$WORK/authgate.log" | tail -n 20 >&2
fi
exit "$status"

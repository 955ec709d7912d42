#!/usr/bin/env bash
# Runs authgate for development: installs what is missing
# (scripts/install-prereqs.sh), starts PostgreSQL and the mail catcher
# (scripts/services.sh) and, with AUTH_BACKEND=keycloak, Keycloak
# (keycloak/start.sh); creates the `authgate_dev` database, then
# `authgate serve` on http://127.0.0.1:${APP_PORT:-5000}.
# Mail lands in the web inbox at http://127.0.0.1:1080.
# Any setting from the README can be exported before running this script.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

scripts/install-prereqs.sh
scripts/services.sh start
eval "$(scripts/services.sh env)"

admin_url=$AUTHGATE_TEST_DATABASE_URL
dev_url=${admin_url%/*}/authgate_dev
if ! psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = 'authgate_dev'" | grep -q 1; then
  psql "$admin_url" -qc "CREATE DATABASE authgate_dev"
fi

# A development secret, made once and kept in the state directory.
secret_file=.state/dev-secret
if [[ ! -s $secret_file ]]; then
  head -c 24 /dev/urandom | base64 | tr -d '/+=' | head -c 32 > "$secret_file"
fi

export DATABASE_URL=${DATABASE_URL:-$dev_url}
export SECRET_KEY=${SECRET_KEY:-$(cat "$secret_file")}
export SMTP_HOST=${SMTP_HOST:-127.0.0.1}
export SMTP_PORT=${SMTP_PORT:-$AUTHGATE_TEST_SMTP_PORT}
export SMTP_TLS=${SMTP_TLS:-none}
export APP_PORT=${APP_PORT:-5000}

if [[ ${AUTH_BACKEND:-native} == keycloak ]]; then
  KEYCLOAK_URL=${KEYCLOAK_URL:-$(keycloak/start.sh | tail -n 1)}
  export KEYCLOAK_URL
  echo "Keycloak at $KEYCLOAK_URL (admin console: admin / admin)"
fi

echo "authgate on http://127.0.0.1:$APP_PORT  (mail inbox: $AUTHGATE_TEST_MAILBOX_URL)"
exec cargo run --release --locked -- serve

#!/bin/bash
# Container health check for authgate: `GET /health` on its own listener.
#
# The runtime image has no curl or wget, and authgate has no health-check
# command of its own, so this speaks just enough HTTP/1.1 through bash's
# /dev/tcp (bash is part of every Debian image) and accepts a 200 status line.
#
#   authgate-healthcheck            GET /health (liveness: the process answers)
#   authgate-healthcheck /ready     GET /ready  (the database, and Keycloak in
#                                   keycloak mode, answer too)
#
# Uses APP_PORT (default 5000) on 127.0.0.1, so APP_HOST must be 0.0.0.0 or
# 127.0.0.1 (the image sets 0.0.0.0). When authgate serves HTTPS
# (TLS_CERT_FILE set), bash cannot speak TLS: the probe goes to the plain
# listener of HTTP_REDIRECT_PORT instead, which answers /health and /ready in
# clear, and fails saying so when that is not set.
set -euo pipefail

path=${1:-/health}
port=${APP_PORT:-5000}
if [[ -n ${TLS_CERT_FILE:-} ]]; then
  if [[ -z ${HTTP_REDIRECT_PORT:-} ]]; then
    echo 'authgate-healthcheck: TLS_CERT_FILE is set: set HTTP_REDIRECT_PORT too, the plain port this probe asks' >&2
    exit 1
  fi
  port=$HTTP_REDIRECT_PORT
fi

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: authgate-healthcheck\r\nConnection: close\r\n\r\n' "$path" >&3
status=''
IFS= read -r -t 5 status <&3 || true
# Read the rest of the answer (the server closes after it): closing early
# would make the server log a reset connection for every probe.
while IFS= read -r -t 5 _ <&3; do :; done
exec 3<&- 3>&-
if [[ $status =~ ^HTTP/1\.[01]\ 200[[:space:]] ]]; then
  exit 0
fi
printf 'authgate-healthcheck: GET %s on port %s answered '%s'\n' "$path" "$port" "${status%$'\r'}" >&2
exit 1

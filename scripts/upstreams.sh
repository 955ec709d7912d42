# shellcheck shell=bash
# The test upstreams of the hostile-request suite (tests/contract/hostile.rs):
# three real servers that route by their own rules, each on 127.0.0.1.
#   - starlette: tests/upstreams/starlette_app.py under uvicorn (h11),
#     pinned from PyPI into a venv of the state dir
#   - go: tests/upstreams/go (net/http, standard library only), built with
#     the machine's go into the state dir, again only when its source changes
#   - nginx: Debian's nginx, a private instance whose config is generated
#     into the state dir (underscores_in_headers on; JSON built by `return`)
# Each answers with the handler that matched (admin, api-admin, api or
# public), the path it saw and the identity headers it received; GET
# /__received?prefix=P lists the request ids that reached it.
#
# Sourced by scripts/services.sh, whose helpers it uses (log, die, spawn,
# wait_for, running_pid, stop_pid_service, require_free_port, http_ready).
# A running upstream whose source or config changed is restarted by start.

UPSTREAM_STARLETTE_PORT=${AUTHGATE_UPSTREAM_STARLETTE_PORT:-58081}
UPSTREAM_GO_PORT=${AUTHGATE_UPSTREAM_GO_PORT:-58082}
UPSTREAM_NGINX_PORT=${AUTHGATE_UPSTREAM_NGINX_PORT:-58083}

# Everything pip installs, pinned (pip freeze of a clean install).
STARLETTE_PY_REQS=(starlette==1.10.0 uvicorn==0.55.0 h11==0.16.0 anyio==4.16.0
  click==8.5.1 idna==3.21 typing_extensions==4.16.0)

UPSTREAMS_SRC=$REPO/tests/upstreams
UPSTREAMS_DIR=$STATE/upstreams
UPSTREAMS_VENV=$UPSTREAMS_DIR/venv
GO_UPSTREAM_BIN=$UPSTREAMS_DIR/go-upstream
NGINX_DIR=$UPSTREAMS_DIR/nginx

# The headers nginx reports: it cannot list what it received, only read
# named ones (with underscores_in_headers on, `X_Auth_User_Id` and
# `X-Auth-User-Id` are both $http_x_auth_user_id).
NGINX_REPORTED_HEADERS=(host x-request-id
  x-auth-user-id x-auth-email x-auth-roles x-auth-device-id x-auth-client-id
  x-forwarded-for x-forwarded-host x-forwarded-proto x-forwarded-port
  x-forwarded-prefix x-forwarded-uri x-forwarded-method x-real-ip forwarded
  x-original-url x-original-uri x-original-method x-rewrite-url)

# True when upstream $1 runs and was started from stamp $2.
upstream_current() {
  running_pid "$1" >/dev/null && [[ -f $RUN_DIR/$1.stamp && $(<"$RUN_DIR/$1.stamp") == "$2" ]]
}

# Starts upstream $1 (stamp $2, port $3) with "${@:4}", unless it already
# runs from the same stamp; then waits until it answers.
upstream_run() {
  local name=$1 stamp=$2 port=$3 logfile=$LOG_DIR/$1.log
  shift 3
  if upstream_current "$name" "$stamp"; then
    log "$name: already running (pid $(running_pid "$name"))"
  else
    if running_pid "$name" >/dev/null; then
      log "$name: source or config changed, restarting"
      stop_pid_service "$name"
    fi
    require_free_port "$name" "$port"
    log "$name: starting on $HOST:$port"
    spawn "$name" "$logfile" "$@"
    echo "$stamp" >"$RUN_DIR/$name.stamp"
  fi
  wait_for "$name" "$logfile" http_ready "http://$HOST:$port/__received"
}

starlette_upstream_start() {
  ensure_venv "$UPSTREAMS_VENV" upstream-starlette "${STARLETTE_PY_REQS[@]}"
  local stamp
  stamp=$(cat "$UPSTREAMS_SRC/starlette_app.py" "$UPSTREAMS_VENV/.authgate-reqs" | sha256sum | cut -d' ' -f1)
  upstream_run upstream-starlette "$stamp" "$UPSTREAM_STARLETTE_PORT" \
    "$UPSTREAMS_VENV/bin/python" -m uvicorn --app-dir "$UPSTREAMS_SRC" starlette_app:app \
    --http h11 --host "$HOST" --port "$UPSTREAM_STARLETTE_PORT" \
    --no-access-log --log-level warning
}

# Builds the Go upstream when its source (or the go version) changed.
go_upstream_build() {
  local src=$UPSTREAMS_SRC/go stamp
  command -v go >/dev/null || die "go missing (the Go test upstream needs go >= 1.22)"
  stamp=$({ go env GOVERSION && cat "$src/go.mod" "$src"/*.go; } | sha256sum | cut -d' ' -f1)
  if [[ -x $GO_UPSTREAM_BIN && -f $GO_UPSTREAM_BIN.stamp && $(<"$GO_UPSTREAM_BIN.stamp") == "$stamp" ]]; then
    return 0
  fi
  log "upstream-go: building $GO_UPSTREAM_BIN ($(go env GOVERSION))"
  # Standard library only: nothing to download, and nothing may be.
  if ! (cd "$src" && GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -o "$GO_UPSTREAM_BIN.tmp" .) >"$LOG_DIR/go-build.log" 2>&1; then
    log_tail "$LOG_DIR/go-build.log"
    die "upstream-go: go build failed"
  fi
  mv "$GO_UPSTREAM_BIN.tmp" "$GO_UPSTREAM_BIN"
  echo "$stamp" >"$GO_UPSTREAM_BIN.stamp"
}

go_upstream_start() {
  go_upstream_build
  upstream_run upstream-go "$(<"$GO_UPSTREAM_BIN.stamp")" "$UPSTREAM_GO_PORT" \
    "$GO_UPSTREAM_BIN" -listen "$HOST:$UPSTREAM_GO_PORT"
}

nginx_bin() {
  command -v nginx 2>/dev/null || { [[ -x /usr/sbin/nginx ]] && echo /usr/sbin/nginx; } ||
    die "nginx missing (run scripts/install-prereqs.sh)"
}

# `return 200` with the JSON answer of handler $1, one field a line. nginx
# has no JSON escaping outside log formats: a value holding `"` or `\`
# breaks the JSON, which is why every value sits on a line of its own.
nginx_answer() {
  local name header var
  printf "return 200 '{\"server\": \"nginx\",\n\"handler\": \"%s\",\n\"path\": \"\$uri\",\n\"raw\": \"\$request_uri\",\n\"headers\": [\n" "$1"
  for header in "${NGINX_REPORTED_HEADERS[@]}"; do
    var=http_${header//-/_}
    printf '["%s", "$%s"]' "$header" "$var"
    [[ $header == "${NGINX_REPORTED_HEADERS[-1]}" ]] || printf ',\n'
  done
  printf "\n]}\n';"
}

nginx_config() {
  local prefix name
  # As root the workers would run as nobody, who may not reach the state dir.
  [[ $(id -u) -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $LOG_DIR/upstream-nginx-error.log warn;
events { worker_connections 256; }
http {
  client_body_temp_path $NGINX_DIR/tmp/body;
  proxy_temp_path $NGINX_DIR/tmp/proxy;
  fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
  uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
  scgi_temp_path $NGINX_DIR/tmp/scgi;
  # X_Auth_User_Id is read as \$http_x_auth_user_id, as Puma, gunicorn and PHP do.
  underscores_in_headers on;
  log_format received '\$http_x_request_id';
  server {
    listen $HOST:$UPSTREAM_NGINX_PORT;
    access_log $NGINX_DIR/received.log received;
    default_type application/json;
    location = /__received {
      access_log off;
      default_type text/plain;
      alias $NGINX_DIR/received.log;
    }
EOF
  for prefix in /admin:admin /api/admin:api-admin /api:api; do
    name=${prefix#*:}
    prefix=${prefix%%:*}
    printf '    location = %s {\n      %s\n    }\n' "$prefix" "$(nginx_answer "$name")"
    printf '    location %s/ {\n      %s\n    }\n' "$prefix" "$(nginx_answer "$name")"
  done
  printf '    location / {\n      %s\n    }\n  }\n}\n' "$(nginx_answer public)"
}

nginx_upstream_start() {
  local nginx conf stamp
  nginx=$(nginx_bin)
  mkdir -p "$NGINX_DIR/tmp"
  conf=$(nginx_config)
  stamp=$(printf '%s' "$conf" | sha256sum | cut -d' ' -f1)
  if ! upstream_current upstream-nginx "$stamp"; then
    printf '%s\n' "$conf" >"$NGINX_DIR/nginx.conf"
    : >"$NGINX_DIR/received.log"
    if ! "$nginx" -t -q -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e stderr >"$LOG_DIR/upstream-nginx-test.log" 2>&1; then
      log_tail "$LOG_DIR/upstream-nginx-test.log"
      die "upstream-nginx: the generated config is not valid ($NGINX_DIR/nginx.conf)"
    fi
  fi
  upstream_run upstream-nginx "$stamp" "$UPSTREAM_NGINX_PORT" \
    "$nginx" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$LOG_DIR/upstream-nginx-error.log"
}

upstreams_start() {
  mkdir -p "$UPSTREAMS_DIR"
  starlette_upstream_start
  go_upstream_start
  nginx_upstream_start
}

upstreams_stop() {
  stop_pid_service upstream-nginx
  stop_pid_service upstream-go
  stop_pid_service upstream-starlette
}

# Prints one status line per upstream; returns 3 when one is stopped.
upstreams_status() {
  local rc=0 pid entry name port
  for entry in starlette:$UPSTREAM_STARLETTE_PORT go:$UPSTREAM_GO_PORT nginx:$UPSTREAM_NGINX_PORT; do
    name=upstream-${entry%%:*}
    port=${entry#*:}
    if pid=$(running_pid "$name"); then
      printf '%-19s running  pid %s  http://%s:%s\n' "$name" "$pid" "$HOST" "$port"
    else
      printf '%-19s stopped\n' "$name"
      rc=3
    fi
  done
  return "$rc"
}

upstreams_env() {
  printf 'AUTHGATE_TEST_UPSTREAM_STARLETTE=%s\n' "$HOST:$UPSTREAM_STARLETTE_PORT"
  printf 'AUTHGATE_TEST_UPSTREAM_GO=%s\n' "$HOST:$UPSTREAM_GO_PORT"
  printf 'AUTHGATE_TEST_UPSTREAM_NGINX=%s\n' "$HOST:$UPSTREAM_NGINX_PORT"
}

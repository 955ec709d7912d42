#!/usr/bin/env bash
# Starts/stops the real servers the integration tests use, all on 127.0.0.1:
#   - PostgreSQL (Debian's server binaries, private cluster in the state dir)
#   - maildev: plain SMTP without auth + REST mailbox
#   - scripts/mailbox.py (aiosmtpd): SMTP with required STARTTLS + AUTH,
#     REST mailbox in maildev's JSON shape
#   - Redis (Debian's redis-server, no persistence, dir in the state dir)
#   - the test upstreams: Starlette under uvicorn, a Go net/http server and
#     nginx (scripts/upstreams.sh)
#   - the forward-auth proxies' binaries: nginx with auth_request, and Caddy
#     built from its Go module (scripts/proxies.sh; the tests run their own
#     instances)
# Usage: scripts/services.sh start|stop|status|env
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${AUTHGATE_STATE_DIR:-$REPO/.state}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)

HOST=127.0.0.1
PG_PORT=${AUTHGATE_PG_PORT:-55432}
SMTP_PORT=${AUTHGATE_SMTP_PORT:-1025}
MAILDEV_WEB_PORT=${AUTHGATE_MAILDEV_WEB_PORT:-1080}
# STARTTLS on a plain port.
SMTP_TLS_PORT=${AUTHGATE_SMTP_TLS_PORT:-1465}
# Implicit TLS (SMTPS) on the same mailbox.
SMTPS_PORT=${AUTHGATE_SMTPS_PORT:-1466}
MAILBOX_TLS_WEB_PORT=${AUTHGATE_MAILDEV_TLS_WEB_PORT:-1081}
REDIS_PORT=${AUTHGATE_REDIS_PORT:-56379}
SMTP_USER=mailer
SMTP_PASSWORD=mailer-secret
PG_USER=authgate
PG_PASSWORD=authgate

MAILDEV_VERSION=2.2.1
MAILBOX_PY_REQS=(aiosmtpd==1.4.6 atpublic==9.0.0 attrs==26.1.0)
START_TIMEOUT=${AUTHGATE_START_TIMEOUT:-60}

TLS_DIR=$STATE/tls
MAILDEV_DIR=$STATE/maildev
VENV=$STATE/venv
REDIS_DIR=$STATE/redis
LOG_DIR=$STATE/log
RUN_DIR=$STATE/run

log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the last lines of a log file to stderr (for failure messages).
log_tail() {
  if [[ -f $1 ]]; then
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 30 "$1" >&2 || true
    printf -- '---\n' >&2
  fi
}

# ---------------------------------------------------------------- helpers

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# True when an SMTP server greets with 220 on port $1.
smtp_ready() {
  local line=''
  {
    exec 3<>"/dev/tcp/$HOST/$1" || return 1
    IFS= read -r -t 3 line <&3 || true
    printf 'QUIT\r\n' >&3 || true
    exec 3<&- 3>&-
  } 2>/dev/null
  [[ $line == 220* ]]
}

http_ready() {
  curl -fsS --max-time 3 -o /dev/null "$1" 2>/dev/null
}

# True while pid $1 exists and is not a zombie (init may reap it late).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# pid of a service started by this script, if it still runs ($1 = name).
running_pid() {
  local pidfile=$RUN_DIR/$1.pid pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  # Guard against a recycled pid: the command line must mention the state dir.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE" || return 1
  echo "$pid"
}

# Starts "$@" detached (own session, survives this script), logging to $2.
# $1 = name (pid file name).
spawn() {
  local name=$1 logfile=$2
  shift 2
  local pidfile=$RUN_DIR/$name.pid
  rm -f "$pidfile"
  : >"$logfile"
  # The child writes its own pid, then becomes the server via exec.
  # shellcheck disable=SC2016
  setsid -f bash -c 'echo $$ >"$0"; exec nohup "$@"' "$pidfile" "$@" \
    </dev/null >>"$logfile" 2>&1
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidfile ]] && return 0
    sleep 0.1
  done
  die "$name: did not start (no pid file)"
}

# Waits until "$2..." succeeds; fails with the log tail if the process of
# service $1 dies or the timeout passes. $1=name, then log file, then check.
wait_for() {
  local name=$1 logfile=$2
  shift 2
  local deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$@"; then return 0; fi
    if [[ $name != postgres ]] && ! running_pid "$name" >/dev/null; then
      log_tail "$logfile"
      die "$name exited during startup (log: $logfile)"
    fi
    sleep 0.2
  done
  log_tail "$logfile"
  die "$name not ready after ${START_TIMEOUT}s (log: $logfile)"
}

# Fails when a port is taken by something that is not ours.
require_free_port() {
  if port_open "$2"; then
    die "$1: port $HOST:$2 is already in use by another process (set the port env var to another one)"
  fi
}

stop_pid_service() {
  local name=$1 pid i
  if ! pid=$(running_pid "$name"); then
    rm -f "$RUN_DIR/$name.pid"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name did not stop on TERM, killing"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN_DIR/$name.pid"
}

# A venv at $1 holding exactly the pinned packages "${@:3}" ($2 names its
# user in messages); made again only when the pins change.
ensure_venv() {
  local venv=$1 name=$2
  shift 2
  local stamp=$venv/.authgate-reqs want="$*"
  if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  command -v python3 >/dev/null || die "python3 missing"
  log "$name: creating venv $venv ($want)"
  rm -rf "$venv"
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/pip" install --disable-pip-version-check -q "$@"; } \
    >"$LOG_DIR/pip-install-$name.log" 2>&1; then
    log_tail "$LOG_DIR/pip-install-$name.log"
    die "$name: venv/pip install failed"
  fi
  echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- PostgreSQL

pg_bin() {
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/pg_ctl ]] ||
    die "no PostgreSQL server found under /usr/lib/postgresql/*/bin (run scripts/install-prereqs.sh)"
  echo "$dir"
}

as_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as the cluster owner: `postgres` when we are root.
as_pg() {
  if as_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Cluster dir. As root the postgres user must reach it; if it cannot traverse
# the state dir (e.g. a repo under /root), use a dir under its home instead.
pg_dir() {
  if [[ -n ${AUTHGATE_PG_DIR:-} ]]; then
    echo "$AUTHGATE_PG_DIR"
  elif as_root && ! runuser -u postgres -- test -x "$STATE" 2>/dev/null; then
    echo "/var/lib/postgresql/authgate-$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)"
  else
    echo "$STATE/pg"
  fi
}

pg_running() {
  local bin data
  bin=$(pg_bin)
  data=$(pg_dir)/data
  [[ -f $data/PG_VERSION ]] && as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

pg_init() {
  local bin=$1 dir=$2 pwfile
  log "postgres: initdb in $dir/data"
  if as_root; then
    id postgres >/dev/null 2>&1 || die "system user 'postgres' missing (is the postgresql package installed?)"
    chown postgres:postgres "$dir"
  fi
  pwfile=$dir/.pwfile
  printf '%s\n' "$PG_PASSWORD" >"$pwfile"
  chmod 600 "$pwfile"
  as_root && chown postgres:postgres "$pwfile"
  if ! as_pg "$bin/initdb" -D "$dir/data" -U "$PG_USER" --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1; then
    rm -f "$pwfile"
    log_tail "$dir/initdb.log"
    rm -rf "$dir/data"
    die "postgres: initdb failed"
  fi
  rm -f "$pwfile"
  echo "include_if_exists = 'authgate.conf'" >>"$dir/data/postgresql.conf"
}

pg_start() {
  local bin dir data logfile
  bin=$(pg_bin)
  dir=$(pg_dir)
  data=$dir/data
  logfile=$dir/postgres.log
  if pg_running; then
    log "postgres: already running ($data)"
  else
    require_free_port postgres "$PG_PORT"
    mkdir -p "$dir"
    # Pointer for humans when the cluster lives outside the state dir.
    if [[ $dir != "$STATE/pg" && ! -d $STATE/pg ]]; then ln -sfn "$dir" "$STATE/pg"; fi
    [[ -f $data/PG_VERSION ]] || pg_init "$bin" "$dir"
    # Rewritten on each start so port changes apply; speed over durability.
    cat >"$data/authgate.conf" <<EOF
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = ''
max_connections = 300
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if as_root; then
      chown -R postgres:postgres "$dir"
    fi
    log "postgres: starting on $HOST:$PG_PORT ($("$bin/postgres" --version))"
    local cmd=("$bin/pg_ctl" start -D "$data" -l "$logfile" -w -t "$START_TIMEOUT")
    as_root && cmd=(runuser -u postgres -- "${cmd[@]}")
    # Own session, so the postmaster outlives this script's terminal/job.
    if ! setsid -w "${cmd[@]}" >"$LOG_DIR/pg_ctl.log" 2>&1; then
      log_tail "$LOG_DIR/pg_ctl.log"
      log_tail "$logfile"
      die "postgres did not start (log: $logfile)"
    fi
  fi
  wait_for postgres "$logfile" "$bin/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2
}

pg_stop() {
  local bin data
  bin=$(pg_bin)
  data=$(pg_dir)/data
  if pg_running; then
    log "stopping postgres"
    as_pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null
  fi
}

# ---------------------------------------------------------------- TLS material

# A small CA and a leaf for localhost/127.0.0.1 signed by it (rustls/webpki
# rejects a self-signed CA used directly as server certificate).
ensure_tls() {
  [[ -f $TLS_DIR/server-chain.pem && -f $TLS_DIR/server.key && -f $TLS_DIR/ca.pem ]] && return 0
  command -v openssl >/dev/null || die "openssl missing (run scripts/install-prereqs.sh)"
  log "tls: generating test CA and localhost certificate in $TLS_DIR"
  rm -rf "$TLS_DIR.tmp"
  mkdir -p "$TLS_DIR.tmp"
  (
    cd "$TLS_DIR.tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.pem -subj "/CN=authgate test CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -sha256 -keyout server.key -out server.csr \
      -subj "/CN=localhost" 2>/dev/null
    cat >server.ext <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    openssl x509 -req -sha256 -days 3650 -in server.csr -CA ca.pem -CAkey ca.key \
      -CAcreateserial -extfile server.ext -out server.pem 2>/dev/null
    openssl verify -CAfile ca.pem server.pem >/dev/null
    cat server.pem ca.pem >server-chain.pem
    rm -f server.csr server.ext ca.srl
    chmod 600 ca.key server.key
  ) || die "tls: certificate generation failed"
  rm -rf "$TLS_DIR"
  mv "$TLS_DIR.tmp" "$TLS_DIR"
}

# ---------------------------------------------------------------- maildev (plain)

maildev_bin() { echo "$MAILDEV_DIR/node_modules/maildev/bin/maildev"; }

ensure_maildev() {
  local pkg=$MAILDEV_DIR/node_modules/maildev/package.json
  if [[ -f $pkg ]] && grep -q "\"version\": \"$MAILDEV_VERSION\"" "$pkg"; then
    return 0
  fi
  command -v npm >/dev/null || die "npm missing"
  log "maildev: npm install maildev@$MAILDEV_VERSION into $MAILDEV_DIR"
  mkdir -p "$MAILDEV_DIR"
  [[ -f $MAILDEV_DIR/package.json ]] || echo '{"private": true}' >"$MAILDEV_DIR/package.json"
  if ! npm install --prefix "$MAILDEV_DIR" --no-audit --no-fund --omit=dev --prefer-offline \
    --save-exact "maildev@$MAILDEV_VERSION" >"$LOG_DIR/npm-install.log" 2>&1; then
    log_tail "$LOG_DIR/npm-install.log"
    die "maildev: npm install failed"
  fi
}

maildev_start() {
  local logfile=$LOG_DIR/maildev.log
  if running_pid maildev >/dev/null; then
    log "maildev: already running (pid $(running_pid maildev))"
  else
    ensure_maildev
    require_free_port maildev "$SMTP_PORT"
    require_free_port maildev "$MAILDEV_WEB_PORT"
    # Fresh mail dir each start: maildev reloads persisted mails otherwise.
    rm -rf "$MAILDEV_DIR/mail"
    mkdir -p "$MAILDEV_DIR/mail"
    log "maildev: starting SMTP $HOST:$SMTP_PORT, web http://$HOST:$MAILDEV_WEB_PORT"
    spawn maildev "$logfile" node "$(maildev_bin)" \
      --ip "$HOST" --web-ip "$HOST" \
      --smtp "$SMTP_PORT" --web "$MAILDEV_WEB_PORT" \
      --mail-directory "$MAILDEV_DIR/mail"
  fi
  wait_for maildev "$logfile" smtp_ready "$SMTP_PORT"
  wait_for maildev "$logfile" http_ready "http://$HOST:$MAILDEV_WEB_PORT/healthz"
}

# ---------------------------------------------------------------- mailbox.py (STARTTLS + AUTH)

mailbox_start() {
  local logfile=$LOG_DIR/mailbox-tls.log
  if running_pid mailbox-tls >/dev/null; then
    log "mailbox-tls: already running (pid $(running_pid mailbox-tls))"
  else
    ensure_venv "$VENV" mailbox "${MAILBOX_PY_REQS[@]}"
    require_free_port mailbox-tls "$SMTP_TLS_PORT"
    require_free_port mailbox-tls "$MAILBOX_TLS_WEB_PORT"
    require_free_port mailbox-tls "$SMTPS_PORT"
    log "mailbox-tls: starting SMTP (STARTTLS+AUTH) $HOST:$SMTP_TLS_PORT, SMTPS (implicit TLS+AUTH) $HOST:$SMTPS_PORT, web http://$HOST:$MAILBOX_TLS_WEB_PORT"
    spawn mailbox-tls "$logfile" "$VENV/bin/python" "$REPO/scripts/mailbox.py" \
      --host "$HOST" --smtp-port "$SMTP_TLS_PORT" --smtps-port "$SMTPS_PORT" --web-port "$MAILBOX_TLS_WEB_PORT" \
      --cert "$TLS_DIR/server-chain.pem" --key "$TLS_DIR/server.key" \
      --user "$SMTP_USER" --password "$SMTP_PASSWORD"
  fi
  wait_for mailbox-tls "$logfile" smtp_ready "$SMTP_TLS_PORT"
  wait_for mailbox-tls "$logfile" port_open "$SMTPS_PORT"
  wait_for mailbox-tls "$logfile" http_ready "http://$HOST:$MAILBOX_TLS_WEB_PORT/healthz"
}

# ---------------------------------------------------------------- Redis

# True when the Redis server on port $1 answers PING with PONG.
redis_ready() {
  [[ $(timeout 3 redis-cli -h "$HOST" -p "$1" ping 2>/dev/null) == PONG ]]
}

redis_start() {
  local logfile=$LOG_DIR/redis.log
  if running_pid redis >/dev/null; then
    log "redis: already running (pid $(running_pid redis))"
  else
    command -v redis-server >/dev/null || die "redis-server missing (run scripts/install-prereqs.sh)"
    command -v redis-cli >/dev/null || die "redis-cli missing (run scripts/install-prereqs.sh)"
    require_free_port redis "$REDIS_PORT"
    mkdir -p "$REDIS_DIR"
    # Rewritten on each start so port changes apply. No persistence: an empty
    # store on each start. The process title is left alone so that the
    # command line keeps naming the state dir (see running_pid).
    cat >"$REDIS_DIR/redis.conf" <<EOF
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize no
set-proc-title no
dir "$REDIS_DIR"
save ""
appendonly no
logfile ""
EOF
    log "redis: starting on $HOST:$REDIS_PORT ($(redis-server --version | cut -d' ' -f1-3))"
    spawn redis "$logfile" redis-server "$REDIS_DIR/redis.conf"
  fi
  wait_for redis "$logfile" redis_ready "$REDIS_PORT"
}

# ---------------------------------------------------------------- test upstreams

# shellcheck source=scripts/upstreams.sh
source "$REPO/scripts/upstreams.sh"
# shellcheck source=scripts/proxies.sh
source "$REPO/scripts/proxies.sh"

# ---------------------------------------------------------------- commands

cmd_start() {
  mkdir -p "$LOG_DIR" "$RUN_DIR"
  local t0=$SECONDS
  ensure_tls
  pg_start
  redis_start
  maildev_start
  mailbox_start
  upstreams_start
  proxies_prepare
  log "all services up ($((SECONDS - t0))s)"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  upstreams_stop
  stop_pid_service mailbox-tls
  stop_pid_service maildev
  stop_pid_service redis
  pg_stop
  log "all services stopped"
}

cmd_status() {
  local rc=0 pid
  if pg_running; then
    echo "postgres     running  $HOST:$PG_PORT  data $(pg_dir)/data"
  else
    echo "postgres     stopped"
    rc=3
  fi
  if pid=$(running_pid redis); then
    echo "redis        running  pid $pid  $HOST:$REDIS_PORT  dir $REDIS_DIR"
  else
    echo "redis        stopped"
    rc=3
  fi
  if pid=$(running_pid maildev); then
    echo "maildev      running  pid $pid  smtp $HOST:$SMTP_PORT  web http://$HOST:$MAILDEV_WEB_PORT"
  else
    echo "maildev      stopped"
    rc=3
  fi
  if pid=$(running_pid mailbox-tls); then
    echo "mailbox-tls  running  pid $pid  smtp+starttls+auth $HOST:$SMTP_TLS_PORT  web http://$HOST:$MAILBOX_TLS_WEB_PORT"
  else
    echo "mailbox-tls  stopped"
    rc=3
  fi
  upstreams_status || rc=3
  proxies_status || rc=3
  return "$rc"
}

cmd_env() {
  local kv
  # shellcheck disable=SC2046 # *_env print NAME=value lines, no spaces
  for kv in \
    "AUTHGATE_TEST_DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/postgres" \
    "AUTHGATE_TEST_REDIS_URL=redis://$HOST:$REDIS_PORT" \
    "AUTHGATE_TEST_SMTP_HOST=$HOST" \
    "AUTHGATE_TEST_SMTP_PORT=$SMTP_PORT" \
    "AUTHGATE_TEST_MAILBOX_URL=http://$HOST:$MAILDEV_WEB_PORT" \
    "AUTHGATE_TEST_SMTP_TLS_PORT=$SMTP_TLS_PORT" \
    "AUTHGATE_TEST_SMTPS_PORT=$SMTPS_PORT" \
    "AUTHGATE_TEST_MAILBOX_TLS_URL=http://$HOST:$MAILBOX_TLS_WEB_PORT" \
    "AUTHGATE_TEST_SMTP_USER=$SMTP_USER" \
    "AUTHGATE_TEST_SMTP_PASSWORD=$SMTP_PASSWORD" \
    "AUTHGATE_TEST_SMTP_CA_FILE=$TLS_DIR/ca.pem" \
    $(upstreams_env) $(proxies_env); do
    printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
  done
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac

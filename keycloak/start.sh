#!/usr/bin/env bash
# Start a local, DEV-ONLY Keycloak for authgate.
#
#  - downloads org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip from Maven Central
#    once (`mvn dependency:copy`) into ${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}
#    and unzips it there once;
#  - starts `kc.sh start-dev` in the background on 127.0.0.1:${KEYCLOAK_PORT:-8080}
#    (management/health on ${KEYCLOAK_MANAGEMENT_PORT:-KEYCLOAK_PORT+1000}) with a
#    throw-away H2 database in the state dir and --import-realm of keycloak/*-realm.json,
#    so every start begins with exactly the realm file's content (no users, sessions,
#    lockouts or events from earlier runs);
#  - waits (bounded) for the realm's OIDC discovery document;
#  - prints the base URL (e.g. http://127.0.0.1:8080) as the LAST line of stdout
#    (progress goes to stderr).
#
# Idempotent: when our instance is alive and healthy it only prints the URL.
# Stop it with keycloak/stop.sh.
#
# Environment (all optional):
#   KEYCLOAK_PORT                HTTP port (default 8080)
#   KEYCLOAK_MANAGEMENT_PORT     management port: /health/ready, /health/live (default KEYCLOAK_PORT+1000)
#   KEYCLOAK_START_TIMEOUT       seconds to wait for the realm, per launch (default 180)
#   KC_BOOTSTRAP_ADMIN_USERNAME  master-realm admin (default admin)            DEV ONLY
#   KC_BOOTSTRAP_ADMIN_PASSWORD  master-realm admin password (default admin)   DEV ONLY
#   AUTHGATE_CACHE_DIR           download/unzip/template cache (default $HOME/.cache/authgate)
#   AUTHGATE_STATE_DIR           state root (default <repo>/.state); ours is .../keycloak
#                                (keycloak.pid, keycloak.log, h2/)
#   KEYCLOAK_DB_TEMPLATE         1 (default): start from a cached copy of the freshly
#                                imported database; 0: import from scratch every start
#   KEYCLOAK_JAVA_HOME           JDK (default: Temurin 25 if present, else $JAVA_HOME, else PATH)
#   JAVA_OPTS_KC_HEAP            heap options (default: Keycloak's own, -Xms64m -Xmx512m)
#   KEYCLOAK_EXTRA_ARGS          extra kc.sh options (build options force a ~50 s re-augmentation)
set -euo pipefail

KC_VERSION="26.7.3"   # pinned; 26.5.6 / 26.4.7 are the fallbacks if this one ever disappears

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
CACHE_DIR="${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}"
STATE_DIR="${AUTHGATE_STATE_DIR:-$REPO/.state}/keycloak"
PORT="${KEYCLOAK_PORT:-8080}"
MGMT_PORT="${KEYCLOAK_MANAGEMENT_PORT:-$((PORT + 1000))}"
TIMEOUT="${KEYCLOAK_START_TIMEOUT:-180}"
REALM="authgate"
HOST="127.0.0.1"
BASE_URL="http://${HOST}:${PORT}"
DISCOVERY_URL="${BASE_URL}/realms/${REALM}/.well-known/openid-configuration"

KC_ZIP="$CACHE_DIR/keycloak-quarkus-dist-${KC_VERSION}.zip"
KC_HOME="$CACHE_DIR/keycloak-${KC_VERSION}"
PID_FILE="$STATE_DIR/keycloak.pid"
LOG_FILE="$STATE_DIR/keycloak.log"

log() { echo "[keycloak/start.sh] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

discovery_ok() {
  curl -fsS --max-time 3 -o /dev/null "$DISCOVERY_URL" 2>/dev/null
}

# shellcheck source=keycloak/lib.sh
source "$SCRIPT_DIR/lib.sh"


# pid of our Keycloak: from the pid file (the kc.sh shell, or the JVM it became),
# else by scanning /proc for our marker (adopting it and rewriting the pid file).
find_pid() {
  local pid f
  if [[ -f "$PID_FILE" ]]; then
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      if is_our_java "$pid" || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null |
        grep -qF -- "$KC_HOME/bin/kc.sh start-dev --http-host=$HOST --http-port=$PORT "; then
        echo "$pid"
        return 0
      fi
    fi
  fi
  for f in /proc/[0-9]*; do
    pid="${f#/proc/}"
    if is_our_java "$pid"; then
      echo "$pid" >"$PID_FILE"
      echo "$pid"
      return 0
    fi
  done
  return 1
}

pid_alive() {
  find_pid >/dev/null
}

wait_ready() {
  local deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if discovery_ok; then
      return 0
    fi
    if ! pid_alive; then
      log "Keycloak process exited during startup; last log lines:"
      tail -n 60 "$LOG_FILE" >&2 || true
      return 1
    fi
    sleep 1
  done
  log "Keycloak did not serve $DISCOVERY_URL within ${TIMEOUT}s; last log lines:"
  tail -n 60 "$LOG_FILE" >&2 || true
  return 1
}

mkdir -p "$STATE_DIR" "$CACHE_DIR"

# ---------------------------------------------------------------- already running?
if pid_alive; then
  if discovery_ok; then
    echo "$BASE_URL"
    exit 0
  fi
  log "Keycloak (pid $(find_pid)) is running but not ready yet; waiting"
  wait_ready || die "running instance never became ready (see $LOG_FILE); try keycloak/stop.sh"
  echo "$BASE_URL"
  exit 0
fi
rm -f "$PID_FILE"

if discovery_ok; then
  die "something already serves $DISCOVERY_URL but it is not ours (no live pid in $PID_FILE)"
fi
if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
  die "port $PORT on $HOST is already in use by another process (set KEYCLOAK_PORT)"
fi
if (exec 3<>"/dev/tcp/$HOST/$MGMT_PORT") 2>/dev/null; then
  die "management port $MGMT_PORT on $HOST is already in use (set KEYCLOAK_MANAGEMENT_PORT)"
fi

# ---------------------------------------------------------------- download + unzip (once)
if [[ ! -x "$KC_HOME/bin/kc.sh" ]]; then
  if [[ ! -s "$KC_ZIP" ]]; then
    command -v mvn >/dev/null || die "mvn is required to download Keycloak"
    log "downloading org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip from Maven Central (~170 MB)"
    # A private local repository inside the cache keeps ~/.m2 clean; the zip copy is
    # removed from it afterwards so the 170 MB are stored only once.
    mvn -q -B \
      -Dmaven.repo.local="$CACHE_DIR/m2" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
      -Dartifact="org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip" \
      -DoutputDirectory="$CACHE_DIR.tmp-$$" >&2 \
      || { rm -rf "$CACHE_DIR.tmp-$$"; die "maven download of keycloak-quarkus-dist ${KC_VERSION} failed"; }
    mv "$CACHE_DIR.tmp-$$/keycloak-quarkus-dist-${KC_VERSION}.zip" "$KC_ZIP"
    rm -rf "$CACHE_DIR.tmp-$$" "$CACHE_DIR/m2/org/keycloak/keycloak-quarkus-dist"
  fi
  log "unzipping $KC_ZIP"
  tmp_unzip="$CACHE_DIR/.unzip-$$"
  rm -rf "$tmp_unzip"
  mkdir -p "$tmp_unzip"
  unzip -q "$KC_ZIP" -d "$tmp_unzip" || { rm -rf "$tmp_unzip"; die "unzip failed (corrupt $KC_ZIP? delete it)"; }
  rm -rf "$KC_HOME"
  mv "$tmp_unzip/keycloak-${KC_VERSION}" "$KC_HOME"
  rm -rf "$tmp_unzip"
fi

# ---------------------------------------------------------------- JDK
if [[ -z "${KEYCLOAK_JAVA_HOME:-}" ]]; then
  if [[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java ]]; then
    KEYCLOAK_JAVA_HOME=/usr/lib/jvm/temurin-25-jdk-amd64
  elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
    KEYCLOAK_JAVA_HOME="$JAVA_HOME"
  fi
fi
if [[ -n "${KEYCLOAK_JAVA_HOME:-}" ]]; then
  export JAVA_HOME="$KEYCLOAK_JAVA_HOME"
  export PATH="$JAVA_HOME/bin:$PATH"
fi
command -v java >/dev/null || die "no java found (need JDK 17+, 21+ preferred)"

# ---------------------------------------------------------------- database
# H2 file database in the state dir, thrown away on every start. To skip Liquibase
# schema creation + master realm + realm import (more than half of the start time
# on 2 cores), the database right after a fresh import is kept as a template in the
# cache, keyed by Keycloak version, realm file contents and admin credentials; later
# starts copy it. KEYCLOAK_DB_TEMPLATE=0 imports from scratch every time.
shopt -s nullglob
realm_files=("$SCRIPT_DIR"/*-realm.json)
shopt -u nullglob
((${#realm_files[@]} > 0)) || die "no keycloak/*-realm.json to import"

export KC_BOOTSTRAP_ADMIN_USERNAME="${KC_BOOTSTRAP_ADMIN_USERNAME:-admin}"
export KC_BOOTSTRAP_ADMIN_PASSWORD="${KC_BOOTSTRAP_ADMIN_PASSWORD:-admin}"

DB_DIR="$STATE_DIR/h2"
USE_TEMPLATE="${KEYCLOAK_DB_TEMPLATE:-1}"
template_key="$(
  {
    echo "authgate-kc-template v1 $KC_VERSION"
    printf '%s\n%s\n' "$KC_BOOTSTRAP_ADMIN_USERNAME" "$KC_BOOTSTRAP_ADMIN_PASSWORD"
    cat "${realm_files[@]}"
  } | sha256sum | cut -c1-16
)"
TEMPLATE_DIR="$CACHE_DIR/h2-templates/${KC_VERSION}-${template_key}"
rm -rf "$DB_DIR"
mkdir -p "$DB_DIR"
priming=0
if [[ "$USE_TEMPLATE" != 0 && -s "$TEMPLATE_DIR/keycloakdb.mv.db" ]]; then
  cp "$TEMPLATE_DIR/keycloakdb.mv.db" "$DB_DIR/"
elif [[ "$USE_TEMPLATE" != 0 ]]; then
  priming=1
fi

# ---------------------------------------------------------------- start
# Keycloak's own default heap outside containers is -Xms64m -Xmx512m; on this
# 2-core box other heap sizes or C1-only JIT did not start it faster (README).
if [[ -n "${JAVA_OPTS_KC_HEAP:-}" ]]; then export JAVA_OPTS_KC_HEAP; fi
export JAVA_OPTS_APPEND="${JAVA_OPTS_APPEND:+$JAVA_OPTS_APPEND }$MARKER"

args=(
  start-dev
  --http-host="$HOST"
  --http-port="$PORT"
  --http-management-port="$MGMT_PORT"
  --health-enabled=true
  --db=dev-file
  "--db-url=jdbc:h2:file:$DB_DIR/keycloakdb;NON_KEYWORDS=VALUE"
  --import-realm
  --hostname-strict=false
)
if [[ -n "${KEYCLOAK_EXTRA_ARGS:-}" ]]; then
  # shellcheck disable=SC2206
  args+=($KEYCLOAK_EXTRA_ARGS)
fi

launch() {
  # setsid: own session/process group, so stop.sh can signal the whole group and
  # the caller's terminal/CI job control does not affect it.
  setsid nohup "$KC_HOME/bin/kc.sh" "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1 9>&- &
  echo $! >"$PID_FILE"
  if ! wait_ready; then
    "$SCRIPT_DIR/stop.sh" >&2 || true
    die "Keycloak failed to start (log: $LOG_FILE)"
  fi
}

# The import directory lives in the shared unpacked distribution: hold a lock from
# filling it until the import is done, so that two checkouts starting at once
# cannot import each other's realm files.
exec 9>"$KC_HOME/.authgate-start.lock"
flock -w "$TIMEOUT" 9 || die "timed out waiting for another start.sh using $KC_HOME"
IMPORT_DIR="$KC_HOME/data/import"
rm -rf "$IMPORT_DIR"
mkdir -p "$IMPORT_DIR"
cp "${realm_files[@]}" "$IMPORT_DIR/"

: >"$LOG_FILE"
log "starting Keycloak ${KC_VERSION} (java: $(command -v java)) on $BASE_URL, management port $MGMT_PORT; log: $LOG_FILE"
if ((priming)); then
  log "no database template yet: importing from scratch, then saving the fresh database as a template"
fi
launch
if ((priming)); then
  # Nothing but health/discovery GETs has touched the database yet: stop cleanly,
  # keep the file as the template, start again on it.
  KEYCLOAK_STOP_TIMEOUT=60 "$SCRIPT_DIR/stop.sh" >&2
  if [[ -s "$DB_DIR/keycloakdb.mv.db" ]]; then
    mkdir -p "$CACHE_DIR/h2-templates"
    rm -rf "$TEMPLATE_DIR.tmp-$$"
    mkdir -p "$TEMPLATE_DIR.tmp-$$"
    cp "$DB_DIR/keycloakdb.mv.db" "$TEMPLATE_DIR.tmp-$$/"
    rm -rf "$TEMPLATE_DIR"
    mv "$TEMPLATE_DIR.tmp-$$" "$TEMPLATE_DIR"
    log "saved database template $TEMPLATE_DIR"
  fi
  echo "--- restart on the saved database ---" >>"$LOG_FILE"
  launch
fi
flock -u 9
log "ready after ${SECONDS}s"
echo "$BASE_URL"

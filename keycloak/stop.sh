#!/usr/bin/env bash
# Stop the Keycloak started by keycloak/start.sh: SIGTERM to its process group,
# bounded wait (KEYCLOAK_STOP_TIMEOUT, default 30 s), then SIGKILL.
# Finds the process from the pid file, or (if the state dir was wiped) by the
# marker -Dauthgate.keycloak.state=<state dir> that start.sh puts on its JVM.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/.." && pwd)"
STATE_DIR="${AUTHGATE_STATE_DIR:-$REPO/.state}/keycloak"
PID_FILE="$STATE_DIR/keycloak.pid"
# shellcheck source=keycloak/lib.sh
source "$SCRIPT_DIR/lib.sh"
TIMEOUT="${KEYCLOAK_STOP_TIMEOUT:-30}"

log() { echo "[keycloak/stop.sh] $*" >&2; }


our_pids() {
  local pid f
  if [[ -f "$PID_FILE" ]]; then
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
      if is_our_java "$pid" || tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "/bin/kc.sh start-dev "; then
        echo "$pid"
      fi
    fi
  fi
  for f in /proc/[0-9]*; do
    pid="${f#/proc/}"
    if is_our_java "$pid"; then
      echo "$pid"
    fi
  done
}

mapfile -t pids < <(our_pids | sort -un)
if ((${#pids[@]} == 0)); then
  log "not running"
  rm -f "$PID_FILE"
  exit 0
fi

# start.sh launched kc.sh via setsid, so the first pid leads its own process
# group; signal the group when it is one, else the single process.
signal() {
  local sig=$1 pid
  for pid in "${pids[@]}"; do
    if [[ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$pid" ]]; then
      kill "-$sig" -- "-$pid" 2>/dev/null || true
    else
      kill "-$sig" "$pid" 2>/dev/null || true
    fi
  done
}
alive() {
  local pid
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

log "stopping Keycloak (pid ${pids[*]})"
signal TERM
deadline=$((SECONDS + TIMEOUT))
while alive && ((SECONDS < deadline)); do
  sleep 0.5
done
if alive; then
  log "still alive after ${TIMEOUT}s, sending SIGKILL"
  signal KILL
  sleep 1
fi
rm -f "$PID_FILE"
log "stopped"

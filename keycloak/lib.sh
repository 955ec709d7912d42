# shellcheck shell=bash
# Shared by start.sh and stop.sh (sourced, not run). Expects STATE_DIR.

# Every JVM start.sh starts carries this marker on its command line, so that a
# pid file lost with a wiped state dir (or a recycled pid) cannot confuse
# start/stop.
MARKER="-Dauthgate.keycloak.state=$STATE_DIR"

# True when process $1 is a java whose arguments include exactly $MARKER.
is_our_java() {
  local -a args=()
  mapfile -d '' -t args <"/proc/$1/cmdline" 2>/dev/null || return 1
  ((${#args[@]} > 0)) && [[ "${args[0]##*/}" == java ]] || return 1
  local a
  for a in "${args[@]}"; do
    [[ "$a" == "$MARKER" ]] && return 0
  done
  return 1
}

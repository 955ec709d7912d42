# shellcheck shell=bash
# The proxies of the forward-auth suite (tests/contract/forward_auth.rs):
# real edges that ask authgate's `/auth/forward` before they pass a request
# on to a test upstream.
#   - nginx with `auth_request`: Debian's nginx (it must have been built
#     with the auth_request module; `nginx -V` says so)
#   - Caddy with `forward_auth`: built from its Go module with the
#     machine's go, once, into ${AUTHGATE_CACHE_DIR:-~/.cache/authgate}
# Each test starts private instances of them, configured for its own
# gateway (both start in milliseconds), so nothing runs here: this only
# makes sure the binaries are there and names them (proxies_env).
#
# Sourced by scripts/services.sh, whose helpers it uses (log, die,
# log_tail, nginx_bin from scripts/upstreams.sh).

CADDY_MODULE=github.com/caddyserver/caddy/v2
# Caddy v2.11.9 builds with Go 1.26.
CADDY_VERSION=v2.11.9
PROXIES_CACHE=${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}/proxies
CADDY_BIN=$PROXIES_CACHE/bin/caddy-$CADDY_VERSION

# nginx answers auth_request only when built with its module.
nginx_auth_request_check() {
  local nginx
  nginx=$(nginx_bin)
  "$nginx" -V 2>&1 | grep -q -- '--with-http_auth_request_module' ||
    die "$nginx has no auth_request module (install Debian's nginx, or libnginx-mod-http-auth-request where it is a module)"
}

# Builds Caddy from its Go module when the pinned binary is missing.
caddy_build() {
  [[ -x $CADDY_BIN ]] && return 0
  command -v go >/dev/null || die "go missing (Caddy is built from its Go module, go >= 1.26)"
  mkdir -p "$PROXIES_CACHE/bin"
  local logfile=$LOG_DIR/caddy-build.log
  log "caddy: building $CADDY_MODULE@$CADDY_VERSION into $CADDY_BIN (once; a few minutes)"
  # One builder at a time: several checkouts share the cache.
  (
    flock 9
    [[ -x $CADDY_BIN ]] && exit 0
    # Caches of its own, removed afterwards: the binary is all that is kept.
    export GOPATH=$PROXIES_CACHE/go GOMODCACHE=$PROXIES_CACHE/go/mod GOCACHE=$PROXIES_CACHE/go/build
    export GOFLAGS="-buildvcs=false -modcacherw" GOTOOLCHAIN=auto CGO_ENABLED=0
    GOBIN=$PROXIES_CACHE/go/bin go install -trimpath -ldflags "-s -w" "$CADDY_MODULE/cmd/caddy@$CADDY_VERSION" &&
      mv "$PROXIES_CACHE/go/bin/caddy" "$CADDY_BIN" &&
      rm -rf "$PROXIES_CACHE/go"
  ) 9>"$PROXIES_CACHE/.lock" >"$logfile" 2>&1 || {
    log_tail "$logfile"
    die "caddy: build failed (log: $logfile)"
  }
  "$CADDY_BIN" version >/dev/null || die "caddy: $CADDY_BIN does not run"
}

proxies_prepare() {
  nginx_auth_request_check
  caddy_build
}

proxies_status() {
  local rc=0
  if nginx_auth_request_check 2>/dev/null; then
    printf '%-19s ready    %s (auth_request)\n' proxy-nginx "$(nginx_bin)"
  else
    printf '%-19s missing  nginx with auth_request\n' proxy-nginx
    rc=3
  fi
  if [[ -x $CADDY_BIN ]]; then
    printf '%-19s ready    %s\n' proxy-caddy "$CADDY_BIN"
  else
    printf '%-19s missing  %s (built by start)\n' proxy-caddy "$CADDY_BIN"
    rc=3
  fi
  return "$rc"
}

proxies_env() {
  printf 'AUTHGATE_TEST_NGINX_BIN=%s\n' "$(nginx_bin)"
  printf 'AUTHGATE_TEST_CADDY_BIN=%s\n' "$CADDY_BIN"
}

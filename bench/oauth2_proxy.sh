#!/usr/bin/env bash
# oauth2-proxy as a point of comparison for authgate's bearer-token path: a
# request carrying `Authorization: Bearer <Keycloak access token>` is verified
# (RS256 signature against the realm's JWKS, issuer, expiry, audience) and
# proxied to the upstream; anything else is refused with 401.
#
# Usage:
#   bench/oauth2_proxy.sh install
#       Builds oauth2-proxy v7.15.6 with `go install` into
#       ${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}/bench/go/bin (GOPATH,
#       module and build caches live beside it, so a rerun is instant; nothing
#       is done when the binary there already reports v7.15.6). Progress goes
#       to stderr; the last line of stdout is the binary's absolute path. The
#       build log is bench/go/install.log in the cache directory.
#   bench/oauth2_proxy.sh run --port PORT --upstream URL --keycloak URL
#                             [--realm authgate] [--client-id authgate]
#                             [--client-secret authgate-dev-secret]
#       Execs oauth2-proxy in the foreground (the pid stays the caller's
#       child: read its CPU in /proc/<pid>, stop it with TERM), listening on
#       127.0.0.1:PORT, proxying to URL (give it without a path: a path in an
#       upstream URL becomes a routing prefix), trusting the issuer
#       URL/realms/REALM: discovery and JWKS are fetched from Keycloak at
#       start, after waiting for the discovery document and checking that it
#       names that issuer (use the base URL the tokens were obtained from:
#       Keycloak derives `iss` from it). Installs first when the binary is
#       missing.
#
# Answers: a valid bearer token -> the upstream's answer; no Authorization
# header, a malformed token, a bad signature, a wrong issuer (another realm),
# an expired token, a token issued to another client or one whose
# email_verified is false -> 401 with the JSON body {} (never a redirect to
# the login page, whatever the Accept header).
#
# Environment: AUTHGATE_CACHE_DIR (cache root, see above); GO (the go binary,
# default /usr/local/go/bin/go); AUTHGATE_O2P_WAIT (seconds `run` waits for
# Keycloak's discovery document, default 30); AUTHGATE_O2P_LOG=1 keeps
# oauth2-proxy's standard log (start-up lines, and why each refused request
# was refused; request and auth logs stay off). OAUTH2_PROXY_* variables,
# which oauth2-proxy would read as settings, are removed from its
# environment.
#
# Choices (checked against the v7.15.6 source):
#   --oidc-audience-claim=azp: Keycloak access tokens of client authgate
#       carry `aud: account` (the account client's roles; absent for some
#       clients) and `azp: authgate`. oauth2-proxy compares only the first
#       listed claim present in the token with --client-id (and
#       --oidc-extra-audience), so by default (`aud`) every Keycloak access
#       token is refused. Checking `azp` accepts exactly the tokens issued to
#       CLIENT_ID, without touching the realm; --oidc-extra-audience=account
#       would work too, but would accept a token issued to any client of the
#       realm that has the account roles. Keycloak ID tokens of the client
#       (aud and azp = CLIENT_ID) pass as well: oauth2-proxy ignores `typ`.
#   email: a token with `email_verified: false` is refused (401), e.g. a
#       client_credentials token of the service account. Users of this realm
#       (verifyEmail on) cannot get a password-grant token before their email
#       is verified, so --insecure-oidc-allow-unverified-email is not set.
#   --skip-claims-from-profile-url: never ask Keycloak's userinfo endpoint
#       for a claim the token lacks (the bearer path does not in v7.15.6;
#       this keeps it so).
#   Left as they are: identity headers to the upstream (X-Forwarded-User,
#       -Email, -Preferred-Username; --pass-user-headers, on by default) and
#       the Prometheus request metrics, which are counted for every request
#       even without --metrics-address.
#   Beware: a token with the realm's key id but a bad signature makes
#       oauth2-proxy fetch the realm's JWKS again (go-oidc's key rotation
#       rule), once per such request; only concurrent fetches are merged.
#       A load test of forged tokens therefore loads Keycloak too.
set -euo pipefail

VERSION=v7.15.6
MODULE=github.com/oauth2-proxy/oauth2-proxy/v7
GO=${GO:-/usr/local/go/bin/go}
CACHE_ROOT=${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}
GO_DIR=$CACHE_ROOT/bench/go
BIN=$GO_DIR/bin/oauth2-proxy
# Fixed, so that runs are alike; it only encrypts cookies, which the bearer
# path never sets. 32 bytes (an AES-256 key).
COOKIE_SECRET=Qm7vX2pLk9TzR4wN8cYhE1sJ6uDfA3gB

log() { printf '[oauth2_proxy %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf '[oauth2_proxy] ERROR: %s\n' "$*" >&2
  exit 1
}
usage() {
  sed -n '/^# Usage:/,/^#$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# True when $BIN exists and reports $VERSION.
installed() {
  local out
  [[ -x $BIN ]] || return 1
  out=$("$BIN" --version 2>/dev/null) || return 1
  [[ $out == "oauth2-proxy $VERSION "* ]]
}

cmd_install() {
  (($# == 0)) || usage
  if installed; then
    log "oauth2-proxy $VERSION already installed"
    printf '%s\n' "$BIN"
    return 0
  fi
  [[ -x $GO ]] || die "no go binary at $GO (set GO=...)"
  mkdir -p "$GO_DIR/bin"
  local build_log=$GO_DIR/install.log start=$SECONDS
  log "building oauth2-proxy $VERSION with $("$GO" env GOVERSION) (takes minutes on a cold cache; log: $build_log)"
  # Built like upstream's Makefile does: CGO_ENABLED=0, and the version
  # stamped with -X (a plain `go install` reports "undefined").
  # GOFLAGS=-modcacherw: the module cache stays deletable with rm -rf.
  # GOTOOLCHAIN=local: never try to download another Go toolchain.
  if ! env GOBIN="$GO_DIR/bin" GOPATH="$GO_DIR/path" \
    GOMODCACHE="$GO_DIR/path/pkg/mod" GOCACHE="$GO_DIR/build" \
    GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0 \
    "$GO" install -ldflags="-X $MODULE/pkg/version.VERSION=$VERSION" \
    "$MODULE@$VERSION" >"$build_log" 2>&1; then
    printf -- '--- last lines of %s ---\n' "$build_log" >&2
    tail -n 30 "$build_log" >&2 || true
    printf -- '---\n' >&2
    die "go install $MODULE@$VERSION failed"
  fi
  installed || die "$BIN does not report $VERSION after the build: $("$BIN" --version 2>&1 || true)"
  log "installed $("$BIN" --version) in $((SECONDS - start)) s"
  printf '%s\n' "$BIN"
}

# Waits up to AUTHGATE_O2P_WAIT (30) s for the realm's discovery document
# and checks that it names $1 as the issuer: oauth2-proxy fetches it once at
# start and, with standard logging off, would exit silently when it cannot.
check_issuer() {
  local issuer=$1 doc='' i
  for ((i = 0; i < ${AUTHGATE_O2P_WAIT:-30}; i++)); do
    doc=$(curl -fsS --max-time 5 "$issuer/.well-known/openid-configuration" 2>/dev/null) && break
    ((i == 0)) && log "waiting for $issuer/.well-known/openid-configuration"
    sleep 1
  done
  [[ -n $doc ]] || die "no OIDC discovery document at $issuer/.well-known/openid-configuration"
  [[ $doc == *"\"issuer\":\"$issuer\""* ]] ||
    die "the discovery document at $issuer does not name $issuer as its issuer (tokens must come from that same URL): $(grep -o '"issuer":"[^"]*"' <<<"$doc" || true)"
}

cmd_run() {
  local port='' upstream='' keycloak='' realm=authgate client_id=authgate
  local client_secret=authgate-dev-secret
  while (($# > 0)); do
    case $1 in
      --port | --upstream | --keycloak | --realm | --client-id | --client-secret)
        (($# >= 2)) || die "$1 needs a value"
        case $1 in
          --port) port=$2 ;;
          --upstream) upstream=$2 ;;
          --keycloak) keycloak=$2 ;;
          --realm) realm=$2 ;;
          --client-id) client_id=$2 ;;
          --client-secret) client_secret=$2 ;;
        esac
        shift 2
        ;;
      -h | --help) usage ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
    die "--port must be a TCP port, 1 to 65535 (got '$port')"
  fi
  port=$((10#$port))
  [[ $upstream =~ ^https?://[^/]+ ]] || die "--upstream must be an http(s) URL (got '$upstream')"
  [[ $keycloak =~ ^https?://[^/]+ ]] || die "--keycloak must be an http(s) URL (got '$keycloak')"
  [[ -n $realm && -n $client_id && -n $client_secret ]] || die "--realm, --client-id and --client-secret must not be empty"

  if ! installed; then
    log "oauth2-proxy $VERSION not installed yet: installing"
    cmd_install >/dev/null
  fi

  local issuer=${keycloak%/}/realms/$realm
  check_issuer "$issuer"

  local std_log=false
  [[ ${AUTHGATE_O2P_LOG:-0} == 1 ]] && std_log=true

  local -a args=(
    --http-address="127.0.0.1:$port"
    --upstream="$upstream"
    --provider=oidc
    --oidc-issuer-url="$issuer"
    --client-id="$client_id"
    --client-secret="$client_secret"
    # Bearer path: verify JWTs from the Authorization header (signature,
    # issuer, expiry, email_verified) and accept those whose azp is the
    # client id.
    --skip-jwt-bearer-tokens=true
    --oidc-audience-claim=azp
    --skip-claims-from-profile-url=true
    --email-domain='*'
    # Refusals: 401 JSON, never a redirect or sign-in page.
    --force-json-errors=true
    # Cookies: never set on the bearer path, but a secret is mandatory.
    --cookie-secret="$COOKIE_SECRET"
    --cookie-secure=false
    # No per-request logging.
    --request-logging=false
    --auth-logging=false
    --standard-logging="$std_log"
  )

  # Drop OAUTH2_PROXY_* settings inherited from the environment.
  local v
  while IFS= read -r v; do
    unset "$v"
  done < <(compgen -e | grep '^OAUTH2_PROXY_' || true)

  # With standard logging off, oauth2-proxy exits 1 without a word on a bad
  # setting: validate once with it on (no network; the last flag wins).
  local out
  if ! out=$("$BIN" "${args[@]}" --standard-logging=true --config-test 2>&1); then
    printf '%s\n' "$out" >&2
    die "oauth2-proxy rejected its configuration"
  fi

  log "oauth2-proxy on 127.0.0.1:$port -> $upstream (issuer $issuer, client $client_id)"
  exec "$BIN" "${args[@]}"
}

case ${1:-} in
  install)
    shift
    cmd_install "$@"
    ;;
  run)
    shift
    cmd_run "$@"
    ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac

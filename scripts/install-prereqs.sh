#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build authgate and run its
# integration-test servers. Only missing pieces are installed, so a second
# run is fast (scripts/test.sh and scripts/dev.sh run it every time).
# Rust, Node/npm, Python and Go must already be there; apt-get runs as root,
# or through sudo. (Keycloak itself is fetched by keycloak/start.sh.)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

log() { printf '[prereqs %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf '[prereqs] ERROR: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }
# Also in the sbin directories, which a user's PATH may leave out.
have_sbin() { have "$1" || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# ---- toolchains that must already be present
have cargo || die "cargo not found (Rust toolchain missing)"
have rustc || die "rustc not found (Rust toolchain missing)"
have node || die "node not found (Node.js missing; maildev needs node >= 18)"
have npm || die "npm not found"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || die "node $(node --version) too old: maildev needs node >= 18"
have python3 || die "python3 not found"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
  die "python3 $(python3 --version 2>&1) too old: need >= 3.9"
# The Go test upstream (tests/upstreams/go) routes with ServeMux patterns.
have go || die "go not found (Go toolchain missing; the Go test upstream needs go >= 1.22)"
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
((${go_minor:-0} >= 22)) || die "$(go env GOVERSION) too old: the Go test upstream needs go >= 1.22"

# ---- Debian packages, only when missing
missing=()
# The build: C code (aws-lc, SQLite, mimalloc, zstd) needs a C compiler;
# pingora's zlib-ng (libz-ng-sys) is built with cmake, which drives make.
# Nothing links OpenSSL (TLS is rustls on aws-lc), so neither libssl-dev
# nor pkg-config is needed.
if ! { have cc && have make; }; then missing+=(build-essential); fi
have cmake || missing+=(cmake)
# Test certificates (scripts/services.sh).
have openssl || missing+=(openssl)
have curl || missing+=(curl)
# keycloak/start.sh unpacks Keycloak's distribution.
have unzip || missing+=(unzip)
have_pkg ca-certificates || missing+=(ca-certificates)
if ! { have_sbin runuser && have setsid; }; then missing+=(util-linux); fi
# PostgreSQL server binaries (scripts/services.sh uses /usr/lib/postgresql/*/bin).
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
have psql || missing+=(postgresql-client)
# Redis for the tests (scripts/services.sh runs a private one).
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
# Keycloak (keycloak/start.sh): Java 17+ (Debian's default: 17 on bookworm,
# 21 on trixie) and Maven to fetch it.
have java || missing+=(default-jre-headless)
have mvn || missing+=(maven)
# nginx, one of the test upstreams (scripts/upstreams.sh runs a private one),
# and the forward-auth tests' proxy, which needs auth_request built in
# (Debian's nginx has it; some builds of nginx-light do not).
nginx_auth_request() {
  local nginx
  nginx=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
  [[ -x $nginx ]] && "$nginx" -V 2>&1 | grep -q -- '--with-http_auth_request_module'
}
if ! have_sbin nginx; then
  missing+=(nginx-light)
elif ! nginx_auth_request; then
  missing+=(nginx)
fi
# venv for scripts/mailbox.py (Debian's python3 needs python3-venv for it).
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)

if ((${#missing[@]})); then
  have apt-get || die "apt-get not found; install manually: ${missing[*]}"
  as_root=()
  if ((EUID != 0)); then
    have sudo || die "not root and no sudo: as root, run apt-get install ${missing[*]}"
    as_root=(sudo)
  fi
  log "apt-get install: ${missing[*]}"
  "${as_root[@]}" apt-get update -q
  # Debian starts an installed nginx (or redis-server) at once, on its
  # default port; a policy-rc.d that says no stops that for this install.
  policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    "${as_root[@]}" sh -c "printf '#!/bin/sh\\nexit 101\\n' >$policy && chmod +x $policy" && made_policy=1
  fi
  status=0
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}" || status=$?
  if ((made_policy)); then "${as_root[@]}" rm -f "$policy"; fi
  ((status == 0)) || die "apt-get install failed (exit $status)"
else
  log "all Debian packages present"
fi

# The Debian package may have created/started its own cluster; ours is separate
# (scripts/services.sh), so that one is left alone.
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || die "PostgreSQL server binaries still missing"
# Likewise Debian's own redis-server service (port 6379, if an init system
# started it); ours runs on its own port.
have redis-server || die "redis-server still missing"
have_sbin nginx || die "nginx still missing"
if ! nginx_auth_request; then
  log "nginx has no auth_request module: installing Debian's nginx"
  as_root=()
  ((EUID == 0)) || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx ||
    die "apt-get install nginx failed"
  nginx_auth_request || die "nginx still has no auth_request module (the forward-auth tests need it)"
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || die "python3 cannot create venvs (python3-venv)"
log "prerequisites ok"

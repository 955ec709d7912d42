#!/usr/bin/env bash
# Validates the deployment files statically (no Docker engine, no cluster):
#   docker-compose.yml   `docker compose config` (the real Compose, validating
#                        against the Compose specification), then consistency
#                        checks on its normalised output: health checks,
#                        depends_on service_healthy, host ports on 127.0.0.1,
#                        pinned images, mounted files, real setting names
#   deploy/k8s/          every manifest against the Kubernetes JSON schemas
#                        (kubernetes-validate, strict: unknown fields are
#                        errors) for Kubernetes $K8S_VERSIONS, then selectors,
#                        ports, probes, resources, PDB, Secret placeholders
#   deploy/k8s/optional/ the ServiceMonitor (a custom resource, for which no
#                        Kubernetes schema exists) decoded strictly into the
#                        Prometheus Operator's own Go API types; the
#                        forward-auth Ingress asks authgate's Service and
#                        passes on exactly the identity headers
#   deploy/helm/authgate `helm lint --strict`, then `helm template` with the
#                        default values and with ci/all-values.yaml: the
#                        same schema and consistency checks as deploy/k8s,
#                        and the same objects as deploy/k8s (the Secret is
#                        referenced, not rendered)
#   deploy/grafana/      the dashboard JSON parses; every query uses metric and
#                        label names that src/metrics.rs really exports
#   deploy/prometheus/   scrape configs: structure, targets, relabel regexes
#   Dockerfile           static sanity (pinned bases, non-root USER,
#                        HEALTHCHECK, COPY sources in the build context);
#                        deploy/docker/healthcheck.sh: bash -n
#   all YAML             yamllint (syntax, duplicate keys, indentation)
# Exits non-zero on any failure.
#
# Tools are installed on first use into
# ${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}/deploy-check (nothing
# system-wide): Compose and Helm built from their Go modules, the
# ServiceMonitor checker (deploy/tools/servicemonitor-check), and a Python venv with
# kubernetes-validate and yamllint. Needs go and python3.
#
# Environment (all optional):
#   DOCKER_COMPOSE          compose command to use instead, e.g. "docker compose"
#   CHECK_DEPLOY_VERBOSE=1  print every passed check, not only failures
#   AUTHGATE_CACHE_DIR      tool cache (default $HOME/.cache/authgate)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

CACHE_DIR=${AUTHGATE_CACHE_DIR:-$HOME/.cache/authgate}
TOOLS=$CACHE_DIR/deploy-check

# Pinned tool versions. Compose v5 is the current line of `docker compose`
# (the v2 plugin renamed); v5.6.0 builds with the machine's Go 1.26.8.
COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_VERSION=v5.6.0
PY_REQS=(kubernetes-validate==1.37.0 yamllint==1.38.0)
# Helm 3's current release (its go.mod asks Go 1.26).
HELM_MODULE=helm.sh/helm/v3
HELM_VERSION=v3.22.0
# The oldest Kubernetes with everything used on by default (preStop sleep,
# PDB unhealthyPodEvictionPolicy) and the newest schema bundled.
K8S_VERSIONS=1.31,1.37

log() { printf '[check-deploy %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() {
  printf '[check-deploy] ERROR: %s\n' "$*" >&2
  exit 1
}
phase() { printf '\n--- %s\n' "$*"; }

# Prints the last lines of a log file to stderr (for failure messages).
log_tail() {
  if [[ -f $1 ]]; then
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 30 "$1" >&2 || true
    printf -- '---\n' >&2
  fi
}

verbose=()
[[ ${CHECK_DEPLOY_VERBOSE:-0} == 1 ]] && verbose=(--verbose)

# ---------------------------------------------------------------- tools

# Go builds use their own module and build caches under $TOOLS, never ~/go.
go_env() {
  export GOPATH=$TOOLS/go
  export GOMODCACHE=$TOOLS/go/mod
  export GOCACHE=$TOOLS/go/build
  # -modcacherw: the module cache can be deleted with rm -rf.
  export GOFLAGS="-buildvcs=false -modcacherw"
  # A machine with an older Go fetches the required toolchain (itself a Go
  # module) instead of failing.
  export GOTOOLCHAIN=auto
  export CGO_ENABLED=0
}

ensure_compose() {
  local bin=$TOOLS/bin/docker-compose-$COMPOSE_VERSION
  if [[ -n ${DOCKER_COMPOSE:-} ]]; then
    read -r -a compose <<<"$DOCKER_COMPOSE"
    return 0
  fi
  if [[ ! -x $bin ]]; then
    command -v go >/dev/null || die "go not found (needed once, to build docker compose $COMPOSE_VERSION)"
    log "compose: building $COMPOSE_MODULE@$COMPOSE_VERSION (once; takes a few minutes)"
    local logfile=$TOOLS/compose-build.log dir
    (
      go_env
      # Its own module and build caches, removed afterwards (~800 MB that
      # nothing else uses; the binary is all that is kept).
      export GOMODCACHE=$TOOLS/go/mod-compose
      export GOCACHE=$TOOLS/go/build-compose
      # `go install pkg@version` refuses modules with exclude directives, as
      # Compose's go.mod has: build inside the downloaded module instead.
      dir=$(go mod download -json "$COMPOSE_MODULE@$COMPOSE_VERSION" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
      cd "$dir"
      go build -trimpath -ldflags "-s -w -X $COMPOSE_MODULE/internal.Version=$COMPOSE_VERSION" \
        -o "$bin.tmp" ./cmd
      rm -rf "$GOCACHE" "$GOMODCACHE"
    ) >"$logfile" 2>&1 || {
      log_tail "$logfile"
      die "compose: build failed (log: $logfile)"
    }
    mv "$bin.tmp" "$bin"
  fi
  compose=("$bin")
}

ensure_helm() {
  local bin=$TOOLS/bin/helm-$HELM_VERSION
  if [[ ! -x $bin ]]; then
    command -v go >/dev/null || die "go not found (needed once, to build helm $HELM_VERSION)"
    log "helm: building $HELM_MODULE@$HELM_VERSION (once; takes a few minutes)"
    local logfile=$TOOLS/helm-build.log
    (
      go_env
      # Its own module and build caches, removed afterwards: the binary is
      # all that is kept.
      local caches=("$TOOLS/go/mod-helm" "$TOOLS/go/build-helm" "$TOOLS/go/bin-helm")
      GOMODCACHE=${caches[0]} GOCACHE=${caches[1]} GOBIN=${caches[2]} go install -trimpath \
        -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "$HELM_MODULE/cmd/helm@$HELM_VERSION"
      mv "${caches[2]}/helm" "$bin.tmp"
      rm -rf "${caches[@]}"
    ) >"$logfile" 2>&1 || {
      log_tail "$logfile"
      die "helm: build failed (log: $logfile)"
    }
    mv "$bin.tmp" "$bin"
  fi
  helm=$bin
}

ensure_servicemonitor_check() {
  local src=$REPO/deploy/tools/servicemonitor-check hash bin
  hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  bin=$TOOLS/bin/servicemonitor-check-$hash
  if [[ ! -x $bin ]]; then
    command -v go >/dev/null || die "go not found (needed once, to build deploy/tools/servicemonitor-check)"
    log "servicemonitor-check: building (once per change of its sources)"
    local logfile=$TOOLS/servicemonitor-check-build.log
    (
      go_env
      cd "$src"
      go build -trimpath -o "$bin.tmp" .
    ) >"$logfile" 2>&1 || {
      log_tail "$logfile"
      die "servicemonitor-check: build failed (log: $logfile)"
    }
    mv "$bin.tmp" "$bin"
    # Older builds of the checker.
    find "$TOOLS/bin" -name 'servicemonitor-check-*' ! -name "${bin##*/}" -delete
  fi
  smcheck=$bin
}

ensure_venv() {
  local venv=$TOOLS/venv stamp=$TOOLS/venv/.authgate-reqs want
  want="${PY_REQS[*]}"
  if [[ -x $venv/bin/python && -f $stamp && $(<"$stamp") == "$want" ]]; then
    py=$venv/bin/python
    return 0
  fi
  command -v python3 >/dev/null || die "python3 not found"
  log "venv: creating $venv ($want)"
  local logfile=$TOOLS/pip-install.log
  rm -rf "$venv"
  if ! { python3 -m venv "$venv" &&
    "$venv/bin/pip" install --disable-pip-version-check -q "${PY_REQS[@]}"; } >"$logfile" 2>&1; then
    log_tail "$logfile"
    die "venv: pip install failed (log: $logfile)"
  fi
  echo "$want" >"$stamp"
  py=$venv/bin/python
}

# ---------------------------------------------------------------- checks

failed=()

# Runs one named check, recording a failure instead of stopping.
run_check() {
  local name=$1
  shift
  if ! "$@"; then
    failed+=("$name")
    printf 'FAILED: %s\n' "$name"
  fi
}

yamllint_check() {
  # shellcheck disable=SC2046
  "$TOOLS/venv/bin/yamllint" --strict -c deploy/tools/yamllint.yml $(yaml_files) &&
    echo "yamllint: $(yaml_files | wc -l) files ok"
}

healthcheck_syntax() {
  bash -n deploy/docker/healthcheck.sh && echo "healthcheck.sh: bash -n ok"
}

compose_checks() {
  local model
  model=$(mktemp)
  # Only the file's own defaults: the caller's AUTHGATE_PORT & co. must not
  # hide a problem (nor an .env file, which this repository does not have).
  if ! env -u AUTHGATE_PORT -u MAILDEV_PORT -u KEYCLOAK_PORT -u PROMETHEUS_PORT -u GRAFANA_PORT -u EDGE_PORT \
    -u AUTH_BACKEND -u SECRET_KEY -u LOG_FORMAT -u RUST_LOG \
    "${compose[@]}" -f docker-compose.yml config --quiet; then
    rm -f "$model"
    return 1
  fi
  echo "docker compose config: docker-compose.yml is valid ($("${compose[@]}" version --short 2>/dev/null || echo '?'))"
  env -u AUTHGATE_PORT -u MAILDEV_PORT -u KEYCLOAK_PORT -u PROMETHEUS_PORT -u GRAFANA_PORT -u EDGE_PORT \
    -u AUTH_BACKEND -u SECRET_KEY -u LOG_FORMAT -u RUST_LOG \
    "${compose[@]}" -f docker-compose.yml config --format json >"$model"
  local rc=0
  "$py" deploy/tools/check_deploy.py "${verbose[@]}" compose "$model" || rc=$?
  rm -f "$model"
  return "$rc"
}

# Helm's templates are not YAML until rendered (helm_checks lints the
# rendered output).
yaml_files() {
  find docker-compose.yml deploy -type f \( -name '*.yml' -o -name '*.yaml' \) \
    -not -path 'deploy/helm/*/templates/*' | sort
}

CHART=deploy/helm/authgate

helm_checks() {
  local out rc=0
  out=$(mktemp -d)
  if "$helm" lint --strict "$CHART" --kube-version "${K8S_VERSIONS%%,*}.0" >"$out/lint.log" 2>&1 &&
    "$helm" lint --strict "$CHART" --kube-version "${K8S_VERSIONS%%,*}.0" \
      -f "$CHART/ci/all-values.yaml" >>"$out/lint.log" 2>&1; then
    echo "helm lint --strict: ok (default values, ci/all-values.yaml)"
  else
    cat "$out/lint.log"
    rc=1
  fi
  # As for the oldest Kubernetes checked (the chart's kubeVersion).
  local template=("$helm" template authgate "$CHART" --namespace authgate --kube-version "${K8S_VERSIONS%%,*}.0")
  if "${template[@]}" >"$out/default.yaml" &&
    "${template[@]}" -f "$CHART/ci/all-values.yaml" >"$out/all.yaml" &&
    "${template[@]}" -f "$CHART/ci/all-values.yaml" --show-only templates/servicemonitor.yaml \
      >"$out/servicemonitor.yaml"; then
    echo "helm template: $(grep -c '^kind:' "$out/default.yaml") objects (default values), $(grep -c '^kind:' "$out/all.yaml") (ci/all-values.yaml)"
    if "$TOOLS/venv/bin/yamllint" --strict -c deploy/tools/yamllint.yml "$out/default.yaml" "$out/all.yaml"; then
      echo "yamllint: the rendered chart ok"
    else
      rc=1
    fi
    "$py" deploy/tools/check_deploy.py "${verbose[@]}" helm "$out/default.yaml" "$out/all.yaml" \
      --kubernetes-versions "$K8S_VERSIONS" || rc=1
    "$smcheck" "$out/servicemonitor.yaml" || rc=1
  else
    rc=1
  fi
  rm -rf "$out"
  return "$rc"
}

main() {
  local t0=$SECONDS
  mkdir -p "$TOOLS/bin"
  # One installer at a time (several checkouts share the cache).
  exec 9>"$TOOLS/.lock"
  flock 9
  ensure_venv
  ensure_compose
  ensure_helm
  ensure_servicemonitor_check
  flock -u 9
  log "tools ready ($((SECONDS - t0))s)"

  phase "YAML syntax (yamllint)"
  run_check yamllint yamllint_check

  phase "docker-compose.yml"
  run_check compose compose_checks

  phase "Kubernetes manifests (deploy/k8s, strict schemas for $K8S_VERSIONS)"
  run_check k8s "$py" deploy/tools/check_deploy.py "${verbose[@]}" k8s --kubernetes-versions "$K8S_VERSIONS"

  phase "Helm chart ($CHART: lint, the rendered objects, the same objects as deploy/k8s)"
  run_check helm helm_checks

  phase "ServiceMonitor (deploy/k8s/optional, Prometheus Operator API types, strict)"
  # shellcheck disable=SC2046 # file names without spaces
  run_check servicemonitor "$smcheck" $(grep -l '^kind: ServiceMonitor' deploy/k8s/optional/*.yaml)

  phase "Grafana dashboard (deploy/grafana) against src/metrics.rs"
  run_check dashboard "$py" deploy/tools/check_deploy.py "${verbose[@]}" dashboard

  phase "Prometheus configs (deploy/prometheus)"
  run_check prometheus "$py" deploy/tools/check_deploy.py "${verbose[@]}" prometheus
  # promtool would need the Prometheus Go module and its ~1.8 GB of
  # dependencies built here (unfinished after 19 minutes on a busy 2-core
  # machine).
  echo "note  promtool is not run (too slow to build); structure, targets and relabel regexes are checked above"

  phase "Dockerfile and deploy/docker/healthcheck.sh"
  run_check dockerfile "$py" deploy/tools/check_deploy.py "${verbose[@]}" dockerfile
  run_check healthcheck.sh healthcheck_syntax

  echo
  if ((${#failed[@]})); then
    log "FAILED: ${failed[*]} ($((SECONDS - t0))s)"
    exit 1
  fi
  log "all deployment checks passed ($((SECONDS - t0))s)"
}

main "$@"

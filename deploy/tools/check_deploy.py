#!/usr/bin/env python3
"""Consistency checks of the deployment files, run by scripts/check-deploy.sh.

The schema validators (docker compose, kubernetes-validate, the ServiceMonitor
check) say whether each file is well-formed on its own. This script checks
what they cannot see: that the files agree with each other and with
authgate's source (setting names in src/config/, metric and label names in
src/metrics.rs), and the project's rules (health checks everywhere, host
ports on 127.0.0.1 only, pinned images, no real secrets, probes, limits).

    check_deploy.py compose COMPOSE_JSON   # output of `docker compose config --format json`
    check_deploy.py k8s                    # deploy/k8s/**/*.yaml (schemas: --kubernetes-versions)
    check_deploy.py helm DEFAULT ALL       # deploy/helm/authgate rendered (`helm template`) with
                                           # its default values and with ci/all-values.yaml
    check_deploy.py dashboard              # deploy/grafana/**
    check_deploy.py prometheus             # deploy/prometheus/*.yml
    check_deploy.py dockerfile             # Dockerfile, .dockerignore

Each prints "FAIL ..." lines for problems (and with --verbose one "ok" line
per passed check), then a count, and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# Labels that Prometheus (static targets, Kubernetes discovery relabelling)
# adds to every series of a target.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "environment"}
# Settings read outside src/config/.
EXTRA_SETTINGS = {"RUST_LOG"}


class Report:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.passed = 0
        self.failures = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        if self.verbose:
            print(f"ok    {what}")

    def fail(self, what: str) -> None:
        self.failures += 1
        print(f"FAIL  {what}")

    def check(self, condition: bool, what: str, why: str = "") -> bool:
        if condition:
            self.ok(what)
        else:
            self.fail(f"{what}{': ' + why if why else ''}")
        return condition

    def note(self, what: str) -> None:
        print(f"note  {what}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def known_settings() -> set[str]:
    text = "".join(p.read_text() for p in sorted((REPO / "src" / "config").glob("*.rs")))
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', text)) | EXTRA_SETTINGS


def port_of(addr: str) -> int | None:
    match = re.fullmatch(r"\[?[0-9a-fA-F.:]*\]?:(\d+)", addr.strip())
    return int(match.group(1)) if match else None


# --------------------------------------------------------------- compose


def check_compose(r: Report, compose_json: Path) -> None:
    """Checks on the normalised model printed by `docker compose config`."""
    model = json.loads(compose_json.read_text())
    services: dict = model.get("services", {})
    r.check(bool(services), "compose: services defined")
    settings = known_settings()

    for name, svc in sorted(services.items()):
        hc = svc.get("healthcheck") or {}
        r.check(
            bool(hc.get("test")) and not hc.get("disable", False),
            f"compose: {name} has a health check",
        )
        image = svc.get("image", "")
        if "build" in svc:
            r.check(bool(image), f"compose: {name} (built here) names its image", "no image:")
        else:
            ref = image.rsplit("/", 1)[-1]
            pinned = ":" in ref and not ref.endswith(":latest") or "@sha256:" in image
            r.check(pinned, f"compose: {name} image {image} is pinned to a version")
        for port in svc.get("ports", []) or []:
            host_ip = port.get("host_ip", "")
            r.check(
                host_ip in ("127.0.0.1", "::1"),
                f"compose: {name} publishes {port.get('published')}->{port.get('target')} on the loopback address only",
                f"bound to {host_ip or 'all interfaces'}; publish ports as 127.0.0.1:HOST:CONTAINER",
            )
        for dep, spec in (svc.get("depends_on") or {}).items():
            r.check(dep in services, f"compose: {name} depends on existing service {dep}")
            r.check(
                spec.get("condition") == "service_healthy",
                f"compose: {name} waits for {dep} to be healthy",
                f"condition is {spec.get('condition')}",
            )
        for vol in svc.get("volumes", []) or []:
            if vol.get("type") == "bind":
                source = Path(vol["source"])
                r.check(source.exists(), f"compose: {name} mounts existing {rel(source)}")

    gate = services.get("authgate")
    if not r.check(gate is not None, "compose: service authgate exists"):
        return
    env: dict = gate.get("environment") or {}
    unknown = sorted(k for k in env if k not in settings)
    r.check(not unknown, "compose: authgate's environment names only real settings", f"unknown {unknown}")
    r.check(len(env.get("SECRET_KEY") or "") == 32, "compose: SECRET_KEY is 32 bytes")
    if "APP_HOST" in env:
        r.check(env["APP_HOST"] == "0.0.0.0", "compose: APP_HOST is 0.0.0.0 in the container")
    # Every dependency authgate is pointed at must be a service it waits for.
    hosts = {}
    for key in ("DATABASE_URL", "REDIS_URL", "KEYCLOAK_URL"):
        if env.get(key):
            hosts[key] = urlsplit(env[key]).hostname
    if env.get("SMTP_HOST"):
        hosts["SMTP_HOST"] = env["SMTP_HOST"]
    deps = gate.get("depends_on") or {}
    for key, host in sorted(hosts.items()):
        r.check(
            host in services and deps.get(host, {}).get("condition") == "service_healthy",
            f"compose: authgate waits for {host} ({key}) to be healthy",
        )
    metrics_port = port_of(env.get("METRICS_ADDR", "")) or int(env.get("APP_PORT", 5000))
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t
        for job in prom.get("scrape_configs", [])
        if job.get("job_name") == "authgate"
        for sc in job.get("static_configs", [])
        for t in sc.get("targets", [])
    ]
    r.check(
        targets == [f"authgate:{metrics_port}"],
        f"compose: Prometheus scrapes authgate:{metrics_port} (METRICS_ADDR)",
        f"deploy/prometheus/prometheus.yml has {targets}",
    )


# --------------------------------------------------------------- kubernetes


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def identity_headers() -> list[str]:
    """The identity headers authgate sets (src/edge/headers.rs IDENTITY)."""
    text = (REPO / "src" / "edge" / "headers.rs").read_text()
    block = re.search(r"pub const IDENTITY: \[&str; \d+\] = \[(.*?)\];", text, re.S)
    return re.findall(r'"([a-z-]+)"', block.group(1)) if block else []


def kustomize_objects() -> list[tuple[Path, dict]]:
    """The objects deploy/k8s/kustomization.yaml applies."""
    kz = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(K8S / name, doc) for name in kz.get("resources", []) for doc in load_docs(K8S / name)]


def validate_schemas(r: Report, objects: list[tuple[Path, dict]], versions: list[str], where: str = "k8s") -> None:
    """Every object, strict (unknown fields are errors), for each version."""
    import kubernetes_validate

    for path, doc in objects:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            r.note(f"{where}: {rel(path)} {kind}/{name}: custom resource, no Kubernetes schema; checked by servicemonitor-check")
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                r.ok(f"{where}: {rel(path)} {kind}/{name} valid for Kubernetes {version} (strict)")
            except kubernetes_validate.SchemaNotFoundError:
                r.fail(f"{where}: {rel(path)} {kind}/{name}: no schema for {doc.get('apiVersion')} {kind} in Kubernetes {version}")
            except kubernetes_validate.ValidationError as err:
                at = "/".join(str(p) for p in err.path) or "(top)"
                r.fail(f"{where}: {rel(path)} {kind}/{name} invalid for Kubernetes {version} at {at}: {err.message}")


def check_k8s(r: Report, versions: list[str]) -> None:
    files = sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))
    kustomization = K8S / "kustomization.yaml"
    objects: list[tuple[Path, dict]] = []
    for path in files:
        if path == kustomization:
            continue
        for doc in load_docs(path):
            objects.append((path, doc))
    validate_schemas(r, objects, versions)

    # kustomization.yaml lists every manifest of deploy/k8s (not optional/).
    kz = yaml.safe_load(kustomization.read_text())
    listed = set(kz.get("resources", []))
    present = {p.name for p in K8S.glob("*.yaml") if p != kustomization}
    r.check(listed == present, "k8s: kustomization.yaml lists every manifest", f"listed {sorted(listed)}, present {sorted(present)}")
    images = {i["name"] for i in kz.get("images", [])}
    check_workload(r, objects, images, "k8s")


def check_workload(r: Report, objects: list[tuple[Path, dict]], images: set[str], where: str, external_secret: bool = False) -> None:
    """The objects that run authgate agree with each other and with its
    source: selectors, ports, probes, resources, settings, PDB, Secrets
    (placeholders only), ServiceMonitors and forward-auth Ingresses."""
    by_kind: dict[str, list[dict]] = {}
    for path, doc in objects:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = by_kind.get("Deployment", [])
    if not r.check(len(deployments) == 1, f"{where}: one Deployment"):
        return
    dep = deployments[0]
    spec, pod = dep["spec"], dep["spec"]["template"]
    pod_labels = pod["metadata"].get("labels", {})
    r.check(matches(spec["selector"], pod_labels), f"{where}: Deployment selector matches its pod labels")
    r.check(spec.get("replicas", 1) >= 2, f"{where}: several replicas ({spec.get('replicas', 1)})")
    configmaps = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
    secrets = {d["metadata"]["name"]: d for d in by_kind.get("Secret", [])}
    accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}
    psec = pod["spec"].get("securityContext", {})
    r.check(psec.get("runAsNonRoot") is True, f"{where}: pods run as non-root")
    sa = pod["spec"].get("serviceAccountName")
    r.check(sa is None or sa in accounts, f"{where}: ServiceAccount {sa} is defined")

    settings = known_settings()
    env: dict[str, str] = {}
    containers = pod["spec"]["containers"]
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    for c in containers:
        cname = c["name"]
        r.check(c["image"] in images or ":" in c["image"], f"{where}: container {cname} image {c['image']} is set by kustomization.yaml or pinned")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            r.check(
                {"cpu", "memory"} <= set(res.get(kind, {})) if kind == "requests" else "memory" in res.get(kind, {}),
                f"{where}: container {cname} has resource {kind}",
            )
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
            get = c.get(probe, {}).get("httpGet", {})
            r.check(get.get("path") == path, f"{where}: {cname} {probe} is GET {path}", f"got {get.get('path')}")
            r.check(get.get("port") in ports or get.get("port") in ports.values(), f"{where}: {cname} {probe} port {get.get('port')} is a container port")
        csec = c.get("securityContext", {})
        r.check(csec.get("allowPrivilegeEscalation") is False and csec.get("readOnlyRootFilesystem") is True,
                f"{where}: {cname} has no privilege escalation and a read-only root filesystem")
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                ref = source["configMapRef"]["name"]
                if r.check(ref in configmaps, f"{where}: {cname} envFrom ConfigMap {ref} is defined"):
                    env.update(configmaps[ref].get("data", {}))
            if "secretRef" in source:
                ref = source["secretRef"]["name"]
                if external_secret:
                    r.check(ref not in secrets, f"{where}: {cname} envFrom Secret {ref} is brought by the operator, not rendered")
                elif r.check(ref in secrets, f"{where}: {cname} envFrom Secret {ref} is defined"):
                    env.update(secrets[ref].get("stringData", {}))
        for item in c.get("env", []):
            env[item["name"]] = item.get("value", "")

        unknown = sorted(k for k in env if k not in settings)
        r.check(not unknown, f"{where}: {cname}'s environment names only real settings", f"unknown {unknown}")
        r.check(env.get("APP_HOST") == "0.0.0.0", f"{where}: {cname} listens on 0.0.0.0 (APP_HOST)")
        r.check(port_of(f":{env.get('APP_PORT', '5000')}") == ports.get("http"), f"{where}: APP_PORT is the http container port")
        metrics_port = port_of(env.get("METRICS_ADDR", ""))
        r.check(metrics_port is not None and metrics_port == ports.get("metrics"),
                f"{where}: METRICS_ADDR port {metrics_port} is the metrics container port {ports.get('metrics')}")
        ann = pod["metadata"].get("annotations", {})
        r.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(ports.get("metrics"))
                and ann.get("prometheus.io/path") == "/metrics",
                f"{where}: pod annotations point Prometheus at the metrics port")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = int(env.get("SHUTDOWN_GRACE_SECONDS", "10"))
        term = pod["spec"].get("terminationGracePeriodSeconds", 30)
        r.check(term > pre + grace + 1,
                f"{where}: terminationGracePeriodSeconds {term} > preStop {pre} + SHUTDOWN_GRACE_SECONDS {grace} + 1")
        # ROUTES_FILE lies in a mounted ConfigMap that holds it (a
        # directory mount, so that the kubelet's swaps reach authgate).
        routes_file = env.get("ROUTES_FILE")
        if routes_file:
            mount = next((m for m in c.get("volumeMounts", []) if routes_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
            source = volumes.get(mount["name"], {}).get("configMap", {}) if mount else {}
            key = routes_file.rsplit("/", 1)[-1]
            r.check(bool(mount) and "subPath" not in mount and source.get("name") in configmaps
                    and key in configmaps[source["name"]].get("data", {}),
                    f"{where}: ROUTES_FILE {routes_file} is {key} of a ConfigMap mounted as a directory")
            text = configmaps.get(source.get("name"), {}).get("data", {}).get(key, "")
            try:
                import tomllib  # Python 3.11+
            except ImportError:
                r.note(f"{where}: the routes file's TOML is not checked (Python < 3.11)")
            else:
                try:
                    tomllib.loads(text)
                    r.ok(f"{where}: the routes file is TOML")
                except tomllib.TOMLDecodeError as err:
                    r.fail(f"{where}: the routes file is not TOML: {err}")
        # The TLS Secret is mounted optional: pods start without it.
        for v in volumes.values():
            if "secret" in v:
                r.check(v["secret"].get("optional") is True, f"{where}: Secret volume {v['name']} is optional")

    # Secrets in the repository are placeholders only.
    for name, secret in secrets.items():
        values = {**secret.get("stringData", {}), **secret.get("data", {})}
        real = sorted(k for k, v in values.items() if "REPLACE-ME" not in str(v))
        r.check(not real, f"{where}: Secret {name} holds placeholders only", f"{real} look like real values")
        key = values.get("SECRET_KEY", "")
        r.check(len(key) != 32, f"{where}: Secret {name}'s SECRET_KEY placeholder cannot start authgate (not 32 bytes)")

    services = by_kind.get("Service", [])
    for svc in services:
        sname = svc["metadata"]["name"]
        sel = svc["spec"].get("selector", {})
        r.check(bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items()), f"{where}: Service {sname} selects the authgate pods")
        cports = {p.get("name") for c in containers for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            r.check(p.get("targetPort") in cports, f"{where}: Service {sname} port {p.get('name')} targets container port {p.get('targetPort')}")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    r.check(bool(pdbs), f"{where}: a PodDisruptionBudget exists")
    for pdb in pdbs:
        r.check(matches(pdb["spec"]["selector"], pod_labels), f"{where}: PodDisruptionBudget {pdb['metadata']['name']} selects the authgate pods")
        mu = pdb["spec"].get("maxUnavailable")
        r.check(mu is None or (isinstance(mu, int) and mu < spec.get("replicas", 1)),
                f"{where}: PodDisruptionBudget leaves replicas running (maxUnavailable {mu})")
    for sm in by_kind.get("ServiceMonitor", []):
        smname = sm["metadata"]["name"]
        selected = [s for s in services if matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        r.check(bool(selected), f"{where}: ServiceMonitor {smname} selects the authgate Service")
        names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for ep in sm["spec"].get("endpoints", []):
            r.check(ep.get("port") in names, f"{where}: ServiceMonitor {smname} scrapes Service port {ep.get('port')}")
            r.check(ep.get("path", "/metrics") == "/metrics", f"{where}: ServiceMonitor {smname} path is /metrics")
    check_forward_auth_ingresses(r, by_kind.get("Ingress", []), services, where)


def check_forward_auth_ingresses(r: Report, ingresses: list[dict], services: list[dict], where: str) -> None:
    """An ingress-nginx Ingress using forward-auth asks authgate's Service at
    /auth/forward and passes on exactly authgate's identity headers."""
    wanted = identity_headers()
    r.check(len(wanted) == 5, f"{where}: identity headers read from src/edge/headers.rs ({wanted})")
    http_ports = {(s["metadata"]["name"], p["port"]) for s in services for p in s["spec"]["ports"] if p.get("name") == "http"}
    for ing in ingresses:
        ann = ing["metadata"].get("annotations", {}) or {}
        url = ann.get("nginx.ingress.kubernetes.io/auth-url")
        if url is None:
            continue
        name = ing["metadata"]["name"]
        parts = urlsplit(url)
        service = (parts.hostname or "").split(".")[0]
        r.check(parts.path == "/auth/forward", f"{where}: Ingress {name} auth-url asks /auth/forward", f"got {url}")
        r.check((service, parts.port or 80) in http_ports, f"{where}: Ingress {name} auth-url names authgate's Service and http port", f"got {url}, Services {sorted(http_ports)}")
        copied = [h.strip().lower() for h in ann.get("nginx.ingress.kubernetes.io/auth-response-headers", "").split(",") if h.strip()]
        r.check(sorted(copied) == sorted(wanted), f"{where}: Ingress {name} passes on exactly the identity headers", f"got {copied}")
        snippets = [k for k in ann if "snippet" in k]
        r.check(not snippets, f"{where}: Ingress {name} needs no snippet annotations", f"{snippets}")


def check_helm(r: Report, default: Path, everything: Path, versions: list[str]) -> None:
    """The chart rendered with its defaults renders the objects kustomize
    applies (the Secret aside, which the chart references), each as valid
    and as consistent; with every option on, the optional ones too."""
    rendered = [(default, d) for d in yaml.safe_load_all(default.read_text()) if d]
    validate_schemas(r, rendered, versions, "helm")
    check_workload(r, rendered, set(), "helm", external_secret=True)
    full = [(everything, d) for d in yaml.safe_load_all(everything.read_text()) if d]
    validate_schemas(r, full, versions, "helm (all on)")
    check_workload(r, full, set(), "helm (all on)", external_secret=True)

    kust = [d for _, d in kustomize_objects()]
    names = lambda docs: {(d["kind"], d["metadata"]["name"]) for d in docs}
    want = {k for k in names(kust) if k[0] != "Secret"}
    got = names(d for _, d in rendered)
    r.check(got == want, "helm: the default render has the objects of deploy/k8s (the Secret referenced)", f"missing {sorted(want - got)}, extra {sorted(got - want)}")
    by = lambda docs: {(d["kind"], d["metadata"]["name"]): d for d in docs}
    h, k = by(d for _, d in rendered), by(kust)

    def same(what: str, a, b) -> None:
        r.check(a == b, f"helm: {what} as in deploy/k8s", f"helm {a!r}, kustomize {b!r}")

    for key in sorted(want & got):
        kind, name = key
        hd, kd = h[key], k[key]
        if kind == "ConfigMap":
            same(f"ConfigMap {name} data", hd.get("data"), kd.get("data"))
        elif kind == "Service":
            same(f"Service {name} ports", hd["spec"]["ports"], kd["spec"]["ports"])
        elif kind == "ServiceAccount":
            same(f"ServiceAccount {name} token", hd.get("automountServiceAccountToken"), kd.get("automountServiceAccountToken"))
        elif kind == "PodDisruptionBudget":
            strip = lambda s: {x: v for x, v in s.items() if x != "selector"}
            same(f"PodDisruptionBudget {name}", strip(hd["spec"]), strip(kd["spec"]))
        elif kind == "Deployment":
            hs, ks = hd["spec"], kd["spec"]
            for field in ("replicas", "strategy", "revisionHistoryLimit"):
                same(f"Deployment {field}", hs.get(field), ks.get(field))
            hp, kp = hs["template"]["spec"], ks["template"]["spec"]
            for field in ("securityContext", "terminationGracePeriodSeconds", "automountServiceAccountToken", "serviceAccountName", "volumes"):
                same(f"pod {field}", hp.get(field), kp.get(field))
            spread = lambda p: [{x: v for x, v in t.items() if x != "labelSelector"} for t in p.get("topologySpreadConstraints", [])]
            same("pod topologySpreadConstraints", spread(hp), spread(kp))
            hc, kc = hp["containers"][0], kp["containers"][0]
            for field in ("args", "ports", "envFrom", "startupProbe", "livenessProbe", "readinessProbe", "lifecycle", "resources", "securityContext", "volumeMounts", "imagePullPolicy"):
                same(f"container {field}", hc.get(field), kc.get(field))

    # Every option on: the optional objects of deploy/k8s/optional too.
    optional = [d for p in sorted((K8S / "optional").glob("*.yaml")) for d in load_docs(p)]
    fd = [d for _, d in full]
    for kind in ("ServiceMonitor", "Ingress"):
        r.check(any(d["kind"] == kind for d in fd), f"helm (all on): renders a {kind}")
    for sm in (d for d in fd if d["kind"] == "ServiceMonitor"):
        ref = next((d for d in optional if d["kind"] == "ServiceMonitor"), {})
        same("ServiceMonitor endpoints", sm["spec"]["endpoints"], ref.get("spec", {}).get("endpoints"))
    ref_ing = next((d for d in optional if d["kind"] == "Ingress"), {})
    ref_ann = ref_ing.get("metadata", {}).get("annotations", {})
    for ing in (d for d in fd if d["kind"] == "Ingress" and "nginx.ingress.kubernetes.io/auth-url" in d["metadata"].get("annotations", {})):
        ann = ing["metadata"]["annotations"]
        for key in ("nginx.ingress.kubernetes.io/auth-method", "nginx.ingress.kubernetes.io/auth-response-headers"):
            same(f"forward-auth Ingress {ing['metadata']['name']} {key}", ann.get(key), ref_ann.get(key))


# --------------------------------------------------------------- metrics and the dashboard


def exported_metrics() -> dict[str, set[str]]:
    """Metric family -> label names, as registered in src/metrics.rs."""
    text = (REPO / "src" / "metrics.rs").read_text()
    prefix_match = re.search(r'new_custom\(\s*Some\(\s*"([a-z_]+)"', text)
    prefix = prefix_match.group(1) + "_" if prefix_match else ""
    families: dict[str, set[str]] = {}
    for kind, name, labels in re.findall(
        r'\b(counter|histogram)\(\s*"([a-z_:]+)",\s*"(?:[^"\\]|\\.)*",\s*&\[([^\]]*)\]', text
    ):
        labelset = set(re.findall(r'"([a-z_]+)"', labels))
        if kind == "histogram":
            families[prefix + name + "_bucket"] = labelset | {"le"}
            families[prefix + name + "_sum"] = labelset
            families[prefix + name + "_count"] = labelset
        else:
            families[prefix + name] = labelset
    for name in re.findall(r'Int(?:Gauge|Counter)::new\(\s*"([a-z_:]+)"', text):
        families[prefix + name] = set()
    return families


def check_expr(r: Report, where: str, expr: str, families: dict[str, set[str]], prefix: str) -> set[str]:
    used = set()
    problems = []
    names = set(re.findall(rf"\b({prefix}[a-zA-Z0-9_:]+)", expr))
    allowed = set(TARGET_LABELS)
    for name in names:
        if name not in families:
            problems.append(f"unknown metric {name}")
            continue
        used.add(name)
        allowed |= families[name]
    # Label matchers of each selector: metric{label="..."}.
    for name, matchers in re.findall(rf"\b({prefix}[a-zA-Z0-9_:]+)\{{([^}}]*)\}}", expr):
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers):
            if name in families and label not in families[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {label}")
    if names:
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            for label in (x.strip() for x in clause.split(",") if x.strip()):
                if label not in allowed:
                    problems.append(f"no label {label} on {sorted(names)}")
    r.check(not problems, f"dashboard: {where}", "; ".join(problems))
    return used


def check_dashboard(r: Report) -> None:
    families = exported_metrics()
    r.check(bool(families), f"metrics: {len(families)} series names read from src/metrics.rs")
    prefix = next(iter(families)).split("_", 1)[0] + "_" if families else "authgate_"
    dashboards = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
    r.check(bool(dashboards), "dashboard: deploy/grafana/dashboards has a dashboard")
    used: set[str] = set()
    unreadable = False
    for path in dashboards:
        try:
            dash = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            r.fail(f"dashboard: {rel(path)} is not JSON: {err}")
            unreadable = True
            continue
        r.ok(f"dashboard: {rel(path)} parses")
        r.check(bool(dash.get("uid")) and bool(dash.get("title")), f"dashboard: {rel(path)} has a uid and a title")
        variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
        for var in dash.get("templating", {}).get("list", []):
            query = var.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            if var.get("type") == "query" and query:
                used |= check_expr(r, f"variable ${var['name']}: {query}", query, families, prefix)
        panels = list(dash.get("panels", []))
        for p in list(panels):
            panels.extend(p.get("panels", []))
        ids = [p.get("id") for p in panels]
        r.check(len(ids) == len(set(ids)), f"dashboard: {rel(path)} panel ids are unique")
        for p in panels:
            if p.get("type") == "row":
                continue
            title = p.get("title", "?")
            ds = (p.get("datasource") or {}).get("uid", "")
            refs = set(re.findall(r"\$\{?(\w+)", ds))
            r.check(bool(ds) and refs <= variables, f"dashboard: panel '{title}' has a data source", f"uid {ds!r}")
            for t in p.get("targets", []):
                used |= check_expr(r, f"panel '{title}': {t.get('expr', '')}", t.get("expr", ""), families, prefix)
    unused = sorted(
        {re.sub(r"_(bucket|sum|count)$", "", n) for n in families}
        - {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    )
    if unused and not unreadable:
        r.note(f"dashboard: metrics not shown on any panel: {', '.join(unused)}")

    # Provisioning: the data source uid the dashboard defaults to, and the
    # dashboard path the compose stack mounts.
    ds_file = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    r.check(any(d.get("type") == "prometheus" and d.get("url") for d in ds_file.get("datasources", [])),
            "dashboard: a Prometheus data source is provisioned")
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "authgate.yml").read_text())
    paths = [pr.get("options", {}).get("path") for pr in prov.get("providers", [])]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"].get("volumes", [])
    r.check(any(m.startswith("./deploy/grafana/dashboards:") and m.split(":")[1] in paths for m in mounts),
            f"dashboard: the provider path {paths} is where compose mounts deploy/grafana/dashboards")


# --------------------------------------------------------------- prometheus


def check_prometheus(r: Report) -> None:
    for path in sorted((DEPLOY / "prometheus").glob("*.yml")):
        doc = yaml.safe_load(path.read_text()) or {}
        jobs = doc.get("scrape_configs", [])
        names = [j.get("job_name") for j in jobs]
        r.check(bool(jobs) and all(names) and len(names) == len(set(names)), f"prometheus: {rel(path)} has uniquely named scrape jobs {names}")
        allowed_top = {"global", "scrape_configs", "rule_files", "alerting", "remote_write", "remote_read", "storage", "tracing", "scrape_config_files", "otlp", "runtime"}
        extra = sorted(set(doc) - allowed_top)
        r.check(not extra, f"prometheus: {rel(path)} top-level keys are Prometheus settings", f"unknown {extra}")
        for job in jobs:
            bad = [t for sc in job.get("static_configs", []) for t in sc.get("targets", []) if not re.fullmatch(r"[A-Za-z0-9_.\-]+:\d+", t)]
            r.check(not bad, f"prometheus: {rel(path)} job {job.get('job_name')} targets are host:port", f"{bad}")
            for rc in job.get("relabel_configs", []):
                if "regex" in rc:
                    try:
                        re.compile(rc["regex"])
                    except re.error as err:
                        r.fail(f"prometheus: {rel(path)} job {job.get('job_name')} regex {rc['regex']!r}: {err}")
                        continue
                r.check(rc.get("action", "replace") in {"replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"},
                        f"prometheus: {rel(path)} job {job.get('job_name')} relabel action {rc.get('action', 'replace')}")


# --------------------------------------------------------------- Dockerfile


def check_dockerfile(r: Report) -> None:
    text = (REPO / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if len(l.split(None, 1)) > 1 else "")
                    for l in (x.strip() for x in lines) if l and not l.startswith("#")]
    args = {}
    for ins, rest in instructions:
        if ins == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args.setdefault(k.strip(), v.strip().strip('"'))
    stages = [rest for ins, rest in instructions if ins == "FROM"]
    r.check(len(stages) >= 2, f"Dockerfile: multi-stage ({len(stages)} stages)")
    stage_names = set()
    for rest in stages:
        image = rest.split()[0]
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if " AS " in rest.upper():
            stage_names.add(rest.split()[-1])
        tag = resolved.rsplit("/", 1)[-1]
        r.check(":" in tag and not tag.endswith(":latest") and "$" not in resolved,
                f"Dockerfile: base image {resolved} is pinned")
    # The last stage: what runs.
    last = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    final = instructions[last:]
    users = [rest for ins, rest in final if ins == "USER"]
    r.check(bool(users) and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile: runs as a non-root user ({users[-1] if users else 'root'})")
    r.check(any(ins == "HEALTHCHECK" and "NONE" not in rest.upper() for ins, rest in final), "Dockerfile: has a HEALTHCHECK")
    r.check(any(ins == "EXPOSE" and "5000" in rest.split() for ins, rest in final), "Dockerfile: EXPOSE 5000")
    r.check(any(ins == "ENV" and re.search(r"\bAPP_HOST=0\.0\.0\.0\b", rest) for ins, rest in final), "Dockerfile: APP_HOST=0.0.0.0")
    r.check(any(ins == "ENTRYPOINT" and "authgate" in rest for ins, rest in final), "Dockerfile: the entrypoint is authgate")
    # COPY sources exist in the repository and are in the build context.
    ignore = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]

    def in_context(path: str) -> bool:
        included = True
        for pattern in ignore:
            negate = pattern.startswith("!")
            pat = pattern[1:] if negate else pattern
            pat = pat.rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                included = negate
        return included

    for ins, rest in instructions:
        if ins not in ("COPY", "ADD"):
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        if any(p.startswith("--from") for p in rest.split()):
            from_stage = re.search(r"--from=(\S+)", rest).group(1)
            r.check(from_stage in stage_names, f"Dockerfile: COPY --from={from_stage} names a stage")
            continue
        for src in parts[:-1]:
            src = src.rstrip("/")
            r.check((REPO / src).exists(), f"Dockerfile: COPY source {src} exists")
            r.check(in_context(src), f"Dockerfile: COPY source {src} is not excluded by .dockerignore")
    # What the build needs besides the copied sources (include_str!, sqlx::migrate!).
    copied = {p.rstrip("/") for ins, rest in instructions if ins == "COPY" and "--from" not in rest for p in rest.split()[:-1] if not p.startswith("--")}
    needed = set()
    for src in (REPO / "src").rglob("*.rs"):
        code = src.read_text()
        code = code.split("#[cfg(test)]", 1)[0]
        for ref in re.findall(r'(?:include_str!|include_bytes!)\(\s*"([^"]+)"', code):
            needed.add((src.parent / ref).resolve().relative_to(REPO).parts[0])
        for ref in re.findall(r'sqlx::migrate!\(\s*"([^"]+)"', code):
            # Relative to the crate root (Cargo.toml's directory).
            needed.add(Path(ref).parts[0])
    missing = sorted(n for n in needed if n not in copied)
    r.check(not missing, f"Dockerfile: copies what the binary embeds ({', '.join(sorted(needed))})", f"missing {missing}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every passed check too")
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compose")
    c.add_argument("compose_json", type=Path)
    k = sub.add_parser("k8s")
    k.add_argument("--kubernetes-versions", default="1.31,1.37",
                   help="comma-separated Kubernetes versions to validate against")
    hl = sub.add_parser("helm")
    hl.add_argument("default", type=Path, help="helm template output with the chart's default values")
    hl.add_argument("everything", type=Path, help="helm template output with ci/all-values.yaml")
    hl.add_argument("--kubernetes-versions", default="1.31,1.37",
                    help="comma-separated Kubernetes versions to validate against")
    sub.add_parser("dashboard")
    sub.add_parser("prometheus")
    sub.add_parser("dockerfile")
    opts = parser.parse_args()
    r = Report(opts.verbose)
    if opts.what == "compose":
        check_compose(r, opts.compose_json)
    elif opts.what == "k8s":
        check_k8s(r, [v.strip() for v in opts.kubernetes_versions.split(",") if v.strip()])
    elif opts.what == "helm":
        check_helm(r, opts.default, opts.everything, [v.strip() for v in opts.kubernetes_versions.split(",") if v.strip()])
    elif opts.what == "dashboard":
        check_dashboard(r)
    elif opts.what == "prometheus":
        check_prometheus(r)
    elif opts.what == "dockerfile":
        check_dockerfile(r)
    print(f"{opts.what}: {r.passed} checks passed, {r.failures} failed")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())

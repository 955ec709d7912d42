#!/usr/bin/env python3
"""authgate's benchmark suite: every scenario in one run, one table.

Started by bench/run.sh, which builds the binaries, starts PostgreSQL and
Keycloak and installs the load generators first; run that, not this.

What runs (loopback only, each load bounded in time):

  native mode (PostgreSQL, legacy HS256 tokens)
    idle memory, then wrk at max throughput: the upstream directly, through
    a public route, through a bearer route, authgate's /health; the same
    against an upstream that takes SLOW_MS per answer; /users/me/ and
    /health at c=16; sign-in at c=16 against the PBKDF2 ceiling measured in
    the same run; /users/me/ alone and during a sign-in storm; oha at a fixed
    rate, the upstream directly and through the bearer route, with the CPU
    time authgate spent (and, with perf, how much of the latency added is
    authgate's own work: bench/own_time.py); memory holding 10 000 idle
    keep-alive connections; HTTPS with HTTP/1.1 and HTTP/2 (an authgate
    serving TLS itself, beside the same requests in clear, and nginx
    terminating TLS as the reference).
  keycloak mode (TOKEN_FORMAT=keycloak: Keycloak's RS256 tokens)
    /users/me/ and a bearer route at max throughput, oauth2-proxy in front of
    the same upstream with the same token, and the Keycloak calls authgate
    made meanwhile (from its /metrics).

Writes results.json, table.md, table.txt and chart.svg into the output
directory, prints the table, and exits 1 when a scenario failed (errors,
non-2xx answers) or, with --strict, when a target was missed.
"""

import argparse
import email
import email.policy
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chart  # noqa: E402  (bench/chart.py)
import own_time  # noqa: E402  (bench/own_time.py)

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes


class Proc:
    """A child process with its own log, stopped with TERM (then KILL)."""

    def __init__(self, name, argv, out_dir, env=None, cwd=None, stdin=None):
        self.name = name
        self.log_path = out_dir / f"{name}.log"
        self.log_file = open(self.log_path, "w")
        self.popen = subprocess.Popen(
            argv,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def tail(self, n=30):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def cpu_seconds(self):
        """User + system CPU time of the process and of the other processes
        of its group (nginx's workers), all their threads."""
        ticks = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(entry) == self.pid or int(fields[2]) == self.pid:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / CLK_TCK

    def rss_mb(self):
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 1e6

    def threads(self):
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def stop(self, grace=15):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop on TERM, killing")
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        self.log_file.close()


PROCS = []


def start(name, argv, out_dir, **kw):
    p = Proc(name, argv, out_dir, **kw)
    PROCS.append(p)
    return p


def stop_all():
    for p in reversed(PROCS):
        p.stop()
    PROCS.clear()


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def insecure_tls():
    """A TLS client context that takes the benchmark's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_http(url, proc, timeout=60, ok=(200,)):
    deadline = time.monotonic() + timeout
    context = insecure_tls() if url.startswith("https:") else None
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited during startup:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as err:
            if err.code in ok:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise BenchError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")


def http(method, url, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


# ---------------------------------------------------------------- load generators


def to_ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text or "")
    if not m:
        return None
    n = float(m.group(1))
    return n * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def cpu_times():
    """The machine's CPU time so far: (all, stolen by the hypervisor), in ticks."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    steal = fields[7] if len(fields) > 7 else 0
    return sum(fields[:8]), steal


class Load:
    """A running load generator, measured with the processes to account."""

    def __init__(self, name, argv, out_dir, parse, watch):
        self.name, self.parse, self.watch = name, parse, watch
        self.out = out_dir / f"load-{name}.txt"
        self.cpu0 = {p.name: p.cpu_seconds() for p in watch}
        self.machine0 = cpu_times()
        self.t0 = time.monotonic()
        self.file = open(self.out, "w")
        self.popen = subprocess.Popen(
            argv, stdout=self.file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait(self):
        rc = self.popen.wait()
        elapsed = time.monotonic() - self.t0
        cpu = {p.name: p.cpu_seconds() - self.cpu0[p.name] for p in self.watch}
        total, steal = (b - a for a, b in zip(self.machine0, cpu_times()))
        self.file.close()
        text = self.out.read_text(errors="replace")
        result = self.parse(text)
        result["rc"] = rc
        result["elapsed_s"] = round(elapsed, 2)
        requests = result.get("requests") or 0
        result["cpu_us_per_req"] = {
            k: round(v * 1e6 / requests, 1) if requests else None for k, v in cpu.items()
        }
        result["cpu_cores"] = {k: round(v / elapsed, 2) for k, v in cpu.items()}
        result["stolen_pct"] = round(100 * steal / total, 1) if total else None
        if rc != 0 or not requests:
            result["failed"] = f"exit {rc}, {requests} requests; see {self.out}"
        return result


def parse_wrk(text):
    r = {}
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    r["requests"] = int(m.group(1)) if m else 0
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        r[f"p{q}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return r


def parse_oha(text):
    start = text.find("{")
    try:
        data = json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        data = {}
    summary = data.get("summary", {})
    pct = data.get("latencyPercentiles", {})
    codes = data.get("statusCodeDistribution", {})
    ok = sum(n for code, n in codes.items() if str(code).startswith("2"))
    total = sum(codes.values())
    errors = sum(data.get("errorDistribution", {}).values())
    ms = lambda v: v * 1000 if isinstance(v, (int, float)) else None  # noqa: E731
    return {
        "rps": summary.get("requestsPerSec"),
        "requests": total + errors,
        "p50_ms": ms(pct.get("p50")),
        "p90_ms": ms(pct.get("p90")),
        "p99_ms": ms(pct.get("p99")),
        "non2xx": total - ok,
        "errors": errors,
    }


class Bench:
    def __init__(self, args, out):
        self.args, self.out = args, out
        self.rows = []  # every measured scenario, in order
        self.targets = []  # (id, title, value, goal, met)
        self.notes = []

    # -- wrk / oha

    def wrk(self, name, url, conns, seconds, watch, threads=2, headers=(), script=None,
            warmup=True, background=False):
        argv = ["wrk", "--latency", "-t", str(min(threads, conns)), "-c", str(conns),
                "--timeout", "10s"]
        for h in headers:
            argv += ["-H", h]
        if script:
            argv += ["-s", str(script)]
        if warmup and self.args.warmup > 0:
            subprocess.run(argv + ["-d", f"{self.args.warmup}s", url],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        log(f"wrk {name}: {seconds}s, c={conns}: {url}")
        load = Load(name, argv + ["-d", f"{seconds}s", url], self.out, parse_wrk, watch)
        return load if background else load.wait()

    def oha_max(self, name, url, conns, seconds, watch, headers=(), http2=False, parallel=1,
                warmup=True):
        """oha as fast as it can with `conns` connections (HTTP/2: `parallel`
        streams on each), certificates not checked."""
        argv = [self.args.oha, "--no-tui", "--output-format", "json", "--insecure",
                "-c", str(conns), "-w"]
        if http2:
            argv += ["--http2", "-p", str(parallel)]
        for h in headers:
            argv += ["-H", h]
        if warmup and self.args.warmup > 0:
            subprocess.run(argv + ["-z", f"{self.args.warmup}s", url],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        proto = f"h2 {conns}x{parallel}" if http2 else f"c={conns}"
        log(f"oha {name}: {seconds}s, {proto}: {url}")
        return Load(name, argv + ["-z", f"{seconds}s", url], self.out, parse_oha, watch).wait()

    def wants(self, group):
        return not self.args.only or group in self.args.only.split(",")

    def oha(self, name, url, rate, seconds, conns, watch, headers=(), warmup=True):
        argv = [self.args.oha, "--no-tui", "--output-format", "json", "-q", str(rate),
                "-c", str(conns), "--latency-correction", "-w"]
        for h in headers:
            argv += ["-H", h]
        if warmup and self.args.warmup > 0:  # connections and caches, at the same rate
            subprocess.run(argv + ["-z", f"{self.args.warmup}s", url],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        log(f"oha {name}: {rate} req/s for {seconds}s, c={conns}: {url}")
        return Load(name, argv + ["-z", f"{seconds}s", url], self.out, parse_oha, watch).wait()

    def record(self, key, group, label, result, **extra):
        row = {"key": key, "group": group, "label": label, **result, **extra}
        failed = row.get("failed")
        if not failed and (row.get("non2xx") or row.get("errors")):
            failed = f"{row.get('non2xx')} non-2xx, {row.get('errors')} socket errors"
        row["failed"] = failed
        self.rows.append(row)
        if failed:
            log(f"  {key}: FAILED: {failed}")
        else:
            p50, p99 = row.get("p50_ms"), row.get("p99_ms")
            log(f"  {key}: {fmt(row.get('rps'))} req/s, p50 {fmt(p50, 3)} ms, "
                f"p99 {fmt(p99, 3)} ms")
        return row

    def target(self, tid, title, value, goal, met, detail=""):
        self.targets.append({"id": tid, "title": title, "value": value, "goal": goal,
                             "met": bool(met), "detail": detail})
        log(f"target {tid}: {title}: {value} (goal {goal}): {'met' if met else 'MISSED'}")


def fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) and digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


# ---------------------------------------------------------------- setup


def psql(db_url, *sql):
    cmd = ["psql", db_url, "-q", "-v", "ON_ERROR_STOP=1", "-At"]
    for s in sql:
        cmd += ["-c", s]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def fresh_database(admin_url, name):
    psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    return admin_url.rsplit("/", 1)[0] + "/" + name


def start_authgate(name, args, out, env_extra, routes):
    port = free_port()
    scheme = "https" if "TLS_CERT_FILE" in env_extra else "http"
    url = f"{scheme}://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SMTP_", "AUTHGATE_TEST_", "KEYCLOAK_", "POSTGRES_"))}
    env.update({
        "SECRET_KEY": "bench-secret-key-0123456789abcde",
        "ROUTES_FILE": str(routes),
        "APP_HOST": HOST,
        "APP_PORT": str(port),
        "APP_URL": url,
        "MAIL_OUTBOX_DIR": str(out / f"outbox-{name}"),
        "RATE_LIMIT_SIGNUP_PER_IP": "off",
        "RATE_LIMIT_SIGNIN_PER_IP": "off",
        "RATE_LIMIT_SIGNIN_PER_ACCOUNT": "off",
        "RATE_LIMIT_EMAIL_PER_IP": "off",
        "RUST_LOG": "warn",
        "SHUTDOWN_GRACE_SECONDS": "1",
    })
    if args.workers:
        env["APP_WORKERS"] = str(args.workers)
    env.update(env_extra)
    # Run from the output folder so that no .env of the work tree is read.
    proc = start(name, [args.authgate, "serve"], out, env=env, cwd=out)
    wait_http(url + "/health", proc)
    return proc, url


def outbox_token(folder, kind):
    """The token of the newest `kind` mail in an outbox folder."""
    for _ in range(50):
        files = sorted(Path(folder).glob(f"*{kind}*.eml"), key=lambda p: p.stat().st_mtime)
        if files:
            msg = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    m = re.search(r"token=([A-Za-z0-9._~-]+)", part.get_content())
                    if m:
                        return m.group(1)
        time.sleep(0.1)
    raise BenchError(f"no {kind} mail with a token in {folder}")


def new_user(gw_url, outbox, who, verify):
    body = {"email": f"{who}@example.com", "username": who, "password": "benchmark-pass"}
    status, answer = http("POST", gw_url + "/users/signup", body)
    if status != 200:
        raise BenchError(f"signup {who}: {status} {answer}")
    if verify:
        token = outbox_token(outbox, "verification")
        status, answer = http("POST", gw_url + "/users/verify-email", {"token": token})
        if status != 200:
            raise BenchError(f"verify-email {who}: {status} {answer}")
    status, answer = http("POST", gw_url + "/users/signin",
                          {"username": body["email"], "password": body["password"]})
    if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
        raise BenchError(f"signin {who}: {status} {answer}")
    token = answer["access_token"]
    status, me = http("GET", gw_url + "/users/me/", headers={"Authorization": f"Bearer {token}"})
    if status != 200:
        raise BenchError(f"GET /users/me/ {who}: {status} {me}")
    return body, token


# Keycloak calls of the admin-event reader (and its service-account token),
# made in the background, not for a request.
BACKGROUND_KEYCLOAK_OPERATIONS = ("admin_events", "service_account_token")


def keycloak_calls(gw_url):
    """Calls authgate made to Keycloak so far, by operation (its /metrics)."""
    with urllib.request.urlopen(gw_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    calls = {}
    for m in re.finditer(r'^authgate_keycloak_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        op = re.search(r'operation="([^"]*)"', m.group(1))
        key = op.group(1) if op else "?"
        calls[key] = calls.get(key, 0) + int(float(m.group(2)))
    return calls


def pbkdf2_seconds(hash_time, stored, password, repeats=5):
    """Seconds of one verification of the stored hash with authgate's own
    PBKDF2 code (examples/hash_time.rs; fastest of `repeats`, one core), and
    the hash's rounds."""
    m = re.fullmatch(r"\$pbkdf2-sha256\$(\d+)\$([^$]+)\$([^$]+)", stored)
    if not m:
        raise BenchError(f"not a pbkdf2-sha256 hash: {stored[:20]}...")
    done = subprocess.run([hash_time, stored, password, str(repeats)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"hash_time: {done.stderr.strip()}")
    return float(done.stdout.strip()), int(m.group(1))


def openssl_pbkdf2_seconds(rounds, repeats=3):
    """The same with OpenSSL's implementation (Python's hashlib)."""
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        hashlib.pbkdf2_hmac("sha256", b"benchmark-pass", b"0123456789abcdef", rounds)
        d = time.perf_counter() - t
        best = d if best is None else min(best, d)
    return best


# ---------------------------------------------------------------- scenarios


NGINX_CONF = """worker_processes {workers};
daemon off;
pid {out}/nginx.pid;
error_log {out}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {out}/nginx-tmp/body;
  proxy_temp_path {out}/nginx-tmp/proxy;
  upstream app {{ server {upstream}; keepalive 64; }}
  server {{
    listen {listen};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def start_nginx(b, upstream_port):
    """nginx forwarding to the same upstream and doing nothing else: the
    reference for what any proxy costs on this machine. None without nginx."""
    a, out = b.args, b.out
    if not a.nginx:
        b.notes.append("reference proxy skipped (no nginx)")
        return None
    port = free_port()
    (out / "nginx-tmp").mkdir(exist_ok=True)
    conf = out / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=a.workers or os.cpu_count() or 1, out=out,
                                      upstream=f"{HOST}:{upstream_port}",
                                      listen=f"{HOST}:{port}"))
    proc = start("nginx", [a.nginx, "-p", str(out), "-c", str(conf), "-e",
                           str(out / "nginx-error.log")], out)
    url = f"http://{HOST}:{port}"
    wait_http(url + "/bench", proc)
    return proc, url


def start_relay(b, upstream_port):
    """examples/tcp_relay in front of the same upstream: bytes copied both
    ways, no HTTP, one thread. The floor of what any proxy costs on this
    machine. None without the binary."""
    a, out = b.args, b.out
    if not a.relay:
        b.notes.append("byte-relay floor skipped (no --relay)")
        return None
    proc = start("tcp-relay", [a.relay, "--port", "0", "--to", f"{HOST}:{upstream_port}"], out)
    port = listening_port(proc)
    url = f"http://{HOST}:{port}"
    wait_http(url + "/bench", proc)
    return proc, url


def listening_port(proc):
    """The port a program that prints `listening on 127.0.0.1:<port>` took."""
    for _ in range(100):
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.log_path.read_text())
        if m:
            return int(m.group(1))
        if not proc.alive():
            break
        time.sleep(0.1)
    raise BenchError(f"{proc.name} did not start:\n{proc.tail()}")


class Native:
    """The native-mode authgate under test and what the scenarios share."""

    def __init__(self, b, upstream_port, admin_url):
        a, out = b.args, b.out
        self.up = f"http://{HOST}:{upstream_port}"
        routes = out / "routes.toml"
        routes.write_text(
            f'[[routes]]\nprefix = "/pub"\nupstreams = ["{HOST}:{upstream_port}"]\n'
            'policy = "public"\n\n'
            f'[[routes]]\nprefix = "/api"\nupstreams = ["{HOST}:{upstream_port}"]\n'
            'policy = "authenticated"\n'
        )
        self.db_url = fresh_database(admin_url, "authgate_bench")
        self.gw, self.url = start_authgate(
            "authgate-native", a, out, {"AUTH_BACKEND": "native", "DATABASE_URL": self.db_url},
            routes)
        time.sleep(2)
        self.idle_rss = self.gw.rss_mb()
        b.notes.append(f"native authgate: {self.gw.threads()} threads when idle")
        self.body, token = new_user(self.url, out / "outbox-authgate-native", "bench", verify=True)
        self.bearer = [f"Authorization: Bearer {token}"]
        self.watch = [self.gw, b.upstream]
        self.nginx = start_nginx(b, upstream_port)
        if self.nginx:
            self.watch.append(self.nginx[0])
        self.relay = start_relay(b, upstream_port)
        if self.relay:
            self.watch.append(self.relay[0])
        self.signin_lua = out / "signin.lua"
        self.signin_lua.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.body = \'{{"username": "{self.body["email"]}", '
            f'"password": "{self.body["password"]}"}}\'\n'
        )


def references(n):
    """The proxies started beside authgate, as (row suffix, name, process name,
    row label, url): nginx (rows a2, n2) and the byte relay (a3, n3)."""
    return [(suffix, name, proc, label, started[1]) for suffix, name, proc, label, started in (
        ("2", "nginx", "nginx", "reference: nginx, forwarding only", n.nginx),
        ("3", "byte relay", "tcp-relay", "floor: byte relay, no HTTP", n.relay)) if started]


def throughput(b, n):
    """Max req/s: the upstream directly, a public and a bearer route, /health;
    then against an upstream that takes SLOW_MS per answer (an app)."""
    a, d, c, up, url, watch = b.args, b.args.duration, b.args.connections, n.up, n.url, n.watch
    r_a = b.record("a", "throughput", "upstream directly: GET /bench",
                   b.wrk("a-direct", up + "/bench", c, d, watch))
    r_b = b.record("b", "throughput", "authgate, public route: GET /pub/bench",
                   b.wrk("b-public", url + "/pub/bench", c, d, watch))
    r_c = b.record("c", "throughput", "authgate, bearer route: GET /api/bench",
                   b.wrk("c-bearer", url + "/api/bench", c, d, watch, headers=n.bearer))
    r_d = b.record("d", "throughput", "authgate: GET /health",
                   b.wrk("d-health", url + "/health", c, d, watch))
    refs = [(name, b.record(f"a{suffix}", "throughput", f"{label}: GET /bench",
                            b.wrk(f"a{suffix}-{proc}", ref_url + "/bench", c, d, watch)))
            for suffix, name, proc, label, ref_url in references(n)]
    for r in [r_b, r_c, r_d] + [row for _, row in refs]:
        r["vs"] = ("a", ratio(r["rps"], r_a["rps"]))
    ref_a = "; ".join(f"{name}: {fmt(row['vs'][1], 2)}" for name, row in refs)
    slow = f"/slow?ms={a.slow_ms}"
    r_e = b.record("e", "app upstream", f"upstream directly: GET {slow}",
                   b.wrk("e-direct-slow", up + slow, a.slow_conns, d, watch))
    r_f = b.record("f", "app upstream", f"authgate, bearer route: GET /api{slow}",
                   b.wrk("f-bearer-slow", url + "/api" + slow, a.slow_conns, d, watch,
                         headers=n.bearer))
    r_f["vs"] = ("e", ratio(r_f["rps"], r_e["rps"]))
    ref_e = ""
    if n.nginx:
        r_e2 = b.record("e2", "app upstream", f"reference: nginx, forwarding only: GET {slow}",
                        b.wrk("e2-nginx-slow", n.nginx[1] + slow, a.slow_conns, d, watch))
        r_e2["vs"] = ("e", ratio(r_e2["rps"], r_e["rps"]))
        ref_e = f" (nginx: {fmt(r_e2['vs'][1], 2)})"
    b.target("4a", "bearer route ÷ upstream directly, max req/s (trivial upstream)",
             fmt(r_c["vs"][1], 2) + (f" ({ref_a})" if ref_a else ""), "≥ 0.85",
             (r_c["vs"][1] or 0) >= 0.85)
    b.target("4b", "bearer route ÷ upstream directly, max req/s "
             f"(upstream answering in {a.slow_ms} ms)",
             fmt(r_f["vs"][1], 2) + ref_e, "≥ 0.85", (r_f["vs"][1] or 0) >= 0.85)


def api(b, n):
    """GET /users/me/ against authgate's own /health, c=16."""
    d, url, watch = b.args.duration, n.url, n.watch
    r_g = b.record("g", "api c=16", "authgate: GET /health",
                   b.wrk("g-health16", url + "/health", 16, d, watch))
    r_h = b.record("h", "api c=16", "authgate: GET /users/me/ +bearer",
                   b.wrk("h-me16", url + "/users/me/", 16, d, watch, headers=n.bearer))
    r_h["vs"] = ("g", ratio(r_h["rps"], r_g["rps"]))
    b.target(1, "GET /users/me/ ÷ GET /health, req/s at c=16", fmt(r_h["vs"][1], 2), "≥ 0.70",
             (r_h["vs"][1] or 0) >= 0.70 and not r_h["failed"])


def signin(b, n):
    """POST /users/signin at c=16 against the PBKDF2 ceiling of this run."""
    a = b.args
    stored = psql(n.db_url, f"SELECT password FROM users WHERE email = '{n.body['email']}'")
    one, rounds = pbkdf2_seconds(a.hash_time, stored, n.body["password"])
    openssl = openssl_pbkdf2_seconds(rounds)
    fastest = min(one, openssl)
    cores = os.cpu_count() or 1
    ceiling = cores / fastest
    r_i = b.record("i", "sign-in", "authgate: POST /users/signin, c=16",
                   b.wrk("i-signin", n.url + "/users/signin", 16, a.signin_duration, n.watch,
                         script=n.signin_lua),
                   ceiling=ceiling)
    r_i["vs"] = ("ceiling", ratio(r_i["rps"], ceiling))
    b.notes.append(
        f"PBKDF2-HMAC-SHA256 at {rounds} rounds on one core: {one * 1000:.0f} ms with "
        f"authgate's code, {openssl * 1000:.0f} ms with OpenSSL (Python's hashlib); ceiling = "
        f"{cores} cores ÷ the faster = {ceiling:.1f} sign-ins/s")
    b.target(2, f"sign-in req/s ÷ PBKDF2 ceiling ({ceiling:.1f}/s), c=16",
             fmt(r_i["vs"][1], 2), "≥ 0.75, no errors",
             (r_i["vs"][1] or 0) >= 0.75 and not r_i["failed"])


def isolation(b, n):
    """GET /users/me/ alone, then during a sign-in storm (c=16 on sign-in):
    max req/s with wrk, and the latency at a fixed rate with oha."""
    a, d, url, watch = b.args, b.args.duration, n.url, n.watch
    me = url + "/users/me/"

    def storm(name):
        load = b.wrk(name, url + "/users/signin", 16, d + 4, watch, script=n.signin_lua,
                     warmup=False, background=True)
        time.sleep(2)
        return load

    r_j = b.record("j", "isolation", "GET /users/me/ alone, c=16",
                   b.wrk("j-me-alone", me, 16, d, watch, headers=n.bearer))
    load = storm("k-storm")
    r_k = b.record("k", "isolation", "GET /users/me/ during a sign-in storm, c=16",
                   b.wrk("k-me-storm", me, 16, d, watch, headers=n.bearer, warmup=False))
    r_ks = b.record("k2", "isolation", "the storm: POST /users/signin, c=16", load.wait())
    r_k["vs"] = ("j", ratio(r_k["rps"], r_j["rps"]))
    rate = a.iso_rate
    r_l = b.record("l", "isolation", f"GET /users/me/ alone at {rate}/s",
                   b.oha("l-me-rate", me, rate, d, a.rate_connections, watch, headers=n.bearer))
    load = storm("m-storm")
    r_m = b.record("m", "isolation", f"GET /users/me/ at {rate}/s during a sign-in storm",
                   b.oha("m-me-rate-storm", me, rate, d, a.rate_connections, watch,
                         headers=n.bearer, warmup=False))
    r_ms = b.record("m2", "isolation", "the storm: POST /users/signin, c=16", load.wait())
    r_m["vs"] = ("l (p99)", ratio(r_m["p99_ms"], r_l["p99_ms"]))
    ok = not any(r["failed"] for r in (r_k, r_ks, r_m, r_ms))
    b.target(3, f"/users/me/ during a sign-in storm: p99 at {rate} req/s; max req/s ÷ alone",
             f"{fmt(r_m['p99_ms'], 2)} ms; {fmt(r_k['vs'][1], 2)}", "< 5 ms; ≥ 0.50",
             ok and (r_m["p99_ms"] or 1e9) < 5 and (r_k["vs"][1] or 0) >= 0.5)


def merge_rounds(runs):
    """One row's figures from its interleaved rounds: the median of each
    latency and CPU figure, the sums of the counts."""
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    row = {q: med([r[q] for r in runs if r.get(q) is not None])
           for q in ("p50_ms", "p90_ms", "p99_ms", "stolen_pct")}
    row["rps"] = med([r["rps"] for r in runs if r.get("rps") is not None])
    for q in ("requests", "non2xx", "errors"):
        row[q] = sum(r.get(q) or 0 for r in runs)
    row["rc"] = max(r.get("rc") or 0 for r in runs)
    row["elapsed_s"] = round(sum(r.get("elapsed_s") or 0 for r in runs), 2)
    for field in ("cpu_us_per_req", "cpu_cores"):
        names = {k for r in runs for k in r.get(field, {})}
        row[field] = {k: med([r[field][k] for r in runs if r[field].get(k) is not None])
                      for k in sorted(names)}
    row["rounds"] = [{q: r.get(q) for q in ("p50_ms", "p99_ms")} for r in runs]
    row["failed"] = next((r["failed"] for r in runs if r.get("failed")), None)
    return row


def fixed_rate(b, n):
    """The upstream directly and through each proxy at RATE req/s, in
    RATE_ROUNDS interleaved rounds (each proxy measured right after the
    upstream alone, so that drift in the machine hits both alike): latency
    added, and each proxy's CPU time per request. Figures are medians over
    the rounds; the latency added is the median of the per-round
    differences."""
    a, d, watch = b.args, b.args.duration, n.watch
    rate, fc = a.rate, a.rate_connections
    subjects = [("n", "direct", f"upstream directly at {rate}/s", n.up + "/bench", (), None),
                ("o", "bearer", f"authgate bearer route at {rate}/s", n.url + "/api/bench",
                 n.bearer, "authgate-native")]
    subjects += [(f"n{suffix}", proc, f"{label}, at {rate}/s", ref_url + "/bench", (), proc)
                 for suffix, name, proc, label, ref_url in references(n)]
    runs = {key: [] for key, *_ in subjects}
    for i in range(a.rate_rounds):
        for key, short, _, url, headers, _ in subjects:
            runs[key].append(b.oha(f"{key}-{short}-rate-{i + 1}", url, rate, d, fc, watch,
                                   headers=headers))
    rows = {key: b.record(key, "fixed rate", label, merge_rounds(runs[key]))
            for key, _, label, *_ in subjects}

    def added_us(key):
        pairs = list(zip(runs[key], runs["n"]))
        return {q: statistics.median((r[q] - d[q]) * 1000 for r, d in pairs)
                for q in ("p50_ms", "p99_ms")
                if all(r.get(q) is not None and d.get(q) is not None for r, d in pairs)}

    for key, row in rows.items():
        if key != "n":
            row["added_us"] = added_us(key)
    added = rows["o"]["added_us"]
    refs = []
    for suffix, name, proc, _, _ in references(n):
        row = rows[f"n{suffix}"]
        theirs = row["added_us"]
        refs.append(f"{name}: +{fmt(theirs.get('p50_ms'), 0)} µs, "
                    f"+{fmt(theirs.get('p99_ms'), 0)} µs; "
                    f"{fmt(row['cpu_us_per_req'].get(proc), 1)} µs")
    ref = f" ({'; '.join(refs)})" if refs else ""
    cpu = rows["o"]["cpu_us_per_req"].get("authgate-native")
    b.target(4, f"latency added at {rate} req/s: p50, p99; authgate CPU per request",
             f"+{fmt(added.get('p50_ms'), 0)} µs, +{fmt(added.get('p99_ms'), 0)} µs; "
             f"{fmt(cpu, 1)} µs" + ref, "< 100 µs, < 1000 µs",
             added.get("p50_ms", 1e9) < 100 and added.get("p99_ms", 1e9) < 1000
             and not rows["o"]["failed"] and not rows["n"]["failed"],
             detail=f"median over {a.rate_rounds} interleaved rounds")
    if a.perf:
        where_added_latency_goes(b, n, rows)


def where_added_latency_goes(b, n, rows):
    """One more round of row o with `perf trace` on authgate: how much of the
    latency it adds is its own work (bench/own_time.py)."""
    a = b.args
    url = n.url + "/api/bench"
    load = lambda: b.oha("o-trace", url, a.rate, a.duration, a.rate_connections,  # noqa: E731
                         n.watch, headers=n.bearer, warmup=False)
    result, why = own_time.measure(a.perf, n.gw.pid, int(n.up.rsplit(":", 1)[1]),
                                   b.out / "o-trace.txt", load)
    if why:
        b.notes.append(f"where authgate's added latency goes: not measured ({why})")
        return
    rows["o"]["own_us"] = result
    own = result["request_p50_us"] + result["answer_p50_us"]  # both measured: requests > 0
    added = rows["o"]["added_us"].get("p50_ms")
    relay = rows.get("n3", {}).get("added_us", {}).get("p50_ms")
    floor = f"; the byte relay, which does no work, adds +{fmt(relay, 0)} µs" if relay else ""
    b.notes.append(
        f"where authgate's added latency goes at {a.rate} req/s (perf trace of its sendto and "
        f"recvfrom over {result['requests']} requests of one more round of o): its own work "
        f"from reading a request to sending it upstream {fmt(result['request_p50_us'], 0)} µs "
        f"(p90 {fmt(result['request_p90_us'], 0)}), from reading the answer to sending it on "
        f"{fmt(result['answer_p50_us'], 0)} µs (p90 {fmt(result['answer_p90_us'], 0)}), at p50: "
        f"about {fmt(own, 0)} of the +{fmt(added, 0)} µs added. The rest is the second trip "
        f"through the loopback and the wake-ups on the way{floor}")


def memory(b, n):
    """Resident size idle (after start), after the load, and holding
    IDLE_CONNECTIONS idle keep-alive connections."""
    a, out, gw = b.args, b.out, n.gw
    busy_rss = gw.rss_mb()
    holder = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "idle_conns.py"), "--port",
         n.url.rsplit(":", 1)[1], "--count", str(a.idle_connections), "--hold", "120"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=open(out / "idle-conns.log", "w"), text=True, start_new_session=True)
    line = holder.stdout.readline().split()
    if len(line) != 3 or line[0] != "ready":
        holder.kill()
        raise BenchError(f"idle_conns.py: {line}; see {out / 'idle-conns.log'}")
    opened, failed = int(line[1]), int(line[2])
    time.sleep(3)
    conns_rss = gw.rss_mb()
    time.sleep(2)
    holder.stdin.close()
    closed = holder.stdout.readline().split()
    holder.wait(30)
    still = int(closed[1]) if len(closed) == 2 else 0
    problem = None
    if failed or still != opened:
        problem = f"{failed} connections failed, {opened - still} dropped"
    b.rows.append({"key": "r", "group": "memory", "label": "resident size (MB)",
                   "idle_mb": n.idle_rss, "after_load_mb": busy_rss, "conns_mb": conns_rss,
                   "conns": opened, "conns_kept": still, "failed": problem})
    b.target("6a", "resident size idle", f"{n.idle_rss:.1f} MB", "< 50 MB", n.idle_rss < 50)
    b.target("6b", f"resident size holding {opened} idle keep-alive connections",
             f"{conns_rss:.1f} MB ({still} kept open)", "< 150 MB",
             conns_rss < 150 and opened == a.idle_connections and still == opened)


def shared_denylist(b, n):
    """/users/me/ and the bearer route with REDIS_URL set: the shared deny-list
    of ended sessions asked on every authenticated request, against the same
    rows without Redis (rows h and c, when measured in this run)."""
    a, d = b.args, b.args.duration
    if not a.redis_url:
        b.notes.append("redis rows skipped (no Redis URL)")
        return
    gw, url = start_authgate(
        "authgate-redis", a, b.out,
        {"AUTH_BACKEND": "native", "DATABASE_URL": n.db_url, "REDIS_URL": a.redis_url},
        b.out / "routes.toml")
    watch = [gw, b.upstream]
    try:
        r_hr = b.record("hr", "redis", "authgate +REDIS_URL: GET /users/me/ +bearer, c=16",
                        b.wrk("hr-me16-redis", url + "/users/me/", 16, d, watch,
                              headers=n.bearer))
        r_cr = b.record("cr", "redis", "authgate +REDIS_URL, bearer route: GET /api/bench",
                        b.wrk("cr-bearer-redis", url + "/api/bench", a.connections, d, watch,
                              headers=n.bearer))
        for row, base in ((r_hr, "h"), (r_cr, "c")):
            same = next((r for r in b.rows if r["key"] == base), None)
            if same:
                row["vs"] = (base, ratio(row["rps"], same["rps"]))
    finally:
        gw.stop()
        PROCS.remove(gw)


NGINX_TLS_CONF = """worker_processes {workers};
daemon off;
pid {out}/nginx-tls.pid;
error_log {out}/nginx-tls-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {out}/nginx-tls-tmp/body;
  proxy_temp_path {out}/nginx-tls-tmp/proxy;
  upstream app {{ server {upstream}; keepalive 64; }}
  # Not the default 1 000: a GOAWAY every 1 000 requests cuts the HTTP/2
  # streams in flight, which the load generator counts as errors.
  keepalive_requests 1000000;
  server {{
    listen {listen};
    listen {tls_listen} ssl http2;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def self_signed(out):
    """An ECDSA P-256 certificate for 127.0.0.1 and localhost (openssl)."""
    cert, key = out / "tls.crt", out / "tls.key"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"openssl could not make the certificate: {done.stderr}")
    return cert, key


def tls(b, n):
    """HTTPS with HTTP/1.1 and HTTP/2 (ALPN): /users/me/ and the bearer route
    of an authgate serving TLS itself (same database, same routes), beside
    the same requests in clear, and nginx terminating TLS in front of the same
    upstream as the reference. All with oha at max throughput; HTTP/2 rows
    multiplex 4 streams on each connection (the same requests in flight)."""
    a, out, d = b.args, b.out, b.args.duration
    if not shutil.which("openssl"):
        b.notes.append("tls rows skipped (no openssl to make a certificate)")
        return
    cert, key = self_signed(out)
    plain_port = free_port()
    gw, url = start_authgate(
        "authgate-tls", a, out,
        {"AUTH_BACKEND": "native", "DATABASE_URL": n.db_url, "TLS_CERT_FILE": str(cert),
         "TLS_KEY_FILE": str(key), "HTTP_REDIRECT_PORT": str(plain_port)},
        out / "routes.toml")
    nginx = None
    if a.nginx:
        port, tls_port = free_port(), free_port()
        (out / "nginx-tls-tmp").mkdir(exist_ok=True)
        conf = out / "nginx-tls.conf"
        conf.write_text(NGINX_TLS_CONF.format(
            workers=a.workers or os.cpu_count() or 1, out=out,
            upstream=n.up.removeprefix("http://"), listen=f"{HOST}:{port}",
            tls_listen=f"{HOST}:{tls_port}", cert=cert, key=key))
        proc = start("nginx-tls", [a.nginx, "-p", str(out), "-c", str(conf), "-e",
                                   str(out / "nginx-tls-error.log")], out)
        wait_http(f"https://{HOST}:{tls_port}/bench", proc)
        nginx = (proc, f"http://{HOST}:{port}", f"https://{HOST}:{tls_port}")
    else:
        b.notes.append("nginx TLS reference skipped (no nginx)")
    watch = [n.gw, gw, b.upstream] + ([nginx[0]] if nginx else [])
    try:
        me, bearer = "/users/me/", "/api/bench"
        rows = {}
        for key, label, target, kw in (
            ("k0", "authgate, clear: GET /users/me/ +bearer, c=16", n.url + me, {"conns": 16}),
            ("k1", "authgate, HTTPS h1: GET /users/me/ +bearer, c=16", url + me, {"conns": 16}),
            ("k2", "authgate, HTTPS h2: GET /users/me/ +bearer, 4 conns x 4 streams", url + me,
             {"conns": 4, "http2": True, "parallel": 4}),
            ("l0", "authgate, clear, bearer route: GET /api/bench, c=32", n.url + bearer,
             {"conns": 32}),
            ("l1", "authgate, HTTPS h1, bearer route: GET /api/bench, c=32", url + bearer,
             {"conns": 32}),
            ("l2", "authgate, HTTPS h2, bearer route: GET /api/bench, 8 conns x 4 streams",
             url + bearer, {"conns": 8, "http2": True, "parallel": 4}),
        ):
            rows[key] = b.record(key, "tls", label, b.oha_max(
                key, target, seconds=d, watch=watch, headers=n.bearer, **kw))
        refs = []
        if nginx:
            for key, label, target, kw in (
                ("m0", "reference: nginx, clear: GET /bench, c=32", nginx[1], {"conns": 32}),
                ("m1", "reference: nginx, HTTPS h1: GET /bench, c=32", nginx[2], {"conns": 32}),
                ("m2", "reference: nginx, HTTPS h2: GET /bench, 8 conns x 4 streams", nginx[2],
                 {"conns": 8, "http2": True, "parallel": 4}),
            ):
                rows[key] = b.record(key, "tls", label, b.oha_max(
                    key, target + "/bench", seconds=d, watch=watch, **kw))
                refs.append(key)
        for key, base in (("k1", "k0"), ("k2", "k0"), ("l1", "l0"), ("l2", "l0"), ("m1", "m0"),
                          ("m2", "m0")):
            if key in rows and base in rows:
                rows[key]["vs"] = (base, ratio(rows[key]["rps"], rows[base]["rps"]))
        if "m1" in rows:
            ours = ratio(rows["l1"]["rps"], rows["l0"]["rps"])
            theirs = ratio(rows["m1"]["rps"], rows["m0"]["rps"])
            b.notes.append(f"TLS (h1) keeps {fmt(ours, 2)} of authgate's clear req/s on the "
                           f"bearer route, {fmt(theirs, 2)} of nginx's")
    finally:
        gw.stop()
        PROCS.remove(gw)
        if nginx:
            nginx[0].stop()
            PROCS.remove(nginx[0])


NGINX_FWDAUTH_CONF = """worker_processes {workers};
daemon off;
pid {out}/nginx-fwdauth.pid;
error_log {out}/nginx-fwdauth-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {out}/nginx-fwdauth-tmp/body;
  proxy_temp_path {out}/nginx-fwdauth-tmp/proxy;
  upstream app {{ server {upstream}; keepalive 64; }}
  upstream authgate {{ server {authgate}; keepalive 64; }}
  server {{
    listen {listen};
    location / {{
      auth_request /_authgate;
      auth_request_set $authgate_user_id $upstream_http_x_auth_user_id;
      proxy_set_header X-Auth-User-Id $authgate_user_id;
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
    location = /_authgate {{
      internal;
      proxy_pass http://authgate/auth/forward;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }}
  }}
}}
"""


def fwdauth(b, n):
    """Forward-auth: authgate's /auth/forward asked directly (as a proxy
    would, from a trusted address, about GET /api/bench with a bearer), and
    nginx's auth_request asking it before each request it passes to the
    upstream, beside nginx forwarding alone and authgate's own bearer
    route. Max throughput, wrk."""
    a, out, d, c = b.args, b.out, b.args.duration, b.args.connections
    gw, url = start_authgate(
        "authgate-fwdauth", a, out,
        {"AUTH_BACKEND": "native", "DATABASE_URL": n.db_url, "TRUSTED_PROXIES": f"{HOST}/32"},
        out / "routes.toml")
    nginx = None
    if a.nginx:
        port = free_port()
        (out / "nginx-fwdauth-tmp").mkdir(exist_ok=True)
        conf = out / "nginx-fwdauth.conf"
        conf.write_text(NGINX_FWDAUTH_CONF.format(
            workers=a.workers or os.cpu_count() or 1, out=out,
            upstream=n.up.removeprefix("http://"), authgate=url.removeprefix("http://"),
            listen=f"{HOST}:{port}"))
        proc = start("nginx-fwdauth", [a.nginx, "-p", str(out), "-c", str(conf), "-e",
                                       str(out / "nginx-fwdauth-error.log")], out)
        nginx = (proc, f"http://{HOST}:{port}")
        wait_http(nginx[1] + "/api/bench", proc, ok=(401, 403))
    else:
        b.notes.append("nginx forward-auth rows skipped (no nginx)")
    watch = [gw, n.gw, b.upstream] + ([nginx[0]] if nginx else []) + (
        [n.nginx[0]] if n.nginx else [])
    try:
        ask = n.bearer + ["X-Forwarded-Uri: /api/bench", "X-Forwarded-Method: GET"]
        r_p0 = b.record("p0", "forward-auth", "authgate: GET /auth/forward +bearer (the question "
                        "a proxy asks)", b.wrk("p0-fwdauth", url + "/auth/forward", c, d, watch,
                                               headers=ask))
        if nginx:
            r_p1 = b.record("p1", "forward-auth", "nginx auth_request → authgate, then the "
                            "upstream: GET /api/bench +bearer",
                            b.wrk("p1-nginx-fwdauth", nginx[1] + "/api/bench", c, d, watch,
                                  headers=n.bearer))
            if n.nginx:
                r_p2 = b.record("p2", "forward-auth", "reference: nginx, forwarding only: "
                                "GET /bench", b.wrk("p2-nginx", n.nginx[1] + "/bench", c, d,
                                                    watch))
                r_p1["vs"] = ("p2", ratio(r_p1["rps"], r_p2["rps"]))
            r_p3 = b.record("p3", "forward-auth", "authgate, bearer route (for comparison): "
                            "GET /api/bench", b.wrk("p3-bearer", n.url + "/api/bench", c, d,
                                                    watch, headers=n.bearer))
            r_p3["vs"] = ("p1", ratio(r_p3["rps"], r_p1["rps"]))
        b.notes.append(f"forward-auth: /auth/forward answers {fmt(r_p0['rps'])} req/s")
    finally:
        gw.stop()
        PROCS.remove(gw)
        if nginx:
            nginx[0].stop()
            PROCS.remove(nginx[0])


NATIVE = {"throughput": throughput, "api": api, "signin": signin, "isolation": isolation,
          "rate": fixed_rate, "memory": memory, "redis": shared_denylist, "tls": tls,
          "fwdauth": fwdauth}


def native_phase(b, upstream_port, admin_url):
    n = Native(b, upstream_port, admin_url)
    for name, scenario in NATIVE.items():
        if b.wants(name):
            scenario(b, n)
    n.gw.stop()
    PROCS.remove(n.gw)


def keycloak_phase(b, upstream_port, admin_url):
    a, out = b.args, b.out
    up_hostport = f"{HOST}:{upstream_port}"
    routes = out / "routes-kc.toml"
    routes.write_text(f'[[routes]]\nprefix = "/api"\nupstreams = ["{up_hostport}"]\n'
                      'policy = "authenticated"\n')
    db_url = fresh_database(admin_url, "authgate_bench_kc")
    gw, url = start_authgate("authgate-keycloak", a, out, {
        "AUTH_BACKEND": "keycloak", "DATABASE_URL": db_url, "KEYCLOAK_URL": a.keycloak,
        "TOKEN_FORMAT": "keycloak"}, routes)
    who = "bench" + secrets.token_hex(4)
    _, token = new_user(url, out / "outbox-authgate-keycloak", who, verify=True)
    bearer = [f"Authorization: Bearer {token}"]
    d, c = a.duration, a.connections

    o2p_port = free_port()
    o2p = start("oauth2-proxy", [str(Path(__file__).parent / "oauth2_proxy.sh"), "run",
                                 "--port", str(o2p_port), "--upstream", f"http://{up_hostport}",
                                 "--keycloak", a.keycloak], out)
    o2p_url = f"http://{HOST}:{o2p_port}"
    wait_http(o2p_url + "/ping", o2p)
    status, _ = http("GET", o2p_url + "/bench", headers={"Authorization": f"Bearer {token}"})
    if status != 200:
        raise BenchError(f"oauth2-proxy refused the bearer token ({status}):\n{o2p.tail()}")

    watch = [gw, o2p, b.upstream]
    before = keycloak_calls(url)
    r_s = b.record("s", "keycloak mode", "authgate: GET /users/me/ +RS256 bearer, c=16",
                   b.wrk("s-kc-me", url + "/users/me/", 16, d, watch, headers=bearer))
    r_t = b.record("t", "keycloak mode", "authgate, bearer route: GET /api/bench +RS256",
                   b.wrk("t-kc-bearer", url + "/api/bench", c, d, watch, headers=bearer))
    r_u = b.record("u", "keycloak mode", "oauth2-proxy: GET /bench +RS256 bearer",
                   b.wrk("u-o2p-bearer", o2p_url + "/bench", c, d, watch, headers=bearer))
    after = keycloak_calls(url)
    r_t["vs"] = ("u", ratio(r_t["rps"], r_u["rps"]))
    ours = r_t["cpu_us_per_req"].get("authgate-keycloak")
    theirs = r_u["cpu_us_per_req"].get("oauth2-proxy")
    cpu_ratio = ratio(ours, theirs)
    b.target(5, "authgate ÷ oauth2-proxy on the RS256 bearer path: req/s; CPU per request",
             f"{fmt(r_t['vs'][1], 2)}×; {fmt(ours, 1)} ÷ {fmt(theirs, 1)} µs = {fmt(cpu_ratio, 2)}",
             "≥ 3×; ≤ 0.33",
             (r_t["vs"][1] or 0) >= 3 and cpu_ratio is not None and cpu_ratio <= 1 / 3)
    calls = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    # The admin-event reader's polls run beside the requests (one per
    # KEYCLOAK_ADMIN_EVENTS_INTERVAL_SECONDS for the cluster): counted apart.
    background = {k: calls.pop(k) for k in BACKGROUND_KEYCLOAK_OPERATIONS if k in calls}
    total = sum(calls.values())
    served = r_s["requests"] + r_t["requests"]  # measured runs; their warm-ups are not counted
    b.rows.append({"key": "v", "group": "keycloak mode", "label": "calls to Keycloak during s and t",
                   "calls": total, "by_operation": calls, "background": background,
                   "requests": served, "failed": None})
    b.target(7, "Keycloak calls per /users/me/ or proxied request (keycloak mode)",
             f"{total} calls for {served} requests", "0", total == 0)
    o2p.stop()
    PROCS.remove(o2p)
    gw.stop()
    PROCS.remove(gw)


# ---------------------------------------------------------------- report


def server_cpu(row):
    """CPU µs per request of the process that served the row: the upstream,
    oauth2-proxy, nginx or authgate."""
    cpu = row.get("cpu_us_per_req") or {}
    label = row["label"]
    for prefix, name in (("upstream", "upstream"), ("oauth2-proxy", "oauth2-proxy"),
                         ("reference: nginx, clear", "nginx-tls"),
                         ("reference: nginx, HTTPS", "nginx-tls"),
                         ("reference: nginx", "nginx"), ("floor: byte relay", "tcp-relay")):
        if label.startswith(prefix):
            return cpu.get(name)
    if label.startswith("authgate, HTTPS"):
        return cpu.get("authgate-tls")
    if label.startswith("authgate, clear"):
        return cpu.get("authgate-native")
    return next((v for k, v in cpu.items() if k.startswith("authgate")), None)


def table(b):
    lines = []
    head = ("", "scenario", "req/s", "p50 ms", "p99 ms", "errors", "server µs CPU/req", "ratio",
            "steal %")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in b.rows:
        if "rps" not in r:
            continue
        cpu = server_cpu(r)
        vs = r.get("vs")
        rat = f"{fmt(vs[1], 2)} × {vs[0]}" if vs and vs[1] is not None else ""
        errs = (r.get("non2xx") or 0) + (r.get("errors") or 0)
        lines.append("| " + " | ".join([
            str(r["key"]), r["label"], fmt(r.get("rps")), fmt(r.get("p50_ms"), 2),
            fmt(r.get("p99_ms"), 2), str(errs) + (" FAILED" if r.get("failed") else ""),
            fmt(cpu, 1), rat, fmt(r.get("stolen_pct"), 0)]) + " |")
    for r in b.rows:
        if r["key"] == "r":
            lines.append("")
            lines.append(f"Memory (resident): idle {r['idle_mb']:.1f} MB, after the load "
                         f"{r['after_load_mb']:.1f} MB, holding {r['conns']} idle keep-alive "
                         f"connections {r['conns_mb']:.1f} MB ({r['conns_kept']} still open "
                         "after the hold).")
        if r["key"] == "v":
            lines.append(f"Keycloak calls by authgate during s and t: {r['calls']} "
                         f"({r['requests']} requests served).")
    lines.append("")
    lines.append("| target | measured | goal | |")
    lines.append("|---|---|---|---|")
    for t in b.targets:
        lines.append(f"| {t['id']}. {t['title']} | {t['value']} | {t['goal']} | "
                     f"{'met' if t['met'] else '**missed**'} |")
    stolen = [r["stolen_pct"] for r in b.rows if r.get("stolen_pct") is not None]
    notes = list(b.notes)
    if stolen:
        notes.append(f"CPU time taken by the hypervisor (steal) during the measured runs: "
                     f"{min(stolen):.0f}–{max(stolen):.0f} % (median "
                     f"{sorted(stolen)[len(stolen) // 2]:.0f} %)")
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "kernel": platform.release(), "load_before": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--authgate", required=True)
    p.add_argument("--upstream-bin", required=True)
    p.add_argument("--oha", required=True)
    p.add_argument("--keycloak", default="")
    p.add_argument("--nginx", default="", help="nginx binary for the reference rows")
    p.add_argument("--relay", default="", help="examples/tcp_relay binary for the floor rows")
    p.add_argument("--perf", default="",
                   help="perf binary: where authgate's added latency goes (fixed-rate scenario)")
    p.add_argument("--database-url", required=True, help="admin URL of the test PostgreSQL")
    p.add_argument("--redis-url", default="", help="the test Redis (rows with REDIS_URL set)")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--signin-duration", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--iso-rate", type=int, default=2000)
    p.add_argument("--hash-time", required=True, help="examples/hash_time binary")
    p.add_argument("--only", default="", help="comma-separated groups: " + ",".join(
        list(NATIVE) + ["keycloak"]))
    p.add_argument("--slow-ms", type=int, default=5)
    p.add_argument("--slow-conns", type=int, default=64)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--rate-connections", type=int, default=16)
    p.add_argument("--rate-rounds", type=int, default=3,
                   help="interleaved rounds of the fixed-rate scenario (medians)")
    p.add_argument("--workers", type=int, default=0,
                   help="worker threads of authgate and worker processes of nginx "
                        "(0: one per core)")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--command", default="bench/run.sh")
    if "--render" in sys.argv:
        return render(sys.argv[sys.argv.index("--render") + 1:])
    args = p.parse_args()
    if args.rate_rounds < 1:
        p.error(f"--rate-rounds (RATE_ROUNDS) must be at least 1 (got {args.rate_rounds})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    b = Bench(args, out)
    info = machine()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rc = 0
    try:
        b.upstream = start("upstream", [args.upstream_bin, "--port", "0", "--name", "bench"], out)
        port = listening_port(b.upstream)
        if any(b.wants(g) for g in NATIVE):
            native_phase(b, port, args.database_url)
        if args.keycloak and b.wants("keycloak"):
            keycloak_phase(b, port, args.database_url)
        else:
            b.notes.append("keycloak mode skipped (no Keycloak URL)")
    except BenchError as e:
        log(f"ERROR: {e}")
        rc = 2
    finally:
        stop_all()

    report = table(b)
    (out / "table.md").write_text(report)
    results = {"started": started, "command": args.command, "machine": info,
               "settings": {k: v for k, v in vars(args).items()
                            if k not in ("out", "authgate", "upstream_bin", "oha", "database_url",
                                         "nginx", "relay", "perf")},
               "rows": b.rows, "targets": b.targets, "notes": b.notes}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "chart.svg").write_text(chart.render(results))
    print()
    print(report)
    print(f"(raw outputs, results.json and chart.svg in {out})")
    if rc:
        return rc
    if any(r.get("failed") for r in b.rows):
        log("some scenarios failed (errors or non-2xx answers)")
        return 1
    if args.strict and not all(t["met"] for t in b.targets):
        log("some targets were missed")
        return 1
    return 0


def render(paths):
    """`suite.py --render results.json [out_dir]`: the table and the chart of
    a saved run again (after a change of their layout)."""
    if not paths:
        sys.exit("usage: suite.py --render results.json [out_dir]")
    results = json.loads(Path(paths[0]).read_text())
    out = Path(paths[1]) if len(paths) > 1 else Path(paths[0]).parent
    saved = argparse.Namespace(rows=results["rows"], targets=results["targets"],
                               notes=results["notes"])
    for row in saved.rows:  # JSON keeps tuples as lists
        if row.get("vs"):
            row["vs"] = tuple(row["vs"])
    (out / "table.md").write_text(table(saved))
    (out / "chart.svg").write_text(chart.render(results))
    print(table(saved))
    return 0


if __name__ == "__main__":
    sys.exit(main())

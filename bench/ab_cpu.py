#!/usr/bin/env python3
"""A/B: authgate's CPU time per forwarded request, for two or more builds, at
a fixed rate, in interleaved rounds (loopback only, each run bounded).

usage: bench/ab_cpu.py OHA UPSTREAM_BIN NAME=BIN[,VAR=VALUE...] NAME=BIN[,VAR=VALUE...] ...

  OHA           oha (bench/run.sh installs it in $AUTHGATE_CACHE_DIR/bench/oha/bin)
  UPSTREAM_BIN  examples/upstream.rs, built: cargo build --release --example upstream
  NAME=BIN,...  an authgate binary under a name, with extra environment variables

Each variant serves on embedded SQLite (its own folder) a public route
`/pub` and an authenticated route `/api` in front of the same upstream; a user
is signed up, verified (mail read from the outbox folder) and signed in on
each, and the bearer route (and `/users/me/`, when listed in PATHS) is
called with its token. Every round runs each
path on each variant in turn: 2 s of warm-up, then SECS seconds of oha at
RATE requests/s over 16 connections (latency-corrected), with the CPU time
(user + system) the variant's process spent meanwhile, from /proc/PID/stat.

The medians over the rounds are printed per path and variant: CPU time per
request, p50 and p99 latency, and the ratio of each variant's CPU time per
request to the first variant's (every round's ratio, and their median).

Environment: RATE (2000), SECS (10), ROUNDS (5), WORKERS (2, APP_WORKERS),
PATHS (/pub/bench,/api/bench).
"""
import email
import email.policy
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
TCK = os.sysconf("SC_CLK_TCK")
RATE = int(os.environ.get("RATE", 2000))
SECS = int(os.environ.get("SECS", 10))
ROUNDS = int(os.environ.get("ROUNDS", 5))
CONNS = 16
PATHS = os.environ.get("PATHS", "/pub/bench,/api/bench").split(",")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TCK


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def mailed_token(folder):
    for _ in range(50):
        for path in sorted(Path(folder).glob("*verification*.eml")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    m = re.search(r"token=([A-Za-z0-9._~-]+)", part.get_content())
                    if m:
                        return m.group(1)
        time.sleep(0.1)
    sys.exit(f"no verification mail in {folder}")


def signed_in_user(url, outbox):
    user = {"email": "ab@example.com", "username": "abuser", "password": "benchmark-pass"}
    for step, (method, path, body) in enumerate([
        ("POST", "/users/signup", user),
        ("POST", "/users/verify-email", None),
        ("POST", "/users/signin", {"username": user["email"], "password": user["password"]}),
    ]):
        if step == 1:
            body = {"token": mailed_token(outbox)}
        status, answer = call(method, url + path, body)
        if status != 200:
            sys.exit(f"{path}: {status} {answer}")
    return answer["access_token"]


def start(name, spec, up_port, out, started):
    binary, *assignments = spec.split(",")
    folder = out / name
    folder.mkdir()
    (folder / "routes.toml").write_text(
        f'[[routes]]\nprefix = "/pub"\nupstreams = ["{HOST}:{up_port}"]\npolicy = "public"\n\n'
        f'[[routes]]\nprefix = "/api"\nupstreams = ["{HOST}:{up_port}"]\npolicy = "authenticated"\n')
    port = free_port()
    env = {"PATH": os.environ["PATH"], "SECRET_KEY": "bench-secret-key-0123456789abcde",
           "DATA_DIR": str(folder), "ROUTES_FILE": str(folder / "routes.toml"),
           "APP_HOST": HOST, "APP_PORT": str(port), "APP_URL": f"http://{HOST}:{port}",
           "MAIL_OUTBOX_DIR": str(folder / "outbox"), "RUST_LOG": "warn",
           "RATE_LIMIT_SIGNUP_PER_IP": "off", "RATE_LIMIT_SIGNIN_PER_IP": "off",
           "RATE_LIMIT_SIGNIN_PER_ACCOUNT": "off", "RATE_LIMIT_EMAIL_PER_IP": "off",
           "APP_WORKERS": os.environ.get("WORKERS", "2")}
    env.update(a.split("=", 1) for a in assignments)
    proc = subprocess.Popen([binary, "serve"], env=env, cwd=folder,
                            stdout=open(folder / "log", "w"), stderr=subprocess.STDOUT)
    started.append(proc)
    url = f"http://{HOST}:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        sys.exit(f"{name} did not start: {(folder / 'log').read_text()[-2000:]}")
    return proc, url, signed_in_user(url, folder / "outbox")


def oha(binary, url, token, secs, json_out):
    argv = [binary, "--no-tui", "-q", str(RATE), "-c", str(CONNS), "-z", f"{secs}s"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    if json_out:
        argv += ["--output-format", "json", "--latency-correction"]
    return subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    oha_bin, upstream_bin = sys.argv[1], sys.argv[2]
    variants = [a.split("=", 1) for a in sys.argv[3:]]
    out = Path(tempfile.mkdtemp(prefix="ab-cpu-"))
    up = subprocess.Popen([upstream_bin, "--port", "0", "--name", "ab"],
                          stdout=subprocess.PIPE, text=True)
    up_port = int(up.stdout.readline().strip().rsplit(":", 1)[1])
    gateways = {}
    started = []
    results = {}
    try:
        for name, spec in variants:
            gateways[name] = start(name, spec, up_port, out, started)
        for r in range(ROUNDS):
            for path in PATHS:
                for name, (proc, url, token) in gateways.items():
                    bearer = token if path.startswith(("/api", "/users/me")) else None
                    oha(oha_bin, url + path, bearer, 2, False)
                    before = cpu_seconds(proc.pid)
                    report = json.loads(oha(oha_bin, url + path, bearer, SECS, True))
                    spent = cpu_seconds(proc.pid) - before
                    codes = report["statusCodeDistribution"]
                    n = sum(codes.values())
                    row = (spent / n * 1e6, report["latencyPercentiles"]["p50"] * 1e3,
                           report["latencyPercentiles"]["p99"] * 1e3)
                    results.setdefault((path, name), []).append(row)
                    print(f"round {r} {path} {name}: {n} req, {row[0]:.1f} us CPU/req, "
                          f"p50 {row[1]:.3f} ms, p99 {row[2]:.3f} ms, codes {codes}", flush=True)
        first = variants[0][0]
        for path in PATHS:
            for name, _ in variants:
                rows = results[(path, name)]
                ratios = [a[0] / b[0] for a, b in zip(rows, results[(path, first)])]
                print(f"{path} {name}: CPU/req median {statistics.median(x[0] for x in rows):.1f} us "
                      f"(rounds {[round(x[0], 1) for x in rows]}), "
                      f"p50 median {statistics.median(x[1] for x in rows):.3f} ms, "
                      f"p99 median {statistics.median(x[2] for x in rows):.3f} ms, "
                      f"CPU/req vs {first}: median {statistics.median(ratios):.3f} "
                      f"(rounds {[round(x, 3) for x in ratios]})")
    finally:
        for proc in started:
            proc.terminate()
        up.terminate()


if __name__ == "__main__":
    main()

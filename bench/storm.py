#!/usr/bin/env python3
"""Backpressure: does authgate shed a sign-in storm and a connection storm
with quick, clear answers, and do /health and /users/me/ keep their latency?

Starts authgate (native mode on a throwaway embedded SQLite store, rate
limits off, mail to an outbox folder), makes and verifies a user, then:

  ceiling   sign-ins/s at saturation: --ceiling-seconds of closed-loop
            sign-ins, as many in flight as the hashing pool takes without
            refusing (threads + queue); only 200s count;
  baseline  --phase seconds of probes alone: GET /health and GET /users/me/
            (bearer token), --rate requests/s each, open loop (latency
            counted from when the request was due), on keep-alive
            connections;
  signins   the same probes during --phase seconds of sign-ins offered at
            --factor (10) times the ceiling, open loop: what the storm got
            (by status; 503s checked for Retry-After and a JSON detail) and
            how fast;
  conns     --connections (20 000) client connections opened and held idle
            (by helper processes, the open-file limit of one being too
            small), then --phase seconds of probes on the keep-alive
            connections opened before, and of probes on new connections
            (a new client: /health is answered from the probe reserve,
            anything else past MAX_CLIENT_CONNECTIONS gets a quick 503).

Loopback only; bounded in time (about --ceiling-seconds + 3 x --phase +
the time to open the connections, 60 s at most) and count. Prints a
report, writes storm.json into --out and, with --reliability FILE,
replaces the section between <!-- backpressure:begin --> and
<!-- backpressure:end --> in FILE (appended when absent).

usage: storm.py --authgate BIN [--out DIR] [--phase 10] [--rate 20]
         [--factor 10] [--ceiling-seconds 8] [--connections 20000]
         [--reliability RELIABILITY.md] [--env NAME=VALUE ...]
"""

import argparse
import asyncio
import datetime
import email
import email.policy
import json
import os
import platform
import re
import resource
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
BEGIN, END = "<!-- backpressure:begin -->", "<!-- backpressure:end -->"


def log(msg):
    print(f"[storm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def outbox_token(folder):
    for _ in range(100):
        files = sorted(Path(folder).glob("*verification*.eml"), key=lambda p: p.stat().st_mtime)
        if files:
            msg = email.message_from_bytes(files[-1].read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    m = re.search(r"token=([A-Za-z0-9._~-]+)", part.get_content())
                    if m:
                        return m.group(1)
        time.sleep(0.1)
    sys.exit(f"no verification mail in {folder}")


def metrics(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for m in re.finditer(r"^(authgate_(?:hashing|client_connections|connections_refused)[^ ]*) ([0-9.e+-]+)$",
                         text, re.M):
        if "_bucket" not in m.group(1):
            out[m.group(1).replace("authgate_", "")] = float(m.group(2))
    return out


# ---------------------------------------------------------------- a tiny HTTP/1.1 client


class Conn:
    """One keep-alive connection; one request at a time."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def request(self, method, path, body=None, headers=()):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        payload = json.dumps(body).encode() if body is not None else b""
        head = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(payload)}"]
        if body is not None:
            head.append("Content-Type: application/json")
        head.extend(headers)
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            fields = {}
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode().partition(":")
                fields[name.strip().lower()] = value.strip()
            raw = await self.reader.readexactly(int(fields.get("content-length", "0")))
            if fields.get("connection", "").lower() == "close":
                self.close()
            return status, fields, raw
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
            self.close()
            raise

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def pct(values, q):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def summary(latencies_s, answers):
    ms = [x * 1000 for x in latencies_s]
    return {
        "count": len(ms),
        "p50_ms": round(pct(ms, 0.50), 2) if ms else None,
        "p99_ms": round(pct(ms, 0.99), 2) if ms else None,
        "max_ms": round(max(ms), 2) if ms else None,
        "answers": dict(sorted(answers.items())),
    }


def probe_pools(port):
    return {p: [Conn(port) for _ in range(8)] for p in ("/health", "/users/me/")}


async def probes(port, token, rate, seconds, fresh=False, pools=None):
    """GET /health and /users/me/ at `rate` each per second, open loop.
    On keep-alive connections (a pool per path), or on a new connection
    per request (`fresh`). Given `pools`, their connections are used and
    kept open for the next call."""
    paths = {"/health": (), "/users/me/": (f"Authorization: Bearer {token}",)}
    result = {p: ([], {}) for p in paths}
    keep = pools is not None
    pools = pools if keep else probe_pools(port)
    start = time.monotonic()
    tasks = []

    async def one(path, due):
        lat, answers = result[path]
        conn = Conn(port) if fresh else (pools[path].pop() if pools[path] else Conn(port))
        try:
            status, _, _ = await asyncio.wait_for(
                conn.request("GET", path, headers=paths[path]), timeout=10)
            key = str(status)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            key = "error"
        lat.append(time.monotonic() - due)
        answers[key] = answers.get(key, 0) + 1
        if fresh:
            conn.close()
        else:
            pools[path].append(conn)

    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        for path in paths:
            tasks.append(asyncio.create_task(one(path, due)))
    await asyncio.gather(*tasks)
    if not keep:
        for pool in pools.values():
            for conn in pool:
                conn.close()
    return {p: summary(*result[p]) for p in paths}


async def ceiling(port, login, concurrency, seconds):
    done = 0
    refused = 0
    stop = time.monotonic() + seconds

    async def loop():
        nonlocal done, refused
        conn = Conn(port)
        while time.monotonic() < stop:
            status, _, _ = await conn.request("POST", "/users/signin", login)
            if status == 200:
                done += 1
            else:
                refused += 1
        conn.close()

    t0 = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.monotonic() - t0), refused


async def signin_storm(port, login, rate, seconds):
    """Sign-ins offered at `rate` per second, open loop, each on a connection
    of a pool (a new one when none is free)."""
    pool = []
    lat = {"200": [], "503": [], "other": []}
    answers = {}
    bad_refusals = []
    start = time.monotonic()

    async def one(due):
        conn = pool.pop() if pool else Conn(port)
        try:
            status, fields, raw = await asyncio.wait_for(
                conn.request("POST", "/users/signin", login), timeout=30)
            key = str(status)
            if status == 503:
                try:
                    detail = json.loads(raw).get("detail")
                except ValueError:
                    detail = None
                if not fields.get("retry-after", "").isdigit() or not isinstance(detail, str):
                    bad_refusals.append((fields, raw[:200]))
        except (OSError, ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            key = "error"
        lat.get(key, lat["other"]).append(time.monotonic() - due)
        answers[key] = answers.get(key, 0) + 1
        if conn.writer is not None:
            pool.append(conn)

    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    for conn in pool:
        conn.close()
    return {
        "offered_per_s": rate,
        "answers": dict(sorted(answers.items())),
        "served": summary(lat["200"], {}),
        "refused": summary(lat["503"], {}),
        "refusals_without_retry_after_or_detail": len(bad_refusals),
    }


def hold_connections(port, count, seconds):
    """Helper process body: opens `count` connections and holds them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    opened = 0
    deadline = time.monotonic() + seconds
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((HOST, port))
        socks.append(s)
        opened += 1
    print(f"held {opened}", flush=True)
    while time.monotonic() < deadline:
        time.sleep(0.5)


# ---------------------------------------------------------------- the run


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def fmt(s):
    return f"{s['p50_ms']} / {s['p99_ms']}" if s["count"] else "–"


def probe(s):
    answers = ", ".join(f"{k}: {v}" for k, v in s["answers"].items())
    return f"{fmt(s)} ({answers})"


def report_md(r, command):
    b, st, cn = r["baseline"], r["signins"], r["conns"]
    storm = st["storm"]
    lines = [
        "## Backpressure",
        "",
        f"Command: `{command}` (native mode, embedded SQLite store, "
        f"`PASSWORD_PBKDF2_ROUNDS` {r['rounds']}, hashing pool {r['threads']} threads, "
        f"queue {r['queue_max']}, wait {r['wait_ms']} ms). "
        + ("The binary was a debug build (`target/debug`: the PBKDF2 crates optimised, "
           "the rest not), so the latencies are higher than a release build's. "
           if "/debug/" in r["binary"] else "")
        + f"Run {r['date']} on {r['machine']}"
        + (f", shared with other work during the run (load average {r['load_before']:.2f} "
           "before it): figures are indicative, ratios matter more than absolutes."
           if r.get("load_before", 99) > (os.cpu_count() or 2) / 2 else
           f"; nothing else ran on the machine (load average {r['load_before']:.2f} before "
           "the run)."),
        "",
        f"PBKDF2 ceiling measured first: **{r['ceiling_per_s']:.1f} sign-ins/s** at saturation. "
        f"Storm: sign-ins offered at {r['factor']} × the ceiling "
        f"({storm['offered_per_s']:.0f}/s) for {r['phase']} s, open loop.",
        "",
        "| probe (p50 / p99 ms) | baseline | during the sign-in storm | "
        f"{cn['held']} connections held: keep-alive | … new connection |",
        "|---|---|---|---|---|",
    ]
    for path in ("/health", "/users/me/"):
        lines.append(
            f"| `{path}` | {probe(b[path])} | {probe(st['probes'][path])} | "
            f"{probe(cn['keepalive'][path])} | {probe(cn['fresh'][path])} |")
    lines += [
        "",
        f"What the storm got: {', '.join(f'{k}: {v}' for k, v in storm['answers'].items())}; "
        f"served sign-ins p50 / p99 {fmt(storm['served'])} ms, refusals (503 with "
        f"`Retry-After` and a JSON detail) p50 / p99 {fmt(storm['refused'])} ms; "
        f"503s lacking `Retry-After` or the detail: {storm['refusals_without_retry_after_or_detail']}. "
        "A refusal comes at once when the queue is full, else after `HASHING_QUEUE_WAIT_MS`; "
        "a served sign-in's time is its wait plus the hash itself, which runs at nice 10 "
        "and so slows down with whatever else the machine runs. "
        f"authgate's counters after the storm: {json.dumps(st['metrics'])}.",
        "",
        f"Connections: {cn['held']} opened and held idle by {cn['holders']} helper processes; "
        f"authgate's metrics during the probes (peak of the gauge, then the last sample): "
        f"{json.dumps(cn['metrics'])} "
        "(the cap is `MAX_CLIENT_CONNECTIONS`, lowered to fit the open-file limit when "
        "that is smaller; past it a new connection may ask a health probe, anything "
        "else gets 503 with `Retry-After`).",
    ]
    return "\n".join(lines)


def write_section(path, text):
    path = Path(path)
    body = path.read_text() if path.exists() else (
        "# Reliability\n\nFigures of authgate under load and faults, each written by the command it names.\n")
    section = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        head, rest = body.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        body = head + section + tail
    else:
        body = body.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--authgate")
    ap.add_argument("--out", default=None)
    ap.add_argument("--phase", type=float, default=10)
    ap.add_argument("--rate", type=float, default=20)
    ap.add_argument("--factor", type=float, default=10)
    ap.add_argument("--ceiling-seconds", type=float, default=8)
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--reliability", default=None)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--hold", nargs=3, type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hold:
        hold_connections(int(args.hold[0]), int(args.hold[1]), args.hold[2])
        return
    if not args.authgate:
        ap.error("--authgate is required")
    args.phase = min(args.phase, 60)
    args.ceiling_seconds = min(args.ceiling_seconds, 60)
    args.connections = min(args.connections, 50000)
    args.authgate = os.path.abspath(args.authgate)
    out = Path(args.out or tempfile.mkdtemp(prefix="authgate-storm-"))
    out.mkdir(parents=True, exist_ok=True)

    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SMTP_", "AUTHGATE_TEST_", "KEYCLOAK_", "POSTGRES_", "DATABASE_", "HASHING_"))}
    env.update({
        "SECRET_KEY": "bench-secret-key-0123456789abcde",
        "APP_HOST": HOST, "APP_PORT": str(port), "APP_URL": url,
        "DATA_DIR": str(out / "data"),
        "MAIL_OUTBOX_DIR": str(out / "outbox"),
        "RATE_LIMIT_SIGNUP_PER_IP": "off", "RATE_LIMIT_SIGNIN_PER_IP": "off",
        "RATE_LIMIT_SIGNIN_PER_ACCOUNT": "off", "RATE_LIMIT_EMAIL_PER_IP": "off",
        "RUST_LOG": "warn", "SHUTDOWN_GRACE_SECONDS": "1",
    })
    for item in args.env:
        k, _, v = item.partition("=")
        env[k] = v
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logf = open(out / "authgate.log", "w")
    proc = subprocess.Popen([args.authgate, "serve"], env=env, cwd=out, stdout=logf, stderr=logf)
    holders = []
    try:
        for _ in range(300):
            try:
                if http("GET", url + "/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                sys.exit(f"authgate exited: see {out / 'authgate.log'}")
            time.sleep(0.1)
        user = {"email": "storm@example.com", "username": "storm", "password": "benchmark-pass"}
        assert http("POST", url + "/users/signup", user)[0] == 200
        assert http("POST", url + "/users/verify-email", {"token": outbox_token(out / "outbox")})[0] == 200
        login = {"username": user["username"], "password": user["password"]}
        status, answer = http("POST", url + "/users/signin", login)
        assert status == 200, answer
        token = answer["access_token"]

        cores = os.cpu_count() or 2
        threads = int(env.get("HASHING_THREADS", cores))
        queue_max = int(env.get("HASHING_QUEUE_MAX", threads * 16))
        r = {
            "binary": args.authgate,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "load_before": os.getloadavg()[0],
            "phase": args.phase, "factor": args.factor,
            "rounds": env.get("PASSWORD_PBKDF2_ROUNDS", "600000 (default)"),
            "threads": threads, "queue_max": queue_max,
            "wait_ms": env.get("HASHING_QUEUE_WAIT_MS", "10000"),
        }
        log("ceiling")
        rate, refused = asyncio.run(ceiling(port, login, threads + queue_max, args.ceiling_seconds))
        r["ceiling_per_s"], r["ceiling_refused"] = rate, refused
        log(f"ceiling {rate:.1f} sign-ins/s ({refused} refused)")

        log("baseline")
        r["baseline"] = asyncio.run(probes(port, token, args.rate, args.phase))

        log(f"sign-in storm at {args.factor * rate:.0f}/s")

        async def storm_phase():
            storm = asyncio.create_task(signin_storm(port, login, args.factor * rate, args.phase))
            probed = await probes(port, token, args.rate, args.phase)
            return await storm, probed

        storm, probed = asyncio.run(storm_phase())
        time.sleep(3)  # what was admitted drains
        r["signins"] = {"storm": storm, "probes": probed, "metrics": metrics(url)}

        log(f"holding {args.connections} connections")

        async def conns_phase():
            # Keep-alive probe connections are opened before the storm.
            # Every connection of the pools opened (and used once) before.
            pools = probe_pools(port)
            auth = (f"Authorization: Bearer {token}",)
            await asyncio.gather(*(conn.request("GET", path, headers=auth)
                                   for path, pool in pools.items() for conn in pool))
            warm = await probes(port, token, args.rate, 1, pools=pools)
            per = 9000
            n = 0
            while n < args.connections:
                count = min(per, args.connections - n)
                holders.append(subprocess.Popen(
                    [sys.executable, __file__, "--hold", str(port), str(count),
                     str(args.phase + 120)], stdout=subprocess.PIPE, text=True))
                n += count
            for h in holders:
                h.stdout.readline()
            await asyncio.sleep(2)
            samples = []

            async def sample():
                while True:
                    try:
                        samples.append(await asyncio.to_thread(metrics, url))
                    except OSError:
                        pass
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            keep = asyncio.create_task(probes(port, token, args.rate, args.phase, pools=pools))
            fresh = await probes(port, token, args.rate, args.phase, fresh=True)
            keep = await keep
            sampler.cancel()
            return warm, keep, fresh, samples

        _, keep, fresh, samples = asyncio.run(conns_phase())
        peak = max((m.get("client_connections", 0) for m in samples), default=0)
        r["conns"] = {"held": args.connections, "holders": len(holders),
                      "keepalive": keep, "fresh": fresh,
                      "metrics": {"client_connections peak": peak,
                                  **(samples[-1] if samples else {})}}
    finally:
        for h in holders:
            h.kill()
            h.wait()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    (out / "storm.json").write_text(json.dumps(r, indent=2))
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip or a.startswith("--out"):
            skip = a == "--out"
            continue
        shown.append(a)
    command = "python3 bench/storm.py " + " ".join(shown)
    text = report_md(r, command)
    print(text)
    if args.reliability:
        write_section(args.reliability, text)
    bad = (r["signins"]["storm"]["answers"].get("500", 0)
           + r["signins"]["storm"]["refusals_without_retry_after_or_detail"])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A slow-client storm against authgate, while /health and a forwarded route
are requested: do they keep answering, how fast, and how large does authgate
grow?

Starts the test upstream and authgate (native mode on a throwaway embedded
SQLite store, one public route /pub to the upstream), then:

  before  --phase seconds of probes alone (the baseline);
  storm   --connections connections that each send one header byte every
          --byte-every seconds and never finish their head (opened over the
          first --byte-every seconds; one the server closes is opened again
          at once), for --storm seconds, with the probes going on;
  after   --phase seconds of probes alone once the storm has let go.

The probes ask GET /health and GET /pub/bench (forwarded) at --rate requests
per second each, every one on a new connection (as a health checker or a
new client would), latency counted from when the request was due (so a
stalled server is not hidden by fewer requests). authgate's resident size
is sampled every second. Loopback only; bounded in time (about
--storm + 2 x --phase + 10 seconds).

Prints a report and writes slow-clients.json (and the processes' logs) into
--out. Exit 1 when a probe failed during or after the storm.

usage: slow_clients.py --authgate BIN --upstream-bin BIN [--out DIR]
         [--connections 10000] [--byte-every 10] [--storm 60] [--phase 5]
         [--rate 20] [--workers 0] [--env NAME=VALUE ...]
"""

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
PROBE_PATHS = ("/health", "/pub/bench")


def log(msg):
    print(f"[slow-clients {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raise_open_files(needed):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < needed:
        sys.exit(f"open-file limit {soft} is too low for {needed} descriptors "
                 "(raise the hard limit: ulimit -Hn)")


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the storm (a child process)


class Storm:
    def __init__(self):
        self.open = 0
        self.peak_open = 0
        self.connects = 0
        self.connect_errors = 0
        self.bytes_sent = 0
        self.answers = {}  # status -> count
        self.closed_unanswered = 0
        self.resets = 0

    def snapshot(self):
        return {"open": self.open, "peak_open": self.peak_open, "connects": self.connects,
                "connect_errors": self.connect_errors, "bytes_sent": self.bytes_sent,
                "answers": dict(self.answers), "closed_unanswered": self.closed_unanswered,
                "resets": self.resets}


async def slow_connection(port, delay, byte_every, stop, storm):
    """One slow client, for as long as the storm lasts: opens a connection,
    sends one header byte every `byte_every` seconds, opens a new one when
    the server closes it."""
    await asyncio.sleep(delay)
    start = b"GET /pub/bench HTTP/1.1\r\nHost: storm\r\nX-Slow: "
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            storm.connect_errors += 1
            await asyncio.sleep(1)
            continue
        storm.connects += 1
        storm.open += 1
        storm.peak_open = max(storm.peak_open, storm.open)
        sent = 0
        try:
            while not stop.is_set():
                byte = start[sent:sent + 1] or b"a"
                writer.write(byte)
                sent += 1
                storm.bytes_sent += 1
                try:
                    data = await asyncio.wait_for(reader.read(4096), byte_every)
                except asyncio.TimeoutError:
                    continue
                if not data:
                    storm.closed_unanswered += 1
                    break
                status = data.split(b" ", 2)[1].decode(errors="replace") if b" " in data else "?"
                storm.answers[status] = storm.answers.get(status, 0) + 1
                break
        except (ConnectionError, OSError):
            storm.resets += 1
        finally:
            storm.open -= 1
            writer.close()


async def storm_main(args):
    storm = Storm()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(slow_connection(
        args.port, args.byte_every * i / args.connections, args.byte_every, stop, storm))
        for i in range(args.connections)]
    started = time.monotonic()
    while time.monotonic() - started < args.storm:
        await asyncio.sleep(1)
        print(json.dumps({"t": round(time.monotonic() - started, 1), **storm.snapshot()}),
              flush=True)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps({"done": True, **storm.snapshot()}), flush=True)


# ---------------------------------------------------------------- probes


def probe_once(port, path, timeout=10.0):
    """One request on a new connection: (status or None, error text)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        if not data.startswith(b"HTTP/1.1 "):
            return None, f"no answer ({len(data)} bytes)"
        return int(data.split(b" ", 2)[1]), None
    except OSError as e:
        return None, type(e).__name__


class Prober:
    """Requests each path at a fixed rate, on a thread per path."""

    def __init__(self, port, rate):
        self.port, self.rate = port, rate
        self.samples = []  # (phase, path, latency_s, ok, error)
        self.phase = "before"
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(p,), daemon=True)
                        for p in PROBE_PATHS]

    def start(self):
        for t in self.threads:
            t.start()

    def run(self, path):
        period = 1 / self.rate
        due = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            phase = self.phase
            status, error = probe_once(self.port, path)
            latency = time.monotonic() - due
            self.samples.append((phase, path, latency, status == 200, error or status))
            due += period

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)

    def summary(self):
        out = {}
        for phase in ("before", "storm", "after"):
            for path in PROBE_PATHS:
                rows = [s for s in self.samples if s[0] == phase and s[1] == path]
                if not rows:
                    continue
                lat = sorted(r[2] * 1000 for r in rows)
                failures = {}
                for r in rows:
                    if not r[3]:
                        failures[str(r[4])] = failures.get(str(r[4]), 0) + 1
                out[f"{phase} {path}"] = {
                    "requests": len(rows), "failed": sum(failures.values()),
                    "failures": failures,
                    "p50_ms": round(statistics.median(lat), 2),
                    "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 2),
                    "max_ms": round(lat[-1], 2),
                }
        return out


# ---------------------------------------------------------------- the run


def metrics_text(url):
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def start(argv, log_path, env=None, cwd=None):
    return subprocess.Popen(argv, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_listening(log_path, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = Path(log_path).read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("listening on "):
                return int(line.rsplit(":", 1)[1])
        if proc.poll() is not None:
            sys.exit(f"{log_path}: exited:\n{text[-2000:]}")
        time.sleep(0.1)
    sys.exit(f"{log_path}: not listening after {timeout}s")


def wait_healthy(url, proc, log_path, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"authgate exited:\n{Path(log_path).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"authgate not healthy after {timeout}s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authgate")
    p.add_argument("--upstream-bin")
    p.add_argument("--out", default=".state/bench")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--byte-every", type=float, default=10.0)
    p.add_argument("--storm", type=float, default=60.0)
    p.add_argument("--phase", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting for authgate (repeatable)")
    p.add_argument("--storm-client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.storm_client:
        raise_open_files(args.connections + 100)
        asyncio.run(storm_main(args))
        return 0
    if not (args.authgate and args.upstream_bin):
        p.error("--authgate and --upstream-bin are required")
    raise_open_files(args.connections + 200)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    try:
        up = start([args.upstream_bin, "--port", "0", "--name", "slow"], out / "slow-upstream.log")
        procs.append(up)
        up_port = wait_listening(out / "slow-upstream.log", up)
        data = Path(tempfile.mkdtemp(prefix="authgate-slow-"))
        routes = data / "routes.toml"
        routes.write_text(f'[[routes]]\nprefix = "/pub"\nupstreams = ["{HOST}:{up_port}"]\n'
                          'policy = "public"\n')
        port = free_port()
        url = f"http://{HOST}:{port}"
        env = {"PATH": os.environ.get("PATH", ""), "SECRET_KEY": "bench-secret-key-0123456789abcde",
               "DATA_DIR": str(data), "ROUTES_FILE": str(routes), "APP_HOST": HOST,
               "APP_PORT": str(port), "RUST_LOG": "warn", "SHUTDOWN_GRACE_SECONDS": "1"}
        if args.workers:
            env["APP_WORKERS"] = str(args.workers)
        for item in args.env:
            name, _, value = item.partition("=")
            env[name] = value
        gw_log = out / "slow-authgate.log"
        gw = start([args.authgate, "serve"], gw_log, env=env, cwd=data)
        procs.append(gw)
        wait_healthy(url, gw, gw_log)
        time.sleep(1)
        idle_rss = rss_mb(gw.pid)
        log(f"authgate on {url} (pid {gw.pid}), {idle_rss:.1f} MB idle; "
            f"probes {args.rate:g}/s on {', '.join(PROBE_PATHS)}")

        prober = Prober(port, args.rate)
        prober.start()
        time.sleep(args.phase)
        cpu_before = cpu_seconds(gw.pid)

        log(f"storm: {args.connections} connections, one header byte every "
            f"{args.byte_every:g} s, for {args.storm:g} s")
        prober.phase = "storm"
        storm = subprocess.Popen(
            [sys.executable, __file__, "--storm-client", "--port", str(port),
             "--connections", str(args.connections), "--byte-every", str(args.byte_every),
             "--storm", str(args.storm)],
            stdout=subprocess.PIPE, stderr=open(out / "slow-storm.log", "w"), text=True,
            start_new_session=True)
        procs.append(storm)
        peak_rss, peak_gauge, last = idle_rss, 0.0, {}
        for line in storm.stdout:
            last = json.loads(line)
            peak_rss = max(peak_rss, rss_mb(gw.pid))
            if int(last.get("t", 0)) % 5 == 0 or last.get("done"):
                try:
                    peak_gauge = max(peak_gauge, metric(metrics_text(url),
                                                        "authgate_client_connections") or 0)
                except OSError:
                    pass
                log(f"  storm {last.get('t', 'end')}: {last['open']} open, "
                    f"{last['connects']} opened, answers {last['answers']}, "
                    f"{last['closed_unanswered']} closed unanswered; authgate "
                    f"{rss_mb(gw.pid):.1f} MB")
        storm.wait(30)
        cpu_storm = cpu_seconds(gw.pid) - cpu_before
        prober.phase = "after"
        time.sleep(args.phase)
        prober.finish()
        after_rss = rss_mb(gw.pid)
        final = metrics_text(url)
        results = {
            "settings": {k: v for k, v in vars(args).items()
                         if k not in ("authgate", "upstream_bin", "storm_client", "port")},
            "authgate": args.authgate,
            "probes": prober.summary(),
            "storm": last,
            "authgate_rss_mb": {"idle": round(idle_rss, 1), "storm_peak": round(peak_rss, 1),
                                "after": round(after_rss, 1)},
            "authgate_cpu_seconds_during_storm": round(cpu_storm, 2),
            "metrics": {name: metric(final, name) for name in (
                "authgate_client_header_timeouts_total", "authgate_connections_refused_total",
                "authgate_client_write_timeouts_total")},
            "client_connections_gauge_peak": peak_gauge,
        }
        (out / "slow-clients.json").write_text(json.dumps(results, indent=2))
        report(results)
        failed = sum(v["failed"] for k, v in results["probes"].items() if not k.startswith("before"))
        return 1 if failed else 0
    finally:
        for proc in reversed(procs):
            stop(proc)


def report(r):
    print()
    print("| phase, probe | requests | failed | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for key, v in r["probes"].items():
        failed = f"{v['failed']} {v['failures']}" if v["failed"] else "0"
        print(f"| {key} | {v['requests']} | {failed} | {v['p50_ms']} | {v['p99_ms']} | "
              f"{v['max_ms']} |")
    s, rss = r["storm"], r["authgate_rss_mb"]
    print()
    print(f"Storm: {r['settings']['connections']} slow connections (peak {s['peak_open']} open "
          f"at the client), {s['connects']} opened in all, {s['bytes_sent']} header bytes sent; "
          f"answers {s['answers']}, {s['closed_unanswered']} closed unanswered, "
          f"{s['resets']} reset, {s['connect_errors']} connect errors.")
    print(f"authgate: resident {rss['idle']} MB idle, {rss['storm_peak']} MB at most during "
          f"the storm, {rss['after']} MB after; {r['authgate_cpu_seconds_during_storm']} s of CPU "
          f"during the storm; open-connection gauge peak {r['client_connections_gauge_peak']}; "
          f"{r['metrics']}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Timing oracle check: do forgot-password and resend-verification answer a
known address in the time they answer an unknown one (deliberate
difference 3)?

For each mode (native on PostgreSQL, native on the embedded SQLite store,
keycloak mode) it starts authgate on loopback (a fresh database, rate limits
off, mail to an outbox folder), signs up `--requests` unverified users, then
times, over one keep-alive connection, one request per known user and one
per never-used address at each endpoint, interleaved (known first, then
unknown first, and so on), after a few unrecorded warm-up requests, with a
pause between samples so that the work a known address leaves for after the
answer does not fall on the next one. It prints the medians and how far
apart they are; the goal is within 10 %.

Usage: python3 bench/timing_oracle.py [--authgate target/release/authgate]
  [--requests 40] [--modes native,sqlite,keycloak] [--strict]
Needs PostgreSQL (scripts/services.sh start) and, for keycloak mode,
Keycloak (keycloak/start.sh); see bench/README.md.
"""

import argparse
import http.client
import json
import os
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (the process and database helpers of the suite)

ENDPOINTS = ("/users/forgot-password", "/users/resend-verification")
GOAL = 0.10
WARMUP = 5
PAUSE = 0.2


def post(conn, path, body):
    """Seconds to answer one POST over a kept-alive connection, and the answer."""
    data = json.dumps(body).encode()
    started = time.perf_counter()
    conn.request("POST", path, data, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    raw = resp.read()
    took = time.perf_counter() - started
    return took, resp.status, json.loads(raw or b"null")


def sign_up(url, who):
    body = {"email": f"{who}@example.com", "username": who, "password": "timing-oracle-pw"}
    status, answer = suite.http("POST", url + "/users/signup", body)
    if status != 200:
        raise suite.BenchError(f"signup {who}: {status} {answer}")
    return body["email"]


def measure(url, path, known, field):
    """Answer times (ms) of `path` for each known address and as many new ones."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    times = {"known": [], "unknown": []}
    answers = {"known": set(), "unknown": set()}
    ghost = lambda: f"ghost-{secrets.token_hex(6)}@example.com"  # noqa: E731
    for _ in range(WARMUP):
        post(conn, path, {field: ghost()})
        time.sleep(PAUSE)
    for i, address in enumerate(known):
        order = [("known", address), ("unknown", ghost())]
        if i % 2:
            order.reverse()
        for kind, addr in order:
            took, status, answer = post(conn, path, {field: addr})
            if status != 200:
                raise suite.BenchError(f"{path} {kind}: {status} {answer}")
            times[kind].append(took * 1e3)
            answers[kind].add(json.dumps(answer, sort_keys=True))
            time.sleep(PAUSE)
    conn.close()
    if answers["known"] != answers["unknown"]:
        raise suite.BenchError(f"{path}: answers differ: {answers}")
    return times


def run_mode(args, mode, out):
    env = {"PASSWORD_PBKDF2_ROUNDS": "1000"}
    if mode == "native":
        env["DATABASE_URL"] = suite.fresh_database(args.database_url, "authgate_bench_oracle")
    elif mode == "sqlite":
        env["DATA_DIR"] = str(out / "data-sqlite")
        shutil.rmtree(env["DATA_DIR"], ignore_errors=True)
    else:
        env.update({"AUTH_BACKEND": "keycloak", "KEYCLOAK_URL": args.keycloak,
                    "DATABASE_URL": suite.fresh_database(args.database_url,
                                                         "authgate_bench_oracle_kc")})
    routes = out / "routes.toml"
    routes.write_text("")
    proc, url = suite.start_authgate(f"authgate-oracle-{mode}", args, out, env, routes)
    try:
        prefix = "oracle" + secrets.token_hex(3)
        known = [sign_up(url, f"{prefix}{i}") for i in range(args.requests)]
        time.sleep(1)  # the sign-up mails go out in the background
        rows = []
        for path in ENDPOINTS:
            times = measure(url, path, known, "email")
            k, u = statistics.median(times["known"]), statistics.median(times["unknown"])
            rows.append({"mode": mode, "endpoint": path, "known_ms": k, "unknown_ms": u,
                         "apart": abs(k - u) / min(k, u), "samples": len(times["known"]),
                         "known_all": times["known"], "unknown_all": times["unknown"]})
        return rows
    finally:
        proc.stop()
        suite.PROCS.remove(proc)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authgate", default="target/release/authgate")
    p.add_argument("--database-url", default=os.environ.get(
        "AUTHGATE_TEST_DATABASE_URL", "postgres://authgate:authgate@127.0.0.1:55432/postgres"))
    p.add_argument("--keycloak", default=os.environ.get(
        "AUTHGATE_TEST_KEYCLOAK_URL", "http://127.0.0.1:8080"))
    p.add_argument("--modes", default="native,sqlite,keycloak")
    p.add_argument("--requests", type=int, default=40,
                   help="timed requests per endpoint and kind of address (1 to 200)")
    p.add_argument("--out", default=os.path.join(
        os.environ.get("AUTHGATE_STATE_DIR", ".state"), "bench", "timing-oracle"))
    p.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = p.parse_args()
    if not 1 <= args.requests <= 200:
        p.error(f"--requests must be 1 to 200 (got {args.requests})")
    if not Path(args.authgate).is_file():
        p.error(f"{args.authgate} not found: cargo build --release (or pass --authgate)")
    args.authgate = str(Path(args.authgate).resolve())
    args.workers = 0
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            if mode not in ("native", "sqlite", "keycloak"):
                p.error(f"unknown mode {mode!r}")
            suite.log(f"{mode}: {args.requests} known and {args.requests} unknown addresses")
            rows += run_mode(args, mode, out)
    except suite.BenchError as e:
        suite.log(f"ERROR: {e}")
        return 2
    finally:
        suite.stop_all()

    lines = ["| mode | endpoint | known: median ms | unknown: median ms | apart | goal |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        met = r["apart"] <= GOAL
        lines.append(f"| {r['mode']} | {r['endpoint']} | {r['known_ms']:.2f} | "
                     f"{r['unknown_ms']:.2f} | {r['apart'] * 100:.1f} % | "
                     f"≤ {GOAL * 100:.0f} %: {'met' if met else 'MISSED'} |")
    report = "\n".join(lines)
    print(report)
    (out / "table.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps(
        {"requests": args.requests, "pause_s": PAUSE, "rows": rows}, indent=2))
    print(f"(every sample in {out / 'results.json'})")
    if args.strict and any(r["apart"] > GOAL for r in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

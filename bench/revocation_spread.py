#!/usr/bin/env python3
"""How long a revocation made on one replica takes to be refused by another.

Two authgate replicas (native mode) share one fresh PostgreSQL database and
Redis (REDIS_URL). Each round signs a new user up and in on replica A, checks that
replica B accepts the access token, signs out on A, then asks B for
GET /users/me/ until it answers 403 (polled back to back, bounded by
--limit seconds). Prints the time from A's answer to B's first refusal:
median, 90th percentile, maximum, and how many were within 1 s (the goal).

Loopback only, bounded in rounds and time. Example:

    bench/revocation_spread.py --authgate target/dist/authgate \\
        --database-url "$AUTHGATE_TEST_DATABASE_URL" \\
        --redis-url "$AUTHGATE_TEST_REDIS_URL" --rounds 50
"""

import argparse
import email
import email.policy
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (the shared helpers: processes, HTTP, users)


def new_user(url, outbox, who):
    """Signs a user up, verifies the address with the link of the mail that
    signup added to the outbox, signs in; the access token."""
    seen = set(Path(outbox).glob("*verification*.eml")) if Path(outbox).exists() else set()
    body = {"email": f"{who}@example.com", "username": who, "password": "benchmark-pass"}
    status, answer = suite.http("POST", url + "/users/signup", body)
    if status != 200:
        raise suite.BenchError(f"signup {who}: {status} {answer}")
    token = None
    for _ in range(100):
        fresh = [f for f in Path(outbox).glob("*verification*.eml") if f not in seen]
        if fresh:
            msg = email.message_from_bytes(fresh[0].read_bytes(), policy=email.policy.default)
            for part in msg.walk():
                if part.get_content_maintype() == "text":
                    m = re.search(r"token=([A-Za-z0-9._~-]+)", part.get_content())
                    token = token or (m and m.group(1))
            break
        time.sleep(0.05)
    if not token:
        raise suite.BenchError(f"no verification mail for {who}")
    status, answer = suite.http("POST", url + "/users/verify-email", {"token": token})
    if status != 200:
        raise suite.BenchError(f"verify-email {who}: {status} {answer}")
    status, answer = suite.http("POST", url + "/users/signin",
                                {"username": body["email"], "password": body["password"]})
    if status != 200:
        raise suite.BenchError(f"signin {who}: {status} {answer}")
    return answer["access_token"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--authgate", required=True, help="the authgate binary")
    p.add_argument("--database-url", required=True, help="admin URL of the test PostgreSQL")
    p.add_argument("--redis-url", required=True)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--limit", type=float, default=5.0, help="seconds to wait per round")
    p.add_argument("--workers", type=int, default=0)
    a = p.parse_args()
    if not 1 <= a.rounds <= 500:
        p.error("--rounds must be 1 to 500")
    a.authgate = str(Path(a.authgate).resolve())

    out = Path(tempfile.mkdtemp(prefix="authgate-spread-"))
    routes = out / "routes.toml"
    routes.write_text("")
    db = suite.fresh_database(a.database_url, "authgate_bench_spread")
    env = {"AUTH_BACKEND": "native", "DATABASE_URL": db, "REDIS_URL": a.redis_url}
    procs = []
    try:
        gw_a, url_a = suite.start_authgate("spread-a", a, out, env, routes)
        procs.append(gw_a)
        gw_b, url_b = suite.start_authgate("spread-b", a, out, env, routes)
        procs.append(gw_b)
        spreads, late = [], 0
        tag = f"{int(time.time())}"
        for i in range(a.rounds):
            # A user per round: one sign-in each (repeated sign-ins of one
            # account are not what is measured here).
            token = new_user(url_a, out / "outbox-spread-a", f"spread{tag}x{i}")
            bearer = {"Authorization": f"Bearer {token}"}
            status, _ = suite.http("GET", url_b + "/users/me/", headers=bearer)
            if status != 200:
                raise suite.BenchError(f"replica B refused a fresh token: {status}")
            status, answer = suite.http("POST", url_a + "/users/signout", {}, headers=bearer)
            if status != 200:
                raise suite.BenchError(f"signout: {status} {answer}")
            revoked = time.perf_counter()
            while True:
                status, _ = suite.http("GET", url_b + "/users/me/", headers=bearer)
                took = time.perf_counter() - revoked
                if status == 403:
                    spreads.append(took)
                    break
                if status != 200:
                    raise suite.BenchError(f"replica B answered {status}")
                if took > a.limit:
                    late += 1
                    break
        spreads.sort()
        ms = [s * 1000 for s in spreads]
        result = {
            "rounds": a.rounds,
            "refused": len(spreads),
            "not_refused_within_limit": late,
            "median_ms": round(statistics.median(ms), 2) if ms else None,
            "p90_ms": round(ms[int(0.9 * (len(ms) - 1))], 2) if ms else None,
            "max_ms": round(ms[-1], 2) if ms else None,
            "within_1s": sum(1 for s in spreads if s <= 1.0),
        }
        print(json.dumps(result, indent=2))
        ok = late == 0 and result["within_1s"] == a.rounds
        print(f"goal (every revocation refused on the other replica within 1 s): "
              f"{'met' if ok else 'MISSED'}")
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())

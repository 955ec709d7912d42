#!/usr/bin/env python3
"""The import benchmark's measurements (bench/import_users.sh prepares the
binary, PostgreSQL and a private Keycloak, then runs this).

1. A legacy database of N users in the schema `authgate migrate` creates on
   an empty database, with real passlib pbkdf2-sha256 hashes (a few
   distinct ones, half of them with the old service's shared salt, reused).
2. Keycloak's partial import alone: the same users, with the same
   representations authgate sends, posted straight to `partialImport` by
   this script, in batches of the same size with as many in flight.
3. `authgate import-users` into the same, freshly started, Keycloak.
Each phase starts on an empty realm (Keycloak is restarted between them)
and reports users per second and the peak resident size of Keycloak (and
of authgate); then a few imported users sign in at Keycloak with their old
passwords. Loopback only, each phase bounded by --timeout.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

SECRET_KEY = "9e25a2588fcee7d21ea15fb1a63d5135"
ROUNDS = 29000  # the old service's (passlib's default at the time)
# keycloak_id_of in src/identity/keycloak/import/mod.rs
KEYCLOAK_ID_NAMESPACE = uuid.UUID("66ad39b3-9fed-47f4-b982-ceb59e3a5785")
REALM = "authgate"
IMPORT_CLIENT = ("authgate-import", "authgate-import-dev-secret")
GATEWAY_CLIENT = ("authgate", "authgate-dev-secret")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(message):
    print(f"[import bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- legacy database


def ab64(raw):
    return base64.b64encode(raw).decode().rstrip("=").replace("+", ".")


def passlib_hash(password, salt):
    checksum = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ROUNDS)
    return f"$pbkdf2-sha256${ROUNDS}${ab64(salt)}${ab64(checksum)}"


def passwords():
    """Eight (password, hash) pairs: even ones salted with SECRET_KEY (the old
    service's shared salt), odd ones with a random 16-byte salt."""
    pairs = []
    for n in range(8):
        password = f"bench-password-{n}"
        salt = SECRET_KEY.encode() if n % 2 == 0 else os.urandom(16)
        pairs.append((password, passlib_hash(password, salt)))
    return pairs


def psql(url, sql, **kw):
    return subprocess.run(
        ["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
        check=True, capture_output=True, text=True, **kw,
    ).stdout.strip()


def build_legacy_database(admin_url, name, authgate, n, pairs):
    psql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(admin_url, f"CREATE DATABASE {name}")
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    subprocess.run([authgate, "migrate"], env=authgate_env(url, None), check=True,
                   capture_output=True)
    hashes = ",".join(f"'{h}'" for _, h in pairs)
    started = time.monotonic()
    psql(url, f"""
        INSERT INTO users (id, username, email, password, is_verified, verification_attempts,
                           created_at, updated_at, is_active, is_deleted)
        SELECT i, 'bench_' || i, 'bench_' || i || '@example.com',
               (ARRAY[{hashes}])[1 + i % {len(pairs)}], i % 10 <> 0, 0,
               now(), now(), true, false
        FROM generate_series(1, {n}) AS i;
        SELECT setval('users_id_seq', {n});
    """)
    log(f"legacy database {name}: {n} users in {time.monotonic() - started:.1f}s")
    return url


def legacy_rows(url):
    """The live users by id, streamed (COPY), as authgate reads them."""
    sql = ("COPY (SELECT id, username, email, password, COALESCE(is_verified, false) "
           "FROM users WHERE NOT COALESCE(is_deleted, false) AND COALESCE(is_active, true) "
           "ORDER BY id) TO STDOUT")
    with subprocess.Popen(["psql", url, "-q", "-At", "-c", sql], stdout=subprocess.PIPE,
                          text=True) as proc:
        for line in proc.stdout:
            id_, username, email, password, verified = line.rstrip("\n").split("\t")
            yield int(id_), username, email, password, verified == "t"


# ---------------------------------------------------------------- Keycloak


class Keycloak:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.tokens = {}
        self.lock = threading.Lock()

    def token(self, client, renew=False):
        with self.lock:
            if renew or client not in self.tokens:
                form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode()
                request = urllib.request.Request(
                    f"{self.base}/realms/{REALM}/protocol/openid-connect/token", data=form)
                auth = base64.b64encode(f"{client[0]}:{client[1]}".encode()).decode()
                request.add_header("Authorization", f"Basic {auth}")
                with urllib.request.urlopen(request, timeout=30) as answer:
                    self.tokens[client] = json.load(answer)["access_token"]
            return self.tokens[client]

    def admin(self, method, path, body=None, client=IMPORT_CLIENT, timeout=600):
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(2):
            request = urllib.request.Request(
                f"{self.base}/admin/realms/{REALM}{path}", data=data, method=method)
            request.add_header("Authorization", f"Bearer {self.token(client, renew=attempt > 0)}")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    text = answer.read()
                    return json.loads(text) if text else None
            except urllib.error.HTTPError as err:
                if err.code == 401 and attempt == 0:
                    continue  # the token expired: renew once
                raise RuntimeError(f"{method} {path}: {err.code} {err.read()[:300]!r}") from err
        raise RuntimeError("unreachable")

    def password_grant(self, username, password):
        form = urllib.parse.urlencode({
            "grant_type": "password", "client_id": GATEWAY_CLIENT[0],
            "client_secret": GATEWAY_CLIENT[1], "username": username, "password": password,
            "scope": "openid",
        }).encode()
        request = urllib.request.Request(
            f"{self.base}/realms/{REALM}/protocol/openid-connect/token", data=form)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")


def credential(stored):
    """As authgate's credential_of: salt and checksum in standard base64."""
    _, _, rounds, salt, checksum = stored.split("$")
    std = lambda text: base64.b64encode(base64.b64decode(text.replace(".", "+") + "==")).decode()  # noqa: E731
    return {
        "type": "password",
        "credentialData": json.dumps({"hashIterations": int(rounds), "algorithm": "pbkdf2-sha256"}),
        "secretData": json.dumps({"value": std(checksum), "salt": std(salt)}),
        "temporary": False,
    }


def representation(row):
    id_, username, email, password, verified = row
    return {
        "id": str(uuid.uuid5(KEYCLOAK_ID_NAMESPACE, f"{REALM}/{id_}")),
        "username": username,
        "email": email,
        "enabled": True,
        "emailVerified": verified,
        "attributes": {"legacy_id": [str(id_)]},
        "credentials": [credential(password)],
    }


def batches(rows, size):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------- measuring


def rss_mb(pid):
    """The resident size of a process and its descendants (kc.sh runs the
    JVM as a child)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError):
            pass
    return total / 1e6


class PeakRss:
    """The largest resident size of each process, sampled every 0.2 s."""

    def __init__(self, **pids):
        self.pids = dict(pids)
        self.peak = {name: rss_mb(pid) for name, pid in self.pids.items()}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def add(self, name, pid):
        self.pids[name] = pid
        self.peak.setdefault(name, 0.0)

    def sample(self):
        while not self.done.wait(0.2):
            for name, pid in list(self.pids.items()):
                self.peak[name] = max(self.peak[name], rss_mb(pid))

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def raw_partial_import(keycloak, url, batch_size, concurrency, timeout):
    """Keycloak's partial import alone: the script posts the users."""
    counts = {"ADDED": 0, "SKIPPED": 0}
    started = time.monotonic()
    deadline = started + timeout
    in_flight = set()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for batch in batches(legacy_rows(url), batch_size):
            if time.monotonic() > deadline:
                raise RuntimeError(f"Keycloak's partial import alone took more than {timeout} s")
            while len(in_flight) >= concurrency:
                done, in_flight = concurrent.futures.wait(
                    in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    for result in future.result()["results"]:
                        counts[result["action"]] = counts.get(result["action"], 0) + 1
            body = {"ifResourceExists": "SKIP", "users": [representation(r) for r in batch]}
            in_flight.add(pool.submit(keycloak.admin, "POST", "/partialImport", body))
        for future in concurrent.futures.as_completed(in_flight):
            for result in future.result()["results"]:
                counts[result["action"]] = counts.get(result["action"], 0) + 1
    return time.monotonic() - started, counts


def authgate_env(database_url, keycloak_url, extra=None):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AUTH_BACKEND": "keycloak",
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "RUST_LOG": "warn",
    }
    if keycloak_url:
        env["KEYCLOAK_URL"] = keycloak_url
    env.update(extra or {})
    return env


def authgate_import(authgate, url, keycloak_url, kc_pid, batch_size, concurrency, out, timeout):
    report = os.path.join(out, f"report-{batch_size}x{concurrency}.json")
    extra = {"IMPORT_BATCH_SIZE": str(batch_size), "IMPORT_CONCURRENCY": str(concurrency)}
    peak = PeakRss(keycloak=kc_pid)
    started = time.monotonic()
    with open(os.path.join(out, f"authgate-{batch_size}x{concurrency}.log"), "w") as logs:
        proc = subprocess.Popen([authgate, "import-users", "--report", report],
                                env=authgate_env(url, keycloak_url, extra), stdout=logs,
                                stderr=subprocess.STDOUT)
        peak.add("authgate", proc.pid)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError(f"authgate import-users took more than {timeout} s")
    seconds = time.monotonic() - started
    rss = peak.stop()
    with open(report) as f:
        written = json.load(f)
    if code != 0 or written["ending"]["state"] != "complete":
        raise RuntimeError(f"authgate import-users exited {code}: {written['ending']}")
    return seconds, written, rss


def authgate_defaults(authgate):
    """authgate's own batch size and concurrency, as its --help says them."""
    text = subprocess.run([authgate, "import-users", "--help"], capture_output=True,
                          text=True, check=True).stdout
    found = {}
    for key, setting in (("batch_size", "IMPORT_BATCH_SIZE"), ("concurrency", "IMPORT_CONCURRENCY")):
        match = re.search(setting + r", else (\d+)\]", text)
        if not match:
            raise RuntimeError(f"authgate import-users --help does not say the default of {setting}")
        found[key] = int(match.group(1))
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--authgate", required=True)
    parser.add_argument("--database-url", required=True, help="an admin URL of PostgreSQL")
    parser.add_argument("--keycloak", required=True, help="the private Keycloak's base URL")
    parser.add_argument("--keycloak-pid-file", required=True)
    parser.add_argument("--restart-keycloak", required=True,
                        help="a command that restarts the private Keycloak on an empty realm")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=0, help="0: authgate's default")
    parser.add_argument("--concurrency", type=int, default=0, help="0: authgate's default")
    parser.add_argument("--sweep", default="", help="batch sizes x concurrencies to compare, e.g. 100x2,250x2")
    parser.add_argument("--raw", type=int, default=1, help="0: leave out Keycloak's partial import alone")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per phase")
    parser.add_argument("--warmup", type=int, default=0,
                        help="other users imported first after each restart, not measured")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    defaults = authgate_defaults(args.authgate)
    keycloak = Keycloak(args.keycloak)
    kc_pid = lambda: int(open(args.keycloak_pid_file).read().strip())  # noqa: E731
    pairs = passwords()
    url = build_legacy_database(args.database_url, "authgate_bench_import", args.authgate,
                                args.users, pairs)
    results = {"users": args.users, "machine": {"cores": os.cpu_count()}, "rows": []}

    sample = [i for i in (1, 2, args.users // 2 + 3, args.users - 1) if i % 10 and 0 < i <= args.users]

    def sign_in_sample():
        """Imported users sign in at Keycloak with their old passwords (both
        kinds of salt; every tenth user is unverified and left out)."""
        return sum(
            keycloak.password_grant(f"bench_{i}", pairs[i % len(pairs)][0])[0] == 200
            for i in sample
        )

    fresh = True  # Keycloak was just started on an empty realm

    def empty_realm():
        nonlocal fresh
        if not fresh:
            log("restarting Keycloak on an empty realm")
            subprocess.run(args.restart_keycloak, shell=True, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        fresh = False
        if args.warmup:
            # Other users, other ids: Keycloak's JIT and caches warm, not measured.
            rows = ((args.users + i, f"warmup_{i}", f"warmup_{i}@example.com", pairs[0][1], True)
                    for i in range(1, args.warmup + 1))
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda batch: keycloak.admin("POST", "/partialImport", {
                    "ifResourceExists": "SKIP", "users": [representation(r) for r in batch]}),
                    batches(rows, 100)))
            log(f"warm-up: {args.warmup} other users in {time.monotonic() - started:.1f}s")

    configs = [(args.batch_size, args.concurrency)]
    if args.sweep:
        configs = [tuple(int(x) for x in c.split("x")) for c in args.sweep.split(",")]
    for size, flight in configs:
        size = size or defaults["batch_size"]
        flight = flight or defaults["concurrency"]
        if args.raw:
            empty_realm()
            log(f"Keycloak's partial import alone: {args.users} users, batches of {size}, {flight} in flight")
            peak = PeakRss(keycloak=kc_pid())
            seconds, counts = raw_partial_import(keycloak, url, size, flight, args.timeout)
            rss = peak.stop()
            row = {"what": "Keycloak partialImport alone (script)", "batch_size": size,
                   "concurrency": flight, "seconds": seconds, "users_per_second": args.users / seconds,
                   "added": counts.get("ADDED", 0), "skipped": counts.get("SKIPPED", 0),
                   "keycloak_rss_mb": rss["keycloak"], "authgate_rss_mb": None,
                   "sign_ins_ok": sign_in_sample()}
            results["rows"].append(row)
            log(f"  {seconds:.1f}s, {row['users_per_second']:.0f} users/s, Keycloak {rss['keycloak']:.0f} MB")
        empty_realm()
        psql(url, "DELETE FROM authgate_identities; DELETE FROM authgate_import_progress; "
                  "DELETE FROM authgate_import_failures")
        log(f"authgate import-users: {args.users} users, batches of {size}, {flight} in flight")
        seconds, report, rss = authgate_import(args.authgate, url, args.keycloak, kc_pid(), size,
                                               flight, args.out, args.timeout)
        totals = report["totals"]
        row = {"what": "authgate import-users", "batch_size": size, "concurrency": flight,
               "seconds": seconds, "users_per_second": args.users / seconds,
               "added": totals["imported"], "skipped": totals["skipped"],
               "failed": totals["failed"], "keycloak_rss_mb": rss["keycloak"],
               "authgate_rss_mb": rss["authgate"], "sign_ins_ok": sign_in_sample()}
        results["rows"].append(row)
        log(f"  {seconds:.1f}s, {row['users_per_second']:.0f} users/s, authgate {rss['authgate']:.0f} MB, "
            f"Keycloak {rss['keycloak']:.0f} MB")

    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nimport of {args.users} legacy users into an empty realm ({os.cpu_count()} cores)\n")
    print("| what | batch × in flight | time | users/s | peak RSS authgate | peak RSS Keycloak | sign-ins |")
    print("|---|---|---|---|---|---|---|")
    for row in results["rows"]:
        authgate_rss = f"{row['authgate_rss_mb']:.0f} MB" if row["authgate_rss_mb"] else "–"
        print(f"| {row['what']} | {row['batch_size']} × {row['concurrency']} | "
              f"{row['seconds']:.1f} s | {row['users_per_second']:.0f} | {authgate_rss} | "
              f"{row['keycloak_rss_mb']:.0f} MB | {row['sign_ins_ok']}/{len(sample)} |")
    best = min(r["seconds"] for r in results["rows"] if r["what"].startswith("authgate"))
    projected = best * 100_000 / args.users
    verdict = "met" if projected < 900 else "missed"
    print(f"\ngoal: 100 000 users in under 15 minutes: {verdict} "
          f"({projected / 60:.1f} min{'' if args.users == 100_000 else ', projected from ' + str(args.users)})")
    failed = [r for r in results["rows"] if r.get("failed") or r["sign_ins_ok"] < len(sample)
              or r["added"] + r["skipped"] != args.users]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

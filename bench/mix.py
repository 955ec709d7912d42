#!/usr/bin/env python3
"""The realistic request mix of bench/soak.py and bench/faults.py (standard
library only): sign-ups, verifications with the token read from the SMTP
server's mailbox, sign-ins, /users/me/, refreshes, sign-outs, and forwarded
requests on a public and on an authenticated route, at a fixed rate, spread
round robin over one or more authgate replicas.

Every request is recorded (start time, operation, replica, answer, latency);
`Mix.windows()` folds them into fixed windows. A request that gets no answer
within `timeout` seconds is recorded as hung (`TIMEOUT`). A replica that
refuses the connection (stopped) is skipped and the request goes to the next
one, as a load balancer does; those are counted apart (`failovers`).

Bounded: a fixed rate, at most `max_inflight` requests in flight (past it a
tick is skipped and counted), loopback only.
"""

import base64
import collections
import errno
import http.client
import json
import random
import re
import secrets
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = "timeout"      # no answer within the client timeout: a hung request
RESET = "reset"          # connection closed or reset before an answer
REFUSED = "refused"      # every replica refused the connection
PASSWORD = "soak-password-1"

# Share of each operation in the mix (verifications follow the mails, so
# they take the sign-up share's place when a token is waiting).
WEIGHTS = {
    "signup": 0.02,
    "signin": 0.02,
    "signout": 0.02,
    "refresh": 0.06,
    "me": 0.25,
    "public": 0.30,
    "private": 0.33,
}


def klass(status):
    """The class of an answer: 2xx, 3xx, 4xx, 5xx, or an error name."""
    if isinstance(status, int):
        return f"{status // 100}xx"
    return status


def jwt_claims(token):
    try:
        part = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError):
        return {}


class Mailbox:
    """Polls a maildev mailbox (GET /email) and keeps every mail it saw, so a
    restart of the mail server (which empties it) loses nothing already read."""

    def __init__(self, url):
        self.url = url
        self.seen = {}                      # maildev id -> (address, kind, token)
        self.by_address = collections.defaultdict(list)
        self.tokens = collections.deque()   # verification tokens not used yet
        self.lock = threading.Lock()

    def poll(self):
        try:
            with urllib.request.urlopen(self.url + "/email", timeout=5) as r:
                mails = json.load(r)
        except (OSError, ValueError):
            return False
        for m in mails:
            mid = m.get("id")
            if mid in self.seen:
                continue
            to = [t.get("address", "").lower() for t in m.get("to", [])]
            text = (m.get("text") or "") + (m.get("html") or "")
            found = re.search(r"token=([A-Za-z0-9._~-]+)", text)
            subject = (m.get("subject") or "").lower()
            kind = "verification" if "verif" in subject or "verify-email" in text else "other"
            with self.lock:
                self.seen[mid] = (to[0] if to else "", kind, found.group(1) if found else None)
                for a in to:
                    self.by_address[a].append(kind)
                if kind == "verification" and found:
                    self.tokens.append((to[0] if to else "", found.group(1)))
        return True

    def take_token(self):
        with self.lock:
            return self.tokens.popleft() if self.tokens else None


class Mix:
    def __init__(self, replicas, mailbox_url, rate, timeout=10.0, max_inflight=64,
                 seed_users=12, prefix=None):
        self.replicas = list(replicas)      # base URLs; None marks a replica left out
        self.rate = rate
        self.timeout = timeout
        self.max_inflight = max_inflight
        self.seed_users = seed_users
        self.prefix = prefix or "s" + secrets.token_hex(3)
        self.mailbox = Mailbox(mailbox_url)
        self.records = []                   # (t, op, replica, status, latency_s, detail)
        self.lock = threading.Lock()
        self.sessions = collections.deque()  # idle sessions: dict(email, access, refresh, device)
        self.signups = {}                   # email -> final status of its sign-up
        self.signup_times = {}              # email -> when its sign-up was sent
        self.verified = set()
        self.signins = []                   # (email, device_id) of 200 sign-ins
        self.signouts = []                  # (email, device_id) of 200 sign-outs
        self.skipped = 0                    # ticks skipped: max_inflight reached
        self.failovers = 0
        self.ended_sessions = 0             # sessions dropped after a 401/403
        self.inflight = 0
        self.rr = 0
        self.local = threading.local()
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.rng = random.Random(7)
        self.pool = ThreadPoolExecutor(max_workers=max_inflight)
        self.threads = []
        self.all_conns = []

    # ------------------------------------------------------------ one request

    def _conn(self, base):
        conns = getattr(self.local, "conns", None)
        if conns is None:
            conns = self.local.conns = {}
        c = conns.get(base)
        if c is None:
            host, port = base.split("//", 1)[1].split(":")
            c = conns[base] = http.client.HTTPConnection(host, int(port), timeout=self.timeout)
            with self.lock:
                self.all_conns.append(c)
        return c

    def _drop(self, base):
        c = getattr(self.local, "conns", {}).pop(base, None)
        if c is not None:
            c.close()

    def request(self, op, method, path, body=None, token=None):
        """One request, recorded; returns (status, parsed JSON or None)."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        n = len(self.replicas)
        with self.lock:
            start_rr = self.rr
            self.rr += 1
        t = time.monotonic() - self.t0
        began = time.monotonic()
        status, detail, answer, replica = REFUSED, "", None, -1
        for i in range(n):
            replica = (start_rr + i) % n
            base = self.replicas[replica]
            if base is None:
                continue
            fresh = getattr(self.local, "conns", {}).get(base) is None
            try:
                c = self._conn(base)
                c.request(method, path, body=data, headers=headers)
                r = c.getresponse()
                raw = r.read()
                status = r.status
                if r.getheader("connection", "").lower() == "close":
                    self._drop(base)
                try:
                    answer = json.loads(raw) if raw else None
                except ValueError:
                    answer = None
                if status >= 300:
                    detail = (answer.get("detail") if isinstance(answer, dict) else None) or raw[:60]
                    detail = detail if isinstance(detail, str) else json.dumps(detail)[:60]
                    if not isinstance(answer, dict):
                        detail = "(not JSON) " + str(detail)
                break
            except ConnectionRefusedError:
                self._drop(base)
                with self.lock:
                    self.failovers += 1
                status = REFUSED
                continue
            except socket.timeout:
                self._drop(base)
                status = TIMEOUT
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
                self._drop(base)
                # A keep-alive connection the server closed while idle: the
                # request was not read; a client sends it again on a new one.
                if not fresh and isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError)):
                    try:
                        c = self._conn(base)
                        c.request(method, path, body=data, headers=headers)
                        r = c.getresponse()
                        raw = r.read()
                        status = r.status
                        answer = json.loads(raw) if raw and raw[:1] in b"{[" else None
                        if status >= 300:
                            detail = answer.get("detail") if isinstance(answer, dict) else "(not JSON)"
                            detail = detail if isinstance(detail, str) else json.dumps(detail)[:60]
                        break
                    except ConnectionRefusedError:
                        self._drop(base)
                        status = REFUSED
                        continue
                    except socket.timeout:
                        self._drop(base)
                        status = TIMEOUT
                        break
                    except (OSError, http.client.HTTPException, ValueError) as e2:
                        self._drop(base)
                        status, detail = RESET, type(e2).__name__
                        break
                status, detail = RESET, type(e).__name__
                break
            except OSError as e:
                self._drop(base)
                if e.errno == errno.ECONNREFUSED:
                    status = REFUSED
                    continue
                status, detail = RESET, type(e).__name__
                break
            except http.client.HTTPException as e:
                self._drop(base)
                status, detail = RESET, type(e).__name__
                break
        latency = time.monotonic() - began
        with self.lock:
            self.records.append((t, op, replica, status, latency, detail))
        return status, answer

    # ------------------------------------------------------------ operations

    def new_email(self):
        return f"{self.prefix}-{secrets.token_hex(5)}@example.com"

    def op_signup(self):
        email = self.new_email()
        self.signups[email] = None
        self.signup_times[email] = time.monotonic() - self.t0
        status, _ = self.request("signup", "POST", "/users/signup",
                                 {"email": email, "username": email.split("@")[0],
                                  "password": PASSWORD})
        self.signups[email] = status

    def op_verify(self, email, token):
        status, _ = self.request("verify", "POST", "/users/verify-email", {"token": token})
        if status == 200:
            self.verified.add(email)
            return self.op_signin(email)
        if not isinstance(status, int) or status >= 500:
            # Not used: the token stays good, try again later.
            with self.mailbox.lock:
                self.mailbox.tokens.append((email, token))

    def op_signin(self, email=None):
        if email is None:
            if not self.verified:
                return self.op_public()
            email = self.rng.choice(sorted(self.verified))
        status, answer = self.request("signin", "POST", "/users/signin",
                                      {"username": email, "password": PASSWORD})
        if status == 200 and isinstance(answer, dict) and answer.get("access_token"):
            device = jwt_claims(answer["access_token"]).get("device_id")
            with self.lock:
                self.signins.append((email, device))
                self.sessions.append({"email": email, "access": answer["access_token"],
                                      "refresh": answer.get("refresh_token"), "device": device})

    def take_session(self):
        with self.lock:
            return self.sessions.popleft() if self.sessions else None

    def give_back(self, s):
        with self.lock:
            self.sessions.append(s)

    def give_back_unless_ended(self, s, status):
        """A session refused (401/403: ended, as after a Keycloak restart
        that lost it) is dropped, as a client would sign in again; the
        sign-ins of the mix make new ones."""
        if status in (401, 403):
            with self.lock:
                self.ended_sessions += 1
            return
        self.give_back(s)

    def op_me(self):
        s = self.take_session()
        if s is None:
            return self.op_public()
        status, _ = self.request("me", "GET", "/users/me/", token=s["access"])
        self.give_back_unless_ended(s, status)

    def op_private(self):
        s = self.take_session()
        if s is None:
            return self.op_public()
        status, _ = self.request("private", "GET", "/api/soak?i=" + str(self.rng.randrange(1000)),
                                 token=s["access"])
        self.give_back_unless_ended(s, status)

    def op_public(self):
        self.request("public", "GET", "/pub/soak?i=" + str(self.rng.randrange(1000)))

    def op_refresh(self):
        s = self.take_session()
        if s is None:
            return self.op_public()
        status, answer = self.request("refresh", "POST", "/users/refresh-token",
                                      {"refresh_token": s["refresh"]})
        if status == 200 and isinstance(answer, dict) and answer.get("access_token"):
            s["access"] = answer["access_token"]
            s["refresh"] = answer.get("refresh_token") or s["refresh"]
        self.give_back_unless_ended(s, status)

    def op_signout(self):
        with self.lock:
            keep = len(self.sessions) <= self.seed_users
        s = None if keep else self.take_session()
        if s is None:
            return self.op_me()
        status, _ = self.request("signout", "POST", "/users/signout", token=s["access"])
        if status == 200:
            with self.lock:
                self.signouts.append((s["email"], s["device"]))
        else:
            self.give_back_unless_ended(s, status)

    def pick(self):
        r = self.rng.random()
        acc = 0.0
        for op, w in WEIGHTS.items():
            acc += w
            if r < acc:
                break
        if op == "signup":
            pending = self.mailbox.take_token()
            if pending is not None:
                return lambda: self.op_verify(*pending)
        return getattr(self, "op_" + op)

    # ------------------------------------------------------------ running

    def _run_op(self, fn):
        try:
            fn()
        except Exception as e:  # a bug of the generator must not stop the run
            with self.lock:
                self.records.append((time.monotonic() - self.t0, "generator", -1, RESET, 0.0,
                                     f"{type(e).__name__}: {e}"))
        finally:
            with self.lock:
                self.inflight -= 1

    def _ticker(self):
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            nxt += period
            with self.lock:
                full = self.inflight >= self.max_inflight
                if not full:
                    self.inflight += 1
            if full:
                self.skipped += 1
            else:
                self.pool.submit(self._run_op, self.pick())
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1:
                nxt = time.monotonic()   # fell behind by a second: do not burst

    def _mail_poller(self):
        while not self.stop_event.is_set():
            self.mailbox.poll()
            self.stop_event.wait(0.5)

    def seed(self, log=print):
        """Users to start from: signed up, verified and signed in."""
        for _ in range(self.seed_users):
            self.op_signup()
        deadline = time.monotonic() + 60
        while len(self.verified) < self.seed_users and time.monotonic() < deadline:
            self.mailbox.poll()
            pending = self.mailbox.take_token()
            if pending is None:
                time.sleep(0.2)
                continue
            self.op_verify(*pending)
        if len(self.verified) < self.seed_users:
            raise RuntimeError(f"seeding: only {len(self.verified)} of {self.seed_users} "
                               "users verified within 60 s")
        log(f"seeded {self.seed_users} users, {len(self.sessions)} sessions")

    def start(self):
        self.t0 = time.monotonic()
        with self.lock:
            self.records.clear()
        for target in (self._ticker, self._mail_poller):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self.threads.append(th)

    def now(self):
        return time.monotonic() - self.t0

    def stop(self):
        self.stop_event.set()
        for th in self.threads:
            th.join()
        self.pool.shutdown(wait=True)
        self.close_connections()
        # Mail goes out after the sign-up's answer: give the last ones a
        # moment to reach the mailbox before its last reading.
        time.sleep(3)
        self.mailbox.poll()

    def close_connections(self):
        with self.lock:
            conns, self.all_conns = self.all_conns, []
        for c in conns:
            c.close()

    # ------------------------------------------------------------ figures

    def windows(self, width=10.0, end=None):
        """Per window: counts by class, p50/p99 latency (ms) of answered requests."""
        with self.lock:
            recs = list(self.records)
        end = end if end is not None else (max((r[0] for r in recs), default=0) + 1e-9)
        out = []
        n = max(1, int(end // width + (1 if end % width else 0)))
        buckets = [[] for _ in range(n)]
        for r in recs:
            i = min(int(r[0] // width), n - 1)
            buckets[i].append(r)
        for i, b in enumerate(buckets):
            lat = sorted(r[4] * 1000 for r in b if isinstance(r[3], int))
            classes = collections.Counter(klass(r[3]) for r in b)
            out.append({"t": round(i * width, 1), "requests": len(b),
                        "classes": dict(classes),
                        "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99)})
        return out


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return round(sorted_values[k], 2)

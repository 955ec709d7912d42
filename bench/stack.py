#!/usr/bin/env python3
"""The servers of bench/soak.py and bench/faults.py, all their own, on their
own ports and state dir (never the shared test servers): PostgreSQL, Redis and
maildev through scripts/services.sh (`start|stop NAME`), two test upstreams
(examples/upstream), a Keycloak through keycloak/start.sh when keycloak mode
runs, and one or two authgate replicas. Each can be stopped and started again
mid-run; a Keycloak started again keeps its database (users made meanwhile
stay), as a real Keycloak does.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import suite  # bench/suite.py: Proc, wait_http, log, psql, fresh_database
from suite import HOST, log

PG_USER = PG_PASSWORD = "authgate"
REALM = "authgate"


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def wait_port(port, timeout=30, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and not proc.alive():
            raise suite.BenchError(f"{proc.name} exited:\n{proc.tail()}")
        time.sleep(0.1)
    raise suite.BenchError(f"nothing listens on {HOST}:{port} after {timeout}s")


class Stack:
    def __init__(self, repo, state, out, authgate_bin, upstream_bin, base_port=47000,
                 pbkdf2_rounds=None, keycloak_url=None):
        self.repo, self.state, self.out = Path(repo), Path(state), Path(out)
        self.authgate_bin, self.upstream_bin = authgate_bin, upstream_bin
        b = base_port
        self.ports = {"postgres": b + 432, "redis": b + 379, "smtp": b + 25, "mailweb": b + 80,
                      "up0": b + 91, "up1": b + 92, "gw0": b + 101, "gw1": b + 102,
                      "keycloak": b + 180, "keycloak_mgmt": b + 1180}
        self.pbkdf2_rounds = pbkdf2_rounds
        self.shared_keycloak = keycloak_url
        self.keycloak_url = keycloak_url
        self.upstreams = [None, None]
        self.gws = [None, None]
        self.gw_env = [None, None]
        self.starts = {}
        self.db_url = None
        self.out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ services.sh

    def services_env(self):
        env = dict(os.environ)
        env.update({
            "AUTHGATE_STATE_DIR": str(self.state),
            "AUTHGATE_PG_PORT": str(self.ports["postgres"]),
            "AUTHGATE_REDIS_PORT": str(self.ports["redis"]),
            "AUTHGATE_SMTP_PORT": str(self.ports["smtp"]),
            "AUTHGATE_MAILDEV_WEB_PORT": str(self.ports["mailweb"]),
        })
        return env

    def service(self, action, name):
        with open(self.out / "services.log", "a") as f:
            subprocess.run([str(self.repo / "scripts/services.sh"), action, name],
                           env=self.services_env(), check=True, stdout=f, stderr=subprocess.STDOUT,
                           timeout=180)

    @property
    def admin_url(self):
        return f"postgres://{PG_USER}:{PG_PASSWORD}@{HOST}:{self.ports['postgres']}/postgres"

    @property
    def mailbox_url(self):
        return f"http://{HOST}:{self.ports['mailweb']}"

    @property
    def redis_url(self):
        return f"redis://{HOST}:{self.ports['redis']}"

    def start_services(self, db_name):
        for name in ("postgres", "redis", "maildev"):
            self.service("start", name)
        self.db_url = suite.fresh_database(self.admin_url, db_name)
        # An empty mailbox for the run.
        req = urllib.request.Request(self.mailbox_url + "/email/all", method="DELETE")
        urllib.request.urlopen(req, timeout=10).read()

    def stop_services(self):
        for name in ("maildev", "redis", "postgres"):
            try:
                self.service("stop", name)
            except subprocess.SubprocessError as e:
                log(f"stopping {name}: {e}")

    # ------------------------------------------------------------ upstreams

    def start_upstream(self, i):
        n = self.starts[f"up{i}"] = self.starts.get(f"up{i}", 0) + 1
        port = self.ports[f"up{i}"]
        p = suite.start(f"upstream{i}-{n}", [self.upstream_bin, "--port", str(port),
                                             "--name", f"up{i}"], self.out)
        self.upstreams[i] = p
        wait_port(port, proc=p)

    def stop_upstream(self, i):
        p = self.upstreams[i]
        if p is not None:
            p.stop()
            if p in suite.PROCS:
                suite.PROCS.remove(p)
            self.upstreams[i] = None

    def routes(self):
        ups = ", ".join(f'"{HOST}:{self.ports[f"up{i}"]}"' for i in (0, 1))
        path = self.out / "routes.toml"
        path.write_text(
            f'[[routes]]\nprefix = "/pub"\nupstreams = [{ups}]\npolicy = "public"\n\n'
            f'[[routes]]\nprefix = "/api"\nupstreams = [{ups}]\npolicy = "authenticated"\n')
        return path

    # ------------------------------------------------------------ Keycloak

    def keycloak_env(self):
        env = dict(os.environ)
        env.update({"AUTHGATE_STATE_DIR": str(self.state),
                    "KEYCLOAK_PORT": str(self.ports["keycloak"]),
                    "KEYCLOAK_MANAGEMENT_PORT": str(self.ports["keycloak_mgmt"])})
        return env

    def start_keycloak(self):
        """Our own Keycloak, fresh from the realm file (keycloak/start.sh)."""
        if self.shared_keycloak:
            return
        with open(self.out / "keycloak-start.log", "a") as f:
            r = subprocess.run([str(self.repo / "keycloak/start.sh")], env=self.keycloak_env(),
                               stdout=subprocess.PIPE, stderr=f, text=True, timeout=400)
        if r.returncode != 0:
            raise suite.BenchError(f"keycloak/start.sh failed (log: {self.out}/keycloak-start.log)")
        self.keycloak_url = r.stdout.strip().splitlines()[-1]

    def stop_keycloak(self):
        if self.shared_keycloak:
            raise suite.BenchError("the shared Keycloak is never stopped")
        with open(self.out / "keycloak-start.log", "a") as f:
            subprocess.run([str(self.repo / "keycloak/stop.sh")], env=self.keycloak_env(),
                           stdout=f, stderr=f, timeout=120)

    def restart_keycloak(self):
        """Starts our Keycloak again on the database it had (start.sh would
        begin from the realm file again and lose the users made meanwhile)."""
        cache = Path(os.environ.get("AUTHGATE_CACHE_DIR", Path.home() / ".cache/authgate"))
        kc_home = next(cache.glob("keycloak-*/bin/kc.sh")).parent.parent
        kc_state = self.state / "keycloak"
        env = self.keycloak_env()
        for java in ("/usr/lib/jvm/temurin-25-jdk-amd64",):
            if Path(java, "bin/java").exists():
                env["JAVA_HOME"] = java
                env["PATH"] = f"{java}/bin:{env['PATH']}"
        env["JAVA_OPTS_APPEND"] = f"-Dauthgate.keycloak.state={kc_state}"
        env.setdefault("KC_BOOTSTRAP_ADMIN_USERNAME", "admin")
        env.setdefault("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin")
        port, mgmt = self.ports["keycloak"], self.ports["keycloak_mgmt"]
        args = [str(kc_home / "bin/kc.sh"), "start-dev", f"--http-host={HOST}",
                f"--http-port={port}", f"--http-management-port={mgmt}",
                "--health-enabled=true", "--db=dev-file",
                f"--db-url=jdbc:h2:file:{kc_state}/h2/keycloakdb;NON_KEYWORDS=VALUE",
                "--hostname-strict=false"]
        with open(kc_state / "keycloak.log", "a") as f:
            p = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        (kc_state / "keycloak.pid").write_text(str(p.pid))
        url = f"{self.keycloak_url}/realms/{REALM}/.well-known/openid-configuration"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if p.poll() is not None:
                raise suite.BenchError("Keycloak exited while starting again")
            time.sleep(0.5)
        raise suite.BenchError("Keycloak not ready 300 s after starting again")

    def keycloak_admin_token(self):
        body = urllib.parse.urlencode({"grant_type": "password", "client_id": "admin-cli",
                                       "username": "admin", "password": "admin"}).encode()
        with urllib.request.urlopen(self.keycloak_url + "/realms/master/protocol/openid-connect/token",
                                    data=body, timeout=20) as r:
            return json.load(r)["access_token"]

    def keycloak_users(self, search):
        token = self.keycloak_admin_token()
        url = (f"{self.keycloak_url}/admin/realms/{REALM}/users?max=100000&briefRepresentation=true"
               f"&search={urllib.parse.quote(search)}")
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.load(r)

    # ------------------------------------------------------------ authgate

    def gw_url(self, i):
        return f"http://{HOST}:{self.ports[f'gw{i}']}"

    def start_gw(self, i, mode):
        port = self.ports[f"gw{i}"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SMTP_", "AUTHGATE_", "KEYCLOAK_", "POSTGRES_", "REDIS_"))}
        env.update({
            "SECRET_KEY": "soak-secret-key-0123456789abcdef",
            "ROUTES_FILE": str(self.routes()),
            "APP_HOST": HOST, "APP_PORT": str(port), "APP_URL": self.gw_url(i),
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "SMTP_HOST": HOST, "SMTP_PORT": str(self.ports["smtp"]), "SMTP_TLS": "none",
            "SMTP_TIMEOUT_SECONDS": "5",
            "RATE_LIMIT_SIGNUP_PER_IP": "off", "RATE_LIMIT_SIGNIN_PER_IP": "off",
            "RATE_LIMIT_SIGNIN_PER_ACCOUNT": "off", "RATE_LIMIT_EMAIL_PER_IP": "off",
            "RUST_LOG": "warn",
            "SHUTDOWN_GRACE_SECONDS": "5",
            "AUTH_BACKEND": mode,
        })
        if self.pbkdf2_rounds:
            env["PASSWORD_PBKDF2_ROUNDS"] = str(self.pbkdf2_rounds)
        if mode == "keycloak":
            env["KEYCLOAK_URL"] = self.keycloak_url
        n = self.starts[f"gw{i}"] = self.starts.get(f"gw{i}", 0) + 1
        p = suite.start(f"authgate{i}-{mode}-{n}", [self.authgate_bin, "serve"], self.out,
                        env=env, cwd=self.out)
        self.gws[i] = p
        suite.wait_http(self.gw_url(i) + "/health", p, timeout=120)
        return p

    def term_gw(self, i, wait=True):
        """SIGTERM to replica i (its drain), then wait for it to exit."""
        p = self.gws[i]
        if p is None:
            return None
        t = time.monotonic()
        os.kill(p.pid, signal.SIGTERM)
        if wait:
            try:
                p.popen.wait(30)
            except subprocess.TimeoutExpired:
                log(f"{p.name} still runs 30 s after SIGTERM: killed")
                p.stop()
        p.log_file.close()
        if p in suite.PROCS:
            suite.PROCS.remove(p)
        self.gws[i] = None
        return time.monotonic() - t


# ------------------------------------------------------------ a process's resources

def proc_sample(pid):
    """RSS (MB), open descriptors and threads of a process, or None when gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * suite.PAGE / 1e6
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None
    return {"rss_mb": round(rss, 2), "fds": fds, "threads": threads}


def tcp_of(pid):
    """The TCP sockets of a process, from ss: list of (state, local, peer)."""
    r = subprocess.run(["ss", "-tanpH"], capture_output=True, text=True, check=False)
    out = []
    for line in r.stdout.splitlines():
        if f"pid={pid}," not in line:
            continue
        parts = line.split()
        if len(parts) >= 5:
            out.append((parts[0], parts[3], parts[4]))
    return out

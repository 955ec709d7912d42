#!/usr/bin/env python3
"""authgate's fault matrix: during the mix of bench/mix.py, spread round robin
over two authgate replicas on servers of their own (bench/stack.py), each
neighbour is stopped and started again, one at a time: PostgreSQL, Redis,
the SMTP server, one of the two upstreams, one replica (SIGTERM, then started
again), and, in keycloak mode, Keycloak.

Started by bench/faults.sh, which builds the binaries first; run that.

For each fault, from its stop to the next fault's: the answers the clients
saw by class, the answers outside the contract's JSON 503s and the documented
fallbacks, requests that hung (no answer within the client timeout), the
seconds from the neighbour's return until every answer is good again, users
and sessions half-written (the database and Keycloak checked afterwards
against what the clients saw succeed), and verification mails lost or sent
twice (the sign-ups that got 200 against the mailbox).

Writes faults.json and the table into the output folder; with --publish also
the fault matrix of RELIABILITY.md.
"""

import argparse
import collections
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mix  # noqa: E402
import soak  # noqa: E402
import stack  # noqa: E402
import suite  # noqa: E402
from suite import log  # noqa: E402

# What the contract allows while a neighbour is away (README "Behaviour",
# "Forwarding"): (status, detail, operations it may answer).
ALLOWED = {
    (503, "Database unavailable"): None,
    (503, "Keycloak unavailable"): None,
    (503, "Service Unavailable"): None,
    (502, "Bad Gateway"): {"public", "private"},
    (504, "Gateway Timeout"): {"public", "private"},
}

NATIVE_FAULTS = ["postgres", "redis", "smtp", "upstream", "replica"]
KEYCLOAK_FAULTS = ["keycloak"]


def allowed(op, status, detail):
    if not isinstance(status, int):
        return False
    if 200 <= status < 300:
        return True
    ops = ALLOWED.get((status, detail), False)
    return ops is None or (ops is not False and op in ops)


def good(status):
    return isinstance(status, int) and 200 <= status < 300


class Matrix:
    def __init__(self, args, st, mode):
        self.args, self.st, self.mode = args, st, mode
        self.m = None
        self.events = []   # (fault, t_stop, t_back)

    def stop(self, fault):
        st = self.st
        if fault == "postgres":
            st.service("stop", "postgres")
        elif fault == "redis":
            st.service("stop", "redis")
        elif fault == "smtp":
            self.m.mailbox.poll()   # keep what it holds: a start empties it
            st.service("stop", "maildev")
        elif fault == "upstream":
            st.stop_upstream(1)
        elif fault == "replica":
            self.drain_s = st.term_gw(1)
            self.sampler.unwatch("authgate1")
        elif fault == "keycloak":
            st.stop_keycloak()

    def start(self, fault):
        st = self.st
        if fault == "postgres":
            st.service("start", "postgres")
        elif fault == "redis":
            st.service("start", "redis")
        elif fault == "smtp":
            st.service("start", "maildev")
        elif fault == "upstream":
            st.start_upstream(1)
        elif fault == "replica":
            p = st.start_gw(1, self.mode)
            self.sampler.watch("authgate1", p.pid)
        elif fault == "keycloak":
            st.restart_keycloak()

    def run(self, faults):
        a, st = self.args, self.st
        for i in (0, 1):
            st.start_gw(i, self.mode)
        self.m = mix.Mix([st.gw_url(0), st.gw_url(1)], st.mailbox_url, rate=a.rate,
                         timeout=a.timeout, prefix=f"fault{self.mode[0]}{int(time.time()) % 100000}")
        self.m.seed(log=log)
        self.sampler = soak.Sampler(self.m.now)
        self.m.start()
        for i in (0, 1):
            self.sampler.watch(f"authgate{i}", st.gws[i].pid)
        self.sampler.start()
        time.sleep(a.baseline)
        for fault in faults:
            self.drain_s = None
            t_stop = self.m.now()
            log(f"{self.mode}: stopping {fault}")
            self.stop(fault)
            time.sleep(a.down)
            log(f"{self.mode}: starting {fault} again")
            self.start(fault)
            t_back = self.m.now()
            log(f"{self.mode}: {fault} back after {t_back - t_stop:.1f} s")
            self.events.append({"fault": fault, "t_stop": t_stop, "t_back": t_back,
                                "drain_s": self.drain_s})
            time.sleep(a.settle)
        self.m.stop()
        self.sampler.stop()
        end = self.m.now()
        for i, e in enumerate(self.events):
            e["t_end"] = self.events[i + 1]["t_stop"] if i + 1 < len(self.events) else end

    # ------------------------------------------------------------ afterwards

    def stored(self):
        """What the database (and Keycloak) hold of this run's users."""
        st, prefix = self.st, self.m.prefix
        if self.mode == "native":
            rows = suite.psql(st.db_url, f"""
                SELECT u.email, u.is_verified,
                       EXISTS (SELECT 1 FROM temporary_tokens t WHERE t.user_id = u.id
                               AND t.token_type = 'EMAIL_VERIFICATION')
                FROM users u WHERE u.email LIKE '{prefix}-%'""")
            users = {}
            for line in rows.splitlines():
                email, verified, token = line.split("|")
                users[email.lower()] = {"verified": verified == "t", "token": token == "t"}
            half = [e for e, u in users.items() if not u["verified"] and not u["token"]]
            sess = suite.psql(st.db_url, f"""
                SELECT d.device_id, d.is_active AND NOT d.is_deleted FROM device_sessions d
                JOIN users u ON u.id = d.user_id WHERE u.email LIKE '{prefix}-%'""")
            sessions = {}
            for line in sess.splitlines():
                dev, active = line.split("|")
                sessions[dev] = active == "t"
            return users, half, sessions
        rows = suite.psql(st.db_url, f"""
            SELECT lower(email), keycloak_id FROM authgate_identities
            WHERE email LIKE '{prefix}-%'""")
        registry = dict(line.split("|") for line in rows.splitlines())
        kc = {u.get("email", "").lower(): u["id"] for u in st.keycloak_users(prefix)}
        users = {e: {"verified": None, "token": None} for e in registry}
        half = sorted({e for e in kc if e not in registry}
                      | {e for e, k in registry.items() if kc.get(e) != k})
        return users, half, None

    def report(self):
        m = self.m
        users, half, sessions = self.stored()
        mails = m.mailbox.by_address
        rows = []
        for e in self.events:
            t0, tb, t1 = e["t_stop"], e["t_back"], e["t_end"]
            recs = [r for r in m.records if t0 <= r[0] < t1]
            classes = collections.Counter(mix.klass(r[3]) for r in recs)
            outside = collections.Counter(
                f"{r[1]} {r[3]} {r[5]}".strip() for r in recs if not allowed(r[1], r[3], r[5]))
            seen = collections.Counter(
                f"{r[3]} {r[5]}".strip() for r in recs if not good(r[3]))
            hung = classes.get(mix.TIMEOUT, 0)
            bad_after = [r[0] + r[4] for r in recs if not good(r[3]) and r[0] + r[4] >= tb]
            recovery = max(bad_after) - tb if bad_after else 0.0
            # Sign-ups made in this window, by what their client saw.
            signed = [r for r in recs if r[1] == "signup"]
            emails_ok = {em for em, s in m.signups.items() if s == 200}
            ok_in = [em for em in self.signup_emails(t0, t1) if em in emails_ok]
            failed_in = [em for em in self.signup_emails(t0, t1) if em not in emails_ok]
            lost_users = [em for em in ok_in if em not in users]
            written_anyway = [em for em in failed_in if em in users]
            half_in = [em for em in half if em in ok_in or em in failed_in]
            mails_lost = [em for em in ok_in if mails.get(em, []).count("verification") == 0]
            mails_twice = [em for em in ok_in if mails.get(em, []).count("verification") > 1]
            rows.append({
                "fault": e["fault"], "down_s": round(tb - t0, 1), "drain_s": e["drain_s"],
                "requests": len(recs), "classes": dict(classes),
                "non2xx": dict(seen), "outside_contract": dict(outside), "hung": hung,
                "recovery_s": round(recovery, 1), "signups": len(signed),
                "signups_ok": len(ok_in), "users_lost": len(lost_users),
                "users_written_though_failed": len(written_anyway),
                "users_half_written": len(half_in),
                "mails_lost": len(mails_lost), "mails_twice": len(mails_twice),
                "failovers": None,
            })
        # Sessions: every sign-in the clients saw succeed has its row; every
        # sign-out they saw succeed ended it.
        sess_missing = sess_not_ended = None
        if sessions is not None:
            outs = {d for _, d in m.signouts}
            sess_missing = sum(1 for _, d in m.signins if d not in sessions)
            sess_not_ended = sum(1 for d in outs if sessions.get(d))
        return {"mode": self.mode, "rows": rows, "failovers": m.failovers,
                "sessions_refused": m.ended_sessions,
                "half_written_total": len(half), "sessions_missing": sess_missing,
                "sessions_not_ended": sess_not_ended, "requests": len(m.records),
                "skipped_ticks": m.skipped}

    def signup_emails(self, t0, t1):
        return [em for em, t in self.m.signup_times.items() if t0 <= t < t1]


def table(runs):
    """The fault matrix of one or more runs (one per mode): dicts with
    result, machine, command, started and settings."""
    lines = ["## Fault matrix", ""]
    for run in runs:
        machine, st = run["machine"], run["settings"]
        lines.append(
            f"{run['result']['mode'].capitalize()} mode: run of {run['started']} with "
            f"`{run['command']}` on {machine['cores']} cores ({machine['cpu']}), Linux "
            f"{machine['kernel']}; load average before {machine['load_before'][0]:.2f}; "
            f"authgate {run.get('binary', 'built from this tree')}.")
        lines.append("")
    st = runs[0]["settings"]
    busiest = max(run["machine"]["load_before"][0] for run in runs)
    cores = runs[0]["machine"]["cores"]
    lines += [
        ("The machine was shared with other work during the runs (load average "
         f"{busiest:.2f} on {cores} cores before a run). " if busiest > cores / 2 else
         "Nothing else ran on the machine during the runs. ")
        + "The mix of bench/mix.py at "
        f"{st['rate']:.0f} requests/s, round robin over two authgate replicas (a replica that "
        "refuses the connection is skipped, as a load balancer does), each on servers of its "
        f"own; each neighbour stopped for {st['down']:.0f} s (plus the time it takes to stop "
        f"and start), then started again, and {st['settle']:.0f} s watched after its return. "
        f"A request without an answer within {st['timeout']:.0f} s counts as hung.",
        "",
        "| mode | fault | down s | answers | non-2xx answers seen | outside the contract | "
        "hung | good again after (s) | users lost / half-written / written though refused | "
        "mails lost / twice (of sign-ups with 200) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = [run["result"] for run in runs]
    for res in results:
        for r in res["rows"]:
            extra = f" (drain {r['drain_s']:.1f} s)" if r.get("drain_s") else ""
            lines.append(
                f"| {res['mode']} | {r['fault']}{extra} | {r['down_s']} | "
                f"{soak.fmt_totals(r['classes'])} | "
                f"{'; '.join(f'{k} ×{v}' for k, v in sorted(r['non2xx'].items())) or 'none'} | "
                f"{'; '.join(f'{k} ×{v}' for k, v in sorted(r['outside_contract'].items())) or 'none'} | "
                f"{r['hung']} | {r['recovery_s']} | {r['users_lost']} / {r['users_half_written']} / "
                f"{r['users_written_though_failed']} | {r['mails_lost']} / {r['mails_twice']} "
                f"(of {r['signups_ok']}) |")
    lines.append("")
    for res in results:
        s = (f"{res['mode']} mode, whole run: {res['requests']} requests, "
             f"{res['failovers']} connections refused by a stopped replica and sent to the other, "
             f"{res.get('sessions_refused', 0)} sessions refused (401/403) and dropped by their "
             "client, "
             f"{res['half_written_total']} users half-written")
        if res["sessions_missing"] is not None:
            s += (f", {res['sessions_missing']} sign-ins without their session row, "
                  f"{res['sessions_not_ended']} sign-outs whose session still stands")
        lines.append(s + ".")
    lines += ["", "Allowed while a neighbour is away: the contract's JSON 503s (`Database "
              "unavailable`, `Keycloak unavailable`, `Service Unavailable`), and for forwarded "
              "requests 502 `Bad Gateway` / 504 `Gateway Timeout` (README, Forwarding). "
              "\"Good again after\" is the time from the neighbour's return (its port or "
              "realm answering) to the last answer other than 2xx. Users are checked in "
              "PostgreSQL (native: `users` and their verification token; keycloak: "
              "`authgate_identities` against Keycloak's users), sessions in `device_sessions`; "
              "mails in the mailbox of the SMTP server, read all along."]
    return "\n".join(lines) + "\n"


def publish_all(repo):
    """The table shows every mode published so far (a run of one mode leaves
    the other's last rows in place)."""
    bench = repo / "bench"
    allruns = [json.loads((bench / f"faults-{mode}.json").read_text())
               for mode in ("native", "keycloak") if (bench / f"faults-{mode}.json").exists()]
    if allruns:
        soak.write_marked(repo / "RELIABILITY.md", "<!-- faults:begin -->",
                          "<!-- faults:end -->", table(allruns), soak.INTRO)
        log("published: RELIABILITY.md (fault matrix), bench/faults-*.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--state", default="")
    ap.add_argument("--authgate", default="")
    ap.add_argument("--upstream-bin", default="")
    ap.add_argument("--modes", default="native,keycloak")
    ap.add_argument("--only", default="")
    ap.add_argument("--rate", type=float, default=40)
    ap.add_argument("--down", type=float, default=10)
    ap.add_argument("--settle", type=float, default=20)
    ap.add_argument("--baseline", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--pbkdf2-rounds", type=int, default=0)
    ap.add_argument("--base-port", type=int, default=47500)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--command", default="bench/faults.sh")
    ap.add_argument("--binary-note", default="built from this tree")
    ap.add_argument("--render", action="store_true",
                    help="only write RELIABILITY.md's fault matrix again from bench/faults-*.json")
    args = ap.parse_args()
    if args.render:
        publish_all(Path(args.repo))
        return
    out = Path(args.out)
    only = set(filter(None, args.only.split(",")))
    st = stack.Stack(args.repo, args.state, out, args.authgate, args.upstream_bin,
                     base_port=args.base_port, pbkdf2_rounds=args.pbkdf2_rounds or None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = suite.machine()
    results = []
    try:
        st.start_services("authgate_faults")
        st.start_upstream(0)
        st.start_upstream(1)
        for mode in [m for m in args.modes.split(",") if m]:
            faults = NATIVE_FAULTS if mode == "native" else KEYCLOAK_FAULTS
            faults = [f for f in faults if not only or f in only]
            if not faults:
                continue
            if mode == "keycloak":
                st.start_keycloak()
                st.db_url = suite.fresh_database(st.admin_url, "authgate_faults_kc")
            mx = Matrix(args, st, mode)
            mx.run(faults)
            for i in (0, 1):
                st.term_gw(i)
            res = mx.report()
            results.append(res)
            (out / f"events-{mode}.json").write_text(json.dumps(mx.events, indent=1))
            for r in res["rows"]:
                log(f"{mode} {r['fault']}: {json.dumps(r)}")
    finally:
        suite.stop_all()
        if "keycloak" in args.modes:
            try:
                st.stop_keycloak()
            except Exception as e:  # noqa: BLE001
                log(f"stopping Keycloak: {e}")
        st.stop_services()
    settings = {"rate": args.rate, "down": args.down, "settle": args.settle,
                "timeout": args.timeout}
    runs = [{"result": res, "machine": machine, "command": args.command, "started": started,
             "settings": settings, "binary": args.binary_note} for res in results]
    for run in runs:
        (out / f"faults-{run['result']['mode']}.json").write_text(json.dumps(run, indent=1))
    text = table(runs)
    (out / "faults.md").write_text(text)
    print(text)
    if args.publish and results:
        bench = Path(args.repo) / "bench"
        for run in runs:
            (bench / f"faults-{run['result']['mode']}.json").write_text(json.dumps(run, indent=1))
        publish_all(Path(args.repo))
    bad = [(res["mode"], r["fault"]) for res in results for r in res["rows"]
           if r["outside_contract"] or r["hung"] or r["recovery_s"] >= 5 or r["users_lost"]
           or r["users_half_written"]]
    if bad:
        log("goals missed: " + ", ".join(f"{m} {f}" for m, f in bad))
    if args.check and (bad or not results):
        sys.exit(1)


if __name__ == "__main__":
    main()

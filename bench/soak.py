#!/usr/bin/env python3
"""authgate's soak: the realistic mix of bench/mix.py at a fixed rate for a
long time, against one authgate on its own servers (bench/stack.py), in
native mode (PostgreSQL with Redis) and in keycloak mode.

Started by bench/soak.sh, which builds the binaries first; run that.

Per 10-second window: answers by class, p50/p99 latency, and authgate's
resident size, open descriptors and threads (sampled every second). Goals,
checked and stated: no 5xx and no hung request, p99 flat (the last third's
median window p99 at most twice the first third's after warm-up, + 5 ms),
resident size and descriptors flat after warm-up (the slope per minute of a
linear fit: at most 1 MB/min and 1 descriptor/min), and nothing left behind:
once the clients closed their connections, descriptors and threads back to
where they were before the load, no client connection left open (ss).

Writes soak-<mode>.json and the chart soak.svg into the output folder; with
--publish also into bench/ and RELIABILITY.md's soak section.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mix  # noqa: E402
import stack  # noqa: E402
import suite  # noqa: E402
from suite import log  # noqa: E402

WINDOW = 10.0


class Sampler:
    """Samples a process's RSS, descriptors and threads every second."""

    def __init__(self, clock):
        self.clock = clock
        self.pids = {}
        self.samples = []          # (t, name, sample)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def watch(self, name, pid):
        self.pids[name] = pid

    def unwatch(self, name):
        self.pids.pop(name, None)

    def run(self):
        while not self.stop_event.is_set():
            t = self.clock()
            for name, pid in list(self.pids.items()):
                s = stack.proc_sample(pid)
                if s:
                    self.samples.append((t, name, s))
            self.stop_event.wait(1.0)

    def start(self):
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        self.thread.join()

    def per_window(self, name, n):
        out = [None] * n
        for t, who, s in self.samples:
            if who != name:
                continue
            i = min(int(t // WINDOW), n - 1)
            if i < 0:
                continue
            cur = out[i]
            out[i] = s if cur is None else {k: max(cur[k], s[k]) for k in s}
        return out


def linear_slope(xs, ys):
    """Least-squares slope of ys over xs."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def analyse(windows, warmup):
    """The goals over the windows after warm-up."""
    after = [w for w in windows if w["t"] >= warmup and w.get("rss_mb") is not None]
    # The last window may be partial: leave it out of the fits.
    if len(after) > 2:
        after = after[:-1]
    mins = [w["t"] / 60 for w in after]
    rss_slope = linear_slope(mins, [w["rss_mb"] for w in after])
    fds_slope = linear_slope(mins, [w["fds"] for w in after])
    thr_slope = linear_slope(mins, [w["threads"] for w in after])
    third = max(1, len(after) // 3)
    p99s = [w["p99_ms"] for w in after if w["p99_ms"] is not None]
    first = statistics.median(p99s[:third]) if p99s else None
    last = statistics.median(p99s[-third:]) if p99s else None
    totals = {}
    for w in windows:
        for k, v in w["classes"].items():
            totals[k] = totals.get(k, 0) + v
    return {"rss_slope_mb_per_min": round(rss_slope, 3),
            "fds_slope_per_min": round(fds_slope, 3),
            "threads_slope_per_min": round(thr_slope, 3),
            "p99_first_third_ms": first, "p99_last_third_ms": last,
            "totals": totals}


def pool_conns(st, conns):
    """authgate's connections to the database, Redis, the upstreams, the SMTP
    server and Keycloak (the pools of their clients)."""
    ports = tuple(f":{st.ports[k]}" for k in ("postgres", "redis", "smtp", "up0", "up1"))
    if st.keycloak_url:
        ports += (":" + st.keycloak_url.rstrip("/").rsplit(":", 1)[-1],)
    return sum(1 for c in conns if c[0] == "ESTAB" and c[2].endswith(ports))


def soak(args, mode, st):
    out = Path(args.out)
    log(f"{mode}: starting authgate")
    gw = st.start_gw(0, mode)
    m = mix.Mix([st.gw_url(0)], st.mailbox_url, rate=args.rate, timeout=args.timeout,
                prefix=f"soak{mode[0]}{int(time.time()) % 100000}")
    m.seed(log=log)
    m.close_connections()
    time.sleep(2)
    before = stack.proc_sample(gw.pid)
    before_pools = pool_conns(st, stack.tcp_of(gw.pid))
    sampler = Sampler(m.now)
    sampler.watch("authgate", gw.pid)
    log(f"{mode}: {args.seconds} s of the mix at {args.rate} requests/s "
        f"(before: {before})")
    m.start()
    sampler.start()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    end = time.monotonic() + args.seconds
    next_note = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(1)
        if time.monotonic() >= next_note:
            next_note += 60
            s = stack.proc_sample(gw.pid) or {}
            log(f"{mode}: {int(m.now())} s, {len(m.records)} requests, {s}")
        if not gw.alive():
            break
    m.stop()
    sampler.stop()
    duration = m.now()
    # Nothing left behind: the clients closed their connections; give
    # authgate a moment to see them go, then look at it.
    time.sleep(3)
    after = stack.proc_sample(gw.pid)
    conns = stack.tcp_of(gw.pid)
    port = str(st.ports["gw0"])
    clients_open = [c for c in conns if c[1].endswith(":" + port) and c[0] != "LISTEN"]
    db_conns = [c for c in conns if c[2].endswith(f":{st.ports['postgres']}")]
    up_conns = [c for c in conns if c[2].endswith((f":{st.ports['up0']}", f":{st.ports['up1']}"))]
    alive = gw.alive()
    after_pools = pool_conns(st, conns)

    n = max(1, int(duration // WINDOW) + (1 if duration % WINDOW else 0))
    windows = m.windows(WINDOW, end=duration)[:n]
    procs = sampler.per_window("authgate", len(windows))
    for w, s in zip(windows, procs):
        w.update(s or {"rss_mb": None, "fds": None, "threads": None})
    a = analyse(windows, args.warmup)
    hung = a["totals"].get(mix.TIMEOUT, 0)
    fives = a["totals"].get("5xx", 0)
    others = {k: v for k, v in a["totals"].items() if k != "2xx"}
    by_op = {}
    for r in m.records:
        by_op.setdefault(r[1], {}).setdefault(mix.klass(r[3]), 0)
        by_op[r[1]][mix.klass(r[3])] += 1
    non2xx_details = {}
    for r in m.records:
        if not (isinstance(r[3], int) and 200 <= r[3] < 300):
            key = f"{r[1]} {r[3]} {r[5]}"
            non2xx_details[key] = non2xx_details.get(key, 0) + 1
    goals = {
        "no 5xx": fives == 0,
        "no hung request": hung == 0,
        "p99 flat": (a["p99_first_third_ms"] is not None and a["p99_last_third_ms"] is not None
                     and a["p99_last_third_ms"] <= 2 * a["p99_first_third_ms"] + 5),
        "RSS flat (growth <= 1 MB/min)": a["rss_slope_mb_per_min"] <= 1.0,
        "fds flat (growth <= 1/min)": a["fds_slope_per_min"] <= 1.0,
        # Descriptors other than the pools' connections (database, Redis,
        # upstreams: bounded, kept open on purpose) back where they were.
        "fds back after the load (pools aside)": bool(
            after and before and after["fds"] - after_pools <= before["fds"] - before_pools),
        "threads back after the load": bool(after and before
                                            and after["threads"] <= before["threads"]),
        "no client connection left open": not clients_open,
        "authgate still running": alive,
    }
    result = {
        "mode": mode, "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": args.command, "seconds": round(duration), "rate": args.rate,
        "warmup_s": args.warmup, "machine": suite.machine(),
        "requests": len(m.records), "skipped_ticks": m.skipped,
        "signups": sum(1 for s in m.signups.values() if s == 200),
        "verified": len(m.verified), "signins": len(m.signins), "signouts": len(m.signouts),
        "windows": windows, "analysis": a, "by_op": by_op, "non2xx": non2xx_details,
        "before": before, "after": after, "client_conns_open": len(clients_open),
        "pool_conns_before": before_pools, "pool_conns_after": after_pools,
        "tcp_after": conns,
        "db_conns": len(db_conns), "upstream_conns": len(up_conns),
        "goals": goals, "profile": args.profile, "pbkdf2_rounds": args.pbkdf2_rounds or None,
    }
    st.term_gw(0)
    (out / f"soak-{mode}.json").write_text(json.dumps(result, indent=1))
    log(f"{mode}: {len(m.records)} requests in {duration:.0f} s; totals {a['totals']}; "
        f"RSS slope {a['rss_slope_mb_per_min']} MB/min, fds slope {a['fds_slope_per_min']}/min; "
        f"p99 {a['p99_first_third_ms']} -> {a['p99_last_third_ms']} ms; "
        f"before {before} after {after}; clients open {len(clients_open)}, "
        f"db {len(db_conns)}, upstream {len(up_conns)}; non-2xx {others}")
    for k, ok in goals.items():
        log(f"  {'ok  ' if ok else 'MISS'} {k}")
    return result


# ------------------------------------------------------------ chart and table

COLORS = {"2xx": "#2f6fb0", "other": "#d08a2e", "p50": "#2f6fb0", "p99": "#9cc0e6",
          "rss_mb": "#2f6fb0", "fds": "#2f6fb0", "threads": "#9a9a9a"}
PANELS = [("requests/s: 2xx (blue), other (orange)", "rps"),
          ("latency ms: p50 (dark), p99 (light)", "lat"),
          ("resident size MB", "rss_mb"),
          ("open descriptors (blue), threads (grey)", "fds")]


def render_chart(results):
    pw, ph, gap, left, top = 420, 130, 50, 60, 50
    width = left + len(results) * (pw + gap)
    height = top + len(PANELS) * (ph + gap) + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    first = results[0]
    m = first["machine"]
    out.append(f'<text x="10" y="18" font-size="14" font-weight="bold">authgate soak, '
               f'{escape(first["started"])} — {m.get("cores", "?")} cores, '
               f'{escape(m.get("cpu", ""))}</text>')
    for c, r in enumerate(results):
        x0 = left + c * (pw + gap)
        out.append(f'<text x="{x0}" y="38" font-weight="bold">{escape(r["mode"])} mode, '
                   f'{r["rate"]} requests/s, {r["seconds"]} s (10 s windows)</text>')
        ws = r["windows"]
        tmax = max(ws[-1]["t"] + WINDOW, 1)
        for p, (title, key) in enumerate(PANELS):
            y0 = top + p * (ph + gap) + 14
            out.append(f'<text x="{x0}" y="{y0 - 4}">{escape(title)}</text>')
            out.append(f'<rect x="{x0}" y="{y0}" width="{pw}" height="{ph}" fill="none" '
                       'stroke="#ddd"/>')
            if key == "rps":
                series = [("2xx", [(w["t"], w["classes"].get("2xx", 0) / WINDOW) for w in ws]),
                          ("other", [(w["t"], (w["requests"] - w["classes"].get("2xx", 0))
                                      / WINDOW) for w in ws])]
            elif key == "lat":
                series = [("p50", [(w["t"], w["p50_ms"]) for w in ws]),
                          ("p99", [(w["t"], w["p99_ms"]) for w in ws])]
            elif key == "rss_mb":
                series = [("rss_mb", [(w["t"], w.get("rss_mb")) for w in ws])]
            else:
                series = [("fds", [(w["t"], w.get("fds")) for w in ws]),
                          ("threads", [(w["t"], w.get("threads")) for w in ws])]
            vmax = max([v for _, pts in series for _, v in pts if v is not None] + [1e-9])
            vmax = _nice(vmax * 1.1)
            for name, pts in series:
                coords = [(x0 + pw * (t + WINDOW / 2) / tmax, y0 + ph - ph * v / vmax)
                          for t, v in pts if v is not None]
                if coords:
                    d = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
                    out.append(f'<polyline points="{d}" fill="none" stroke="{COLORS[name]}" '
                               'stroke-width="1.5"/>')
            out.append(f'<text x="{x0 - 4}" y="{y0 + 10}" text-anchor="end" font-size="10">'
                       f'{vmax:g}</text>')
            out.append(f'<text x="{x0 - 4}" y="{y0 + ph}" text-anchor="end" font-size="10">0</text>')
            out.append(f'<text x="{x0 + pw}" y="{y0 + ph + 12}" text-anchor="end" '
                       f'font-size="10">{tmax:.0f} s</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _nice(v):
    import math
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for k in (1, 2, 2.5, 5, 10):
        if v <= k * exp:
            return k * exp
    return 10 * exp


def fmt_totals(t):
    order = ["2xx", "3xx", "4xx", "5xx", mix.TIMEOUT, mix.RESET, mix.REFUSED]
    return ", ".join(f"{k} {t[k]}" for k in order if t.get(k)) or "none"


def section(results):
    lines = ["## Soak", ""]
    for r in results:
        m = r["machine"]
        lines += [
            f"{r['mode'].capitalize()} mode: run from {r['started']} to "
            f"{r.get('finished', '?')[11:]} with `{r['command'].strip()}` "
            f"on {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
            f"load average before {m['load_before'][0]:.2f}; authgate built with the "
            f"`{r['profile']}` profile"
            + (f", PBKDF2 at {r['pbkdf2_rounds']} rounds (a debug build hashes far slower)"
               if r.get("pbkdf2_rounds") else "") + ".", ""]
    busiest = max(r["machine"]["load_before"][0] for r in results)
    cores = results[0]["machine"]["cores"]
    lines += [
        ("The machine was shared with other work during the runs (load average "
         f"{busiest:.2f} on {cores} cores before a run), so latencies are those of a busy "
         "machine. " if busiest > cores / 2 else
         "Nothing else ran on the machine during the runs. ")
        + "The mix (bench/mix.py): "
        "sign-ups with their mail, verifications with the token read from the SMTP server's "
        "mailbox, sign-ins, `/users/me/`, refreshes, sign-outs, and forwarded GETs on a "
        "public and an authenticated route over two upstreams; native mode on PostgreSQL "
        "with Redis, keycloak mode against a Keycloak. Latency and sizes per 10 s window; "
        "slopes are least-squares fits over the windows after warm-up.",
        "",
        "![answers, latency, resident size and descriptors over time](bench/soak.svg)",
        "",
        "| mode | time | rate | requests | answers | p50 / p99 ms (median window) | "
        "p99 first → last third | RSS MB start → end, slope | fds, slope | threads | "
        "after the load | goals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a = r["analysis"]
        ws = [w for w in r["windows"] if w["t"] >= r["warmup_s"]]
        p50 = statistics.median([w["p50_ms"] for w in ws if w["p50_ms"] is not None] or [0])
        p99 = statistics.median([w["p99_ms"] for w in ws if w["p99_ms"] is not None] or [0])
        rss = [w["rss_mb"] for w in ws if w.get("rss_mb") is not None]
        fds = [w["fds"] for w in ws if w.get("fds") is not None]
        thr = [w["threads"] for w in ws if w.get("threads") is not None]
        missed = [k for k, ok in r["goals"].items() if not ok]
        b, af = r["before"] or {}, r["after"] or {}
        lines.append(
            f"| {r['mode']} | {r['seconds']} s | {r['rate']}/s | {r['requests']} "
            f"({r['signups']} sign-ups, {r['verified']} verified, {r['signins']} sign-ins, "
            f"{r['signouts']} sign-outs) | {fmt_totals(a['totals'])} | {p50:.1f} / {p99:.1f} | "
            f"{a['p99_first_third_ms']:.1f} → {a['p99_last_third_ms']:.1f} | "
            f"{rss[0] if rss else '?'} → {rss[-1] if rss else '?'}, "
            f"{a['rss_slope_mb_per_min']:+.2f}/min | {min(fds) if fds else '?'}–"
            f"{max(fds) if fds else '?'}, {a['fds_slope_per_min']:+.2f}/min | "
            f"{min(thr) if thr else '?'}–{max(thr) if thr else '?'} | "
            f"fds {b.get('fds')} → {af.get('fds')} (pool connections "
            f"{r.get('pool_conns_before', '?')} → {r.get('pool_conns_after', '?')}), "
            f"threads {b.get('threads')} → "
            f"{af.get('threads')}; client connections open {r['client_conns_open']}, "
            f"database {r['db_conns']}, upstream {r['upstream_conns']} (pools) | "
            f"{'all met' if not missed else 'missed: ' + ', '.join(missed)} |")
    lines += ["", "Goals: no 5xx and no hung request (10 s client timeout); p99 flat (the last "
              "third's median window p99 at most twice the first third's + 5 ms); resident "
              "size and descriptors flat after warm-up (a fitted growth of at most 1 MB/min and "
              "1 descriptor/min); "
              "after the load, once the clients closed their connections, descriptors (other "
              "than the pools' connections) and threads back to their level before the load and no client connection open "
              "(`ss`); the pools are authgate's connections to the database, Redis, the "
              "upstreams, the SMTP server and Keycloak, each bounded."]
    for r in results:
        if r["non2xx"]:
            lines.append("")
            lines.append(f"Answers other than 2xx, {r['mode']} mode: " + "; ".join(
                f"{k} ×{v}" for k, v in sorted(r["non2xx"].items())))
    return "\n".join(lines) + "\n"


def write_marked(doc_path, begin, end, body, intro):
    p = Path(doc_path)
    doc = p.read_text() if p.exists() else intro
    if begin not in doc:
        doc = doc.rstrip() + f"\n\n{begin}\n{end}\n"
    s, e = doc.find(begin), doc.find(end)
    doc = doc[: s + len(begin)] + "\n" + body + doc[e:]
    p.write_text(doc)


INTRO = """# Reliability

How authgate holds up over time, under load, and while its neighbours fail
and come back. Each section is written by the command it names; run it again
to refresh it. Other sections are kept as they are.
"""


def publish_all(repo):
    """The section shows every mode published so far (a shorter run of one
    mode leaves the other's last figures in place)."""
    bench = repo / "bench"
    allr = [json.loads((bench / f"soak-{mode}.json").read_text())
            for mode in ("native", "keycloak") if (bench / f"soak-{mode}.json").exists()]
    if not allr:
        return
    (bench / "soak.svg").write_text(render_chart(allr))
    write_marked(repo / "RELIABILITY.md", "<!-- soak:begin -->", "<!-- soak:end -->",
                 section(allr), INTRO)
    log("published: RELIABILITY.md (soak), bench/soak.svg, bench/soak-*.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    ap.add_argument("--repo", required=True)
    ap.add_argument("--state", default="")
    ap.add_argument("--authgate", default="")
    ap.add_argument("--upstream-bin", default="")
    ap.add_argument("--modes", default="native,keycloak")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=40)
    ap.add_argument("--warmup", type=float, default=60)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--pbkdf2-rounds", type=int, default=0)
    ap.add_argument("--keycloak-url", default="")
    ap.add_argument("--base-port", type=int, default=47000)
    ap.add_argument("--profile", default="release")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--publish", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="only write RELIABILITY.md's section and bench/soak.svg again "
                         "from bench/soak-*.json")
    ap.add_argument("--command", default="bench/soak.sh")
    args = ap.parse_args()
    if args.render:
        publish_all(Path(args.repo))
        return
    args.warmup = min(args.warmup, args.seconds / 3)
    out = Path(args.out)
    st = stack.Stack(args.repo, args.state, out, args.authgate, args.upstream_bin,
                     base_port=args.base_port, pbkdf2_rounds=args.pbkdf2_rounds or None,
                     keycloak_url=args.keycloak_url or None)
    results = []
    try:
        st.start_services("authgate_soak")
        st.start_upstream(0)
        st.start_upstream(1)
        for mode in [m for m in args.modes.split(",") if m]:
            if mode == "keycloak":
                st.start_keycloak()
                st.db_url = suite.fresh_database(st.admin_url, "authgate_soak_kc")
            results.append(soak(args, mode, st))
    finally:
        suite.stop_all()
        if not args.keycloak_url and "keycloak" in args.modes:
            try:
                st.stop_keycloak()
            except Exception as e:  # noqa: BLE001
                log(f"stopping Keycloak: {e}")
        st.stop_services()
    if results:
        (out / "soak.svg").write_text(render_chart(results))
        (out / "section.md").write_text(section(results))
        if args.publish:
            bench = Path(args.repo) / "bench"
            for r in results:
                (bench / f"soak-{r['mode']}.json").write_text(json.dumps(r, indent=1))
            publish_all(Path(args.repo))
    missed = [(r["mode"], k) for r in results for k, ok in r["goals"].items() if not ok]
    if missed:
        log("goals missed: " + ", ".join(f"{m}: {k}" for m, k in missed))
    if args.check and (missed or not results):
        sys.exit(1)


if __name__ == "__main__":
    main()

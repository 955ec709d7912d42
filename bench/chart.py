#!/usr/bin/env python3
"""Renders bench/suite.py's results as one SVG (standard library only):
requests/s per scenario on the left, p50 and p99 latency on the right, one
row per measured scenario. `chart.py results.json > chart.svg` redraws a
saved run."""

import json
import math
import sys
from xml.sax.saxutils import escape

ROW = 22
LABEL_W = 380
BAR_W = 300
GAP = 40
TOP = 58
COLORS = {"authgate": "#2f6fb0", "other": "#9a9a9a", "oauth2-proxy": "#d08a2e",
          "p50": "#2f6fb0", "p99": "#9cc0e6"}


def nice_max(v):
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def kind(row):
    label = row["label"]
    if label.startswith(("oauth2-proxy", "reference", "floor")):
        return "oauth2-proxy"
    if label.startswith("upstream"):
        return "other"
    return "authgate"


def render(results):
    rows = [r for r in results.get("rows", []) if r.get("rps") is not None]
    width = LABEL_W + 2 * BAR_W + 3 * GAP + 120  # room for the figures after the bars
    height = TOP + ROW * max(len(rows), 1) + 50
    max_rps = nice_max(max((r["rps"] for r in rows), default=1))
    lat = [r.get("p99_ms") or 0 for r in rows] + [r.get("p50_ms") or 0 for r in rows]
    # Latencies span 0.1 ms to seconds (sign-in): a log scale keeps both readable.
    lo, hi = 0.01, nice_max(max(lat + [1]))
    span = math.log10(hi) - math.log10(lo)

    def lat_x(ms):
        ms = max(ms or lo, lo)
        return BAR_W * (math.log10(ms) - math.log10(lo)) / span

    m = results.get("machine", {})
    title = (f"authgate benchmark, {results.get('started', '')} — {m.get('cores', '?')} cores, "
             f"{escape(m.get('cpu', ''))}")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">{escape(title)}</text>',
        f'<text x="{LABEL_W + GAP}" y="44" font-weight="bold">requests/s (max {max_rps:,.0f})</text>',
        f'<text x="{LABEL_W + 2 * GAP + BAR_W}" y="44" font-weight="bold">latency ms, log scale: '
        f'<tspan fill="{COLORS["p50"]}">p50</tspan> / <tspan fill="{COLORS["p99"]}">p99</tspan></text>',
    ]
    x0 = LABEL_W + GAP
    x1 = LABEL_W + 2 * GAP + BAR_W
    for i, r in enumerate(rows):
        y = TOP + i * ROW
        label = f"{r['key']}  {r['label']}"
        if len(label) > 58:
            label = label[:57] + "…"
        out.append(f'<text x="10" y="{y + 14}">{escape(label)}</text>')
        w = BAR_W * r["rps"] / max_rps
        out.append(f'<rect x="{x0}" y="{y + 3}" width="{w:.1f}" height="{ROW - 6}" '
                   f'fill="{COLORS[kind(r)]}"/>')
        out.append(f'<text x="{x0 + w + 4:.1f}" y="{y + 14}">{r["rps"]:,.0f}</text>')
        p50, p99 = r.get("p50_ms"), r.get("p99_ms")
        if p99:
            out.append(f'<rect x="{x1}" y="{y + 3}" width="{lat_x(p99):.1f}" height="{ROW - 6}" '
                       f'fill="{COLORS["p99"]}"/>')
        if p50:
            out.append(f'<rect x="{x1}" y="{y + 7}" width="{lat_x(p50):.1f}" height="{ROW - 14}" '
                       f'fill="{COLORS["p50"]}"/>')
        if p50 or p99:
            text = f"{p50 or 0:.2f} / {p99 or 0:.2f}"
            out.append(f'<text x="{x1 + lat_x(p99 or p50) + 4:.1f}" y="{y + 14}">{text}</text>')
    # Axis ticks for the latency scale.
    base = TOP + ROW * len(rows) + 14
    tick = lo
    while tick <= hi * 1.0001:
        x = x1 + lat_x(tick)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{base - 10}" '
                   'stroke="#ddd" stroke-width="1"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 4}" text-anchor="middle" font-size="10">'
                   f'{tick:g}</text>')
        tick *= 10
    out.append(f'<text x="10" y="{base + 26}" font-size="11">'
               f'<tspan fill="{COLORS["authgate"]}">■</tspan> through or served by authgate   '
               f'<tspan fill="{COLORS["other"]}">■</tspan> upstream directly   '
               f'<tspan fill="{COLORS["oauth2-proxy"]}">■</tspan> another proxy (oauth2-proxy, nginx, byte relay)</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        sys.stdout.write(render(json.load(f)))

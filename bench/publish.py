#!/usr/bin/env python3
"""Puts a run's table into BENCHMARKS.md, between the markers
`<!-- results:begin -->` and `<!-- results:end -->` (the text around them is
written by hand and left alone).

usage: publish.py table.md results.json BENCHMARKS.md
"""

import json
import sys

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    table_path, results_path, doc_path = sys.argv[1:]
    table = open(table_path).read().rstrip() + "\n"
    results = json.load(open(results_path))
    m = results["machine"]
    s = results["settings"]
    head = (
        f"Run of {results['started']} with `{results['command'].strip()}` on "
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"load average before the run {m['load_before'][0]:.2f}. "
        f"{s['duration']} s per scenario ({s['signin_duration']} s for sign-in) after a "
        f"{s['warmup']} s warm-up; wrk with {s['connections']} connections unless the row "
        "says otherwise. The load generator, authgate and the upstream share the cores.\n\n"
        "![throughput and latency per scenario](bench/latest.svg)\n\n"
    )
    doc = open(doc_path).read()
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        sys.exit(f"{doc_path}: markers {BEGIN} ... {END} not found")
    doc = doc[: start + len(BEGIN)] + "\n" + head + table + doc[end:]
    open(doc_path, "w").write(doc)


if __name__ == "__main__":
    main()

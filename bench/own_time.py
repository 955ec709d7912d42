"""How much of the latency a proxy adds is its own work: the time from
reading a client's request to sending it upstream, and from reading the
upstream's answer to sending it on, measured from the proxy's own
`sendto`/`recvfrom` calls with `perf trace` while load runs.

What is left of the latency added, once this is taken away, is spent outside
the proxy's code: the second trip through the loopback and the wake-ups of
the threads and processes on the way, which a byte relay pays too.

perf trace slows each traced call down a little, so the figures are upper
bounds. A task that moves to another thread between the two calls is not
counted (the pairs are taken per thread).

Used by suite.py (the fixed-rate scenario); by hand:

    python3 bench/own_time.py PID UPSTREAM_PORT TRACE_FILE
"""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

CALL = re.compile(
    r"^\s*(?P<t>\d+\.\d+) \(\s*(?P<d>\d+\.\d+) ms\): .*?/(?P<tid>\d+) "
    r"(?P<call>sendto|recvfrom)\(fd: (?P<fd>\d+).*\)\s+= (?P<ret>-?\d+)")

# A pair further apart than this is not one request's work (a stray read).
MAX_GAP_MS = 5.0


def upstream_fds(pid, upstream_port):
    """The descriptors of `pid` that are TCP connections to `upstream_port`
    on loopback (IPv4), from /proc."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, inode = fields[2], fields[9]
        if int(remote.split(":")[1], 16) == upstream_port:
            inodes.add(inode)
    fds = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:[") and target[8:-1] in inodes:
            fds.add(int(fd.name))
    return fds


def pairs(trace_text, upstream):
    """(request µs, answer µs): per thread, from the end of a read from a
    client to the start of the next send upstream, and from the end of a
    read from upstream to the start of the next send to a client."""
    request, answer = [], []
    last_read = {}  # tid -> ("client" | "upstream", end in ms)
    for line in trace_text.splitlines():
        m = CALL.match(line)
        if not m:
            continue
        start, end = float(m["t"]), float(m["t"]) + float(m["d"])
        side = "upstream" if int(m["fd"]) in upstream else "client"
        tid = m["tid"]
        if m["call"] == "recvfrom":
            if int(m["ret"]) > 0:
                last_read[tid] = (side, end)
            continue
        read = last_read.pop(tid, None)
        if read is None or read[0] == side or start - read[1] > MAX_GAP_MS:
            continue
        (request if side == "upstream" else answer).append((start - read[1]) * 1000)
    return request, answer


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else None


def summary(request, answer):
    return {"requests": min(len(request), len(answer)),
            "request_p50_us": percentile(request, 0.5),
            "request_p90_us": percentile(request, 0.9),
            "answer_p50_us": percentile(answer, 0.5),
            "answer_p90_us": percentile(answer, 0.9)}


def measure(perf, pid, upstream_port, trace_file, load):
    """Runs `load()` with `perf trace` attached to `pid`; the summary, or
    None with the reason when perf could not trace."""
    with open(trace_file.with_suffix(".log"), "w") as err:
        tracer = subprocess.Popen(
            [perf, "trace", "-p", str(pid), "-e", "sendto,recvfrom", "-o", str(trace_file)],
            stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(1.5)  # attached
        if tracer.poll() is not None:
            return None, f"perf trace exited: {trace_file.with_suffix('.log')}"
        try:
            load()
        finally:
            tracer.send_signal(signal.SIGINT)
            try:
                tracer.wait(30)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
    upstream = upstream_fds(pid, upstream_port)
    if not upstream:
        return None, "no upstream connection found"
    text = trace_file.read_text(errors="replace") if trace_file.exists() else ""
    result = summary(*pairs(text, upstream))
    if not result["requests"]:
        return None, f"no request traced: {trace_file}"
    return result, None


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fds = upstream_fds(int(sys.argv[1]), int(sys.argv[2]))
    print(summary(*pairs(Path(sys.argv[3]).read_text(errors="replace"), fds)))

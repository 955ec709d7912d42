#!/usr/bin/env python3
"""Open N keep-alive connections to an HTTP server, send one request on each
(so that the server holds a live HTTP/1.1 session, not only an accepted
socket), then keep them all open and idle until stdin closes or the hold
time ends.

Prints `ready <open> <failed>` on stdout once every connection has had its
answer (the caller measures the server's memory then), and `closed` when it
lets them go. Loopback only.

usage: idle_conns.py --port PORT [--count 10000] [--path /health]
                     [--hold 60] [--batch 500]
"""

import argparse
import asyncio
import sys


async def open_one(port, request, held):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    if not status.startswith(b"2"):
        writer.close()
        raise RuntimeError(f"status {status.decode()}")
    held.append((reader, writer))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    held = []
    failed = 0
    errors = {}
    for start in range(0, args.count, args.batch):
        n = min(args.batch, args.count - start)
        results = await asyncio.gather(
            *(open_one(args.port, request, held) for _ in range(n)),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException):
                failed += 1
                key = type(r).__name__ + ": " + str(r)[:80]
                errors[key] = errors.get(key, 0) + 1
    for key, n in errors.items():
        print(f"error x{n}: {key}", file=sys.stderr)
    print(f"ready {len(held)} {failed}", flush=True)

    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, timeout=args.hold)
    except asyncio.TimeoutError:
        pass
    # How many the server kept open all along (a closed one reads EOF).
    alive = sum(1 for r, _ in held if not r.at_eof())
    for _, w in held:
        w.close()
    print(f"closed {alive}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

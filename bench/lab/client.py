"""Client load through the VIP: `python -m bench.lab.client`, run in the client namespace.

`new`: a new TCP+TLS connection every `--interval` (20 ms), one GET /version each, with
a `--timeout` (2 s) for the whole request, as kubectl and short-lived clients do.
`keepalive`: `--connections` long-lived HTTPS connections, each sending a GET every
`--period`; one that fails is counted broken and replaced by a new one, as kubelets
and controllers reconnect.

Every request is one JSON line in `--out`: `t` (start, CLOCK_MONOTONIC, shared by
every process on the machine), `d` (seconds), `ok`, `node` (the X-Api-Server-Node that
answered), `err`, and in keepalive mode `conn` and `broken` (an established
connection that had answered before failed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any, Optional


class Log:
    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def _error(e: BaseException) -> str:
    return type(e).__name__ + (f": {e}" if str(e) else "")


def _get(conn: http.client.HTTPSConnection) -> str:
    conn.request("GET", "/version")
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return response.getheader("X-Api-Server-Node") or "?"


def one_request(host: str, port: int, context: ssl.SSLContext, timeout: float, log: Log) -> None:
    start = time.monotonic()
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        # The socket timeout bounds each step; the deadline bounds the whole request.
        node = _get(conn)
        took = time.monotonic() - start
        if took > timeout:
            log.write(t=start, d=took, ok=False, node=node, err="deadline")
        else:
            log.write(t=start, d=took, ok=True, node=node)
    except Exception as e:
        log.write(t=start, d=time.monotonic() - start, ok=False, node=None, err=_error(e))
    finally:
        conn.close()


def new_connections(
    args: argparse.Namespace, context: ssl.SSLContext, log: Log, stop: threading.Event
) -> None:
    end = time.monotonic() + args.duration
    next_at = time.monotonic()
    while not stop.is_set() and time.monotonic() < end:
        threading.Thread(
            target=one_request, args=(args.host, args.port, context, args.timeout, log), daemon=True
        ).start()
        next_at += args.interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def long_lived(
    index: int,
    args: argparse.Namespace,
    context: ssl.SSLContext,
    log: Log,
    stop: threading.Event,
    end: float,
) -> None:
    conn: Optional[http.client.HTTPSConnection] = None
    answered = False
    generation = 0
    # Spread the connections' requests over the period.
    stop.wait(args.period * index / max(1, args.connections))
    while not stop.is_set() and time.monotonic() < end:
        if conn is None:
            conn = http.client.HTTPSConnection(
                args.host, args.port, timeout=args.timeout, context=context
            )
            answered = False
            generation += 1
        start = time.monotonic()
        try:
            node = _get(conn)
            log.write(
                t=start, d=time.monotonic() - start, ok=True, node=node, conn=index, gen=generation
            )
            answered = True
        except Exception as e:
            log.write(
                t=start,
                d=time.monotonic() - start,
                ok=False,
                node=None,
                conn=index,
                gen=generation,
                broken=answered,
                err=_error(e),
            )
            conn.close()
            conn = None
            continue  # reconnect at once, as client-go does
        stop.wait(args.period)
    if conn is not None:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lab.client", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--ca", required=True, help="CA bundle of the API servers")
    parser.add_argument("--mode", choices=("new", "keepalive"), default="new")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=600.0, help="stop by itself after")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    context = ssl.create_default_context(cafile=args.ca)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(args.out, "a", encoding="utf-8") as out:
        log = Log(out)
        if args.mode == "new":
            new_connections(args, context, log, stop)
        else:
            end = time.monotonic() + args.duration
            threads = [
                threading.Thread(
                    target=long_lived, args=(i, args, context, log, stop, end), daemon=True
                )
                for i in range(args.connections)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        # Let requests in flight finish or time out.
        time.sleep(args.timeout + 0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make soak`: three daemons under churn and rotating faults; RSS, threads and open
files of each sampled every minute must stay flat after the warm-up.

Each minute injects the next fault of a fixed rotation (watch cuts, 410 Gone, NSX
429, 503 and unanswered requests, client certificate rotation, SIGHUP, a hung API
server, EndpointSlice churn), lets it heal, waits for the route to hold all three
API servers again, and samples each daemon from /proc at the end of the minute.
Growth is the lowest of the last three samples minus the lowest of the first three
after the warm-up; threads and open files are the fewest of five readings a second
apart (see `sample` and `_least`). Exit status 1
when a figure is over its target, a daemon died, or the route did not come back.
Needs root (network namespaces). Usage:
    python -m bench.soak [--minutes 30] [--warmup 5]   (SOAK_MINUTES sets the default)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.lab.netns import interrupts_raise
from bench.run import rss_kb
from tests.integration.lab import NODES, Lab
from tests.wait import wait_for

A, B, C = NODES
RSS_TARGET_KB = 4 * 1024
MINUTE = 60.0


@dataclass(frozen=True)
class Sample:
    minute: int
    rss_kb: int
    threads: int
    files: tuple[str, ...]  # what each open file descriptor points at

    @property
    def fds(self) -> int:
        return len(self.files)


def _open_files(pid: int) -> tuple[str, ...]:
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed while we looked
            continue
        names.append(target.split(":[", 1)[0] if ":[" in target else target)
    return tuple(sorted(names))


def sample(pid: int, minute: int, readings: int = 5) -> Sample:
    """The fewest threads and open files of a few readings a second apart: a
    connection or a thread that exists for a moment is not what grows in a leak."""
    taken = []
    for i in range(readings):
        if i:
            time.sleep(1.0)
        taken.append(
            Sample(minute, rss_kb(pid), len(os.listdir(f"/proc/{pid}/task")), _open_files(pid))
        )
    return Sample(
        minute,
        taken[-1].rss_kb,
        min(s.threads for s in taken),
        min((s.files for s in taken), key=len),
    )


def _pause(box: Lab, seconds: float) -> None:
    """Wait while the daemons work; fail fast if one of them dies."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dead = [a for a, n in box.nodes.items() if not n.alive()]
        if dead:
            raise RuntimeError(f"daemon {', '.join(dead)} exited")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def watch_cut(box: Lab) -> str:
    box.kube.drop_watches()
    return "every watch cut mid-stream"


def gone(box: Lab) -> str:
    box.kube.compact()
    box.kube.drop_watches()
    return "history compacted and watches cut: re-watches get 410 Gone"


def nsx_429(box: Lab) -> str:
    box.nsx.fail(429, count=10)
    return "NSX answers 429 to the next 10 requests"


def nsx_503(box: Lab) -> str:
    box.nsx.down(True)
    _pause(box, 20)
    box.nsx.down(False)
    box.nsx.fail(503, count=10)
    return "NSX closes every connection for 20 s, then answers 503 to 10 requests"


def black_hole(box: Lab) -> str:
    # nsxsim's black hole (a manager that never answers) where it has one; else lost answers.
    hole: Optional[Callable[..., None]] = getattr(box.nsx, "black_hole", None)
    if hole is not None:
        hole(True)
        _pause(box, 20)
        hole(False)
        return "NSX black-holed for 20 s"
    box.nsx.drop(20)
    return "NSX drops the next 20 requests unanswered"


def rotate_certs(box: Lab) -> str:
    for address in NODES:
        cn = f"system:node:node-{address.rsplit('.', 1)[-1]}"
        box.pki.client_cert(cn, ("system:nodes",))
    return "every kubelet client certificate re-issued in place"


def sighup(box: Lab) -> str:
    for node in box.nodes.values():
        assert node.proc is not None
        node.proc.send_signal(signal.SIGHUP)
    return "SIGHUP to every daemon"


def hang(box: Lab) -> str:
    box.ns.call(box.kube.hang, C)
    _pause(box, 20)
    box.ns.call(box.kube.serve, C)
    return f"API server {C} hangs for 20 s"


def churn(box: Lab) -> str:
    for i in range(30):
        box.kube.set_endpoints([a for j, a in enumerate(NODES) if j != i % 3])
        time.sleep(0.2)
    box.kube.set_endpoints(list(NODES))
    return "30 EndpointSlice changes in 6 s"


FAULTS: tuple[Callable[[Lab], str], ...] = (
    watch_cut,
    nsx_429,
    churn,
    gone,
    nsx_503,
    rotate_certs,
    sighup,
    black_hole,
    hang,
)


def no_fault(box: Lab) -> str:
    return "no fault (baseline)"


def soak(
    box: Lab, minutes: int, warmup: int, faults: tuple[Callable[[Lab], str], ...] = FAULTS
) -> int:
    for address in NODES:
        box.start(address, log={"level": "info"})
    wait_for(lambda: box.hops() == sorted(NODES), 30, "the first route")
    pids = {a: n.proc.pid for a, n in box.nodes.items() if n.proc is not None}
    samples: dict[str, list[Sample]] = {a: [] for a in NODES}
    print(f"soak: {minutes} min, warm-up {warmup} min, pids {pids}", flush=True)
    started = time.monotonic()
    failed: list[str] = []
    for minute in range(1, minutes + 1):
        fault = faults[(minute - 1) % len(faults)]
        what = fault(box)
        try:
            wait_for(lambda: box.hops() == sorted(NODES), 40, "the route back to all three")
        except AssertionError:
            failed.append(f"minute {minute}: the route did not come back after: {what}")
        box.nsx.clear_requests()
        _pause(box, max(0.0, started + minute * MINUTE - 5.0 - time.monotonic()))
        for address, pid in pids.items():
            samples[address].append(sample(pid, minute))
        figures = "  ".join(
            f"{a} {s[-1].rss_kb / 1024:.1f} MB {s[-1].threads} thr {s[-1].fds} fd"
            for a, s in samples.items()
        )
        print(f"minute {minute:3d}: {what}\n            {figures}", flush=True)
    return report(samples, warmup, failed)


def _least(rows: list[Sample]) -> Sample:
    """The lowest reading of a few minutes, figure by figure: a leak raises all of them,
    a connection kept open across one sample only that one."""
    return Sample(
        rows[0].minute,
        min(s.rss_kb for s in rows),
        min(s.threads for s in rows),
        min((s.files for s in rows), key=len),
    )


def report(samples: dict[str, list[Sample]], warmup: int, failed: list[str]) -> int:
    print(f"\ngrowth after the warm-up: the lowest of the first three samples from minute {warmup}")
    print("to the lowest of the last three")
    print("node        | RSS first → last (growth)      | threads | open files")
    over = list(failed)
    for address, rows in samples.items():
        after = [s for s in rows if s.minute >= warmup] or rows[-1:]
        first, last = _least(after[:3]), _least(after[-3:])
        grow = last.rss_kb - first.rss_kb
        threads, fds = last.threads - first.threads, last.fds - first.fds
        print(
            f"{address:<11} | {first.rss_kb / 1024:6.1f} → {last.rss_kb / 1024:6.1f} MB "
            f"({grow / 1024:+5.1f} MB) | {first.threads} → {last.threads} ({threads:+d}) "
            f"| {first.fds} → {last.fds} ({fds:+d})"
        )
        if grow > RSS_TARGET_KB:
            over.append(f"{address}: RSS grew {grow / 1024:.1f} MB (target ≤ 4 MB)")
        if threads > 0:
            over.append(f"{address}: {threads} more threads (target 0)")
        if fds > 0:
            added = sorted((Counter(last.files) - Counter(first.files)).elements())
            over.append(f"{address}: {fds} more open files (target 0): {', '.join(added)}")
    print("targets: RSS growth ≤ 4 MB, threads +0, open files +0")
    for line in over:
        print("FAIL", line)
    print("soak: " + ("over target" if over else "flat"), flush=True)
    return 1 if over else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = int(os.environ.get("SOAK_MINUTES", "30"))
    parser.add_argument("--minutes", type=int, default=default)
    parser.add_argument(
        "--warmup", type=int, default=None, help="minutes left out (default 5, a third if shorter)"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="no faults: the growth of an idle cluster"
    )
    args = parser.parse_args(argv)
    minutes = max(2, args.minutes)
    warmup = args.warmup if args.warmup is not None else min(5, minutes // 3)
    # SIGTERM (a CI timeout, `kill`) stops the soak as Ctrl-C does: the lab is removed.
    with interrupts_raise(), tempfile.TemporaryDirectory(prefix="litelb-soak-") as tmp:
        box = Lab(Path(tmp))
        try:
            return soak(box, minutes, warmup, (no_fault,) if args.baseline else FAULTS)
        except RuntimeError as e:
            print(f"soak: {e}\n{box.dump()}", flush=True)
            return 1
        finally:
            box.close()


if __name__ == "__main__":
    sys.exit(main())

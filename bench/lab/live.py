"""A line per second of what the client sees, for the demo: requests ok/failed, who answered,
and the next hops NSX holds; notes about the demo's steps appear where they happened."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from bench.lab.results import load

# A second is reported 2.1 s after it ended, when requests that timed out are in the log.
_LAG = 2.1


class Ticker:
    def __init__(self, log: Path, hops: Callable[[], str], out: Callable[[str], None]) -> None:
        self.log = log
        self.hops = hops
        self.out = out
        self.started = time.monotonic()
        self._second = self.started
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._hops: list[tuple[float, str]] = []
        self._notes: list[tuple[float, str]] = []

    def __enter__(self) -> Ticker:
        for target in (self._sample, self._run):
            thread = threading.Thread(target=target, name="ticker", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(3)
        self._flush(float("inf"))

    def note(self, text: str) -> None:
        """Printed in time order among the per-second lines."""
        with self._lock:
            self._notes.append((time.monotonic(), text))

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self._hops.append((time.monotonic(), self.hops()))

    def _hops_at(self, t: float) -> str:
        seen = [h for when, h in self._hops if when <= t]
        return seen[-1] if seen else self.hops()

    def _flush(self, before: float) -> None:
        with self._lock:
            due = [n for n in self._notes if n[0] < before]
            self._notes = [n for n in self._notes if n[0] >= before]
        for t, text in due:
            when = f"t={t - self.started:5.1f}s"
            self.out(f"    {when} {text}" if text.startswith("...") else f"\n==> {when} {text}")

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self._second + 1 + _LAG - time.monotonic())):
            second = self._second
            self._flush(second + 1)
            requests = [r for r in load(self.log) if second <= r.t < second + 1]
            ok = [r for r in requests if r.ok]
            failed = len(requests) - len(ok)
            nodes = Counter(r.node for r in ok)
            answered = " ".join(f".{n.rsplit('.', 1)[1]}:{c}" for n, c in sorted(nodes.items()))
            mark = "FAILED" if failed else "      "
            self.out(
                f"  t={second - self.started:5.1f}s  ok {len(ok):3d}  {mark} {failed:3d}"
                f"  answered {answered:<22}  NSX next hops: {self._hops_at(second + 1)}"
            )
            self._second += 1

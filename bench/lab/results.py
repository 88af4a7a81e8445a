"""What the client saw: the request log read back, and the figures taken from it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SLOW = 0.5  # seconds: a request slower than this counts as slow


@dataclass(frozen=True)
class Request:
    t: float  # start, CLOCK_MONOTONIC
    d: float  # seconds taken
    ok: bool
    node: Optional[str]
    err: str = ""
    conn: Optional[int] = None
    broken: bool = False


def load(path: Path) -> list[Request]:
    requests = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        requests.append(
            Request(
                t=r["t"],
                d=r["d"],
                ok=r["ok"],
                node=r.get("node"),
                err=r.get("err", ""),
                conn=r.get("conn"),
                broken=bool(r.get("broken")),
            )
        )
    return sorted(requests, key=lambda r: r.t)


@dataclass(frozen=True)
class Outcome:
    requests: int
    failed: int
    slow: int
    failure_end: Optional[float]  # seconds from the fault to the start of the last failure
    slow_end: Optional[float]  # ... of the last failed or slow request
    broken: int  # long-lived connections that broke


def affected(requests: Iterable[Request], since: float, until: Optional[float]) -> list[Request]:
    """Requests still running at `since` or started after it, started before `until`."""
    return [r for r in requests if r.t + r.d >= since and (until is None or r.t < until)]


def outcome(requests: Iterable[Request], fault_at: float, until: Optional[float] = None) -> Outcome:
    window = affected(requests, fault_at, until)
    failed = [r for r in window if not r.ok]
    slow = [r for r in window if r.ok and r.d > SLOW]
    bad = failed + slow
    return Outcome(
        requests=len(window),
        failed=len(failed),
        slow=len(slow),
        failure_end=max(r.t for r in failed) - fault_at if failed else None,
        slow_end=max(r.t for r in bad) - fault_at if bad else None,
        broken=sum(1 for r in window if r.broken),
    )

"""Polling for a condition, with a message that says what was awaited."""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    *nodes: Any,
    interval: float = 0.02,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """Poll until predicate() is truthy and return its value; on timeout fail with
    the daemons' logs and whatever `context()` adds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.address}\n{n.log()[-4000:]}" for n in nodes if n)
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}{context()}\n{logs}"
            )
        time.sleep(interval)

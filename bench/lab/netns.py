"""Network namespaces the lab creates, and a registry that removes everything it made.

Every step that creates something (a namespace, a process, a temporary file) registers
its undo at once, so `Cleanup.run` leaves nothing behind whether the lab finished, failed
half-way or was interrupted by Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from tests.netns import InNamespace


class Cleanup:
    """Undo actions, run newest first; each one runs once even if another fails."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def add(self, what: str, action: Callable[[], None]) -> None:
        with self._lock:
            self._actions.append((what, action))

    def run(self) -> list[str]:
        """Runs every action; returns what could not be undone (for the operator)."""
        failed = []
        while True:
            with self._lock:
                if not self._actions:
                    return failed
                what, action = self._actions.pop()
            try:
                action()
            except Exception as e:  # one failed undo must not leave the rest behind
                failed.append(f"{what}: {e}")


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C in the main thread, so `finally` blocks clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Namespace(InNamespace):
    """One network namespace with lo up; `call` runs a function in a thread inside it."""

    def __init__(self, name: str, cleanup: Cleanup) -> None:
        self.name = name
        ip("netns", "add", name)
        cleanup.add(f"namespace {name}", self._delete)
        ip("-n", name, "link", "set", "lo", "up")
        super().__init__(name, workers=2)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True, check=check
        )

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return ip("-n", self.name, *args, check=check)

    def sysctl(self, key: str, value: str) -> None:
        # Written from a thread inside the namespace: no procps needed.
        path = Path("/proc/sys", *key.split("."))
        self.call(path.write_text, value)

    def pids(self) -> list[int]:
        out = ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self) -> None:
        """SIGKILL every process in the namespace: all of them were started by the lab."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)

    def _delete(self) -> None:
        self.kill_all()
        self.stop_threads(wait=False)
        ip("netns", "del", self.name, check=False)

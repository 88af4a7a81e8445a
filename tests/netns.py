"""Python code inside a network namespace made with `ip netns add`.

setns(2) moves only the calling thread, and every thread it starts inherits the
namespace: functions run by these worker threads create their sockets inside it,
so a server started that way listens there and nowhere else.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


def enter(name: str) -> None:
    """Move the calling thread into the network namespace `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


class InNamespace:
    """Worker threads inside the existing namespace `name`; `call` runs a function
    in one of them and returns its result."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=workers, initializer=enter, initargs=(name,))

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def stop_threads(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait)

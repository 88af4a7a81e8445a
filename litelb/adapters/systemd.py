"""systemd's notify protocol (sd_notify) and journal detection.

Which sender is used: ``systemd.daemon.notify`` (libsystemd's sd_notify, which
also knows newer socket kinds such as vsock) only when the Notifier was given
``os.environ`` itself and systemd-python is installed, because sd_notify reads
``NOTIFY_SOCKET`` from the process environment, not from our mapping.
Otherwise the datagram is sent here, to the socket named in the given mapping —
which is what the tests use, and what runs where systemd-python is missing.
Both speak the same protocol: one datagram of ``KEY=value`` lines.

Nothing here raises on a failed send: systemd is the one that notices a
missing READY or WATCHDOG, and the daemon must keep serving meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Callable, Optional

log = logging.getLogger("litelb.systemd")


def _libsystemd_notify() -> Optional[Callable[[str], bool]]:
    try:
        from systemd import daemon
    except ImportError:
        return None
    return daemon.notify


def _socket_address(name: str) -> str:
    # "@" marks a Linux abstract socket, addressed with a leading NUL byte.
    return "\0" + name[1:] if name.startswith("@") else name


def _watchdog_interval(environ: Mapping[str, str]) -> Optional[float]:
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    try:
        # WATCHDOG_PID names the process meant to ping; a child that inherited
        # the environment must not ping on its parent's behalf.
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        log.debug("ignoring unparsable WATCHDOG_USEC=%r WATCHDOG_PID=%r", usec, pid)
        return None
    if value <= 0:
        return None
    # Half the timeout, as sd_watchdog_enabled(3) recommends, so one late ping
    # does not get the daemon killed.
    return value / 2 / 1_000_000


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING/RELOADING to systemd, if it listens."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._socket = environ.get("NOTIFY_SOCKET", "")
        self.enabled: bool = bool(self._socket)
        self.watchdog_interval: Optional[float] = _watchdog_interval(environ)
        self._libsystemd = _libsystemd_notify() if environ is os.environ else None

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        # The protocol is line-based: a newline would start a bogus assignment.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        # Type=notify-reload (systemd 253+) requires the monotonic timestamp;
        # older systemd ignores the unknown field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def _send(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            if self._libsystemd is not None:
                self._libsystemd(message)
                return
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), _socket_address(self._socket))
        except OSError as e:
            log.debug("sd_notify %r to %s failed: %s", message, self._socket, e)


def journal_stream_attached(environ: Mapping[str, str] = os.environ, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) is the journal stream systemd connected.

    ``JOURNAL_STREAM`` is ``<st_dev>:<st_ino>`` of that stream; checking it
    rather than its mere presence catches a stderr redirected after systemd
    started us (``litelb run 2>file`` in a unit's shell, for example). When it
    matches, the journal timestamps each line, so our log lines carry none.
    """
    value = environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False

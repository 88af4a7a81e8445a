"""The sd_notify adapter against a datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from litelb.adapters.systemd import Notifier, journal_stream_attached


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    # A short private directory: AF_UNIX paths are limited to 108 bytes and
    # pytest's tmp_path can be longer than that.
    with tempfile.TemporaryDirectory(prefix="litelb-") as d:
        path = os.path.join(d, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            yield sock, path
        finally:
            sock.close()


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_every_message_reaches_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled

    n.ready()
    assert _received(sock) == "READY=1"
    n.status("leader; route 3/3 next hops in sync")
    assert _received(sock) == "STATUS=leader; route 3/3 next hops in sync"
    n.watchdog()
    assert _received(sock) == "WATCHDOG=1"
    n.stopping()
    assert _received(sock) == "STOPPING=1"
    n.reloading()
    first, second = _received(sock).split("\n")
    assert first == "RELOADING=1"
    assert second.startswith("MONOTONIC_USEC=")
    assert int(second.partition("=")[2]) > 0


def test_status_stays_on_one_line(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    Notifier({"NOTIFY_SOCKET": path}).status("one\nREADY=1")
    assert _received(sock) == "STATUS=one READY=1"


def test_abstract_socket() -> None:
    name = f"litelb-test-{os.getpid()}-notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _received(sock) == "READY=1"


def test_libsystemd_sender_reads_the_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("systemd.daemon")
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier()
    assert n.enabled
    n.ready()
    assert _received(sock) == "READY=1"
    n.status("follower")
    assert _received(sock) == "STATUS=follower"


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    n.ready()
    n.watchdog()


def test_send_failure_does_not_raise(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled
    n.ready()
    n.status("x")
    n.watchdog()
    n.stopping()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "x"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ).watchdog_interval == expected


def test_journal_stream_attached(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as f:
        st = os.fstat(f.fileno())
        here = f"{st.st_dev}:{st.st_ino}"
        assert journal_stream_attached({"JOURNAL_STREAM": here}, fd=f.fileno())
        elsewhere = f"{st.st_dev}:{st.st_ino + 1}"
        assert not journal_stream_attached({"JOURNAL_STREAM": elsewhere}, fd=f.fileno())
        assert not journal_stream_attached({}, fd=f.fileno())
        assert not journal_stream_attached({"JOURNAL_STREAM": "garbage"}, fd=f.fileno())
        assert not journal_stream_attached({"JOURNAL_STREAM": "1:x"}, fd=f.fileno())

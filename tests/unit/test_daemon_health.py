"""The watchdog rule: WATCHDOG=1 and /healthz only while every worker is
alive and making progress."""

from __future__ import annotations

import threading
import time

from litelb.config import Config, NsxConfig, Secret, VipConfig
from litelb.daemon import Daemon, Worker


class Recorder:
    watchdog_interval = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG=1")


def daemon() -> tuple[Daemon, Recorder]:
    cfg = Config(
        vip=VipConfig("192.168.160.249"),
        nsx=NsxConfig(
            managers=("https://nsx.test",), tier1="t1", route_id="r", password=Secret("x")
        ),
    )
    notifier = Recorder()
    return Daemon(cfg, notifier=notifier), notifier  # type: ignore[arg-type]


def worker(name: str, *, alive: bool, progress_age: float) -> Worker:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    if alive:
        thread.start()
    at = time.monotonic() - progress_age
    return Worker(name, thread, lambda: at, stall_after=30.0)


def test_watchdog_only_while_every_worker_lives_and_progresses() -> None:
    d, notifier = daemon()
    d.workers = [worker("reconcile", alive=True, progress_age=1.0)]
    d._tick()
    assert d.healthy() and notifier.sent == ["WATCHDOG=1"]

    d.workers.append(worker("probes", alive=True, progress_age=31.0))
    d._tick()
    assert not d.healthy() and notifier.sent == ["WATCHDOG=1"], "a stalled worker"

    d.workers = [worker("kubernetes", alive=False, progress_age=0.0)]
    d._tick()
    assert not d.healthy() and notifier.sent == ["WATCHDOG=1"], "a dead worker"


def test_nsx_requests_count_as_reconcile_progress() -> None:
    d, _ = daemon()
    before = d.engine.last_progress
    time.sleep(0.01)
    d._on_nsx_request("GET", "error", 10.0)
    assert d.engine.last_progress > before

"""The reconcile worker against an in-memory NSX that enforces compare-and-swap.

The store fails loudly when an invariant breaks (an empty next-hop list, a stale
revision), so each test checks the state of the world, not the calls made.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Callable, Optional

import pytest

from litelb.backoff import AUTH_RETRY
from litelb.core.decide import Decision
from litelb.core.health import Health
from litelb.engine import (
    HEARTBEAT,
    MIN_STALL_LIMIT,
    Engine,
    EngineSettings,
    Result,
    Schedule,
    stall_limit,
)
from litelb.engine.store import RouteStoreAuthError, RouteStoreConflictError, RouteStoreError
from litelb.metrics import Metrics
from litelb.model import Action, Endpoint, EndpointSnapshot, Reason, Route, Tag
from tests.wait import wait_for

A, B, C = "10.20.4.2", "10.20.4.3", "10.20.4.4"
PATH = "/infra/tier-1s/t1/static-routes/litelb-192-168-160-249"


class MemoryNsx:
    manager = "https://nsx.test"
    reachable: Optional[bool] = True

    def __init__(self) -> None:
        self.route: Optional[Route] = None
        self.revision = -1
        self.writes: list[Route] = []
        self.reads = 0
        self.fail: Optional[Exception] = None
        self.before_put: Optional[Callable[[], None]] = None
        self.read_time = 0.0

    def get_route(self) -> Optional[Route]:
        self.reads += 1
        time.sleep(self.read_time)
        if self.fail is not None:
            raise self.fail
        return replace(self.route, revision=self.revision) if self.route else None

    def put_route(self, route: Route, revision: Optional[int]) -> Route:
        assert route.next_hops, "an empty next-hop list reached NSX"
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        if revision != (self.revision if self.route else None):
            raise RouteStoreConflictError("PUT answered 412: modified by someone")
        self.route, self.revision = replace(route, revision=None), self.revision + 1
        self.writes.append(self.route)
        return replace(route, revision=self.revision)

    def realization_state(self) -> Optional[str]:
        return "REALIZED"

    def someone_writes(self, leader: str, hops: tuple[str, ...]) -> None:
        tags = (
            Tag("litelb/managed-by", "litelb"),
            Tag("litelb/vip", "192.168.160.249"),
            Tag("litelb/leader", leader),
        )
        self.route = Route("192.168.160.249/32", hops, "litelb-192-168-160-249", tags)
        self.revision += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(*ready: str) -> EndpointSnapshot:
    return EndpointSnapshot(tuple(Endpoint(a) for a in ready), "1")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def nsx() -> MemoryNsx:
    return MemoryNsx()


def config(node: str) -> EngineSettings:
    return EngineSettings(
        vip="192.168.160.249",
        route_id="litelb-192-168-160-249",
        route_path="/infra/tier-1s/t1/static-routes/litelb-192-168-160-249",
        service="default/kubernetes",
        node_address=node,
    )


def engine(nsx: MemoryNsx, clock: Clock, node: str = A, **kwargs: Any) -> Engine:
    cfg = config(node)
    return Engine(
        cfg,
        nsx,
        local_addresses=frozenset,
        clock=clock,
        wall=lambda: 1.8e9,
        **{"metrics": Metrics(), **kwargs},
    )


def test_nothing_is_written_before_the_first_list(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    assert e.reconcile().decision.reason is Reason.NOT_SYNCED
    assert nsx.reads == 0 and nsx.writes == []


def test_creates_then_stays_quiet(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    assert e.reconcile().decision.reason is Reason.CREATE
    assert nsx.route is not None and nsx.route.next_hops == (A, B, C)
    clock.now += 61
    assert e.reconcile().decision.reason is Reason.IN_SYNC
    assert len(nsx.writes) == 1
    status = e.status
    assert status.is_leader and status.in_sync and status.last_sync == 1.8e9


def test_lost_race_is_reread_and_followed(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    nsx.before_put = lambda: nsx.someone_writes(B, (B, C))
    decision = e.reconcile().decision
    assert decision.reason is Reason.NOT_LEADER
    assert nsx.route is not None and nsx.route.leader == B, "the winner's route stands"
    assert e.status.leader == B and not e.status.is_leader


def test_auth_failure_waits_a_minute(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B))
    nsx.fail = RouteStoreAuthError("GET answered 403: credentials incorrect")
    e.reconcile()
    assert "credentials incorrect" in (e.status.last_error or "")
    assert e.schedule.due() == pytest.approx(clock.now + AUTH_RETRY)
    assert not e.status.in_sync


def test_writes_are_spaced_by_the_schedule(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    start = clock.now
    assert e.reconcile().wrote
    assert e.schedule.earliest() == pytest.approx(start + 0.6), "a change waits for the spacing"
    clock.now += 61
    assert not e.reconcile().wrote
    assert e.schedule.earliest() == pytest.approx(start + 0.6), "a pass without a write"
    assert e.schedule.due() == pytest.approx(clock.now + 60), "the resync"


def ok(requeue_after: Optional[float] = None, wrote: bool = False) -> Result:
    return Result(Decision(Action.NOOP, Reason.IN_SYNC), requeue_after=requeue_after, wrote=wrote)


def failed(retry_after: Optional[float] = None, at_least: float = 0.0) -> Result:
    return Result(
        Decision(Action.NOOP, Reason.NOT_SYNCED),
        error="NSX said no",
        retry_after=retry_after,
        wait_at_least=at_least,
    )


def test_schedule() -> None:
    times = {"resync_interval": 60.0, "write_spacing": 0.6, "random": lambda: 0.0}
    s = Schedule().after(ok(wrote=True), 100.0, **times)
    assert (s.due(), s.earliest()) == (160.0, 100.6)
    s = s.after(ok(requeue_after=2.0), 101.0, **times)
    assert (s.due(), s.earliest()) == (103.0, 100.6)
    s = s.after(failed(), 102.0, **times)
    assert (s.due(), s.earliest()) == (102.5, 102.5), "after a failure the backoff decides"
    s = s.after(failed(retry_after=5.0), 103.0, **times)
    assert s.due() == 108.0 and s.backoff.failures == 2
    s = s.after(failed(at_least=60.0), 108.0, **times)
    assert s.due() == 168.0
    s = s.after(ok(), 170.0, **times)
    assert (s.due(), s.earliest(), s.backoff.failures) == (230.0, 100.6, 0)


def test_unhealthy_hop_withdrawn_and_fail_static(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    e.reconcile()
    clock.now += 1
    e.set_health({A: Health(), B: Health(), C: Health(healthy=False)})
    e.reconcile()
    assert nsx.route is not None and nsx.route.next_hops == (A, B)
    clock.now += 1
    e.set_snapshot(snapshot())
    assert e.reconcile().decision.reason is Reason.NO_HEALTHY_ENDPOINTS
    assert nsx.route.next_hops == (A, B)


def test_stopping_leader_hands_over(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    e.reconcile()
    clock.now += 1
    assert e.reconcile(stopping=True).decision.reason is Reason.HANDOVER
    assert nsx.route is not None and nsx.route.leader == B
    assert nsx.route.next_hops == (A, B, C)


def test_follower_takes_over_a_dead_leader(nsx: MemoryNsx, clock: Clock) -> None:
    nsx.someone_writes(A, (A, B, C))
    e = engine(nsx, clock, node=B)
    e.set_snapshot(snapshot(A, B, C))
    assert e.reconcile().decision.reason is Reason.NOT_LEADER
    e.set_health({A: Health(healthy=False), B: Health(), C: Health()})
    first = e.reconcile()
    assert first.decision.reason is Reason.NOT_LEADER and first.requeue_after == 1.0
    assert e.schedule.due() == clock.now + 1.0
    clock.now += 1.0
    assert e.reconcile().decision.reason is Reason.TAKEOVER
    assert nsx.route is not None and nsx.route.leader == B and nsx.route.next_hops == (B, C)


def retry_delays(e: Engine, clock: Clock, passes: int) -> list[float]:
    delays = []
    for _ in range(passes):
        e.reconcile()
        delays.append(e.schedule.due() - clock.now)
        clock.now = e.schedule.due()
    return delays


def test_failing_nsx_is_retried_with_backoff_not_in_a_loop(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock, random=lambda: 0.999999)
    e.set_snapshot(snapshot(A, B))
    nsx.fail = RouteStoreError("GET answered 503: busy")
    delays = retry_delays(e, clock, 8)
    assert delays == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30], rel=1e-4)
    nsx.fail = None
    e.reconcile()
    nsx.fail = RouteStoreError("GET answered 503: busy")
    assert retry_delays(e, clock, 1) == pytest.approx([1.0], rel=1e-4), "a success resets"


def test_retry_after_is_capped_and_does_not_restart_the_backoff(
    nsx: MemoryNsx, clock: Clock
) -> None:
    e = engine(nsx, clock, random=lambda: 0.0)
    e.set_snapshot(snapshot(A, B))
    busy = RouteStoreError("GET answered 503: busy", retry_after=3600.0)
    nsx.fail = busy
    assert retry_delays(e, clock, 1) == [30.0]
    nsx.fail = RouteStoreError("GET answered 503: busy")
    e2 = engine(nsx, clock, random=lambda: 0.999999)
    e2.set_snapshot(snapshot(A, B))
    nsx.fail = busy
    e2.reconcile()
    clock.now = e2.schedule.due()
    nsx.fail = RouteStoreError("GET answered 503: busy")
    # The third failure in a row: up to 4 s, not the first failure's 1 s again.
    assert retry_delays(e2, clock, 2) == pytest.approx([2.0, 4.0], rel=1e-4)


def test_a_bug_in_a_pass_is_counted_and_retried_not_fatal(
    nsx: MemoryNsx, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    e = engine(nsx, clock, metrics=metrics, random=lambda: 0.0)
    e.set_snapshot(snapshot(A, B))
    nsx.fail = AttributeError("'str' object has no attribute 'get'")
    for _ in range(3):
        assert e.reconcile().decision.action.value == "noop"
        clock.now = e.schedule.due()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "the traceback is logged once"
    assert "internal error: AttributeError" in (e.status.last_error or "")
    assert metrics.registry.get_sample_value("litelb_reconcile_errors_total") == 3
    nsx.fail = None
    assert e.reconcile().decision.reason is Reason.CREATE
    assert e.status.last_error is None


def test_foreign_route_is_reported_and_left_alone(nsx: MemoryNsx, clock: Clock) -> None:
    nsx.route = Route("192.168.160.249/32", ("10.9.9.9",), "someone else's", ())
    nsx.revision = 4
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B))
    assert e.reconcile().decision.reason is Reason.FOREIGN_ROUTE
    assert nsx.writes == [] and nsx.route.next_hops == ("10.9.9.9",)
    assert "litelb/managed-by" in (e.status.last_error or "")
    assert not e.status.in_sync


def test_stall_limit_covers_one_call_over_every_manager() -> None:
    assert stall_limit(10.0, 1) >= 30.0
    assert stall_limit(35.0, 2) >= 2 * 2 * 35.0 + HEARTBEAT
    assert stall_limit(300.0, 3) >= 3 * 2 * 300.0
    assert stall_limit(1.0, 1) == MIN_STALL_LIMIT


def realtime_engine(nsx: MemoryNsx, node: str, coalesce: float, resync: float = 60.0) -> Engine:
    """An engine on the real clocks, for the tests of its worker thread."""
    settings = replace(config(node), resync_interval=resync)
    return Engine(settings, nsx, metrics=Metrics(), local_addresses=frozenset, coalesce=coalesce)


@contextmanager
def worker(e: Engine) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=e.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        e.stop(handover=False)
        thread.join(5)


def test_the_worker_coalesces_a_burst_of_kicks_into_few_passes(nsx: MemoryNsx) -> None:
    nsx.someone_writes(A, (A, B, C))
    nsx.read_time = 0.02  # kicks also arrive while a pass runs
    e = realtime_engine(nsx, B, coalesce=0.1, resync=3600.0)
    e.set_snapshot(snapshot(A, B, C))
    with worker(e) as thread:
        for i in range(100):  # a change every 5 ms for half a second
            e.set_snapshot(snapshot(A, B, C) if i % 2 else snapshot(A, B))
            time.sleep(0.005)
        time.sleep(0.3)
    assert not thread.is_alive()
    # One pass per coalescing window at most, not one per kick (plus start and end).
    assert nsx.reads <= 0.8 / 0.1 + 2, nsx.reads
    assert nsx.writes == [], "a follower never writes"


def test_a_probe_verdict_is_acted_on_without_the_coalescing_window(nsx: MemoryNsx) -> None:
    e = realtime_engine(nsx, A, coalesce=30.0, resync=3600.0)
    e.set_snapshot(snapshot(A, B, C))
    e.reconcile()
    assert nsx.route is not None and nsx.route.next_hops == (A, B, C)
    with worker(e):
        e.set_health({A: Health(), B: Health(), C: Health(healthy=False)})
        wait_for(
            lambda: nsx.route is not None and nsx.route.next_hops == (A, B),
            5,
            "the withdrawal, which must not wait for the coalescing window",
        )


def test_new_credentials_end_the_authentication_wait_at_once(nsx: MemoryNsx) -> None:
    nsx.fail = RouteStoreAuthError("GET answered 403: credentials incorrect")
    e = realtime_engine(nsx, A, coalesce=0.01)
    e.set_snapshot(snapshot(A, B))
    with worker(e):
        wait_for(lambda: e.schedule.backoff.failures >= 1, 5, "the first failure")
        # Then a minute's wait: repeated bad logins lock the account.
        assert e.schedule.due() - time.monotonic() > 50
        nsx.fail = None
        e.kick()  # a change arrives during the wait: it does not end it
        time.sleep(0.3)
        assert nsx.reads == 1
        e.retry_now()  # systemctl reload brought a new password
        wait_for(lambda: nsx.writes, 1, "a write with the new credentials")

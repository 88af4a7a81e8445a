"""The reconcile worker against an in-memory NSX that enforces compare-and-swap.

The store fails loudly when an invariant breaks (an empty next-hop list, a stale
revision), so each test checks the state of the world, not the calls made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional

import pytest

from litelb.adapters.nsx import NsxAuthError, NsxConflictError, NsxError
from litelb.config import Config, CoordinationConfig, NsxConfig, VipConfig
from litelb.core.health import Health
from litelb.engine import AUTH_RETRY, Engine
from litelb.metrics import Metrics
from litelb.model import Endpoint, EndpointSnapshot, Reason, Route, Tag

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

    def get_route(self) -> Optional[Route]:
        self.reads += 1
        if self.fail is not None:
            raise self.fail
        return replace(self.route, revision=self.revision) if self.route else None

    def put_route(self, route: Route, revision: Optional[int]) -> Route:
        assert route.next_hops, "an empty next-hop list reached NSX"
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        if revision != (self.revision if self.route else None):
            raise NsxConflictError("PUT", self.manager + PATH, 412, 604, "modified by someone")
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


def engine(nsx: MemoryNsx, clock: Clock, node: str = A) -> Engine:
    cfg = Config(
        vip=VipConfig("192.168.160.249"),
        nsx=NsxConfig(
            managers=("https://nsx.test",), tier1="t1", route_id="litelb-192-168-160-249"
        ),
        coordination=CoordinationConfig(),
    )
    cfg = replace(cfg, kubernetes=replace(cfg.kubernetes, node_address=node))
    return Engine(
        cfg, nsx, metrics=Metrics(), local_addresses=frozenset, clock=clock, wall=lambda: 1.8e9
    )


def test_nothing_is_written_before_the_first_list(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    assert e.reconcile().reason is Reason.NOT_SYNCED
    assert nsx.reads == 0 and nsx.writes == []


def test_creates_then_stays_quiet(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    assert e.reconcile().reason is Reason.CREATE
    assert nsx.route is not None and nsx.route.next_hops == (A, B, C)
    clock.now += 61
    assert e.reconcile().reason is Reason.IN_SYNC
    assert len(nsx.writes) == 1
    status = e.status
    assert status.is_leader and status.in_sync and status.last_sync == 1.8e9


def test_lost_race_is_reread_and_followed(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    nsx.before_put = lambda: nsx.someone_writes(B, (B, C))
    decision = e.reconcile()
    assert decision.reason is Reason.NOT_LEADER
    assert nsx.route is not None and nsx.route.leader == B, "the winner's route stands"
    assert e.status.leader == B and not e.status.is_leader


def test_auth_failure_waits_a_minute(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B))
    nsx.fail = NsxAuthError("GET", "https://nsx.test" + PATH, 403, 403, "credentials incorrect")
    e.reconcile()
    assert "credentials incorrect" in (e.status.last_error or "")
    assert e._next_deadline() == pytest.approx(clock.now + AUTH_RETRY)
    assert not e.status.in_sync


def test_burst_writes_are_spaced(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    e.reconcile()
    clock.now += 0.1
    e.set_snapshot(snapshot(A, B))
    deferred = e.reconcile()
    assert len(nsx.writes) == 1, "second write waits for the spacing"
    assert deferred.recheck_at == pytest.approx(clock.now - 0.1 + 0.6)
    clock.now += 0.6
    e.reconcile()
    assert nsx.route is not None and nsx.route.next_hops == (A, B)


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
    assert e.reconcile().reason is Reason.NO_HEALTHY_ENDPOINTS
    assert nsx.route.next_hops == (A, B)


def test_stopping_leader_hands_over(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B, C))
    e.reconcile()
    clock.now += 1
    assert e.reconcile(stopping=True).reason is Reason.HANDOVER
    assert nsx.route is not None and nsx.route.leader == B
    assert nsx.route.next_hops == (A, B, C)


def test_follower_takes_over_a_dead_leader(nsx: MemoryNsx, clock: Clock) -> None:
    nsx.someone_writes(A, (A, B, C))
    e = engine(nsx, clock, node=B)
    e.set_snapshot(snapshot(A, B, C))
    assert e.reconcile().reason is Reason.NOT_LEADER
    e.set_health({A: Health(healthy=False), B: Health(), C: Health()})
    first = e.reconcile()
    assert first.reason is Reason.NOT_LEADER and first.recheck_at == clock.now + 1.0
    clock.now += 1.0
    assert e.reconcile().reason is Reason.TAKEOVER
    assert nsx.route is not None and nsx.route.leader == B and nsx.route.next_hops == (B, C)


def test_failing_nsx_is_retried_with_backoff_not_in_a_loop(nsx: MemoryNsx, clock: Clock) -> None:
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B))
    nsx.fail = NsxError("GET", "https://nsx.test" + PATH, 503, 103, "busy")
    delays = []
    for _ in range(8):
        e.reconcile()
        delays.append(e._next_deadline() - clock.now)
        clock.now = e._next_deadline()
    assert all(d > 0 for d in delays)
    assert delays[-1] > delays[0] * 4, delays
    assert max(delays) <= 10.0 * 1.2


def test_foreign_route_is_reported_and_left_alone(nsx: MemoryNsx, clock: Clock) -> None:
    nsx.route = Route("192.168.160.249/32", ("10.9.9.9",), "someone else's", ())
    nsx.revision = 4
    e = engine(nsx, clock)
    e.set_snapshot(snapshot(A, B))
    assert e.reconcile().reason is Reason.FOREIGN_ROUTE
    assert nsx.writes == [] and nsx.route.next_hops == ("10.9.9.9",)
    assert "litelb/managed-by" in (e.status.last_error or "")
    assert not e.status.in_sync

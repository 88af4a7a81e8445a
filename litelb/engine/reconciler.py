"""One reconcile pass: observe what this node sees and what the store holds, let the
core decide, write only the difference, and report — then say when to run again.

A pass starts from the whole current state, so nothing depends on having seen every
event: a missed change is repaired by the next pass. When passes run (coalescing,
write spacing, backoff, resync) is the scheduler's business, not this module's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from litelb.backoff import AUTH_RETRY
from litelb.core.decide import Decision, RuleMemory, View, decide, own_identity, remember
from litelb.core.health import Health, healthy_addresses, passing_addresses
from litelb.core.route import MAX_NEXT_HOPS, ecmp_next_hops
from litelb.engine.settings import EngineSettings
from litelb.engine.status import EndpointState, EngineStatus
from litelb.engine.store import (
    RouteStore,
    RouteStoreAuthError,
    RouteStoreConflictError,
    RouteStoreError,
)
from litelb.metrics import Metrics
from litelb.model import Action, Endpoint, EndpointSnapshot, Reason, Route, ip_sort_key

log = logging.getLogger("litelb.engine")

# A race lost at the store (412) is re-read and re-decided at once, a few times.
CONFLICT_ROUNDS = 3


@dataclass(frozen=True)
class Result:
    """What a pass did and what it asks of the scheduler (as controller-runtime's
    Result): run again after `requeue_after` seconds even if nothing changes; after a
    failure, back off, for at least `retry_after` (the store's hint) or `wait_at_least`."""

    decision: Decision
    requeue_after: Optional[float] = None
    wrote: bool = False
    error: Optional[str] = None  # the failure, one line; None when the pass succeeded
    retry_after: Optional[float] = None
    wait_at_least: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None


class Observations:
    """The latest EndpointSlice snapshot and probe verdicts, handed in from other threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: Optional[EndpointSnapshot] = None
        self._health: Mapping[str, Health] = {}

    def set_snapshot(self, snapshot: EndpointSnapshot) -> bool:
        """Store it; True when the endpoints changed."""
        with self._lock:
            changed = self._snapshot is None or self._snapshot.endpoints != snapshot.endpoints
            self._snapshot = snapshot
        return changed

    def set_health(self, health: Mapping[str, Health]) -> bool:
        """Store it; True when the set of healthy addresses changed."""
        with self._lock:
            before = {a for a, h in self._health.items() if h.healthy}
            self._health = dict(health)
            after = {a for a, h in self._health.items() if h.healthy}
        return before != after

    def current(self) -> tuple[Optional[EndpointSnapshot], Mapping[str, Health]]:
        with self._lock:
            return self._snapshot, self._health

    def endpoints(self) -> tuple[Endpoint, ...]:
        with self._lock:
            return self._snapshot.endpoints if self._snapshot else ()


@dataclass
class LeadershipMemory:
    """What one pass leaves for the next: the route last seen, the timers of the
    takeover rules, and what was last logged (so each change is logged once)."""

    rule: RuleMemory = field(default_factory=RuleMemory)
    last_reason: Optional[Reason] = None
    last_unexpected: Optional[str] = None
    left_out: tuple[str, ...] = ()


class Reconciler:
    """Runs passes for one route; only the scheduler's worker thread calls reconcile()."""

    def __init__(
        self,
        settings: EngineSettings,
        store: RouteStore,
        observations: Observations,
        *,
        metrics: Metrics,
        local_addresses: Callable[[], frozenset[str]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._observations = observations
        self._metrics = metrics
        self._local_addresses = local_addresses
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._status = EngineStatus()
        self._memory = LeadershipMemory()

    @property
    def status(self) -> EngineStatus:
        with self._lock:
            return self._status

    def reconcile(self, *, stopping: bool = False) -> Result:
        """One level-triggered pass. Safe to call again at any time; never raises:
        a failure is reported (log, status, metric) and returned for backoff."""
        try:
            return self._reconcile(stopping)
        except RouteStoreError as e:
            return self._failed(e, str(e))
        except Exception as e:  # the worker must outlive any bug in a pass
            return self._unexpected(e)

    def _reconcile(self, stopping: bool) -> Result:
        m = self._memory
        for _ in range(CONFLICT_ROUNDS):
            now = self._clock()
            view = self._view(stopping)
            try:
                decision, wrote = self._pass(view, now)
                break
            except RouteStoreConflictError as e:
                # Someone else wrote between our read and our write: re-read, re-decide.
                log.info("route changed under us, re-reading: %s", e)
                error: RouteStoreError = e
        else:
            raise error
        m.last_unexpected = None
        foreign = decision.reason is Reason.FOREIGN_ROUTE
        self._publish(view, decision, error=self._foreign_text() if foreign else None)
        requeue = None if decision.recheck_at is None else max(decision.recheck_at - now, 0.0)
        return Result(decision, requeue_after=requeue, wrote=wrote)

    def _view(self, stopping: bool) -> View:
        snapshot, health = self._observations.current()
        if snapshot is None:
            return View(None, (), (), synced=False, stopping=stopping)
        ready = snapshot.ready_addresses
        listed = [e.address for e in snapshot.endpoints]
        configured = self._settings.node_address
        local = () if configured else self._local_addresses()
        node = own_identity(configured, local, listed)
        healthy = healthy_addresses(health, ready) if self._settings.probes else ready
        return View(node, ready, healthy, synced=True, stopping=stopping)

    def _pass(self, view: View, now: float) -> tuple[Decision, bool]:
        """Read, decide, write if needed; (the decision, whether it wrote)."""
        m = self._memory
        if not view.synced:
            return Decision(Action.NOOP, Reason.NOT_SYNCED), False
        actual = self._store.get_route()
        # The timers start when the route was seen, not before the read: a hold-down must
        # never begin before the change it reacts to.
        now = self._clock()
        timeouts = self._settings.timeouts
        before = m.rule
        _, health = self._observations.current()
        failing = {a: h.failing_since for a, h in health.items() if h.failing_since is not None}
        m.rule = remember(before, view, actual, failing, now)
        if m.rule.held_since != before.held_since and actual is not None:
            log.warning(
                "leader changed from %s to %s: no takeover by this node for %g s (hold-down)",
                before.actual.leader if before.actual is not None else None,
                actual.leader,
                timeouts.hold_down,
            )
        decision = decide(
            view,
            actual,
            m.rule.starts(now),
            timeouts,
            vip=self._settings.vip,
            display_name=self._settings.route_id,
        )
        self._log_decision(decision, actual)
        wrote = decision.action is Action.WRITE and decision.route is not None
        if wrote:
            self._write(decision, actual, now)
        return decision, wrote

    def _write(self, decision: Decision, actual: Optional[Route], now: float) -> None:
        m = self._memory
        assert decision.route is not None
        written = self._store.put_route(decision.route, actual.revision if actual else None)
        m.rule = m.rule.wrote(written, takeover=decision.takeover, now=now)
        self._metrics.route_writes_total.inc()
        log.info(
            "wrote route %s: next hops %s, leader %s (%s)",
            self._settings.route_path,
            ",".join(written.next_hops),
            written.leader,
            decision.reason.value,
        )
        try:
            state = self._store.realization_state()
        except RouteStoreError as e:
            # The write itself is confirmed by the read-back; realization is advisory.
            log.debug("realization state unknown: %s", e)
            return
        if state not in (None, "REALIZED", "IN_PROGRESS"):
            log.warning("NSX reports the route's realization state as %s", state)

    def _foreign_text(self) -> str:
        return (
            f"a route at {self._settings.route_path} exists without the tag "
            "litelb/managed-by=litelb: litelb will not touch it; delete it in NSX or set "
            "another nsx.route_id"
        )

    def _log_decision(self, decision: Decision, actual: Optional[Route]) -> None:
        m = self._memory
        if decision.reason is m.last_reason:
            return
        m.last_reason = decision.reason
        if decision.reason is Reason.FOREIGN_ROUTE:
            log.error("%s", self._foreign_text())
        elif decision.reason is Reason.NOT_LISTED:
            log.warning(
                "this node's address is not among the ready API servers of %s; set "
                "kubernetes.node_address if it has several: it will not lead",
                self._settings.service,
            )
        elif decision.reason is Reason.NO_HEALTHY_ENDPOINTS:
            log.warning("no healthy API server: keeping the route as it is (fail-static)")
        elif decision.reason is Reason.NOT_LEADER and actual is not None:
            log.info("following leader %s", actual.leader)
        else:
            log.info("route: %s", decision.reason.value)

    # -- failures -------------------------------------------------------------------

    def _unexpected(self, error: Exception) -> Result:
        m = self._memory
        what = f"{type(error).__name__}: {error}"
        if what != m.last_unexpected:
            # Once with its traceback; while it repeats, the failure count says so.
            log.exception("unexpected error in the reconcile pass (a bug; please report it)")
            m.last_unexpected = what
        return self._failed(error, f"internal error: {what}"[:300])

    def _failed(self, error: Exception, text: str) -> Result:
        self._metrics.reconcile_errors_total.inc()
        self._metrics.route_in_sync.set(0)
        with self._lock:
            # What the store holds is unknown until a read succeeds again.
            self._status = replace(self._status, in_sync=False, last_error=text)
        return Result(
            Decision(Action.NOOP, Reason.NOT_SYNCED),
            error=text,
            retry_after=getattr(error, "retry_after", None),
            # Repeated bad logins lock the account.
            wait_at_least=AUTH_RETRY if isinstance(error, RouteStoreAuthError) else 0.0,
        )

    # -- reporting ------------------------------------------------------------------

    def _publish(self, view: View, decision: Decision, *, error: Optional[str]) -> None:
        m = self._memory
        actual = m.rule.actual if view.synced else None
        hops = tuple(sorted(actual.next_hops, key=ip_sort_key)) if actual else ()
        desired = ecmp_next_hops(view.routable, hops)
        left_out = tuple(a for a in view.routable if a not in desired)
        if left_out != m.left_out:
            m.left_out = left_out
            if left_out:
                log.warning(
                    "%d healthy API servers, but NSX holds at most %d next hops per route: "
                    "routing to %s, leaving out %s while those stay healthy",
                    len(view.routable),
                    MAX_NEXT_HOPS,
                    ", ".join(desired),
                    ", ".join(left_out),
                )
        in_sync = bool(actual) and actual.managed and hops == desired and bool(hops)
        snapshot, health = self._observations.current()
        # The probes' own verdict, without fail-static: /status and the metric show failing
        # probes even while the route keeps every next hop.
        passing = (
            set(passing_addresses(health, view.ready)) if self._settings.probes else set(view.ready)
        )
        endpoints = tuple(
            EndpointState(e.address, e.ready, e.address in passing)
            for e in (snapshot.endpoints if snapshot else ())
        )
        last_sync = self._wall() if in_sync else self.status.last_sync
        status = EngineStatus(
            node=view.node,
            leader=actual.leader if actual else None,
            reason=decision.reason,
            synced=view.synced,
            endpoints=endpoints,
            next_hops=hops,
            desired_hops=desired,
            left_out=left_out,
            in_sync=in_sync,
            last_sync=last_sync,
            last_error=error,
        )
        with self._lock:
            self._status = status
        mt = self._metrics
        mt.is_leader.set(1 if status.is_leader else 0)
        mt.endpoints_ready.set(len(view.ready))
        mt.endpoints_healthy.set(len(passing))
        mt.route_next_hops.set(len(hops))
        mt.route_in_sync.set(1 if in_sync else 0)
        if in_sync:
            mt.last_sync_timestamp_seconds.set(self._wall())

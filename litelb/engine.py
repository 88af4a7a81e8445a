"""The one reconcile worker: kicked by the watch, the probes and its own timers, it
snapshots what this node sees, reads what NSX holds, lets the core decide, and writes
only the difference (SPEC §4.5–4.10).

Nothing here depends on having seen every event: each pass starts from the whole
current state, so a missed kick is repaired by the next one or by the resync timer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from random import Random
from typing import Callable, Optional, Protocol

from litelb.adapters.nsx import NsxAuthError, NsxConflictError, NsxError
from litelb.backoff import AUTH_RETRY, Backoff
from litelb.config import Config
from litelb.core.decide import (
    Decision,
    LeaderTimeouts,
    TimerStarts,
    View,
    decide,
    own_identity,
    track_dead,
    track_hold_down,
    track_stale,
)
from litelb.core.health import Health, healthy_addresses
from litelb.core.route import MAX_NEXT_HOPS, ecmp_next_hops
from litelb.metrics import Metrics
from litelb.model import Action, Endpoint, EndpointSnapshot, Reason, Route, ip_sort_key

log = logging.getLogger("litelb.engine")

# A burst of EndpointSlice events becomes one write: the first kick waits this long
# for the rest (SPEC §7: the coalescing window, ≤ 200 ms).
COALESCE_WINDOW = 0.1
# Under a sustained burst, writes are spaced at least this far apart, so 1,000 events
# in 10 s cost at most about 17 writes (SPEC §7: ≤ 20) while an isolated change is
# still written after the coalescing window alone.
WRITE_SPACING = 0.6
# The worker shows it is alive at least this often, even with nothing to do.
HEARTBEAT = 5.0
# A race lost at NSX (412) is re-read and re-decided at once, a few times.
CONFLICT_ROUNDS = 3
# Below this the watchdog would fire on a loaded machine's scheduling hiccups.
MIN_STALL_LIMIT = 30.0


def stall_limit(nsx_timeout: float, managers: int) -> float:
    """How long the worker may go without progress and still count as alive.

    It notes progress on each turn of its loop (at least every HEARTBEAT, backoff
    waits included) and after each NSX request; the longest legitimate silence is
    one NSX call: a round over every manager, each request allowed `nsx_timeout` to
    connect and again to answer. Never shorter than that, so a black-holed manager
    is waited out and the next one reached instead of the daemon being killed.
    """
    one_call = max(managers, 1) * 2 * nsx_timeout
    return max(MIN_STALL_LIMIT, one_call + HEARTBEAT + COALESCE_WINDOW + 10.0)


class RouteStore(Protocol):
    """What the engine needs from the NSX adapter."""

    @property
    def manager(self) -> str: ...

    @property
    def reachable(self) -> Optional[bool]: ...

    def get_route(self) -> Optional[Route]: ...

    def put_route(self, route: Route, revision: Optional[int]) -> Route: ...

    def realization_state(self) -> Optional[str]: ...


@dataclass(frozen=True)
class EngineStatus:
    """What the last reconcile saw and did; read by /status, /metrics and STATUS=."""

    node: Optional[str] = None
    leader: Optional[str] = None
    reason: Reason = Reason.NOT_SYNCED
    synced: bool = False
    endpoints: tuple[tuple[str, bool, bool], ...] = ()  # (address, ready, healthy)
    next_hops: tuple[str, ...] = ()
    desired_hops: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()  # healthy, but beyond NSX's limit of next hops
    in_sync: bool = False
    last_sync: Optional[float] = None  # wall clock
    last_error: Optional[str] = None

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.leader == self.node

    def summary(self) -> str:
        role = "leader" if self.is_leader else "follower"
        if not self.synced:
            return "waiting for the first EndpointSlice list"
        if self.last_error:
            return f"{role}; error: {self.last_error}"[:200]
        sync = "in sync" if self.in_sync else f"not in sync ({self.reason.value})"
        return f"{role}; route {len(self.next_hops)}/{len(self.desired_hops)} next hops {sync}"


@dataclass
class _Memory:
    """State only the worker thread touches, carried from one pass to the next."""

    actual: Optional[Route] = None
    dead_since: dict[str, float] = field(default_factory=dict)
    stale_since: Optional[float] = None
    held_since: Optional[float] = None
    last_ready: tuple[str, ...] = ()
    last_write: float = float("-inf")
    next_resync: float = 0.0
    recheck_at: Optional[float] = None
    backoff: Backoff = field(default_factory=Backoff)
    last_reason: Optional[Reason] = None
    last_unexpected: Optional[str] = None
    left_out: tuple[str, ...] = ()


class Engine:
    def __init__(
        self,
        config: Config,
        nsx: RouteStore,
        *,
        metrics: Metrics,
        local_addresses: Callable[[], frozenset[str]],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        coalesce: float = COALESCE_WINDOW,
        write_spacing: float = WRITE_SPACING,
        random: Callable[[], float] = Random().random,
    ) -> None:
        self._cfg = config
        self._nsx = nsx
        self._metrics = metrics
        self._local_addresses = local_addresses
        self._clock = clock
        self._wall = wall
        self._coalesce = coalesce
        self._write_spacing = write_spacing
        self._random = random
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._handover = True
        self._snapshot: Optional[EndpointSnapshot] = None
        self._health: Mapping[str, Health] = {}
        self._status = EngineStatus()
        self._memory = _Memory()
        self._progress = clock()
        self._display_name = config.nsx.route_id

    # -- inputs, called from other threads ------------------------------------------

    def set_snapshot(self, snapshot: EndpointSnapshot) -> None:
        with self._lock:
            changed = self._snapshot is None or self._snapshot.endpoints != snapshot.endpoints
            self._snapshot = snapshot
        if changed:
            self.kick()

    def set_health(self, health: Mapping[str, Health]) -> None:
        with self._lock:
            before = {a for a, h in self._health.items() if h.healthy}
            self._health = dict(health)
            after = {a for a, h in self._health.items() if h.healthy}
        if before != after:
            self.kick()

    def kick(self) -> None:
        self._wake.set()

    def stop(self, *, handover: bool = True) -> None:
        self._handover = handover
        self._stop.set()
        self._wake.set()

    # -- outputs --------------------------------------------------------------------

    @property
    def status(self) -> EngineStatus:
        with self._lock:
            return self._status

    def endpoints(self) -> tuple[Endpoint, ...]:
        with self._lock:
            return self._snapshot.endpoints if self._snapshot else ()

    @property
    def last_progress(self) -> float:
        """When the worker last went round its loop or heard from NSX (the watchdog reads it)."""
        return self._progress

    def note_progress(self) -> None:
        self._progress = self._clock()

    # -- the worker -----------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            self._progress = self._clock()
            backoff = self._memory.backoff.wait(self._clock())
            if backoff > 0:
                # After a failure the backoff decides, not a kick, the resync or a
                # recheck: an NSX in trouble must not get more load from us.
                self._stop.wait(min(backoff, HEARTBEAT))
                continue
            timeout = min(max(self._next_deadline() - self._clock(), 0.0), HEARTBEAT)
            if self._wake.wait(timeout):
                # Let the rest of a burst arrive, then take it all in one pass.
                self._stop.wait(self._coalesce)
                self._wake.clear()
            elif self._clock() < self._next_deadline():
                continue
            if self._stop.is_set():
                break
            self.reconcile()
        if self._handover:
            self.reconcile(stopping=True)

    def _next_deadline(self) -> float:
        m = self._memory
        if m.backoff.retry_at is not None:
            return m.backoff.retry_at
        return min(m.next_resync, m.recheck_at if m.recheck_at is not None else m.next_resync)

    def reconcile(self, *, stopping: bool = False) -> Decision:
        """One level-triggered pass. Safe to call again at any time; never raises."""
        failed = Decision(Action.NOOP, Reason.NOT_SYNCED)
        now = self._clock()
        try:
            return self._reconcile(stopping)
        except NsxError as e:
            self._failed(e, now, str(e))
        except Exception as e:  # the worker must outlive any bug in a pass
            self._unexpected(e, now)
        return failed

    def _unexpected(self, error: Exception, now: float) -> None:
        m = self._memory
        what = f"{type(error).__name__}: {error}"
        if what != m.last_unexpected:
            # Once with its traceback; while it repeats, the failure count says so.
            log.exception("unexpected error in the reconcile pass (a bug; please report it)")
            m.last_unexpected = what
        self._failed(error, now, f"internal error: {what}"[:300])

    def _reconcile(self, stopping: bool) -> Decision:
        m = self._memory
        for _ in range(CONFLICT_ROUNDS):
            now = self._clock()
            view = self._view(stopping)
            try:
                decision = self._pass(view, now)
                break
            except NsxConflictError as e:
                # Someone else wrote between our read and our write: re-read, re-decide.
                log.info("route changed under us, re-reading: %s", e)
                error: NsxError = e
        else:
            raise error
        m.backoff = m.backoff.succeeded()
        m.last_unexpected = None
        m.recheck_at = decision.recheck_at
        m.next_resync = self._clock() + self._cfg.nsx.resync_interval
        foreign = decision.reason is Reason.FOREIGN_ROUTE
        self._publish(view, decision, error=self._foreign_text() if foreign else None)
        return decision

    def _foreign_text(self) -> str:
        return (
            f"a route at {self._cfg.nsx.route_path} exists without the tag "
            "litelb/managed-by=litelb: litelb will not touch it; delete it in NSX or set "
            "another nsx.route_id"
        )

    def _view(self, stopping: bool) -> View:
        with self._lock:
            snapshot, health = self._snapshot, self._health
        if snapshot is None:
            return View(None, (), (), synced=False, stopping=stopping)
        ready = snapshot.ready_addresses
        listed = [e.address for e in snapshot.endpoints]
        configured = self._cfg.kubernetes.node_address
        local = () if configured else self._local_addresses()
        node = own_identity(configured, local, listed)
        healthy = healthy_addresses(health, ready) if self._cfg.health.enabled else ready
        return View(node, ready, healthy, synced=True, stopping=stopping)

    def _pass(self, view: View, now: float) -> Decision:
        m = self._memory
        if not view.synced:
            return Decision(Action.NOOP, Reason.NOT_SYNCED)
        actual = self._nsx.get_route()
        coordination = self._cfg.coordination
        last_leader = m.actual.leader if m.actual is not None else None
        m.actual = actual
        held = track_hold_down(
            m.held_since, last_leader=last_leader, actual=actual, node=view.node, now=now
        )
        if held != m.held_since and actual is not None:
            log.warning(
                "leader changed from %s to %s: no takeover by this node for %g s (hold-down)",
                last_leader,
                actual.leader,
                coordination.hold_down,
            )
        m.held_since = held
        watched = set(view.ready) | set(m.last_ready)
        if actual is not None:
            watched |= set(actual.next_hops) | ({actual.leader} if actual.leader else set())
        with self._lock:
            failing = {
                a: h.failing_since for a, h in self._health.items() if h.failing_since is not None
            }
        m.dead_since = track_dead(
            m.dead_since, alive=view.routable, watched=watched, now=now, failing_since=failing
        )
        m.stale_since = track_stale(m.stale_since, actual, view.ready, now)
        m.last_ready = view.ready
        decision = decide(
            view,
            actual,
            TimerStarts(now, m.dead_since, m.stale_since, m.held_since),
            LeaderTimeouts(
                coordination.takeover_after, coordination.stale_after, coordination.hold_down
            ),
            vip=self._cfg.vip.address,
            display_name=self._display_name,
        )
        self._log_decision(decision, actual)
        if decision.action is Action.WRITE and decision.route is not None:
            spaced_at = m.last_write + self._write_spacing
            if now < spaced_at and not view.stopping:
                return replace(decision, action=Action.NOOP, recheck_at=spaced_at)
            self._write(decision, actual, now)
        return decision

    def _write(self, decision: Decision, actual: Optional[Route], now: float) -> None:
        m = self._memory
        assert decision.route is not None
        m.last_write = now
        written = self._nsx.put_route(decision.route, actual.revision if actual else None)
        m.actual = written
        self._metrics.route_writes_total.inc()
        if decision.takeover:
            m.held_since = now
        log.info(
            "wrote route %s: next hops %s, leader %s (%s)",
            self._cfg.nsx.route_path,
            ",".join(written.next_hops),
            written.leader,
            decision.reason.value,
        )
        try:
            state = self._nsx.realization_state()
        except NsxError as e:
            # The write itself is confirmed by the read-back; realization is advisory.
            log.debug("realization state unknown: %s", e)
            return
        if state not in (None, "REALIZED", "IN_PROGRESS"):
            log.warning("NSX reports the route's realization state as %s", state)

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
                self._cfg.kubernetes.service,
            )
        elif decision.reason is Reason.NO_HEALTHY_ENDPOINTS:
            log.warning("no healthy API server: keeping the route as it is (fail-static)")
        elif decision.reason is Reason.NOT_LEADER and actual is not None:
            log.info("following leader %s", actual.leader)
        else:
            log.info("route: %s", decision.reason.value)

    def _failed(self, error: Exception, now: float, text: str) -> None:
        m = self._memory
        m.backoff = m.backoff.failed(
            now,
            self._random,
            hint=getattr(error, "retry_after", None),
            # Repeated bad logins lock the NSX account.
            at_least=AUTH_RETRY if isinstance(error, NsxAuthError) else 0.0,
        )
        failures, delay = m.backoff.failures, m.backoff.wait(now)
        self._metrics.reconcile_errors_total.inc()
        # Log the first failure, then every tenth retry: NSX may be down for hours.
        if failures == 1 or failures % 10 == 0:
            log.error("%s (attempt %d; retrying in %.1f s)", text, failures, delay)
        self._metrics.route_in_sync.set(0)
        with self._lock:
            # What NSX holds is unknown until a read succeeds again.
            self._status = replace(self._status, in_sync=False, last_error=text)

    def _publish(self, view: View, decision: Decision, *, error: Optional[str]) -> None:
        m = self._memory
        actual = m.actual if view.synced else None
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
        with self._lock:
            health = self._health
            snapshot = self._snapshot
        endpoints = tuple(
            (e.address, e.ready, e.ready and health.get(e.address, Health()).healthy)
            for e in (snapshot.endpoints if snapshot else ())
        )
        last_sync = self._wall() if in_sync else self._status.last_sync
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
        mt.endpoints_healthy.set(len(view.routable))
        mt.route_next_hops.set(len(hops))
        mt.route_in_sync.set(1 if in_sync else 0)
        if in_sync:
            mt.last_sync_timestamp_seconds.set(self._wall())


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

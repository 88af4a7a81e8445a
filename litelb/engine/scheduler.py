"""When reconcile passes run: the engine's worker thread and its schedule.

Kicks from the watch and the probes are coalesced, writes are spaced, failures back
off (litelb.backoff) and every `resync_interval` the route is read back anyway. What a
pass does is the Reconciler's business; this module only decides when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from random import Random
from typing import Callable, Optional

from litelb.backoff import Backoff
from litelb.core.health import Health
from litelb.engine.reconciler import Observations, Reconciler, Result
from litelb.engine.settings import EngineSettings
from litelb.engine.status import EngineStatus
from litelb.engine.store import RouteStore
from litelb.metrics import Metrics
from litelb.model import Endpoint, EndpointSnapshot

log = logging.getLogger("litelb.engine")

# A burst of EndpointSlice events becomes one write: the first kick waits this long
# for the rest (the coalescing window, ≤ 200 ms).
COALESCE_WINDOW = 0.1
# Under a sustained burst, writes are spaced at least this far apart, so 1,000 events
# in 10 s cost at most about 17 writes while an isolated change is still written after
# the coalescing window alone.
WRITE_SPACING = 0.6
# The worker shows it is alive at least this often, even with nothing to do.
HEARTBEAT = 5.0
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


@dataclass(frozen=True)
class Schedule:
    """When the next pass must run (`due`) and when one may run at all (`earliest`).

    Monotonic times; a pure value that `after` moves on by each pass's Result.
    """

    resync_at: float = 0.0
    requeue_at: Optional[float] = None
    writes_free_at: float = float("-inf")
    backoff: Backoff = field(default_factory=Backoff)

    def due(self) -> float:
        """A pass runs then even if nothing happens: after a failure the backoff
        decides, else the resync or a recheck the decision asked for."""
        if self.backoff.retry_at is not None:
            return self.backoff.retry_at
        return min(
            self.resync_at, self.requeue_at if self.requeue_at is not None else self.resync_at
        )

    def earliest(self) -> float:
        """A change waits until then: an NSX in trouble gets no extra load from kicks,
        and a burst of changes is written at most once per write spacing."""
        return max(self.backoff.retry_at or float("-inf"), self.writes_free_at)

    def after(
        self,
        result: Result,
        now: float,
        *,
        resync_interval: float,
        write_spacing: float,
        random: Callable[[], float],
    ) -> Schedule:
        if result.failed:
            backoff = self.backoff.failed(
                now, random, hint=result.retry_after, at_least=result.wait_at_least
            )
            return replace(self, backoff=backoff)
        return Schedule(
            resync_at=now + resync_interval,
            requeue_at=None if result.requeue_after is None else now + result.requeue_after,
            writes_free_at=now + write_spacing if result.wrote else self.writes_free_at,
            backoff=self.backoff.succeeded(),
        )


class Engine:
    """litelb's control loop: the other threads hand in observations and kick it; its
    one worker thread (`run`) runs reconcile passes when the Schedule says, and hands
    leadership over on stop. Read reconciler.py for what a pass does."""

    def __init__(
        self,
        settings: EngineSettings,
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
        self._observations = Observations()
        self._reconciler = Reconciler(
            settings,
            nsx,
            self._observations,
            metrics=metrics,
            local_addresses=local_addresses,
            clock=clock,
            wall=wall,
        )
        self._resync_interval = settings.resync_interval
        self._clock = clock
        self._coalesce = coalesce
        self._write_spacing = write_spacing
        self._random = random
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry = threading.Event()
        # Ends the waits that a kick must not end (backoff, write spacing, the
        # coalescing window): set by stop() and retry_now() only.
        self._interrupt = threading.Event()
        # Set with a kick that need not wait out the coalescing window.
        self._at_once = threading.Event()
        self._handover = True
        self._progress = clock()
        self.schedule = Schedule()

    # -- inputs, called from other threads ------------------------------------------

    def set_snapshot(self, snapshot: EndpointSnapshot) -> None:
        if self._observations.set_snapshot(snapshot):
            self.kick()

    def set_health(self, health: Mapping[str, Health]) -> None:
        # A probe round hands over all its verdicts together: there is no burst to
        # wait for, and clients reach a failed API server until the route changes.
        if self._observations.set_health(health):
            self._at_once.set()
            self.kick()

    def kick(self) -> None:
        self._wake.set()

    def retry_now(self) -> None:
        """The credentials changed: the next pass need not wait out the backoff of
        the failures the old ones caused."""
        self._retry.set()
        self._wake.set()
        self._interrupt.set()

    def stop(self, *, handover: bool = True) -> None:
        self._handover = handover
        self._stop.set()
        self._wake.set()
        self._interrupt.set()

    # -- outputs --------------------------------------------------------------------

    @property
    def status(self) -> EngineStatus:
        return self._reconciler.status

    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._observations.endpoints()

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
            if self._retry.is_set():
                self._retry.clear()
                self._interrupt.clear()
                self.schedule = replace(self.schedule, backoff=self.schedule.backoff.succeeded())
            now = self._clock()
            if not self._wake.is_set():
                wait = min(self.schedule.due() - now, HEARTBEAT)
                if wait > 0:
                    self._wake.wait(wait)
                    continue
            else:
                wait = self.schedule.earliest() - now
                if wait > 0:
                    self._interrupt.wait(min(wait, HEARTBEAT))
                    continue
                if not self._at_once.is_set():
                    # Let the rest of a burst arrive, then take it all in one pass.
                    self._interrupt.wait(self._coalesce)
            if self._stop.is_set():
                break
            self._wake.clear()
            self._at_once.clear()
            self.reconcile()
        if self._handover:
            self.reconcile(stopping=True)

    def reconcile(self, *, stopping: bool = False) -> Result:
        """One pass now, whatever the schedule says; the schedule then moves on."""
        result = self._reconciler.reconcile(stopping=stopping)
        now = self._clock()
        self.schedule = self.schedule.after(
            result,
            now,
            resync_interval=self._resync_interval,
            write_spacing=self._write_spacing,
            random=self._random,
        )
        backoff = self.schedule.backoff
        # The first failure, then every tenth: NSX may be down for hours.
        if result.failed and (backoff.failures == 1 or backoff.failures % 10 == 0):
            log.error(
                "%s (attempt %d; retrying in %.1f s)",
                result.error,
                backoff.failures,
                backoff.wait(now),
            )
        return result

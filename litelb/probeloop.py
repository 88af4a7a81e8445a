"""The probe worker: every `interval`, probe each ready API server and hand the
rise/fall verdicts to the engine. The verdicts themselves are the pure
step functions of litelb.core.health."""

from __future__ import annotations

import logging
import threading
import time

from litelb.adapters.probe import Prober, ProbeResult
from litelb.config import HealthConfig
from litelb.core.health import Health, step_all
from litelb.engine import Engine

log = logging.getLogger("litelb.probes")


class ProbeLoop:
    """Probes every ready API server each `interval` and feeds rise/fall health to the engine."""

    def __init__(
        self, config: HealthConfig, prober: Prober, engine: Engine, stop: threading.Event
    ) -> None:
        self._cfg = config
        self._prober = prober
        self._engine = engine
        self._stop = stop
        self._states: dict[str, Health] = {}
        self._results: dict[str, ProbeResult] = {}
        self.progress = time.monotonic()

    def last_results(self) -> dict[str, ProbeResult]:
        """The latest probe result of each API server probed in the last round."""
        return dict(self._results)

    def run(self) -> None:
        next_round = time.monotonic()
        while not self._stop.wait(max(0.0, next_round - time.monotonic())):
            # Rounds start every interval, however long the probes took, so a hung
            # API server is noticed after fall × interval (+ one timeout), not later.
            next_round += self._cfg.interval
            self.progress = started = time.monotonic()
            endpoints = [e for e in self._engine.endpoints() if e.ready]
            results = self._prober.probe_all(endpoints)
            states = step_all(
                self._states,
                {a: r.ok for a, r in results.items()},
                rise=self._cfg.rise,
                fall=self._cfg.fall,
                at=started,
                conclusive={a for a, r in results.items() if r.conclusive},
            )
            for address, result in results.items():
                before = self._states.get(address, Health())
                health = states[address]
                if health.healthy == before.healthy:
                    continue
                if health.healthy:
                    log.info("API server %s is healthy again (%s)", address, result.detail)
                elif result.conclusive:
                    log.warning("API server %s is down (%s)", address, result.detail)
                else:
                    log.warning("API server %s failed its probes (%s)", address, result.detail)
            self._states = states
            self._results = results
            self._engine.set_health(states)
            next_round = max(next_round, time.monotonic())

"""`litelb run`: wires the adapters around the engine, runs the workers, speaks to systemd.

Threads: the EndpointSlice watcher, the prober and the status server only hand
observations to the engine's single reconcile worker; the main thread handles
signals, the VIP, the watchdog and STATUS=.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from dataclasses import dataclass
from types import FrameType
from typing import Callable, Optional

from litelb import __version__, logs
from litelb.adapters.http import StatusServer, StatusServerError
from litelb.adapters.kube_client import KubeClient
from litelb.adapters.kube_watch import EndpointWatcher
from litelb.adapters.kubeconfig import KubeCredentials, wait_for_credentials
from litelb.adapters.malloc import Allocator
from litelb.adapters.nsx import NsxClient
from litelb.adapters.probe import Prober, tls_context
from litelb.adapters.systemd import Notifier
from litelb.adapters.vip import VipError, VipManager, local_addresses
from litelb.config import Config, ConfigError, Secret, load
from litelb.core.decide import LeaderTimeouts
from litelb.engine import Engine, EngineSettings, stall_limit
from litelb.metrics import Metrics
from litelb.probeloop import ProbeLoop
from litelb.status import (
    DaemonStatus,
    EndpointStatus,
    KubernetesStatus,
    NsxStatus,
    RouteStatus,
    VipStatus,
)

log = logging.getLogger("litelb")

# SIGTERM → exit within 5 s (systemd waits 15): the hand-over write gets what is left of it.
STOP_BUDGET = 4.0
TICK = 1.0
# READY=1 after the first EndpointSlice list or this long, whichever comes first:
# before `kubeadm init` there is nothing to list, and systemd must not wait for it.
READY_WAIT = 2.0


class Fatal(Exception):
    """The daemon cannot start; the message says why and what to do."""


@dataclass(frozen=True)
class Worker:
    name: str
    thread: threading.Thread
    progress: Callable[[], float]  # monotonic time of its last loop
    stall_after: float  # seconds without progress that count as hung


def engine_settings(cfg: Config) -> EngineSettings:
    """The engine's share of the configuration."""
    c = cfg.coordination
    return EngineSettings(
        vip=cfg.vip.address,
        route_id=cfg.nsx.route_id,
        route_path=cfg.nsx.route_path,
        service=cfg.kubernetes.service,
        node_address=cfg.kubernetes.node_address,
        probes=cfg.health.enabled,
        timeouts=LeaderTimeouts(c.takeover_after, c.stale_after, c.hold_down),
        resync_interval=cfg.nsx.resync_interval,
    )


class Daemon:
    def __init__(self, config: Config, notifier: Optional[Notifier] = None) -> None:
        self.cfg = config
        self.notifier = notifier or Notifier()
        self.allocator = Allocator()
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.vip = VipManager(config.vip.address, config.vip.interface)
        self.vip_present: Optional[bool] = None
        self.passwords = PasswordReloader(config.path)
        # The password read last at start or reload.
        self.password = config.nsx.password
        self.nsx = NsxClient(
            config.nsx,
            on_request=self._on_nsx_request,
            reread_password=self.passwords.read if config.nsx.auth != "certificate" else None,
        )
        self.engine = Engine(
            engine_settings(config),
            self.nsx,
            metrics=self.metrics,
            local_addresses=local_addresses,
        )
        self.workers: list[Worker] = []
        self.credentials: Optional[KubeCredentials] = None
        self.waiting_for: Optional[str] = None
        self.kube: Optional[KubeClient] = None
        self.watcher: Optional[EndpointWatcher] = None
        self.server: Optional[StatusServer] = None
        self.prober: Optional[Prober] = None
        self.probes: Optional[ProbeLoop] = None

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except StatusServerError as e:
            raise Fatal(str(e)) from e

    def _start(self) -> None:
        cfg = self.cfg
        log.info(
            "litelb %s starting: VIP %s, route %s", __version__, cfg.vip.address, cfg.nsx.route_path
        )
        if cfg.nsx.insecure:
            log.warning(
                "nsx.insecure = true: the NSX managers' certificates are NOT verified; anyone "
                "on the path can read the NSX password and rewrite the route"
            )
        self.allocator.limit_arenas()
        self.ensure_vip()
        self._spawn("kubernetes", self._kubernetes, self._watcher_progress, 120.0)
        reconcile_stall = stall_limit(cfg.nsx.timeout, len(cfg.nsx.managers))
        self._spawn(
            "reconcile", self.engine.run, lambda: self.engine.last_progress, reconcile_stall
        )
        if cfg.health.enabled:
            self.prober = Prober(
                path=cfg.health.path,
                timeout=cfg.health.timeout,
                context=self._probe_context,
                on_unauthorized=self._probe_rejected,
            )
            probes = self.probes = ProbeLoop(cfg.health, self.prober, self.engine, self.stop_event)
            stall = cfg.health.interval + cfg.health.timeout + 30.0
            self._spawn("probes", probes.run, lambda: probes.progress, stall)
        if cfg.metrics.listen:
            self.server = StatusServer(
                (cfg.metrics.host, cfg.metrics.port),
                status=self.status,
                healthy=self.healthy,
                metrics=self.metrics,
            )
            self.server.start()

    def _kubernetes(self) -> None:
        """Wait for the kubeconfig (there is none before `kubeadm init`), then watch."""
        credentials = wait_for_credentials(
            self.cfg.kubernetes.kubeconfig, self.stop_event, waiting=self._waiting
        )
        if credentials is None:
            return
        self.credentials = credentials
        self.kube = KubeClient(self.cfg.kubernetes, credentials)
        self.watcher = EndpointWatcher(
            self.kube,
            family=self.cfg.vip.family,
            on_snapshot=self.engine.set_snapshot,
            stop=self.stop_event,
        )
        self.watcher.run()

    def _waiting(self, what: Optional[str]) -> None:
        self.waiting_for = what

    def _probe_context(self) -> ssl.SSLContext:
        # Probes start once the watcher lists endpoints, which needs the credentials.
        assert self.credentials is not None
        return self.credentials.derived(tls_context)

    def _probe_rejected(self, where: str) -> None:
        assert self.credentials is not None
        self.credentials.rejected(where)

    def _spawn(
        self, name: str, target: Callable[[], None], progress: Callable[[], float], stall: float
    ) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.workers.append(Worker(name, thread, progress, stall))

    def _on_nsx_request(self, method: str, code: str, seconds: float) -> None:
        self.metrics.observe_nsx_request(method, code, seconds)
        # One reconcile may wait out a minute of NSX retries against a manager that
        # drops packets; a worker that keeps sending requests is alive, not hung.
        self.engine.note_progress()

    def _watcher_progress(self) -> float:
        # The watcher counts as making progress while it retries too, and so does
        # waiting for the kubeconfig: a restart mends neither.
        if self.watcher is None:
            return time.monotonic()
        return max(self.watcher.last_progress, self.watcher.last_attempt)

    # -- the VIP -------------------------------------------------------------------

    def ensure_vip(self) -> None:
        if not self.cfg.vip.manage:
            self.vip_present = self._vip_present()
            return
        try:
            self.vip.ensure()
            self.vip_present = True
        except VipError as e:
            self.vip_present = False
            raise Fatal(str(e)) from e
        finally:
            self.metrics.vip_present.set(1 if self.vip_present else 0)

    def _vip_present(self) -> Optional[bool]:
        try:
            return self.vip.present()
        except VipError as e:
            log.warning("%s", e)
            return None

    # -- health, status ------------------------------------------------------------

    def healthy(self) -> bool:
        now = time.monotonic()
        return all(w.thread.is_alive() and now - w.progress() < w.stall_after for w in self.workers)

    def status(self) -> DaemonStatus:
        s = self.engine.status
        cfg = self.cfg
        probes = {
            a: r.detail for a, r in (self.probes.last_results() if self.probes else {}).items()
        }
        return DaemonStatus(
            version=__version__,
            node=s.node,
            leader=s.is_leader,
            leader_identity=s.leader,
            reason=s.reason.value,
            vip=VipStatus(cfg.vip.address, cfg.vip.interface, cfg.vip.manage, self.vip_present),
            endpoints=tuple(
                EndpointStatus(e.address, e.ready, e.healthy, probes.get(e.address))
                for e in s.endpoints
            ),
            route=RouteStatus(
                path=cfg.nsx.route_path,
                next_hops=s.next_hops,
                desired_next_hops=s.desired_hops,
                left_out_next_hops=s.left_out,
                in_sync=s.in_sync,
                last_sync=s.last_sync,
                last_error=s.last_error,
            ),
            nsx=NsxStatus(self.nsx.manager, self.nsx.reachable),
            kubernetes=KubernetesStatus(
                server=self.kube.server if self.kube else None,
                waiting_for=self.waiting_for,
                synced=bool(self.watcher and self.watcher.synced.is_set()),
                last_error=self.watcher.last_error if self.watcher else None,
            ),
        )

    # -- systemctl reload -----------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: the log level and the NSX password are read again."""
        try:
            cfg = load(self.cfg.path)
        except ConfigError as e:
            log.error("SIGHUP: not reloading, the configuration has an error: %s", e)
            return
        logs.set_level(cfg.log.level)
        log.info("SIGHUP: log level is now %s", cfg.log.level)
        password = cfg.nsx.password
        if password is not None and self.password is not None and password != self.password:
            self.password = password
            self.nsx.set_password(password)
            log.info("SIGHUP: the NSX password changed; using the new one")
            # Failures with the old password must not delay the first try of the new one.
            self.engine.retry_now()

    # -- the main loop -------------------------------------------------------------

    def serve(self) -> None:
        # READY=1 the moment the first list is in, not at the next tick; or, while
        # there is nothing to list yet, after READY_WAIT with STATUS= saying why.
        ready_by = time.monotonic() + READY_WAIT
        while not self.stop_event.is_set():
            watcher = self.watcher
            if watcher is not None and watcher.synced.wait(0.05):
                log.info("ready: first EndpointSlice list done")
                break
            if watcher is None:
                self.stop_event.wait(0.05)
            if time.monotonic() >= ready_by:
                log.info("ready: %s", self.status_line())
                break
            self._tick()
        if not self.stop_event.is_set():
            self.notifier.ready()
        # What start-up freed (imports, the first list) goes back to the kernel.
        self.allocator.release_free_memory()
        status_line = ""
        # Every resync, like the route: someone may have removed the VIP; and what the
        # last interval's requests freed is handed back.
        next_resync = time.monotonic() + self.cfg.nsx.resync_interval
        while not self.stop_event.wait(self._tick_interval()):
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.cfg.nsx.resync_interval
                self._recheck_vip()
                self.allocator.release_free_memory()
            line = self.status_line()
            if line != status_line:
                status_line = line
                self.notifier.status(line)
            self._tick()

    def status_line(self) -> str:
        """STATUS=: what litelb waits for, or else the engine's summary."""
        if self.waiting_for is not None:
            return self.waiting_for[:200]
        watcher, kube = self.watcher, self.kube
        if watcher is None or kube is None:
            return "waiting for the kubeconfig"
        if not watcher.synced.is_set():
            error = f": {watcher.last_error}" if watcher.last_error else ""
            return f"waiting for the Kubernetes API server {kube.server}{error}"[:200]
        if not any(e.ready for e in self.engine.endpoints()):
            return (
                f"waiting for the EndpointSlices of {self.cfg.kubernetes.service} "
                "to list a ready API server"
            )
        return self.engine.status.summary()

    def _tick_interval(self) -> float:
        # Often enough for the watchdog and a prompt STATUS=, rarely enough to cost
        # nothing when idle.
        return min(self.notifier.watchdog_interval or TICK, TICK)

    def _tick(self) -> None:
        if self.healthy():
            self.notifier.watchdog()
        else:
            stuck = [
                w.name
                for w in self.workers
                if not w.thread.is_alive() or time.monotonic() - w.progress() >= w.stall_after
            ]
            log.error("worker(s) not making progress: %s; withholding WATCHDOG=1", ", ".join(stuck))

    def _recheck_vip(self) -> None:
        try:
            self.ensure_vip()
        except Fatal as e:
            log.error("%s", e)

    def shutdown(self) -> None:
        deadline = time.monotonic() + STOP_BUDGET
        self.notifier.stopping()
        log.info("stopping")
        self.engine.stop(handover=True)
        self.stop_event.set()
        for w in self.workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        if self.server is not None:
            self.server.stop()
        if self.prober is not None:
            self.prober.close()
        if self.kube is not None:
            self.kube.close()
        # The NSX client belongs to the reconcile worker until it has finished.
        if any(w.name == "reconcile" and w.thread.is_alive() for w in self.workers):
            log.warning(
                "the last NSX request is still in flight after %.0f s; exiting without "
                "logging out of NSX (the session expires by itself)",
                STOP_BUDGET,
            )
        else:
            self.nsx.close()
        log.info("stopped")


def run(config: Config) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status."""
    logs.setup(config.log.level)
    daemon = Daemon(config)
    stopping = threading.Event()

    def on_stop(signum: int, frame: Optional[FrameType]) -> None:
        stopping.set()
        daemon.stop_event.set()

    def on_hup(signum: int, frame: Optional[FrameType]) -> None:
        daemon.reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        daemon.start()
        daemon.serve()
    except Fatal as e:
        log.error("%s", e)
        daemon.shutdown()
        return 1
    daemon.shutdown()
    return 0


class PasswordReloader:
    """Reads the NSX password again from wherever it comes from (litelb.toml,
    password_file, the systemd credential, the environment). A source that cannot
    be read is logged once, and the password in use stays."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._last_error = ""

    def read(self) -> Optional[Secret]:
        try:
            password = load(self._path).nsx.password
        except ConfigError as e:
            self._failed(str(e))
            return None
        if password is None:
            self._failed(f"{self._path} no longer asks for a password")
            return None
        self._last_error = ""
        return password

    def _failed(self, why: str) -> None:
        if why != self._last_error:
            self._last_error = why
            log.error("cannot read the NSX password again, keeping the one in use: %s", why)

"""The EndpointSlice watcher: list, then watch, and keep the merged state current.

It holds the slices it has seen (its cache) and hands every full state to the
engine as an EndpointSnapshot.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Optional

from litelb.adapters.kube_client import (
    RBAC_FIX,
    KubeClient,
    KubeForbiddenError,
    KubeGoneError,
    KubeUnavailableError,
)
from litelb.adapters.kube_slices import (
    KubeShapeError,
    ParsedSlice,
    merge,
    parse_slice,
    resource_version,
    slice_name,
)
from litelb.adapters.kubeconfig import KubeError
from litelb.backoff import Backoff, BackoffPolicy
from litelb.model import EndpointSnapshot

log = logging.getLogger("litelb.kube")

# The Endpoints fallback polls; a watch on core endpoints is not granted to nodes.
FALLBACK_POLL_INTERVAL = 2.0
# A watch that ends this soon with nothing in it counts as a failure for backoff.
SHORT_WATCH = 1.0
STOP_INTERRUPT_INTERVAL = 0.2
# While no API server listens at all (before `kubeadm init`, or every one restarting)
# asking again costs nothing: this keeps litelb within a second of the first one.
NOTHING_LISTENING_POLL = 0.5


class EndpointWatcher:
    """List, then watch, the service's EndpointSlices; hand every state to `on_snapshot`.

    `run` blocks until `stop` is set and never raises. Every snapshot is the whole
    merged state, never a delta, so the receiver only has to act on the latest.

    Each watch asks the server to end it after `watch_timeout` seconds and is then
    resumed from the last resourceVersion; a server that stops talking is noticed
    WATCH_CLOSE_SLACK seconds later. The default 6 keeps that under 10 s and
    `last_progress` fresh at least every 6 s, for one cheap request per 6 s.
    """

    def __init__(
        self,
        client: KubeClient,
        *,
        family: int,
        on_snapshot: Callable[[EndpointSnapshot], None],
        stop: threading.Event,
        watch_timeout: int = 6,
        backoff: Optional[BackoffPolicy] = None,
    ) -> None:
        self._client = client
        self._family = family
        self._on_snapshot = on_snapshot
        self._stop = stop
        self._watch_timeout = watch_timeout
        self._random = random.Random()
        self._retry = Backoff(backoff or BackoffPolicy())
        # The last well-formed version of each slice, and why a newer one was refused.
        self._slices: dict[str, ParsedSlice] = {}
        self._malformed: dict[str, str] = {}
        self._reported: Optional[str] = None
        self._fallback_active = False
        self.synced = threading.Event()
        self.last_progress = time.monotonic()
        # When the watcher last started a list, watch or poll: it is alive even while
        # Kubernetes is not, which last_progress cannot tell.
        self.last_attempt = time.monotonic()
        self.last_error: Optional[str] = None

    def run(self) -> None:
        done = threading.Event()
        threading.Thread(
            target=self._interrupt_on_stop, args=(done,), name="litelb-kube-stop", daemon=True
        ).start()
        try:
            self._loop()
        finally:
            done.set()

    def _loop(self) -> None:
        resource_version: Optional[str] = None
        while not self._stop.is_set():
            self.last_attempt = time.monotonic()
            try:
                if resource_version is None:
                    resource_version = self._list()
                else:
                    resource_version = self._watch(resource_version)
            # The watcher must outlive any bug of its own: the daemon would otherwise
            # keep routing on a view that silently stopped changing.
            except Exception as e:
                if self._stop.is_set():
                    return  # the interrupted watch's error is no news
                resource_version = None
                self._recover(e)

    def _interrupt_on_stop(self, done: threading.Event) -> None:
        self._stop.wait()
        # Repeated: a watch opened just as stop was set must not hold up the exit.
        while True:
            self._client.interrupt()
            if done.wait(0.05):
                return
            done.wait(STOP_INTERRUPT_INTERVAL)

    def _recover(self, e: Exception) -> None:
        """Report a failed list or watch and wait as it deserves; a fresh list follows."""
        if isinstance(e, KubeGoneError):
            log.debug("%s; listing again", e)
        elif isinstance(e, KubeForbiddenError):
            self._failed(str(e), logging.ERROR)
            self._fallback()
        elif isinstance(e, KubeError):
            self._failed(str(e), logging.WARNING)
            self._backoff(quick=isinstance(e, KubeUnavailableError) and e.nothing_listening)
        else:
            log.exception("EndpointSlice watcher failed unexpectedly")
            self._failed(f"unexpected error: {type(e).__name__}: {e}", logging.ERROR)
            self._backoff()

    def _list(self) -> str:
        items, version = self._client.list_slice_objects()
        previous, self._slices, self._malformed = self._slices, {}, {}
        for item in items:
            self._store(item, previous)
        self._publish(version)
        self.synced.set()
        self._succeeded()
        return version

    def _store(self, obj: dict, previous: dict[str, ParsedSlice]) -> None:
        """Keep a checked slice. A malformed one is refused with a clear error and its
        last good version (from `previous`) stays in force: no route is built from it."""
        try:
            parsed = parse_slice(obj)
        except KubeShapeError as e:
            name = slice_name(obj) or "(unnamed)"
            text = f"EndpointSlice of {self._client.service} refused: {e}"
            if self._malformed.get(name) != text:
                kept = "keeping its last good version" if name in previous else "ignoring it"
                log.error("%s; %s", text, kept)
            self._malformed[name] = text
            if name in previous:
                self._slices[name] = previous[name]
            return
        self._malformed.pop(parsed.name, None)
        self._slices[parsed.name] = parsed

    def _watch(self, version: str) -> Optional[str]:
        """Follow one watch stream; the resourceVersion to resume from, None to relist."""
        started = time.monotonic()
        events = 0
        stream = self._client.watch_slices(version, self._watch_timeout)
        try:
            for event_type, obj in stream:
                events += 1
                if event_type == "ERROR":
                    return self._watch_error(obj)
                try:
                    version = resource_version(obj, f"watch event {event_type}")
                except KubeShapeError as e:
                    log.debug("%s; resuming from %s", e, version)
                if event_type == "DELETED":
                    name = slice_name(obj)
                    if name is None:
                        raise KubeShapeError("watch event DELETED: no metadata.name")
                    self._slices.pop(name, None)
                    self._malformed.pop(name, None)
                elif event_type in ("ADDED", "MODIFIED"):
                    self._store(obj, dict(self._slices))
                if event_type != "BOOKMARK":
                    self._publish(version)
                self._succeeded()
                if self._stop.is_set():
                    return version
        finally:
            stream.close()
        if events == 0 and time.monotonic() - started < SHORT_WATCH:
            # A server that keeps ending watches at once must not make us spin.
            self.last_progress = time.monotonic()
            self._backoff()
        else:
            self._succeeded()
        return version

    def _watch_error(self, status: dict) -> Optional[str]:
        if status.get("code") == 410:
            log.debug("watch expired (%s); listing again", status.get("message"))
            return None
        raise KubeError(
            f"watch EndpointSlices of {self._client.service}: error event "
            f"{status.get('code')} {status.get('reason')}: {status.get('message')}"
        )

    def _publish(self, version: str) -> None:
        self._deliver(merge(self._slices.values(), self._family, version))

    def _deliver(self, snapshot: EndpointSnapshot) -> None:
        self._client.note_endpoints(snapshot)
        try:
            self._on_snapshot(snapshot)
        # The receiver's bug is logged where it happens; the watch state stays valid,
        # and the next snapshot (a full state, not a delta) makes up for this one.
        except Exception:
            log.exception("the EndpointSlice receiver failed on %s", snapshot)

    def _fallback(self) -> None:
        """While RBAC forbids EndpointSlices, poll what the Node authorizer always grants."""
        try:
            snapshot = self._client.get_endpoints(self._family)
        except KubeError as e:
            log.debug("Endpoints fallback unavailable: %s", e)
            self._backoff()
            return
        if not self._fallback_active:
            log.warning(
                "FALLBACK: polling the core v1 Endpoints %s every %.0f s instead of watching "
                "its EndpointSlices; changes are seen later and readiness is coarser until "
                "the permission is granted: %s",
                self._client.service,
                FALLBACK_POLL_INTERVAL,
                RBAC_FIX,
            )
            self._fallback_active = True
        self._deliver(snapshot)
        self.synced.set()
        self.last_progress = time.monotonic()
        self._wait(FALLBACK_POLL_INTERVAL)

    def _succeeded(self) -> None:
        self._retry = self._retry.succeeded()
        self.last_progress = time.monotonic()
        if self.last_error is not None and self._reported is not None:
            log.info("EndpointSlices readable again through %s", self._client.server)
        # A refused slice stays an error for as long as it is the current version.
        self.last_error = "; ".join(self._malformed.values()) or None
        self._reported = None
        self._fallback_active = False

    def _failed(self, text: str, level: int) -> None:
        """Record a failure; log it only when it differs from the last one logged."""
        self.last_error = text
        if text != self._reported:
            log.log(level, "%s", text)
            self._reported = text

    def _backoff(self, *, quick: bool = False) -> None:
        now = time.monotonic()
        self._retry = self._retry.failed(now, self._random.random)
        self._wait(NOTHING_LISTENING_POLL if quick else self._retry.wait(now))

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

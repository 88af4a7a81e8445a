"""The Tier-1's data plane: what the NSX simulator holds becomes a kernel route in `tier1`.

After each change of the simulator's routes (and `delay` seconds, NSX's realization
time) the route VIP/32 is set to one next hop per NSX next hop. Two kernel hashing
modes stand in for the router's ECMP:

* `hash-threshold`: a plain multipath route; every change of the next-hop set moves
  the hash-range boundaries, so flows to the other next hops move too;
* `resilient`: a resilient next-hop group (Linux ≥ 5.13): removing a hop moves only
  its buckets; buckets move to an added hop only after they were idle `idle_timer`.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from bench.lab.netns import Namespace

HASHING_MODES = ("hash-threshold", "resilient")
_GROUP_ID = 100
_BUCKETS = 128
_IDLE_TIMER = 1


class Realizer:
    def __init__(
        self,
        tier1: Namespace,
        network: str,
        read_hops: Callable[[], Optional[list[str]]],
        *,
        nodes: tuple[str, ...],
        device: str = "seg",
        delay: float = 0.0,
        hashing: str = "hash-threshold",
    ) -> None:
        if hashing not in HASHING_MODES:
            raise ValueError(f"hashing must be one of {HASHING_MODES}, not {hashing!r}")
        self.tier1 = tier1
        self.network = network
        self.read_hops = read_hops
        self.delay = delay
        self.hashing = hashing
        self.device = device
        self._ids = {node: i for i, node in enumerate(nodes, 1)}
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._applied: Optional[list[str]] = None
        self.history: list[tuple[float, list[str]]] = []  # (monotonic time, hops) realized
        self._thread = threading.Thread(target=self._run, name="realizer", daemon=True)
        if hashing == "resilient":
            for node, nh in self._ids.items():
                tier1.ip("nexthop", "add", "id", str(nh), "via", node, "dev", device)

    def start(self) -> Realizer:
        self._thread.start()
        self.changed()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(5)

    def changed(self) -> None:
        """Called by the NSX simulator (with its lock held): only signal."""
        self._changed.set()

    def hops(self) -> Optional[list[str]]:
        return self._applied

    def kernel_hops(self) -> list[str]:
        """The next hops the kernel forwards the VIP to, read back from the kernel."""
        # Both modes list "nexthop via ADDRESS" per member (a group's members too).
        route = self.tier1.ip("route", "show", self.network).stdout.split()
        return [route[i + 1] for i, word in enumerate(route) if word == "via"]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            self._changed.clear()
            if self._stop.wait(self.delay) or self._stop.is_set():
                return
            hops = self.read_hops()
            if hops != self._applied:
                self._apply(hops)

    def _apply(self, hops: Optional[list[str]]) -> None:
        if not hops:
            self.tier1.ip("route", "del", self.network, check=False)
        elif self.hashing == "hash-threshold":
            spec: list[str] = []
            for hop in hops:
                spec += ["nexthop", "via", hop, "dev", self.device]
            self.tier1.ip("route", "replace", self.network, *spec)
        else:
            group = "/".join(str(self._ids[h]) for h in hops)
            self.tier1.ip(
                "nexthop", "replace", "id", str(_GROUP_ID), "group", group, "type", "resilient",
                "buckets", str(_BUCKETS), "idle_timer", str(_IDLE_TIMER),
            )  # fmt: skip
            self.tier1.ip("route", "replace", self.network, "nhid", str(_GROUP_ID))
        self._applied = list(hops) if hops else None
        self.history.append((time.monotonic(), list(hops or [])))

"""What the last reconcile pass saw and did: read by /status, /metrics and STATUS=."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from litelb.model import Reason


@dataclass(frozen=True)
class EndpointState:
    """One API server as this node sees it."""

    address: str
    ready: bool  # the EndpointSlices call it ready
    healthy: bool  # ready, and this node's probes pass (or probes are off)


@dataclass(frozen=True)
class EngineStatus:
    node: Optional[str] = None
    leader: Optional[str] = None
    reason: Reason = Reason.NOT_SYNCED
    synced: bool = False
    endpoints: tuple[EndpointState, ...] = ()
    next_hops: tuple[str, ...] = ()  # what the store holds
    desired_hops: tuple[str, ...] = ()  # what this node would write
    left_out: tuple[str, ...] = ()  # healthy, but beyond NSX's limit of next hops
    in_sync: bool = False
    last_sync: Optional[float] = None  # wall clock
    last_error: Optional[str] = None

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.leader == self.node

    def summary(self) -> str:
        """The one line for systemd's STATUS=."""
        role = "leader" if self.is_leader else "follower"
        if not self.synced:
            return "waiting for the first EndpointSlice list"
        if self.last_error:
            return f"{role}; error: {self.last_error}"[:200]
        sync = "in sync" if self.in_sync else f"not in sync ({self.reason.value})"
        return f"{role}; route {len(self.next_hops)}/{len(self.desired_hops)} next hops {sync}"

"""What the engine needs of the configuration, and nothing more; daemon.py builds it."""

from __future__ import annotations

from dataclasses import dataclass, field

from litelb.core.decide import LeaderTimeouts


@dataclass(frozen=True)
class EngineSettings:
    vip: str  # the VIP address, without prefix length
    route_id: str  # the route's id, also its display name
    route_path: str  # its policy path, for messages
    service: str  # "namespace/name" whose EndpointSlices list the API servers, for messages
    node_address: str = ""  # this node's identity; "" = the local address listed
    probes: bool = True  # [health] enabled: the probes' verdicts count
    timeouts: LeaderTimeouts = field(default_factory=LeaderTimeouts)
    resync_interval: float = 60.0  # seconds between read-backs of the route

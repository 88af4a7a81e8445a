"""Plain values shared by the core and the adapters. No I/O here."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Optional

MANAGED_BY_SCOPE = "litelb/managed-by"
MANAGED_BY_TAG = "litelb"
VIP_SCOPE = "litelb/vip"
LEADER_SCOPE = "litelb/leader"


@dataclass(frozen=True)
class Tag:
    scope: str
    tag: str


@dataclass(frozen=True)
class Endpoint:
    """One API server as the EndpointSlices list it."""

    address: str
    port: int = 6443
    ready: bool = True


@dataclass(frozen=True)
class EndpointSnapshot:
    """Everything the EndpointSlices say at one resourceVersion, merged over all slices."""

    endpoints: tuple[Endpoint, ...]
    resource_version: str = ""

    @property
    def ready_addresses(self) -> tuple[str, ...]:
        return tuple(sorted({e.address for e in self.endpoints if e.ready}, key=ip_sort_key))


@dataclass(frozen=True)
class Route:
    """A static route as litelb sees it: what NSX holds or what litelb wants it to hold.

    `revision` is NSX's `_revision` of the object read; None for a desired route.
    `hops_as_litelb_writes` is False when NSX holds a next hop with an admin distance other
    than 1 or a scope, which litelb never writes, so such a route never equals a
    desired one.
    """

    network: str
    next_hops: tuple[str, ...]
    display_name: str = ""
    tags: tuple[Tag, ...] = ()
    revision: Optional[int] = None
    hops_as_litelb_writes: bool = True

    def tag_value(self, scope: str) -> Optional[str]:
        for t in self.tags:
            if t.scope == scope:
                return t.tag
        return None

    @property
    def managed(self) -> bool:
        return self.tag_value(MANAGED_BY_SCOPE) == MANAGED_BY_TAG

    @property
    def leader(self) -> Optional[str]:
        return self.tag_value(LEADER_SCOPE) or None


class Action(enum.Enum):
    NOOP = "noop"  # NSX holds what we want, or it is not ours to write
    WRITE = "write"  # compare-and-swap the desired route onto NSX


class Reason(enum.Enum):
    """Why the core decided what it decided; logged, shown in /status, used as a label."""

    IN_SYNC = "in-sync"
    CREATE = "create"
    DRIFT = "drift"
    TAKEOVER = "takeover"
    HANDOVER = "handover"
    NOT_LEADER = "not-leader"
    HOLD_DOWN = "hold-down"
    NO_HEALTHY_ENDPOINTS = "no-healthy-endpoints"
    FOREIGN_ROUTE = "foreign-route"
    NOT_LISTED = "not-listed"
    NOT_SYNCED = "not-synced"


def ip_sort_key(address: str) -> tuple[int, int]:
    """Numeric order, so 10.0.0.9 sorts before 10.0.0.10."""
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


def host_network(address: str) -> str:
    """The VIP as a host route: 192.0.2.1 -> 192.0.2.1/32, 2001:db8::1 -> 2001:db8::1/128."""
    ip = ipaddress.ip_address(address)
    return f"{ip.compressed}/{ip.max_prefixlen}"


def default_route_id(vip: str) -> str:
    return "litelb-" + ipaddress.ip_address(vip).compressed.replace(".", "-").replace(":", "-")


@dataclass(frozen=True)
class CheckResult:
    """One line of `litelb check`: level is "ok", "warn" or "FAIL"."""

    level: str
    text: str

    def __str__(self) -> str:
        return f"{self.level:<4} {self.text}"

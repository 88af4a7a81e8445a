"""The daemon's status as typed values, its one serialization (the JSON of /status), and
how `litelb status` and `litelb check` read it from a running daemon."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from litelb.config import MetricsConfig
from litelb.hostport import join_host_port


@dataclass(frozen=True)
class EndpointStatus:
    address: str
    ready: bool  # the EndpointSlice calls it ready
    healthy: bool  # and this node's probes pass
    probe: Optional[str]  # the last probe's outcome, None before the first


@dataclass(frozen=True)
class VipStatus:
    address: str
    interface: str
    managed: bool
    present: Optional[bool]  # None: could not be checked


@dataclass(frozen=True)
class RouteStatus:
    path: str
    next_hops: tuple[str, ...]  # what NSX holds
    desired_next_hops: tuple[str, ...]  # what this node would write
    left_out_next_hops: tuple[str, ...]  # healthy, beyond NSX's limit of next hops
    in_sync: bool
    last_sync: Optional[float]  # wall clock
    last_error: Optional[str]


@dataclass(frozen=True)
class NsxStatus:
    manager: str
    reachable: Optional[bool]


@dataclass(frozen=True)
class KubernetesStatus:
    server: Optional[str]
    waiting_for: Optional[str]  # what the daemon waits for before it can watch
    synced: bool
    last_error: Optional[str]


@dataclass(frozen=True)
class DaemonStatus:
    version: str
    node: Optional[str]
    leader: bool
    leader_identity: Optional[str]
    reason: str
    vip: VipStatus
    endpoints: tuple[EndpointStatus, ...]
    route: RouteStatus
    nsx: NsxStatus
    kubernetes: KubernetesStatus


def iso(ts: Optional[float]) -> Optional[str]:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_json(s: DaemonStatus) -> dict[str, Any]:
    """The /status document; field names and shapes are part of litelb's interface."""
    r = s.route
    return {
        "version": s.version,
        "node": s.node,
        "leader": s.leader,
        "leader_identity": s.leader_identity,
        "reason": s.reason,
        "vip": {
            "address": s.vip.address,
            "interface": s.vip.interface,
            "managed": s.vip.managed,
            "present": s.vip.present,
        },
        "endpoints": [
            {"address": e.address, "ready": e.ready, "healthy": e.healthy, "probe": e.probe}
            for e in s.endpoints
        ],
        "route": {
            "path": r.path,
            "next_hops": list(r.next_hops),
            "desired_next_hops": list(r.desired_next_hops),
            "left_out_next_hops": list(r.left_out_next_hops),
            "in_sync": r.in_sync,
            "last_sync": iso(r.last_sync),
            "last_error": r.last_error,
        },
        "nsx": {"manager": s.nsx.manager, "reachable": s.nsx.reachable},
        "kubernetes": {
            "server": s.kubernetes.server,
            "waiting_for": s.kubernetes.waiting_for,
            "synced": s.kubernetes.synced,
            "last_error": s.kubernetes.last_error,
        },
    }


def status_url(metrics: MetricsConfig) -> str:
    # A daemon listening on every address answers on the loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(metrics.host, metrics.host)
    return f"http://{join_host_port(host, metrics.port)}/status"


def fetch_status(metrics: MetricsConfig, timeout: float = 3.0) -> dict:
    """The /status of the daemon on this host; OSError says why it cannot be read."""
    import json
    import urllib.error
    import urllib.request

    if not metrics.enabled:
        raise OSError("metrics.listen is empty, so the daemon serves no /status")
    url = status_url(metrics)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise OSError(f"cannot read {url}: {e}; is litelb running?") from e

"""EndpointSlices (and the core v1 Endpoints fallback) to an EndpointSnapshot.

Purely computational: the client and the watcher hand raw API objects in, the
decision core gets plain EndpointSnapshot values out.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional

from litelb.model import Endpoint, EndpointSnapshot, ip_sort_key

DEFAULT_PORT = 6443
ADDRESS_TYPES = {4: "IPv4", 6: "IPv6"}


def _get(obj: Any, camel: str, snake: str) -> Any:
    """A field of a raw API dict (camelCase) or of a client model (snake_case)."""
    if isinstance(obj, dict):
        return obj.get(camel)
    return getattr(obj, snake, None)


def _normalized_ip(text: Any, family: int) -> Optional[str]:
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        return None
    return ip.compressed if ip.version == family else None


def _service_port(ports: Any) -> int:
    """The port named "https", else the first one, else the API server default."""
    numbers = [(_get(p, "name", "name"), _get(p, "port", "port")) for p in ports or ()]
    numbers = [(name, port) for name, port in numbers if isinstance(port, int)]
    for name, port in numbers:
        if name == "https":
            return port
    return numbers[0][1] if numbers else DEFAULT_PORT


def _merged(found: dict[tuple[str, int], bool], resource_version: str) -> EndpointSnapshot:
    endpoints = tuple(
        Endpoint(address=address, port=port, ready=ready)
        for (address, port), ready in sorted(
            found.items(), key=lambda item: (ip_sort_key(item[0][0]), item[0][1])
        )
    )
    return EndpointSnapshot(endpoints=endpoints, resource_version=resource_version)


def slices_to_snapshot(slices: list[Any], family: int, resource_version: str) -> EndpointSnapshot:
    """Merge EndpointSlices (raw dicts or client models) into one snapshot of `family`.

    A purely computational function with no side effects. Slices of the other
    address family (and FQDN slices) are skipped; an endpoint is ready unless
    `conditions.ready` is false or `conditions.terminating` is true; an address
    listed twice (slices overlap while the controller moves endpoints) is ready if
    any copy says so.
    """
    wanted_type = ADDRESS_TYPES[family]
    found: dict[tuple[str, int], bool] = {}
    for es in slices:
        if _get(es, "addressType", "address_type") != wanted_type:
            continue
        port = _service_port(_get(es, "ports", "ports"))
        for ep in _get(es, "endpoints", "endpoints") or ():
            conditions = _get(ep, "conditions", "conditions")
            ready = conditions is None or (
                _get(conditions, "ready", "ready") is not False
                and _get(conditions, "terminating", "terminating") is not True
            )
            for text in _get(ep, "addresses", "addresses") or ():
                address = _normalized_ip(text, family)
                if address is not None:
                    found[(address, port)] = found.get((address, port), False) or ready
    return _merged(found, resource_version)


def endpoints_to_snapshot(endpoints: Any, family: int, resource_version: str) -> EndpointSnapshot:
    """The same view from a core v1 Endpoints object (raw dict), for the fallback.

    A purely computational function with no side effects.
    """
    found: dict[tuple[str, int], bool] = {}
    for subset in endpoints.get("subsets") or ():
        port = _service_port(subset.get("ports"))
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for entry in subset.get(key) or ():
                address = _normalized_ip(entry.get("ip"), family)
                if address is not None:
                    found[(address, port)] = found.get((address, port), False) or ready
    return _merged(found, resource_version)

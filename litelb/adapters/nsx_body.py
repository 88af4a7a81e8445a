"""The JSON of the NSX objects litelb reads and writes, translated both ways.

Pure functions: a Route becomes the StaticRoutes body of a PUT, and what NSX
answers is parsed strictly, so nothing is ever decided or written from an answer
of the wrong shape.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from litelb.model import Route, Tag, ip_sort_key

ADVERTISE_STATIC = "TIER1_STATIC_ROUTES"


@dataclass(frozen=True)
class Tier1Info:
    path: str
    route_advertisement_types: tuple[str, ...]
    tier0_path: str  # "" when the Tier-1 is not connected to a Tier-0

    @property
    def advertises_static_routes(self) -> bool:
        return ADVERTISE_STATIC in self.route_advertisement_types


def tier1_from_body(body: dict, path: str) -> Tier1Info:
    """A Tier1Info from NSX's Tier1 object at `path`; InvalidBody if misshapen."""
    return Tier1Info(
        path=_field(body, "path", str, path),
        route_advertisement_types=tuple(
            map(str, _field(body, "route_advertisement_types", list, []))
        ),
        tier0_path=_field(body, "tier0_path", str, ""),
    )


def route_to_body(route: Route, route_id: str, revision: Optional[int]) -> dict:
    """The StaticRoutes object for a PUT; a purely computational function.

    Only fields NSX accepts are sent: a next hop carries no `scope` (NSX rejects
    an empty one), and `_revision` only when the object is replaced.
    """
    body: dict[str, Any] = {
        "resource_type": "StaticRoutes",
        "id": route_id,
        "display_name": route.display_name or route_id,
        "network": route.network,
        "next_hops": [{"ip_address": hop, "admin_distance": 1} for hop in route.next_hops],
        "tags": [{"scope": t.scope, "tag": t.tag} for t in route.tags],
    }
    if revision is not None:
        body["_revision"] = revision
    return body


def _hop_key(hop: str) -> tuple[int, int, str]:
    try:
        return (*ip_sort_key(hop), "")
    except ValueError:
        return (99, 0, hop)


def _normal_ip(text: str) -> str:
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        return text


class InvalidBody(ValueError):
    """An NSX answer without the shape litelb expects; str() says what is wrong."""


_REQUIRED = object()


def _field(body: dict, name: str, kind: type, default: Any = _REQUIRED) -> Any:
    value = body.get(name)
    if value is None:
        if default is _REQUIRED:
            raise InvalidBody(f"{name} is missing")
        return default
    # bool is an int to Python, never to NSX's schema.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidBody(f"{name} is {type(value).__name__}, not {kind.__name__}")
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidBody(f"next hop ip_address is {type(value).__name__}, not an address")
    try:
        return ipaddress.ip_address(value).compressed
    except ValueError:
        raise InvalidBody(f"next hop {value[:60]!r} is not an IP address") from None


def route_from_body(body: Any) -> Route:
    """A Route from NSX's StaticRoutes object; a purely computational function.

    Anything not shaped as NSX documents raises InvalidBody, so nothing is ever
    decided or written from it. Next hops come sorted; a hop litelb would never
    write (admin distance other than 1, a scope, no address) clears
    `hops_as_litelb_writes` so the route never equals a desired one.
    """
    if not isinstance(body, dict):
        raise InvalidBody(f"the route is {type(body).__name__}, not a JSON object")
    network = _field(body, "network", str)
    try:
        network = ipaddress.ip_network(network, strict=False).compressed
    except ValueError:
        raise InvalidBody(f"network {network[:60]!r} is not an address range") from None
    hops: list[str] = []
    plain = True
    for hop in _field(body, "next_hops", list):
        if not isinstance(hop, dict):
            raise InvalidBody(f"a next hop is {type(hop).__name__}, not a JSON object")
        if _field(hop, "admin_distance", int, 1) != 1 or _field(hop, "scope", list, []):
            plain = False
        if hop.get("ip_address") is None:
            plain = False
        else:
            hops.append(_address(hop["ip_address"]))
    tags = []
    for tag in _field(body, "tags", list, []):
        if not isinstance(tag, dict):
            raise InvalidBody(f"a tag is {type(tag).__name__}, not a JSON object")
        tags.append(Tag(_field(tag, "scope", str, ""), _field(tag, "tag", str, "")))
    return Route(
        network=network,
        next_hops=tuple(sorted(hops, key=ip_sort_key)),
        display_name=_field(body, "display_name", str, ""),
        tags=tuple(tags),
        revision=_field(body, "_revision", int),
        hops_as_litelb_writes=plain,
    )


def _same_network(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_network(a, strict=False) == ipaddress.ip_network(b, strict=False)
    except ValueError:
        return a == b


def read_back_matches(read: Route, written: Route, route_id: str) -> bool:
    """Whether NSX's `read` route is the `written` one (order of hops and tags aside)."""
    return (
        _same_network(read.network, written.network)
        and read.hops_as_litelb_writes
        and read.next_hops == tuple(sorted(map(_normal_ip, written.next_hops), key=_hop_key))
        and read.display_name == (written.display_name or route_id)
        and sorted((t.scope, t.tag) for t in read.tags)
        == sorted((t.scope, t.tag) for t in written.tags)
    )

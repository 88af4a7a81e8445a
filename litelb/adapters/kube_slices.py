"""EndpointSlices (and the core v1 Endpoints fallback) to an EndpointSnapshot.

Purely computational: the client and the watcher hand raw API objects (parsed
JSON) in, the decision core gets plain EndpointSnapshot values out. Whatever
arrives is checked before use: an object without the expected shape (wrong types,
missing fields, an address that is not one, absurd sizes) raises KubeShapeError,
naming what is wrong, and is never half used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

from litelb.adapters.kubeconfig import KubeError
from litelb.model import Endpoint, EndpointSnapshot, ip_sort_key

DEFAULT_PORT = 6443
ADDRESS_TYPES = {4: "IPv4", 6: "IPv6"}
WATCH_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR")

# The API server's own limits (an EndpointSlice holds at most 1000 endpoints, an
# endpoint 100 addresses, a name 253 characters); beyond them it is not an answer
# from an API server.
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 100
MAX_NAME = 253
MAX_RESOURCE_VERSION = 128


class KubeShapeError(KubeError):
    """An API object that does not have the shape litelb needs; says where and what."""


@dataclass(frozen=True)
class ParsedSlice:
    """What litelb uses of one EndpointSlice: its addresses (normalized) with readiness,
    and the API server port. `family` is None for slices of other address types."""

    name: str
    family: Optional[int]
    port: int
    endpoints: tuple[tuple[str, bool], ...]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field(obj: dict, key: str, types: tuple[type, ...], where: str, *, required: bool) -> Any:
    value = obj.get(key)
    if value is None and not required:
        return None
    # bool is an int in Python, never in JSON's meaning here.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        expected = " or ".join(t.__name__ for t in types)
        raise KubeShapeError(f"{where}.{key}: expected {expected}, got {_describe(value)}")
    return value


def _dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise KubeShapeError(f"{where}: expected an object, got {_describe(value)}")
    return value


def _list(obj: dict, key: str, where: str, limit: int) -> list:
    value = _field(obj, key, (list,), where, required=False) or []
    if len(value) > limit:
        raise KubeShapeError(f"{where}.{key}: {len(value)} entries, more than {limit}")
    return value


def _name(obj: dict, where: str) -> str:
    metadata = _dict(obj.get("metadata"), f"{where}.metadata")
    name = _field(metadata, "name", (str,), f"{where}.metadata", required=True)
    if not 0 < len(name) <= MAX_NAME:
        raise KubeShapeError(f"{where}.metadata.name: {_describe(name)} is not a name")
    return name


def resource_version(obj: Any, where: str) -> str:
    """metadata.resourceVersion of a list, an object or a bookmark."""
    metadata = _dict(_dict(obj, where).get("metadata"), f"{where}.metadata")
    version = _field(metadata, "resourceVersion", (str,), f"{where}.metadata", required=True)
    if not 0 < len(version) <= MAX_RESOURCE_VERSION or not version.isprintable():
        raise KubeShapeError(
            f"{where}.metadata.resourceVersion: {_describe(version)} is not a version"
        )
    return version


def _address(text: Any, family: int, where: str) -> str:
    if not isinstance(text, str):
        raise KubeShapeError(f"{where}: expected an address string, got {_describe(text)}")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise KubeShapeError(f"{where}: {_describe(text)} is not an IP address") from None
    if (
        ip.version != family
        or getattr(ip, "scope_id", None)
        or ip.is_unspecified
        or ip.is_multicast
    ):
        raise KubeShapeError(
            f"{where}: {_describe(text)} is not a unicast IPv{family} address of an API server"
        )
    return ip.compressed


def _service_port(ports: list, where: str) -> int:
    """The port named "https", else the first one with a number, else the API server default."""
    numbered = []
    for i, entry in enumerate(ports):
        here = f"{where}.ports[{i}]"
        p = _dict(entry, here)
        name = _field(p, "name", (str,), here, required=False)
        number = _field(p, "port", (int,), here, required=False)
        if number is None:
            continue
        if not 0 < number < 65536:
            raise KubeShapeError(f"{here}.port: {number} is not a TCP port")
        numbered.append((name, number))
    for name, number in numbered:
        if name == "https":
            return number
    return numbered[0][1] if numbered else DEFAULT_PORT


def _flag(conditions: Optional[dict], key: str, where: str) -> Optional[bool]:
    if conditions is None:
        return None
    return _field(conditions, key, (bool,), f"{where}.conditions", required=False)


def parse_slice(obj: Any) -> ParsedSlice:
    """One raw EndpointSlice, checked; KubeShapeError if it is not one.

    An endpoint is ready unless `conditions.ready` is false or
    `conditions.terminating` is true. Pure: no side effects.
    """
    where = "EndpointSlice"
    es = _dict(obj, where)
    name = _name(es, where)
    where = f"EndpointSlice {name}"
    address_type = _field(es, "addressType", (str,), where, required=True)
    family = next((f for f, t in ADDRESS_TYPES.items() if t == address_type), None)
    port = _service_port(_list(es, "ports", where, MAX_PORTS), where)
    endpoints = []
    for i, entry in enumerate(_list(es, "endpoints", where, MAX_ENDPOINTS)):
        here = f"{where}.endpoints[{i}]"
        ep = _dict(entry, here)
        conditions = _field(ep, "conditions", (dict,), here, required=False)
        ready = _flag(conditions, "ready", here) is not False
        ready = ready and _flag(conditions, "terminating", here) is not True
        addresses = _list(ep, "addresses", here, MAX_ADDRESSES)
        if family is None:
            continue  # an FQDN slice: not litelb's business, but still well-formed above
        for j, text in enumerate(addresses):
            endpoints.append((_address(text, family, f"{here}.addresses[{j}]"), ready))
    return ParsedSlice(name=name, family=family, port=port, endpoints=tuple(endpoints))


def slice_name(obj: Any) -> Optional[str]:
    """The name of a (possibly malformed) EndpointSlice, if it has a usable one."""
    try:
        return _name(_dict(obj, "EndpointSlice"), "EndpointSlice")
    except KubeShapeError:
        return None


def merge(slices: Iterable[ParsedSlice], family: int, resource_version: str) -> EndpointSnapshot:
    """The snapshot of `family` over checked slices; an address listed twice (slices
    overlap while the controller moves endpoints) is ready if any copy says so.
    Pure: no side effects."""
    found: dict[tuple[str, int], bool] = {}
    for parsed in slices:
        if parsed.family != family:
            continue
        for address, ready in parsed.endpoints:
            key = (address, parsed.port)
            found[key] = found.get(key, False) or ready
    return _snapshot(found, resource_version)


def _snapshot(found: dict[tuple[str, int], bool], resource_version: str) -> EndpointSnapshot:
    endpoints = tuple(
        Endpoint(address=address, port=port, ready=ready)
        for (address, port), ready in sorted(
            found.items(), key=lambda item: (ip_sort_key(item[0][0]), item[0][1])
        )
    )
    return EndpointSnapshot(endpoints=endpoints, resource_version=resource_version)


def slices_to_snapshot(slices: list[Any], family: int, resource_version: str) -> EndpointSnapshot:
    """Merge raw EndpointSlices into one snapshot of `family`; KubeShapeError if any is
    malformed. Slices of the other address family (and FQDN slices) are skipped.
    Pure: no side effects."""
    return merge((parse_slice(s) for s in slices), family, resource_version)


def parse_list(body: Any) -> tuple[list[Any], str]:
    """(items, resourceVersion) of a list answer; the items are checked one by one later."""
    where = "EndpointSliceList"
    items = _list(_dict(body, where), "items", where, MAX_ENDPOINTS)
    return items, resource_version(body, where)


def parse_event(event: Any) -> tuple[str, dict]:
    """(type, object) of one watch event; its object is checked by its consumer."""
    where = "watch event"
    e = _dict(event, where)
    kind = _field(e, "type", (str,), where, required=True)
    if kind not in WATCH_EVENT_TYPES:
        raise KubeShapeError(f"{where}.type: unknown type {_describe(kind)}")
    return kind, _dict(e.get("object"), f"{where} {kind}.object")


def endpoints_to_snapshot(endpoints: Any, family: int, resource_version: str) -> EndpointSnapshot:
    """The same view from a core v1 Endpoints object, for the fallback; KubeShapeError
    if it is malformed. Core Endpoints mix address families: the other one is skipped.
    Pure: no side effects."""
    where = "Endpoints"
    obj = _dict(endpoints, where)
    found: dict[tuple[str, int], bool] = {}
    for i, entry in enumerate(_list(obj, "subsets", where, MAX_ENDPOINTS)):
        here = f"{where}.subsets[{i}]"
        subset = _dict(entry, here)
        port = _service_port(_list(subset, "ports", here, MAX_PORTS), here)
        for key, ready in (("addresses", True), ("notReadyAddresses", False)):
            for j, item in enumerate(_list(subset, key, here, MAX_ENDPOINTS)):
                at = f"{here}.{key}[{j}]"
                text = _field(_dict(item, at), "ip", (str,), at, required=True)
                if (":" in text) != (family == 6):
                    continue  # the other family: a core Endpoints object mixes them
                address = _address(text, family, f"{at}.ip")
                found[(address, port)] = found.get((address, port), False) or ready
    return _snapshot(found, resource_version)

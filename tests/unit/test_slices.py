"""Merging EndpointSlices (and the core Endpoints fallback) into one snapshot: pure functions."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from litelb.adapters.kube_slices import (
    KubeShapeError,
    endpoints_to_snapshot,
    parse_event,
    parse_list,
    slices_to_snapshot,
)
from litelb.model import Endpoint


def _slice(
    name: str,
    endpoints: list[tuple[str, Optional[dict]]],
    *,
    address_type: str = "IPv4",
    ports: Optional[list[dict]] = None,
) -> dict:
    eps: list[dict[str, Any]] = []
    for address, conditions in endpoints:
        ep: dict[str, Any] = {"addresses": [address]}
        if conditions is not None:
            ep["conditions"] = conditions
        eps.append(ep)
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7"},
        "addressType": address_type,
        "endpoints": eps,
    }
    if ports is not None:
        obj["ports"] = ports
    return obj


HTTPS = [{"name": "https", "port": 6443, "protocol": "TCP"}]
READY = {"ready": True}


def test_merges_all_slices_sorted_numerically() -> None:
    slices = [
        _slice("a", [("10.0.0.10", READY), ("10.0.0.9", READY)], ports=HTTPS),
        _slice("b", [("10.0.0.2", READY)], ports=HTTPS),
    ]
    snapshot = slices_to_snapshot(slices, 4, "42")
    assert snapshot.resource_version == "42"
    assert snapshot.endpoints == (
        Endpoint("10.0.0.2", 6443, True),
        Endpoint("10.0.0.9", 6443, True),
        Endpoint("10.0.0.10", 6443, True),
    )


def test_readiness_rules() -> None:
    slices = [
        _slice(
            "a",
            [
                ("10.0.0.1", None),  # no conditions at all: ready
                ("10.0.0.2", {}),  # ready absent: ready
                ("10.0.0.3", {"ready": False}),
                ("10.0.0.4", {"ready": True, "terminating": True}),
                ("10.0.0.5", {"serving": True, "terminating": True}),
                ("10.0.0.6", {"ready": True, "serving": True, "terminating": False}),
            ],
            ports=HTTPS,
        )
    ]
    snapshot = slices_to_snapshot(slices, 4, "1")
    assert {e.address: e.ready for e in snapshot.endpoints} == {
        "10.0.0.1": True,
        "10.0.0.2": True,
        "10.0.0.3": False,
        "10.0.0.4": False,
        "10.0.0.5": False,
        "10.0.0.6": True,
    }
    assert snapshot.ready_addresses == ("10.0.0.1", "10.0.0.2", "10.0.0.6")


def test_only_the_vips_family() -> None:
    slices = [
        _slice("v4", [("10.0.0.1", READY)], ports=HTTPS),
        _slice("v6", [("2001:db8::1", READY)], address_type="IPv6", ports=HTTPS),
        _slice("fqdn", [("api.example.com", READY)], address_type="FQDN", ports=HTTPS),
    ]
    assert [e.address for e in slices_to_snapshot(slices, 4, "1").endpoints] == ["10.0.0.1"]
    assert [e.address for e in slices_to_snapshot(slices, 6, "1").endpoints] == ["2001:db8::1"]


def test_ipv6_addresses_are_normalized_and_sorted() -> None:
    slices = [
        _slice(
            "v6",
            [("2001:DB8:0:0:0:0:0:10", READY), ("2001:db8::2", READY)],
            address_type="IPv6",
            ports=HTTPS,
        )
    ]
    snapshot = slices_to_snapshot(slices, 6, "1")
    assert [e.address for e in snapshot.endpoints] == ["2001:db8::2", "2001:db8::10"]


@pytest.mark.parametrize(
    "address", ["not-an-ip", "2001:db8::1", "10.0.0.1/32", "0.0.0.0", "224.0.0.1", "", 7, None]
)
def test_a_slice_with_an_address_that_is_not_one_is_refused_whole(address: Any) -> None:
    slices = [_slice("a", [("10.0.0.2", READY), (address, READY)], ports=HTTPS)]
    with pytest.raises(KubeShapeError, match=r"EndpointSlice a\.endpoints\[1\]\.addresses\[0\]"):
        slices_to_snapshot(slices, 4, "1")


def test_a_scoped_ipv6_address_is_refused() -> None:
    slices = [_slice("a", [("fe80::1%eth0", READY)], address_type="IPv6", ports=HTTPS)]
    with pytest.raises(KubeShapeError, match="unicast IPv6"):
        slices_to_snapshot(slices, 6, "1")


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda s: s.update(endpoints="oops"), r"\.endpoints: expected list"),
        (lambda s: s.update(endpoints=[7]), r"\.endpoints\[0\]: expected an object"),
        (lambda s: s.update(addressType=4), r"\.addressType: expected str"),
        (lambda s: s.pop("addressType"), r"\.addressType: expected str"),
        (lambda s: s.update(metadata=[]), r"EndpointSlice\.metadata: expected an object"),
        (lambda s: s["metadata"].update(name=""), r"metadata\.name: '' is not a name"),
        (lambda s: s.update(ports=[{"port": "6443"}]), r"ports\[0\]\.port: expected int"),
        (lambda s: s.update(ports=[{"port": True}]), r"ports\[0\]\.port: expected int"),
        (lambda s: s.update(ports=[{"port": 70000}]), r"ports\[0\]\.port: 70000 is not a TCP"),
        (
            lambda s: s["endpoints"][0].update(conditions={"ready": "yes"}),
            r"conditions\.ready: expected bool",
        ),
        (
            lambda s: s["endpoints"][0].update(addresses="10.0.0.1"),
            r"endpoints\[0\]\.addresses: expected list",
        ),
        (
            lambda s: s.update(endpoints=[{"addresses": ["10.0.0.1"]}] * 1001),
            r"1001 entries, more than 1000",
        ),
    ],
)
def test_malformed_slices_name_what_is_wrong(mutate: Any, where: str) -> None:
    obj = _slice("a", [("10.0.0.1", READY)], ports=HTTPS)
    mutate(obj)
    with pytest.raises(KubeShapeError, match=where):
        slices_to_snapshot([obj], 4, "1")


def test_list_and_event_shapes() -> None:
    assert parse_list({"items": None, "metadata": {"resourceVersion": "5"}}) == ([], "5")
    for body in ([], {"items": {}}, {"items": [], "metadata": {"resourceVersion": 5}}):
        with pytest.raises(KubeShapeError):
            parse_list(body)
    assert parse_event({"type": "ADDED", "object": {"a": 1}}) == ("ADDED", {"a": 1})
    for event in ([], {"type": "ADDED"}, {"type": "NEW", "object": {}}, {"object": {}}):
        with pytest.raises(KubeShapeError):
            parse_event(event)


def test_port_named_https_wins_else_first_else_6443() -> None:
    named = [{"name": "metrics", "port": 9000}, {"name": "https", "port": 8443}]
    first = [{"name": "a", "port": 7443}, {"name": "b", "port": 9443}]
    unnamed = [{"port": 5443}]
    portless = [{"name": "https"}]
    cases = [(named, 8443), (first, 7443), (unnamed, 5443), (portless, 6443), (None, 6443)]
    for ports, expected in cases:
        snapshot = slices_to_snapshot([_slice("a", [("10.0.0.1", READY)], ports=ports)], 4, "1")
        assert snapshot.endpoints == (Endpoint("10.0.0.1", expected, True),), ports


def test_duplicates_across_slices_merge_ready_if_any_copy_is() -> None:
    slices = [
        _slice("a", [("10.0.0.1", {"ready": False}), ("10.0.0.2", READY)], ports=HTTPS),
        _slice("b", [("10.0.0.1", READY), ("10.0.0.2", READY)], ports=HTTPS),
    ]
    snapshot = slices_to_snapshot(slices, 4, "1")
    assert snapshot.endpoints == (
        Endpoint("10.0.0.1", 6443, True),
        Endpoint("10.0.0.2", 6443, True),
    )


def test_no_slices_no_endpoints() -> None:
    snapshot = slices_to_snapshot([], 4, "3")
    assert snapshot.endpoints == ()
    assert snapshot.resource_version == "3"


def test_core_endpoints_fallback() -> None:
    endpoints = {
        "metadata": {"name": "kubernetes", "namespace": "default", "resourceVersion": "9"},
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.3"}, {"ip": "10.0.0.1"}],
                "notReadyAddresses": [{"ip": "10.0.0.2"}],
                "ports": [{"name": "https", "port": 6443}],
            },
            {"addresses": [{"ip": "2001:db8::1"}], "ports": [{"port": 443}]},
        ],
    }
    assert endpoints_to_snapshot(endpoints, 4, "9").endpoints == (
        Endpoint("10.0.0.1", 6443, True),
        Endpoint("10.0.0.2", 6443, False),
        Endpoint("10.0.0.3", 6443, True),
    )
    assert endpoints_to_snapshot(endpoints, 6, "9").endpoints == (
        Endpoint("2001:db8::1", 443, True),
    )
    assert endpoints_to_snapshot({"metadata": {}}, 4, "").endpoints == ()
    for hostile in ({"subsets": {}}, {"subsets": [{"addresses": [{"ip": 1}]}]}, []):
        with pytest.raises(KubeShapeError):
            endpoints_to_snapshot(hostile, 4, "")

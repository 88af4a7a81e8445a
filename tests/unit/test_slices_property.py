"""Property tests of the EndpointSlice parser: whatever an API server (or a hostile
EndpointSlice writer) sends ends in a snapshot of real addresses or in KubeShapeError,
never in another exception.

The number of cases per property is set by LITELB_PARSER_CASES (default 5,000, so
the two slice properties run 10,000 together); `-s` prints how many ran.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litelb.adapters.kube_slices import (
    KubeShapeError,
    endpoints_to_snapshot,
    parse_event,
    parse_list,
    slices_to_snapshot,
)
from litelb.model import EndpointSnapshot

CASES = int(os.environ.get("LITELB_PARSER_CASES", "5000"))
PROPERTY = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ran: Counter[str] = Counter()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def either(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right shape, sometimes (one in ten) anything at all, so most slices
    are well-formed but for one or two fields and the checks are reached deep down."""
    return st.integers(0, 9).flatmap(lambda i: json_values if i == 0 else valid)


hostile_addresses = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.1", "::1", "fe80::1%eth0", "10.0.0.1/32", "0.0.0.0", "", "x"]),
    json_values,
)
ports = either(
    st.lists(
        either(
            st.fixed_dictionaries(
                {},
                optional={
                    "name": either(st.sampled_from(["https", "http", ""])),
                    "port": either(st.integers(min_value=-5, max_value=70000)),
                    "protocol": json_values,
                },
            )
        ),
        max_size=3,
    )
)


def unicast(family: int) -> st.SearchStrategy:
    return (
        st.ip_addresses(v=family)
        .filter(lambda ip: not ip.is_multicast and not ip.is_unspecified)
        .map(str)
    )


@st.composite
def near_valid_slice(draw: st.DrawFn) -> Any:
    """An EndpointSlice of one family, well-formed but for what `either` spoils."""
    family = draw(st.sampled_from([4, 6]))
    address = st.integers(0, 9).flatmap(lambda i: hostile_addresses if i == 0 else unicast(family))
    conditions = either(
        st.fixed_dictionaries(
            {},
            optional={
                "ready": either(st.booleans()),
                "serving": either(st.booleans()),
                "terminating": either(st.booleans()),
            },
        )
    )
    endpoint = either(
        st.fixed_dictionaries(
            {"addresses": either(st.lists(address, min_size=1, max_size=3))},
            optional={"conditions": conditions, "nodeName": json_values},
        )
    )
    metadata = either(
        st.fixed_dictionaries(
            {
                "name": either(
                    st.sampled_from(["kubernetes", "kubernetes-x1"]) | st.text(max_size=9)
                )
            },
            optional={"resourceVersion": either(st.text(max_size=6)), "labels": json_values},
        )
    )
    address_type = either(st.sampled_from([f"IPv{family}", "FQDN"]))
    return draw(
        st.fixed_dictionaries(
            {"metadata": metadata, "addressType": address_type},
            optional={"endpoints": either(st.lists(endpoint, max_size=4)), "ports": ports},
        )
    )


def check_snapshot(snapshot: EndpointSnapshot, family: int) -> None:
    """What a snapshot may hold: unicast addresses of the family, real TCP ports."""
    for e in snapshot.endpoints:
        ip = ipaddress.ip_address(e.address)
        assert ip.version == family and ip.compressed == e.address
        assert not ip.is_unspecified and not ip.is_multicast
        assert 0 < e.port < 65536 and isinstance(e.ready, bool)


def parses(slices: list[Any], family: int) -> None:
    try:
        snapshot = slices_to_snapshot(slices, family, "1")
    except KubeShapeError:
        ran["refused"] += 1
        return
    ran["accepted"] += 1
    check_snapshot(snapshot, family)


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    yield
    print(f"\nEndpointSlice parser: {dict(ran)} cases, 0 crashes (any other exception fails)")


@PROPERTY
@given(st.lists(near_valid_slice(), max_size=2), st.sampled_from([4, 6]))
def test_near_valid_slices_end_in_a_snapshot_or_a_shape_error(
    slices: list[Any], family: int
) -> None:
    ran["near-valid"] += 1
    parses(slices, family)


@PROPERTY
@given(st.lists(json_values, max_size=3), st.sampled_from([4, 6]))
def test_arbitrary_json_ends_in_a_snapshot_or_a_shape_error(slices: list[Any], family: int) -> None:
    ran["arbitrary"] += 1
    parses(slices, family)


@settings(max_examples=max(CASES // 5, 100), deadline=None)
@given(json_values | st.fixed_dictionaries({"type": json_values, "object": json_values}))
def test_watch_events_and_lists_end_in_a_value_or_a_shape_error(body: Any) -> None:
    for parse in (parse_event, parse_list):
        with contextlib.suppress(KubeShapeError):
            parse(body)


@settings(max_examples=max(CASES // 5, 100), deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "subsets": either(
                st.lists(
                    either(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "addresses": either(
                                    st.lists(
                                        either(
                                            st.fixed_dictionaries(
                                                {"ip": unicast(4) | unicast(6) | hostile_addresses}
                                            )
                                        )
                                    )
                                ),
                                "notReadyAddresses": json_values,
                                "ports": ports,
                            },
                        )
                    ),
                    max_size=3,
                )
            )
        },
    )
    | json_values,
    st.sampled_from([4, 6]),
)
def test_core_endpoints_end_in_a_snapshot_or_a_shape_error(body: Any, family: int) -> None:
    try:
        snapshot = endpoints_to_snapshot(body, family, "1")
    except KubeShapeError:
        return
    check_snapshot(snapshot, family)

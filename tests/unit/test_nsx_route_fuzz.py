"""Property tests of the NSX route parser: whatever NSX (or something posing as it)
answers, the parser returns a Route or raises its own InvalidBody, never anything else.

Cases run: LITELB_FUZZ_EXAMPLES per test, default 5,000 each, 10,000 in all (26 s
measured on a busy 2-core machine); set it higher for a longer run.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litelb.adapters.nsx_body import InvalidBody, route_from_body
from litelb.model import Route, ip_sort_key

EXAMPLES = int(os.environ.get("LITELB_FUZZ_EXAMPLES", "5000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Short text from a small alphabet keeps generation cheap; the parser treats all text alike.
short_text = st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=12)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), short_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=6,
)
addresses = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses().map(lambda a: f"{a}/{a.max_prefixlen}"),
    st.text(alphabet="0123456789abcdef.:/% ", max_size=45),
)
hops = st.one_of(
    st.fixed_dictionaries(
        {"ip_address": addresses},
        optional={
            "admin_distance": st.one_of(st.integers(-1, 300), json_values),
            "scope": st.one_of(st.lists(short_text, max_size=2), json_values),
        },
    ),
    json_values,
)
tags = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "scope": st.one_of(
                st.sampled_from(["litelb/leader", "litelb/managed-by"]), json_values
            ),
            "tag": st.one_of(addresses, json_values),
        },
    ),
    json_values,
)
# Shaped like a StaticRoutes object, each field sometimes of the wrong type or missing.
route_like = st.fixed_dictionaries(
    {},
    optional={
        "network": st.one_of(addresses, json_values),
        "next_hops": st.one_of(st.lists(hops, max_size=4), json_values),
        "display_name": st.one_of(short_text, json_values),
        "tags": st.one_of(st.lists(tags, max_size=3), json_values),
        "_revision": st.one_of(st.integers(-5, 2**40), json_values),
        "marked_for_delete": json_values,
    },
)


def check(body: Any) -> None:
    try:
        route = route_from_body(body)
    except InvalidBody as e:
        assert str(e)
        return
    assert isinstance(route, Route)
    ipaddress.ip_network(route.network, strict=False)
    assert route.next_hops == tuple(sorted(route.next_hops, key=ip_sort_key))
    assert all(isinstance(t.scope, str) and isinstance(t.tag, str) for t in route.tags)
    assert isinstance(route.revision, int) and not isinstance(route.revision, bool)
    assert isinstance(route.display_name, str)


@FUZZ
@given(route_like)
def test_route_shaped_bodies_give_a_route_or_invalid_body(body: dict) -> None:
    check(body)


@FUZZ
@given(json_values)
def test_any_json_gives_a_route_or_invalid_body(body: Any) -> None:
    check(body)

"""An IPv6 VIP end to end: /128 on lo, an IPv6 EndpointSlice, an IPv6 next hop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.lab import ROUTE_ID, TIER1, Lab, can_make_namespaces
from tests.wait import wait_for

pytestmark = pytest.mark.netns
VIP6 = "2001:db8::10"
NODE6 = "::1"


def test_ipv6_vip_route_and_probes(tmp_path: Path) -> None:
    if not can_make_namespaces():
        pytest.skip("needs root and iproute2 for a network namespace")
    box = Lab(tmp_path, nodes=[NODE6], api_addresses=(NODE6,))
    try:
        node = box.start(NODE6, vip={"address": VIP6})
        route_id = ROUTE_ID.replace("192-168-160-249", "2001-db8--10")

        def route() -> dict | None:
            return box.nsx.route(TIER1, route_id)

        wait_for(lambda: route() is not None, 10, "IPv6 route", node)
        r = route()
        assert r is not None
        assert r["network"] == f"{VIP6}/128"
        assert [h["ip_address"] for h in r["next_hops"]] == [NODE6]
        assert f"inet6 {VIP6}/128" in box.ns.addresses()
        # /status is published after the write is read back: wait for it to settle.
        status = wait_for(
            lambda: (s := box.status(node))["route"]["in_sync"] and s, 10, "status in sync", node
        )
        assert status["leader"] is True
        ((endpoint),) = status["endpoints"]
        assert endpoint["address"] == NODE6 and endpoint["ready"] and endpoint["healthy"]
    finally:
        box.close()

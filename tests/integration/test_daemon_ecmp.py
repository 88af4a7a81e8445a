"""More healthy API servers than NSX has ECMP paths: a stable subset of 8 next hops."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.lab import can_make_namespaces, lab
from tests.wait import wait_for

pytestmark = pytest.mark.netns
TEN = tuple(f"127.0.0.{n}" for n in range(2, 12))


def test_ten_api_servers_give_a_stable_eight(tmp_path: Path) -> None:
    if not can_make_namespaces():
        pytest.skip("needs root and iproute2 for a network namespace")
    with lab(tmp_path, nodes=TEN, api_addresses=TEN) as box:
        node = box.start(TEN[0])
        lowest = sorted(TEN, key=lambda a: int(a.rsplit(".", 1)[1]))
        wait_for(lambda: box.hops() == sorted(lowest[:8]), 10, "the lowest 8", node)
        # /status is published after the write is read back: wait for it to settle.
        status = wait_for(
            lambda: (s := box.status(node))["route"]["in_sync"] and s, 10, "status in sync", node
        )
        assert status["route"]["left_out_next_hops"] == lowest[8:]
        assert "NSX holds at most 8 next hops" in node.log()
        # One of the eight leaves: the lowest of the two left out takes its place.
        box.kube.set_endpoints([a for a in TEN if a != "127.0.0.5"])
        eight = sorted([a for a in lowest[:9] if a != "127.0.0.5"])
        wait_for(lambda: box.hops() == eight, 10, "127.0.0.10 replaces 127.0.0.5", node)
        writes = len(box.route_writes())
        # It comes back: the route stays as it is, nobody's connections move.
        box.kube.set_endpoints(list(TEN))
        wait_for(
            lambda: box.status(node)["route"]["left_out_next_hops"] == ["127.0.0.5", "127.0.0.11"],
            10,
            "127.0.0.5 left out",
            node,
        )
        assert box.hops() == eight and len(box.route_writes()) == writes
        assert box.status(node)["route"]["in_sync"] is True

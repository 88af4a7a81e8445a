"""What the probes make of what they see, through the daemon: an API server that comes
back must prove itself `rise` times; one whose host refuses connections is withdrawn
at once; one that is merely slow or hung still needs `fall` failures."""

from __future__ import annotations

import time

import pytest

from tests.integration.lab import NODES, Lab, Node, elapsed_until
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES


def probed(box: Lab, node: Node, address: str) -> bool:
    return any(
        e["address"] == address and e.get("probe") == "200" for e in box.status(node)["endpoints"]
    )


def test_an_endpoint_that_comes_back_needs_rise_successes(box: Lab) -> None:
    node = box.start(A, health={"rise": 2, "interval": 1})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    wait_for(lambda: probed(box, node, C), 5, "C probed", node)
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 5, "C withdrawn", node)
    time.sleep(1.5)  # at least one probe round without C
    box.kube.set_endpoints([A, B, C])
    listed = time.monotonic()
    # Before its first successful probe round C must stay out of the route.
    deadline = listed + 0.8
    while time.monotonic() < deadline:
        assert box.hops() == [A, B], "C restored before it passed its probes"
        time.sleep(0.02)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "C restored after rise successes", node)
    print(f"C listed again -> restored: {time.monotonic() - listed:.2f} s (rise 2, interval 1)")


def test_a_refused_connection_withdraws_at_once(box: Lab) -> None:
    # fall = 5 would take 4 s or more of failures; a refusal is proof enough.
    node = box.start(A, health={"fall": 5, "interval": 1})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.kube.refuse(C)  # the API server process is gone; the EndpointSlice still lists it
    took = elapsed_until(lambda: box.hops() == [A, B], 10, "crashed C withdrawn", node)
    print(f"C refuses connections -> withdrawn: {took:.2f} s (interval 1, fall 5)")
    assert took < 3.0, f"withdrawn after {took:.2f} s: not on the first refused probe"
    assert "is down (connection refused)" in node.log()


def test_a_hung_api_server_still_needs_fall_failures(box: Lab) -> None:
    node = box.start(A, health={"fall": 5, "interval": 1, "timeout": 1})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.kube.hang(C)  # TCP accepted, nothing answered: a timeout, which proves nothing
    time.sleep(2.5)
    assert box.hops() == sorted(NODES), "withdrawn before `fall` timeouts"
    wait_for(lambda: box.hops() == [A, B], 10, "hung C withdrawn after fall", node)
    box.kube.serve(C)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "C restored", node)


def test_a_malformed_endpointslice_is_refused_and_never_routed(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    labels = {"kubernetes.io/service-name": "kubernetes"}
    meta = {"name": "kubernetes", "namespace": "default", "labels": labels}
    hostile = [
        {"metadata": meta, "addressType": "IPv4", "endpoints": "oops"},
        {"metadata": meta, "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1/8"]}]},
        {"metadata": meta, "addressType": 4, "endpoints": [{"addresses": [A]}]},
        {
            "metadata": meta,
            "addressType": "IPv4",
            "endpoints": [{"addresses": [A]}],
            "ports": [{"port": "https"}],
        },
    ]
    for obj in hostile:
        box.kube.put_slice(obj)
        wait_for(
            lambda: "refused" in (box.status(node)["kubernetes"]["last_error"] or ""),
            5,
            "the refusal in /status",
            node,
        )
        assert box.hops() == sorted(NODES), "a route built from a malformed slice"
        # Another, also malformed, slice next to it is ignored as well.
        box.kube.put_slice({**obj, "metadata": {**meta, "name": "kubernetes-extra"}})
    time.sleep(1.0)
    assert node.alive() and box.hops() == sorted(NODES)
    assert "EndpointSlice of default/kubernetes refused" in node.log()
    assert "Traceback" not in node.log()
    # A well-formed version is used at once, and the error clears.
    box.kube.delete_slice("kubernetes-extra")
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 5, "route follows the repaired slice", node)
    wait_for(lambda: box.status(node)["kubernetes"]["last_error"] is None, 5, "error cleared", node)


def test_a_slow_but_alive_api_server_is_not_withdrawn(box: Lab) -> None:
    # Answers after 0.8 s with a 1 s timeout: loaded, not down. On a busy test machine
    # one answer may still miss the timeout; `fall` in a row are needed all the same.
    node = box.start(A, health={"fall": 3, "interval": 1, "timeout": 1})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.kube.slow(C, 0.8)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        assert box.hops() == sorted(NODES), "a slow API server was withdrawn"
        time.sleep(0.1)
    box.kube.slow(C, 0.0)
    assert "failed its probes" not in node.log() and "is down" not in node.log()

"""Three `litelb run` daemons against one fake control plane and one NSX.

Node addresses are 127.0.0.2–4; each daemon's kubeconfig points at its own API server,
as a kubelet's usually does. Deadlines are the issue's: probes (interval 1, fall 2,
timeout 1) + takeover_after 1 + 1 s of slack.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.lab import NODES, VIP, Lab, Node, elapsed_until
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES
PROBES = 1.0 * 2 + 1.0  # interval × fall + timeout


def cluster(box: Lab, **sections: dict) -> dict[str, Node]:
    nodes = {A: box.start(A, **sections)}
    wait_for(lambda: box.leader() == A and box.hops() == sorted(NODES), 10, "A leads", nodes[A])
    for address in (B, C):
        nodes[address] = box.start(address, **sections)
    return nodes


def leaders_in_writes(box: Lab) -> set[str]:
    return {
        t["tag"]
        for w in box.route_writes()
        for t in (w.body or {}).get("tags", [])
        if t["scope"] == "litelb/leader"
    }


def test_one_leader_one_writer_route_follows_endpointslice(box: Lab) -> None:
    nodes = cluster(box)
    box.kube.set_endpoints([A, B])
    took = elapsed_until(lambda: box.hops() == [A, B], 5, "C withdrawn", *nodes.values())
    assert took < 1.0
    box.kube.set_endpoints(list(NODES))
    wait_for(lambda: box.hops() == sorted(NODES), 5, "C back", *nodes.values())
    time.sleep(1.0)
    assert leaders_in_writes(box) == {A}, "only the leader writes"
    statuses = [box.status(n) for n in nodes.values()]
    assert [s["leader"] for s in statuses] == [True, False, False]
    assert {s["leader_identity"] for s in statuses} == {A}
    for s in statuses:
        assert s["vip"]["present"] is True


def test_steady_state_is_reads_only(box: Lab) -> None:
    nodes = cluster(box)
    time.sleep(2.0)
    box.nsx.clear_requests()
    time.sleep(11.0)  # two resync intervals of 5 s
    requests = box.nsx.requests()
    assert [r for r in requests if r.method != "GET"] == []
    # one GET per node per resync_interval (5 s), for 3 nodes over 11 s
    assert len(requests) <= 3 * 3, [(r.method, r.path) for r in requests]
    assert all(n.alive() for n in nodes.values())


def test_hung_non_leader_api_server_is_withdrawn(box: Lab) -> None:
    nodes = cluster(box)
    box.kube.hang(C)
    took = elapsed_until(lambda: box.hops() == [A, B], PROBES + 5, "C withdrawn", *nodes.values())
    assert took <= PROBES + 1.0, f"withdrawn after {took:.2f}s"
    assert box.leader() == A
    box.serve_api(C)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "C restored", *nodes.values())


def test_hung_leader_api_server_is_taken_over(box: Lab) -> None:
    nodes = cluster(box)
    box.kube.hang(A)
    took = elapsed_until(
        lambda: box.leader() in (B, C) and box.hops() == [B, C],
        PROBES + 10,
        "another node leads without A",
        *nodes.values(),
    )
    assert took <= PROBES + 1.0 + 1.0, f"taken over after {took:.2f}s"
    wait_for(lambda: not box.status(nodes[A])["leader"], 10, "A follows", nodes[A])


def test_killed_leader_daemon_is_replaced_via_stale_hop(box: Lab) -> None:
    nodes = cluster(box)
    nodes[A].kill()
    box.kube.set_endpoints([B, C])  # A's API server left the EndpointSlice
    took = elapsed_until(
        lambda: box.leader() in (B, C) and box.hops() == [B, C],
        25,
        "a live node took over and withdrew A",
        *nodes.values(),
    )
    assert took <= 10.0 + 2.0, f"took {took:.2f}s"


def test_sigterm_hands_over(box: Lab) -> None:
    nodes = cluster(box)
    nodes[A].proc.send_signal(__import__("signal").SIGTERM)  # type: ignore[union-attr]
    took = elapsed_until(lambda: box.leader() == B, 5, "handed over to B", *nodes.values())
    assert took <= 2.0
    assert nodes[A].proc.wait(5) == 0  # type: ignore[union-attr]
    assert box.hops() == sorted(NODES), "hand-over keeps the next hops"
    box.kube.set_endpoints([B, C])
    wait_for(lambda: box.hops() == [B, C], 5, "the new leader writes", nodes[B])
    assert leaders_in_writes(box) == {A, B}


def test_all_api_servers_unreachable_then_back(box: Lab) -> None:
    nodes = cluster(box)
    writes = len(box.route_writes())
    for address in NODES:
        box.kube.refuse(address)
    time.sleep(8.0)
    assert box.hops() == sorted(NODES), "route untouched"
    assert len(box.route_writes()) == writes
    assert all(n.alive() for n in nodes.values())
    assert f"inet {VIP}/32" in box.ns.addresses()
    for address in NODES:
        box.serve_api(address)
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 30, "converged after the outage", *nodes.values())


def test_configured_api_server_down_works_through_another(box: Lab) -> None:
    box.kube.refuse(B)
    node = box.start(B, kubernetes={"api_servers": [box.kube.url(C)]})
    status = box.status(node)
    assert status["kubernetes"]["server"] == box.kube.url(C)
    assert status["kubernetes"]["synced"] is True
    wait_for(lambda: box.hops() is not None, 10, "route created", node)
    assert "127.0.0.4" in node.log()


def test_watch_expired_mid_stream_relists_without_missing_a_change(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.kube.compact()
    box.kube.drop_watches()
    box.kube.set_endpoints([A, C])
    wait_for(lambda: box.hops() == [A, C], 10, "change after 410 seen", node)
    box.kube.compact()
    box.kube.set_endpoints([A, B, C])
    box.kube.drop_watches()
    wait_for(lambda: box.hops() == sorted(NODES), 10, "second change seen", node)


def test_forbidden_endpointslices_is_a_clear_error(box: Lab) -> None:
    box.kube.set_rules(set())
    node = box.start(A, wait_ready=False)
    wait_for(lambda: "forbidden" in node.log().lower(), 15, "403 logged", node)
    time.sleep(2)
    assert node.alive()
    assert "litelb rbac" in node.log()


@pytest.mark.slow
def test_two_nodes_that_cannot_probe_each_other_change_leader_at_most_once_per_hold_down(
    box: Lab,
) -> None:
    hold_down = 12.0
    nodes = cluster(box, coordination={"hold_down": hold_down})
    # A's probes fail on B's API server and B's on A's; C sees both healthy.
    box.kube.set_ready(B, False, user="system:node:node-2")
    box.kube.set_ready(A, False, user="system:node:node-3")
    changes: list[tuple[float, str]] = []
    start = time.monotonic()
    last = box.leader()
    while time.monotonic() - start < 2.5 * hold_down:
        now = box.leader()
        if now != last:
            changes.append((time.monotonic() - start, str(now)))
            last = now
        time.sleep(0.05)
    assert changes, "B does take over from a leader it cannot reach"
    gaps = [b[0] - a[0] for a, b in zip(changes, changes[1:])]
    assert all(g >= hold_down - 0.5 for g in gaps), changes
    assert len(changes) <= 3, changes
    assert all(n.alive() for n in nodes.values())

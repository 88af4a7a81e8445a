"""Credentials rotated in place: the kubelet renews its client certificate by swapping
the symlink `kubelet-client-current.pem`, and the old certificate stops working. The
daemon keeps watching and probing with the new one, without a restart."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.integration.lab import NODES, Lab, Node
from tests.pki import serial
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES
USER = "system:node:node-2"


def healthy_metric(box: Lab, node: Node) -> int:
    body = box.http_get(node, "/metrics")[1]
    match = re.search(r"^litelb_endpoints_healthy (\S+)$", body, re.M)
    assert match, body
    return int(float(match.group(1)))


def probes_all_pass(box: Lab, node: Node, addresses: list[str]) -> bool:
    endpoints = {e["address"]: e for e in box.status(node)["endpoints"]}
    return all(
        endpoints.get(a, {}).get("healthy") is True and endpoints[a].get("probe") == "200"
        for a in addresses
    )


def start_rotating(box: Lab, tmp_path: Path) -> tuple[Node, Path]:
    kubeconfig = box.pki.kubeconfig(
        tmp_path / "kubelet.conf", box.kube.url(A), user_cn=USER, rotating=True
    )
    current = tmp_path / "kubelet.conf.pki" / "kubelet-client-current.pem"
    # Probes and API requests alike need the client certificate once it is revoked.
    node = box.start(A, kubernetes={"kubeconfig": str(kubeconfig)})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route with all three hops", node)
    wait_for(lambda: probes_all_pass(box, node, list(NODES)), 10, "probes pass", node)
    return node, current


def test_a_rotated_and_revoked_client_certificate_is_replaced_without_restart(
    box: Lab, tmp_path: Path
) -> None:
    node, current = start_rotating(box, tmp_path)
    old, new = box.pki.rotate_client(current, USER, ("system:nodes",))
    assert old != new and serial(current) == new
    box.kube.revoke(old)
    # The open watch ends (as it does every few seconds anyway) and is resumed with
    # the new certificate: a later EndpointSlice change still reaches the route.
    box.kube.drop_watches()
    time.sleep(0.5)
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 15, "route follows the EndpointSlice", node)
    # The probes present the new certificate: still healthy, and /status and
    # /metrics agree on it.
    time.sleep(2.5)
    wait_for(lambda: probes_all_pass(box, node, [A, B]), 5, "probes pass after rotation", node)
    assert healthy_metric(box, node) == 2
    assert node.alive()
    assert "credentials changed on disk" in node.log()
    revoked = [r for r in box.kube.requests() if r.user == USER]
    assert revoked, "the daemon made requests with its certificate"


def test_a_probe_rejected_with_401_is_visible_and_reloads(box: Lab, tmp_path: Path) -> None:
    node, current = start_rotating(box, tmp_path)
    # The old certificate is revoked before the kubelet has renewed it: every probe
    # gets 401, and that must show, not hide behind fail-static.
    box.kube.revoke(serial(current))
    wait_for(
        lambda: all(
            not e["healthy"] and "401" in (e.get("probe") or "")
            for e in box.status(node)["endpoints"]
        ),
        10,
        "every endpoint unhealthy with the 401 in /status",
        node,
    )
    wait_for(lambda: "rejected the client credentials" in node.log(), 5, "a 401 logged", node)
    # The metric says the same as /status, although fail-static keeps the route whole.
    assert healthy_metric(box, node) == 0
    assert box.hops() == sorted(NODES)
    # The kubelet renews: probes pass again at once, no restart.
    box.pki.rotate_client(current, USER, ("system:nodes",))
    wait_for(lambda: probes_all_pass(box, node, list(NODES)), 10, "probes pass again", node)
    assert node.alive()

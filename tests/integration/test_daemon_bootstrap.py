"""Bootstrap: litelb is enabled before `kubeadm init`, so there is no kubeconfig, no API
server and no EndpointSlice yet. Each is a state to wait in: the VIP goes on `lo` at
once, READY=1 follows within 2 s, STATUS= says what is missing, and litelb proceeds
as soon as it appears."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.integration.lab import NODES, VIP, Lab, Node
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES


def statuses(node: Node) -> list[str]:
    return [m[len("STATUS=") :] for m in node.notify.seen("STATUS=")]


def ready_and_waiting(box: Lab, node: Node, waiting_for: str) -> None:
    """READY=1 within 2 s (plus start-up), the VIP on lo, STATUS= naming what is missing."""
    wait_for(lambda: node.notify.seen("READY=1"), 8, "READY=1 while waiting", node)
    assert node.alive(), node.log()
    assert f"inet {VIP}/32" in box.ns.addresses("lo")
    wait_for(
        lambda: any(waiting_for in s for s in statuses(node)),
        5,
        f"STATUS= naming {waiting_for!r}",
        node,
    )
    assert box.status(node)["route"]["next_hops"] == []


def test_a_missing_kubeconfig_is_waited_for(box: Lab, tmp_path: Path) -> None:
    late = tmp_path / "etc-kubernetes" / "kubelet.conf"
    node = box.start(A, wait_ready=False, kubernetes={"kubeconfig": str(late)})
    ready_and_waiting(box, node, f"waiting for {late}")
    assert box.status(node)["kubernetes"]["waiting_for"] == f"waiting for {late}"
    time.sleep(1.5)
    assert node.alive() and box.route() is None
    # What `kubeadm init` does: the kubelet's kubeconfig appears (written atomically).
    late.parent.mkdir()
    shutil.copy(tmp_path / f"kubelet-{A}.conf", late.with_suffix(".tmp"))
    os.rename(late.with_suffix(".tmp"), late)
    appeared = time.monotonic()
    wait_for(lambda: "using kubeconfig" in node.log(), 5, "the kubeconfig picked up", node)
    picked_up = time.monotonic() - appeared
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route once the kubeconfig exists", node)
    print(f"kubeconfig appeared -> in use: {picked_up:.2f} s")
    assert picked_up < 2.0, node.log()
    wait_for(lambda: any("leader" in s for s in statuses(node)), 5, "STATUS= leader", node)


def test_auto_detection_names_the_kubelet_paths_it_waits_for(box: Lab) -> None:
    kubelet_paths = (
        "/etc/kubernetes/kubelet.conf",
        "/var/vcap/jobs/kubelet/config/kubeconfig",
        "/var/lib/rancher/rke2/agent/kubelet.kubeconfig",
        "/var/lib/rancher/k3s/agent/kubelet.kubeconfig",
    )
    if any(os.path.exists(p) for p in kubelet_paths):
        pytest.skip("this machine has a kubelet kubeconfig")
    node = box.start(A, wait_ready=False, kubernetes={"kubeconfig": ""})
    ready_and_waiting(box, node, "waiting for a kubelet kubeconfig")
    line = next(s for s in statuses(node) if "kubelet kubeconfig" in s)
    for path in kubelet_paths:
        assert path in line
    assert box.http_get(node, "/healthz")[0] == 200


def test_an_api_server_that_does_not_answer_yet_is_waited_for(box: Lab) -> None:
    for address in NODES:
        box.kube.refuse(address)
    node = box.start(A, wait_ready=False)
    ready_and_waiting(box, node, "waiting for the Kubernetes API server")
    time.sleep(2.0)
    assert node.alive()
    for address in NODES:
        box.serve_api(address)
    answered = time.monotonic()
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route once the API server answers", node)
    print(f"API server answering -> route: {time.monotonic() - answered:.2f} s")


def test_an_empty_endpointslice_is_waited_for(box: Lab) -> None:
    box.kube.set_endpoints([])
    node = box.start(A, wait_ready=False)
    ready_and_waiting(box, node, "waiting for the EndpointSlices of default/kubernetes")
    box.kube.set_endpoints([A])
    wait_for(lambda: box.hops() == [A], 10, "route once an API server is listed", node)

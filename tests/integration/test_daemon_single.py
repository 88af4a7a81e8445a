"""`litelb run` on one node, as a subprocess, against the simulators (issue: one node)."""

from __future__ import annotations

import time

import pytest

from tests.integration.lab import NODES, VIP, Lab, elapsed_until
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES


def test_creates_route_adds_vip_and_talks_to_systemd(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route with all three hops", node)
    route = box.route()
    assert route is not None
    assert route["network"] == f"{VIP}/32"
    tags = {t["scope"]: t["tag"] for t in route["tags"]}
    assert tags == {"litelb/managed-by": "litelb", "litelb/vip": VIP, "litelb/leader": A}
    assert all(h.get("admin_distance") == 1 for h in route["next_hops"])
    assert f"inet {VIP}/32" in box.ns.addresses("lo")
    wait_for(lambda: node.notify.seen("WATCHDOG=1"), 5, "WATCHDOG=1", node)
    wait_for(lambda: any("leader" in s for s in node.notify.seen("STATUS=")), 5, "STATUS=", node)
    status = box.status(node)
    assert status["leader"] is True and status["leader_identity"] == A
    assert status["vip"] == {"address": VIP, "interface": "lo", "managed": True, "present": True}
    assert status["route"]["in_sync"] is True
    assert status["route"]["next_hops"] == list(NODES)
    assert status["route"]["path"] == "/infra/tier-1s/cluster-router/static-routes/" + (
        "litelb-192-168-160-249"
    )
    assert status["nsx"]["reachable"] is True
    code, body = box.http_get(node, "/metrics")
    assert code == 200
    for name in (
        "litelb_is_leader 1.0",
        "litelb_vip_present 1.0",
        "litelb_endpoints_ready 3.0",
        "litelb_route_in_sync 1.0",
        "litelb_route_writes_total 1.0",
        'litelb_nsx_requests_total{code="200",method="PUT"}',
    ):
        assert name in body
    assert box.http_get(node, "/healthz") == (200, "ok\n")


def test_follows_endpointslice_changes_and_never_empties_the_route(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.kube.set_endpoints([A, B])
    took = elapsed_until(lambda: box.hops() == [A, B], 5, "B..C withdrawn", node)
    assert took < 1.0, f"route changed {took:.2f}s after the EndpointSlice"
    box.kube.set_endpoints([A, (B, True), (C, False)])  # C listed but not ready
    wait_for(lambda: box.hops() == [A, B], 2, "not-ready C stays out", node)
    box.kube.set_endpoints([A, B, C])
    wait_for(lambda: box.hops() == sorted(NODES), 5, "C restored", node)
    box.kube.set_endpoints([])
    time.sleep(2.0)
    assert box.hops() == sorted(NODES), "fail-static: the last route stays"
    assert all(w.body is None or w.body.get("next_hops") for w in box.route_writes())


def test_corrects_drift_made_in_the_nsx_ui(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.nsx.ui_edit(
        "cluster-router",
        "litelb-192-168-160-249",
        next_hops=[{"ip_address": "10.99.0.1", "admin_distance": 1}],
    )
    assert box.hops() == ["10.99.0.1"]
    wait_for(lambda: box.hops() == sorted(NODES), 10, "drift corrected on resync", node)
    box.nsx.ui_delete("cluster-router", "litelb-192-168-160-249")
    wait_for(lambda: box.hops() == sorted(NODES), 10, "deleted route re-created", node)


def test_restores_a_removed_vip(box: Lab) -> None:
    import subprocess

    node = box.start(A)
    subprocess.run(["ip", "-n", box.ns.name, "addr", "del", f"{VIP}/32", "dev", "lo"], check=True)
    wait_for(lambda: f"inet {VIP}/32" in box.ns.addresses(), 15, "VIP restored", node)


@pytest.mark.slow
def test_nsx_down_for_30_seconds_then_back_converges(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    box.nsx.down(True)
    box.kube.set_endpoints([A, B])
    time.sleep(30)
    assert node.alive()
    assert box.status(node)["route"]["in_sync"] is False
    box.nsx.down(False)
    wait_for(lambda: box.hops() == [A, B], 25, "converged after NSX came back", node)
    assert node.alive()
    wait_for(lambda: box.status(node)["route"]["in_sync"], 5, "in sync", node)


def test_sigterm_exits_0_within_5_seconds_and_keeps_the_vip(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    code, took = node.terminate()
    assert code == 0
    assert took < 5.0
    assert node.notify.seen("STOPPING=1")
    assert f"inet {VIP}/32" in box.ns.addresses("lo")
    assert box.hops() == sorted(NODES), "stopping never deletes the route"


def test_wrong_nsx_password_is_reported_without_hammering(box: Lab) -> None:
    box.password_file.write_text("Wr0ng-Passphrase\n")
    node = box.start(A)
    wait_for(
        lambda: "credentials" in (box.status(node)["route"]["last_error"] or ""),
        15,
        "auth error in /status",
        node,
    )
    time.sleep(3)
    assert node.alive()
    bad = [r for r in box.nsx.requests() if r.status == 403]
    assert len(bad) == 1, "one bad login, then a slow retry (NSX locks accounts)"
    assert "Wr0ng-Passphrase" not in node.log()
    assert box.route() is None


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("vip", {"address": "192.168.160.249/32"}, "vip.address"),
        ("health", {"fall": 0}, "health.fall"),
        ("nsx", {"tier1s": "x"}, "nsx.tier1s"),
        ("coordination", {"hold_down": "long"}, "coordination.hold_down"),
    ],
)
def test_bad_config_exits_78_naming_the_key_and_touches_nothing(
    box: Lab, section: str, values: dict, key: str
) -> None:
    config = box.tmp / "bad.toml"
    config.write_text(box.config_text(A, 9651, **{section: values}))
    config.chmod(0o600)
    result = box.run_cli("run", "-c", str(config))
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith("litelb: ")
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert VIP not in box.ns.addresses("lo")
    assert box.nsx.requests() == []

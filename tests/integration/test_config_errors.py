"""A configuration mistake, whichever command meets it: `litelb: FILE[:LINE]:KEY: …`
on stderr, exit 78, no traceback, and nothing changed (no VIP, no NSX request)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.lab import NODES, VIP, Lab

pytestmark = pytest.mark.netns
A = NODES[0]


def write_config(box: Lab, **sections: dict[str, Any]) -> str:
    path = box.tmp / "bad.toml"
    path.write_text(box.config_text(A, 9651, **sections))
    path.chmod(0o600)
    return str(path)


def assert_config_error(box: Lab, result: Any, key: str) -> None:
    assert result.returncode == 78, result.stdout + result.stderr
    assert result.stderr.startswith("litelb: "), result.stderr
    assert f":{key}: " in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert VIP not in box.ns.addresses("lo")
    assert box.nsx.requests() == []


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("nsx", {"managers": ["https://[::1"]}, "nsx.managers"),
        ("health", {"interval": 1e308}, "health.interval"),
        ("coordination", {"hold_down": 0}, "coordination.hold_down"),
        ("coordination", {"takeover_after": 0}, "coordination.takeover_after"),
        ("nsx", {"resync_interval": 1e12}, "nsx.resync_interval"),
    ],
)
@pytest.mark.parametrize("command", ["run", "check"])
def test_value_out_of_range_or_malformed(
    box: Lab, command: str, section: str, values: dict, key: str
) -> None:
    path = write_config(box, **{section: values})
    assert_config_error(box, box.run_cli(command, "-c", path), key)


def test_client_key_of_another_certificate_stops_the_daemon_at_start(box: Lab) -> None:
    cert, _ = box.pki.client_cert("litelb-a")
    _, other_key = box.pki.client_cert("litelb-b")
    path = write_config(
        box, nsx={"auth": "certificate", "client_cert": str(cert), "client_key": str(other_key)}
    )
    result = box.run_cli("run", "-c", path)
    assert_config_error(box, result, "nsx.client_key")
    assert f"{other_key} is not the key of the certificate {cert}" in result.stderr


def test_cluster_things_that_do_not_exist_yet_are_not_configuration_errors(box: Lab) -> None:
    # Before `kubeadm init` neither the kubelet's kubeconfig nor any API server exists.
    path = write_config(
        box,
        kubernetes={
            "kubeconfig": str(box.tmp / "not-yet" / "kubelet.conf"),
            "api_servers": ["https://cp.example.invalid:6443"],
        },
    )
    result = box.run_cli("check", "-c", path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert any(
        line.startswith("FAIL") and "kubelet.conf" in line for line in result.stdout.splitlines()
    ), result.stdout


def test_node_address_of_another_host_is_a_configuration_error(box: Lab) -> None:
    path = write_config(box, kubernetes={"node_address": "10.9.9.9"})
    result = box.run_cli("run", "-c", path)
    assert_config_error(box, result, "kubernetes.node_address")
    assert "10.9.9.9 is not an address of this host" in result.stderr
    assert "litelb: " + path + ":" in result.stderr
    check = box.run_cli("check", "-c", path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert any(
        line.startswith("FAIL kubernetes.node_address: 10.9.9.9 is not an address of this host")
        for line in check.stdout.splitlines()
    ), check.stdout

"""The `litelb` commands other than `run`, as an operator types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litelb import __version__
from tests.integration.lab import NODES, PASSWORD, REPO, ROUTE_ID, TIER1, VIP, Lab
from tests.nsxsim import NsxSimulator
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A = NODES[0]


def config(box: Lab, **sections: dict) -> str:
    path = box.tmp / "cli.toml"
    path.write_text(box.config_text(A, 9651, **sections))
    path.chmod(0o600)
    return str(path)


def litelb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "litelb", *args], capture_output=True, text=True, cwd=REPO
    )


def test_version_and_rbac() -> None:
    assert litelb("version").stdout == f"litelb {__version__}\n"
    assert litelb("--version").stdout.strip() == f"litelb {__version__}"
    out = litelb("rbac")
    assert out.returncode == 0
    assert out.stdout == (REPO / "litelb" / "rbac.yaml").read_text()
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out.stdout)]
    assert kinds == ["Role", "RoleBinding"]


def test_missing_config_file_exits_78() -> None:
    out = litelb("check", "-c", "/nonexistent/litelb.toml")
    assert out.returncode == 78
    assert out.stderr.startswith("litelb: /nonexistent/litelb.toml")
    assert "Traceback" not in out.stderr


def test_status_human_and_json(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route", node)
    human = box.run_cli("status", "-c", str(node.config_path))
    assert human.returncode == 0, human.stderr
    assert f"node        {A} (leader)" in human.stdout
    assert f"vip         {VIP} on lo: present" in human.stdout
    assert "in sync" in human.stdout
    machine = box.run_cli("status", "--json", "-c", str(node.config_path))
    status = json.loads(machine.stdout)
    assert status["leader"] is True and status["route"]["next_hops"] == list(NODES)
    node.terminate()
    gone = box.run_cli("status", "-c", str(node.config_path))
    assert gone.returncode == 1
    assert "is litelb running?" in gone.stderr


def test_status_reads_litelb_config_from_the_environment(box: Lab) -> None:
    out = box.run_cli("status", env={"LITELB_CONFIG": config(box)})
    assert out.returncode == 1 and "9651/status" in out.stderr


def test_check_exit_codes(box: Lab) -> None:
    path = config(box)
    good = box.run_cli("check", "-c", path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert all(line.split()[0] in ("ok", "warn") for line in good.stdout.splitlines())
    bad = box.run_cli("check", "-c", config(box, nsx={"tier1": "no-such-router"}))
    assert bad.returncode == 1
    assert any(
        line.startswith("FAIL") and "no-such-router" in line for line in bad.stdout.splitlines()
    )
    assert box.run_cli("check", "-c", config(box, vip={"manage": "yes"})).returncode == 78


def test_cleanup_removes_vip_and_only_its_own_route(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route", node)
    node.terminate()
    path = str(node.config_path)
    route = box.route()
    assert route is not None
    box.nsx.ui_put(TIER1, ROUTE_ID, {**route, "tags": [{"scope": "owner", "tag": "netops"}]})
    refused = box.run_cli("cleanup", "--route", "-c", path)
    assert refused.returncode == 1
    assert "not deleting" in refused.stderr
    assert box.route() is not None
    box.nsx.ui_put(TIER1, ROUTE_ID, route)
    done = box.run_cli("cleanup", "-c", path)  # neither flag: both
    assert done.returncode == 0, done.stderr
    assert box.route() is None
    assert VIP not in box.ns.addresses()
    again = box.run_cli("cleanup", "-c", path)
    assert again.returncode == 0 and "not present" in again.stdout


def test_sighup_rereads_the_log_level(box: Lab) -> None:
    node = box.start(A, log={"level": "info"})
    text = Path(node.config_path).read_text().replace('level = "info"', 'level = "debug"')
    Path(node.config_path).write_text(text)
    node.proc.send_signal(__import__("signal").SIGHUP)  # type: ignore[union-attr]
    wait_for(lambda: "log level is now debug" in node.log(), 5, "SIGHUP handled", node)
    assert node.alive()


def test_status_reads_only_the_metrics_section(box: Lab, tmp_path: Path) -> None:
    # The password sits where only the daemon (root with every capability) can
    # reach it; `litelb status` runs without the capabilities that let root read
    # what it may not, as an operator without access to the password would.
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    secret = vault / "nsx-password"
    secret.write_text(box.password_file.read_text())
    secret.chmod(0o600)
    os.chown(vault, 65534, 65534)
    node = box.start(A, nsx={"password_file": str(secret)})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route", node)
    # The file was edited since the daemon started; status still reaches it.
    edited = Path(node.config_path).read_text() + '[bogus]\nkey = "x"\n'
    Path(node.config_path).write_text(edited)
    without_dac = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    status = subprocess.run(
        [*box.ns.exec_prefix(), *without_dac, sys.executable, "-m", "litelb", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO), "LITELB_CONFIG": str(node.config_path)},
    )
    assert status.returncode == 0, status.stderr
    assert f"node        {A} (leader)" in status.stdout
    check = box.run_cli("check", "-c", str(node.config_path))
    assert check.returncode == 78 and ":bogus: unknown section" in check.stderr


def test_status_with_a_bad_metrics_section_is_a_configuration_error(box: Lab) -> None:
    out = box.run_cli("status", "-c", config(box, metrics={"listen": "[::1"}))
    assert out.returncode == 78
    assert ":metrics.listen: '[::1' must be '[address]:port'" in out.stderr
    assert "Traceback" not in out.stderr


def test_check_asks_every_manager(box: Lab) -> None:
    # A manager that answers but lacks the Tier-1 (another NSX, a wrong project)
    # must not hide what the next manager says.
    other = box.ns.call(lambda: NsxSimulator(username="admin", password=PASSWORD).start())
    try:
        path = config(box, nsx={"managers": [other.url, box.nsx.url]})
        out = box.run_cli("check", "-c", path)
    finally:
        other.stop()
    # "ok   text" -> "ok text"
    lines = [" ".join(line.split(None, 1)) for line in out.stdout.splitlines()]
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"ok NSX manager {other.url}: TLS and credentials ok" in lines
    assert any(line.startswith(f"FAIL Tier-1 '{TIER1}' not found") for line in lines), lines
    assert f"ok NSX manager {box.nsx.url}: TLS and credentials ok" in lines
    assert any("advertises TIER1_STATIC_ROUTES" in line for line in lines), lines
    assert any(line.startswith("ok route ") for line in lines), lines


def test_check_finds_a_second_node_with_this_nodes_identity(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.leader() == A, 10, "A leads", node)
    mine = box.run_cli("check", "-c", str(node.config_path))
    assert any(
        line.startswith("ok") and f"this node ({A}) leads the route" in line
        for line in mine.stdout.splitlines()
    ), mine.stdout
    # A copy of A's configuration on another host: its daemon is not the writer.
    copy = box.run_cli("check", "-c", config(box, metrics={"listen": "127.0.0.1:9699"}))
    assert copy.returncode == 1
    assert any(
        line.startswith("FAIL") and "same identity (kubernetes.node_address)" in line
        for line in copy.stdout.splitlines()
    ), copy.stdout

"""The .deb as an operator uses it, under a real systemd, on Debian 12 and Debian 13.

    apt install ./litelb_*.deb; edit /etc/litelb.toml; litelb check;
    systemctl enable --now litelb; journalctl -u litelb; ... apt purge litelb

One booted container (systemd-nspawn on an overlay of a cached debootstrap root)
per release, shared by the tests of this module, one test per behaviour: each test
first brings the machine into the state it needs, so a failure does not hide the
behaviours after it. The NSX simulator and the fake kube-apiserver run inside the
container as transient services, so the daemon talks to them over the container's
own loopback (`--private-network`: nothing leaves it). Needs root; the first run
builds the cached roots with debootstrap (minutes), later runs reuse them.
Environment: LITELB_DEB=path skips the package build; LITELB_TEST_KEEP=1 keeps the
container's directory under /var/tmp for a post-mortem; LITELB_TEST_CACHE=dir moves
the cached roots (default /var/cache/litelb-test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.packaging.builds import REPO, build, copy_tree
from tests.packaging.container import Container, booted
from tests.packaging.rootfs import RELEASES, RootfsError, ensure_host_tools, ensure_rootfs

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

VIP = "192.168.160.249"
ROUTE_ID = "litelb-192-168-160-249"
NSX_PASSWORD = "Nsx-p4ss-never-logged"
ROUTE_URL = (
    "http://127.0.0.1:8443/policy/api/v1/infra/tier-1s/cluster-router/static-routes/" + ROUTE_ID
)
TESTS_DIR = "/opt/litelb-tests"

GOOD_CONFIG = f"""\
[vip]
address = "{VIP}"
interface = "lo"

[kubernetes]
# "": litelb finds kubeadm's /etc/kubernetes/kubelet.conf, written by the fake API server.
kubeconfig = ""
node_address = "127.0.0.1"

[health]
enabled = true

[nsx]
managers = ["http://127.0.0.1:8443"]
tier1 = "cluster-router"
username = "admin"
password_file = "/etc/litelb/nsx-password"

[metrics]
listen = "127.0.0.1:9651"
"""
# A typo an operator makes: must end in exit 78 and no restart loop.
BAD_CONFIG = GOOD_CONFIG.replace('interface = "lo"', 'interfce = "lo"')

# A short watchdog so a hung daemon is caught in seconds; no core dump of the
# SIGABRT on the test machine.
TEST_DROPIN = """\
[Service]
WatchdogSec=3
RestartSec=1
LimitCORE=0
"""

GET_ROUTE = f"""
import base64, json, sys, urllib.request, urllib.error
req = urllib.request.Request({ROUTE_URL!r})
auth = base64.b64encode(b"admin:" + {NSX_PASSWORD!r}.encode()).decode()
req.add_header("Authorization", "Basic " + auth)
try:
    print(urllib.request.urlopen(req, timeout=5).read().decode())
except urllib.error.HTTPError as e:
    print(json.dumps({{"http_status": e.code}}))
"""

WAIT_TCP = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.1)
"""

# procps (ps, pgrep) is not in a minbase root.
PS = """
import os
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        print(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
    except OSError:
        pass
"""


@pytest.fixture(scope="session")
def upgrade_deb(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree as a later version (VERSION+upgradetest1), to test an upgrade."""
    workdir = tmp_path_factory.mktemp("upgrade")
    tree = copy_tree(workdir / "tree")
    init = tree / "litelb/__init__.py"
    text = init.read_text()
    version = re.search(r'__version__ = "([^"]+)"', text).group(1)  # type: ignore[union-attr]
    init.write_text(text.replace(f'"{version}"', f'"{version}+upgradetest1"'))
    return build("deb", workdir / "out", tree)


def _wait_for(
    what: str, probe: Callable[[], bool], timeout: float, diag: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{diag()}")
        time.sleep(0.2)


def _apt(c: Container, verb: str, package: str) -> None:
    c.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", verb, "-y", package], timeout=180)


def _show(c: Container, prop: str) -> str:
    return c.run(["systemctl", "show", "-P", prop, "litelb.service"]).stdout.strip()


def _is_active(c: Container) -> str:
    return c.run(["systemctl", "is-active", "litelb.service"], check=False).stdout.strip()


def _route(c: Container) -> dict:
    out = c.run(["python3", "-c", GET_ROUTE], check=False).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {"unparsed": out}


def _start_fakes(c: Container, diag: Callable[[], str]) -> None:
    """NSX simulator and fake kube-apiserver as transient units: they outlive nsenter."""
    common = ["systemd-run", "--collect", f"--property=WorkingDirectory={TESTS_DIR}"]
    c.run(
        [
            *common,
            "--unit=nsxsim",
            "python3",
            "-m",
            "tests.nsxsim",
            "--listen",
            "127.0.0.1:8443",
            "--tier1",
            "cluster-router",
            "--username",
            "admin",
            "--password-file",
            "/etc/litelb/nsx-password",
        ]
    )
    c.run(
        [
            *common,
            "--unit=kubeapi",
            "python3",
            "-m",
            "tests.kubeapi",
            "--pki-dir",
            "/var/lib/litelb-test/pki",
            "--listen",
            "127.0.0.1",
            "--port",
            "6443",
            "--endpoints",
            "127.0.0.1",
            "--kubeconfig-out",
            "/etc/kubernetes/kubelet.conf",
        ]
    )
    for port in ("8443", "6443"):
        ok = c.run(["python3", "-c", WAIT_TCP, port, "30"], check=False).returncode == 0
        assert ok, f"nothing listens on 127.0.0.1:{port} in the container\n{diag()}"
    _wait_for(
        "the kubelet kubeconfig",
        lambda: c.path("/etc/kubernetes/kubelet.conf").exists(),
        15,
        diag,
    )


@dataclass(frozen=True)
class Machine:
    """The booted container with the package installed and the fakes running."""

    c: Container
    release: str

    def diag(self) -> str:
        parts = []
        for cmd in (
            ["systemctl", "status", "--no-pager", "-l", "litelb", "nsxsim", "kubeapi"],
            ["journalctl", "--no-pager", "-n", "80", "-u", "litelb", "-u", "nsxsim"],
            ["journalctl", "--no-pager", "-n", "20", "-u", "kubeapi"],
        ):
            r = self.c.run(cmd, check=False)
            parts.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
        return "\n".join(parts)


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def machine(request: pytest.FixtureRequest, deb: Path) -> Iterator[Machine]:
    try:
        ensure_host_tools()
    except RootfsError as e:
        pytest.skip(str(e))
    release = RELEASES[request.param]
    rootfs = ensure_rootfs(release)
    with booted(rootfs, keep=os.environ.get("LITELB_TEST_KEEP") == "1") as c:
        shutil.copy(deb, c.path("/root/" + deb.name))
        _apt(c, "install", "/root/" + deb.name)
        m = Machine(c, release.name)
        c.write("/etc/litelb/nsx-password", NSX_PASSWORD + "\n", mode=0o600)
        c.path(TESTS_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copytree(
            REPO / "tests",
            c.path(TESTS_DIR) / "tests",
            ignore=shutil.ignore_patterns("__pycache__", "packaging"),
        )
        # kubeadm's directory, where the fake API server writes the kubelet kubeconfig.
        c.path("/etc/kubernetes").mkdir(mode=0o755, exist_ok=True)
        _start_fakes(c, m.diag)
        yield m


def _configure(m: Machine, config: str = GOOD_CONFIG, dropin: str = "") -> None:
    """The operator's configuration and unit drop-in (none: the packaged unit as is)."""
    c = m.c
    c.write("/etc/litelb.toml", config, mode=0o600)
    c.run(["rm", "-rf", "/etc/systemd/system/litelb.service.d"])
    if dropin:
        c.write("/etc/systemd/system/litelb.service.d/test.conf", dropin)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "reset-failed", "litelb"], check=False)


def _route_hops(m: Machine) -> list[str]:
    return [h.get("ip_address") for h in _route(m.c).get("next_hops", [])]


def _running(m: Machine, dropin: str = "") -> None:
    """The daemon running on GOOD_CONFIG and in sync with NSX (a fresh start)."""
    _configure(m, dropin=dropin)
    m.c.run(["systemctl", "restart", "litelb"], timeout=60)
    _wait_for(
        "the route in the NSX simulator",
        lambda: _route_hops(m) == ["127.0.0.1"] and "in sync" in _show(m.c, "StatusText"),
        30,
        lambda: f"route: {_route(m.c)}\n{m.diag()}",
    )


def test_installed_files_and_modes(machine: Machine) -> None:
    c = machine.c
    version = c.run(["litelb", "version"]).stdout
    assert re.search(r"\d+\.\d+\.\d+", version), version
    assert c.run(["litelb", "--version"]).stdout.strip() == version.strip()
    assert c.run(["stat", "-c", "%a %U", "/etc/litelb.toml"]).stdout.split() == ["600", "root"]
    # The directory for the password file, root only.
    assert c.run(["stat", "-c", "%a %U", "/etc/litelb"]).stdout.split() == ["700", "root"]
    conffiles = c.run(["dpkg-query", "-W", "-f=${Conffiles}", "litelb"]).stdout
    assert "/etc/litelb.toml" in conffiles, conffiles
    rbac = c.path("/usr/share/litelb/rbac.yaml").read_text()
    assert c.run(["litelb", "rbac"]).stdout.strip() == rbac.strip()
    assert c.path("/usr/share/man/man8/litelb.8.gz").exists()


def test_installed_disabled_and_stopped(machine: Machine) -> None:
    # The operator edits the configuration first.
    enabled = machine.c.run(["systemctl", "is-enabled", "litelb"], check=False).stdout.strip()
    assert enabled == "disabled", enabled
    assert _is_active(machine.c) == "inactive"


def test_unit_verifies_and_is_hardened(machine: Machine) -> None:
    c = machine.c
    verify = c.run(["systemd-analyze", "verify", "--man=no", "litelb.service"], check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = c.run(["systemd-analyze", "security", "--no-pager", "litelb.service"], check=False)
    exposure = re.search(r"Overall exposure level for litelb.service: ([\d.]+)", security.stdout)
    assert exposure and float(exposure.group(1)) <= 3.0, security.stdout[-500:]
    print(f"{machine.release}: systemd-analyze security litelb.service: {exposure.group(1)}")


def test_autopkgtest(machine: Machine) -> None:
    """debian/tests, run by autopkgtest itself against the installed package."""
    c = machine.c
    src = "/root/litelb-src"
    shutil.copytree(REPO / "debian", c.path(src) / "debian")
    proc = c.run(
        ["autopkgtest", "--no-built-binaries", "--output-dir=/root/autopkgtest", src, "--", "null"],
        check=False,
        timeout=300,
    )
    summary_file = c.path("/root/autopkgtest/summary")
    summary = summary_file.read_text() if summary_file.exists() else ""
    print(f"{machine.release}: autopkgtest summary:\n{summary}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert re.search(r"^smoke\s+PASS", summary, re.M), summary


def test_check_reports_without_secrets(machine: Machine) -> None:
    _configure(machine)
    check = machine.c.run(["litelb", "check"], check=False, timeout=60)
    out = check.stdout + check.stderr
    print(f"{machine.release}: litelb check (exit {check.returncode}):\n{out}")
    assert check.returncode in (0, 1), out
    assert "Traceback" not in out
    lines = [ln for ln in check.stdout.splitlines() if ln.strip()]
    assert lines and all(ln.split()[0] in ("ok", "warn", "FAIL") for ln in lines), lines
    assert NSX_PASSWORD not in out


def test_enable_now_puts_up_route_and_vip(machine: Machine) -> None:
    c = machine.c
    _configure(machine)
    c.run(["systemctl", "stop", "litelb"])
    # Type=notify: this returns once the daemon sent READY=1.
    c.run(["systemctl", "enable", "--now", "litelb"], timeout=60)
    assert _is_active(c) == "active", machine.diag()
    assert c.run(["systemctl", "is-enabled", "litelb"]).stdout.strip() == "enabled"
    _wait_for(
        "the route in the NSX simulator",
        lambda: _route_hops(machine) == ["127.0.0.1"],
        20,
        lambda: f"route: {_route(c)}\n{machine.diag()}",
    )
    route = _route(c)
    assert route["network"] == f"{VIP}/32", route
    assert {"scope": "litelb/managed-by", "tag": "litelb"} in route.get("tags", []), route
    lo = c.run(["ip", "-o", "addr", "show", "dev", "lo"]).stdout
    assert f"inet {VIP}/32" in lo, lo


def test_journal_and_status(machine: Machine) -> None:
    c = machine.c
    _running(machine)
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_UNIT=litelb.service"])
    assert journal.stdout.strip(), "the daemon logged nothing to the journal"
    assert NSX_PASSWORD not in journal.stdout
    print(f"{machine.release}: STATUS={_show(c, 'StatusText')}\n{journal.stdout[-1500:]}")
    status = c.run(["litelb", "status", "--json"], check=False)
    assert status.returncode == 0, f"{status.stdout}{status.stderr}"
    assert json.loads(status.stdout)["leader"] is True, status.stdout
    assert NSX_PASSWORD not in status.stdout


def test_reload_keeps_the_process(machine: Machine) -> None:
    c = machine.c
    _running(machine)
    # ExecReload sends SIGHUP: the daemon re-reads its log level, keeps running.
    pid = _show(c, "MainPID")
    c.run(["systemctl", "reload", "litelb"], timeout=30)
    time.sleep(0.5)
    assert _is_active(c) == "active" and _show(c, "MainPID") == pid, machine.diag()


def test_watchdog_restarts_a_hung_daemon(machine: Machine) -> None:
    c = machine.c
    _running(machine, dropin=TEST_DROPIN)
    assert _show(c, "WatchdogUSec") == "3s", _show(c, "WatchdogUSec")
    hung = int(_show(c, "MainPID"))
    restarts = int(_show(c, "NRestarts"))
    c.run(["python3", "-c", f"import os, signal; os.kill({hung}, signal.SIGSTOP)"])
    _wait_for(
        "the watchdog to restart the hung daemon",
        lambda: int(_show(c, "MainPID") or 0) not in (0, hung) and _is_active(c) == "active",
        30,
        machine.diag,
    )
    assert int(_show(c, "NRestarts")) == restarts + 1
    log = c.run(["journalctl", "--no-pager", "-u", "litelb", "-o", "cat"]).stdout
    assert "Watchdog timeout" in log and "Failed with result 'watchdog'" in log, log[-1500:]


def test_password_as_systemd_credential(machine: Machine) -> None:
    """The unit's documented alternative to password_file."""
    c = machine.c
    _configure(
        machine,
        config=GOOD_CONFIG.replace(
            'password_file = "/etc/litelb/nsx-password"', 'password_file = ""'
        ),
        dropin="[Service]\nLoadCredential=nsx-password:/etc/litelb/nsx-password\n",
    )
    # A route left by an earlier test would be "in sync" before any login: start clean.
    c.run(["systemctl", "stop", "litelb"])
    c.run(["systemctl", "restart", "nsxsim"])
    c.run(["python3", "-c", WAIT_TCP, "8443", "30"])
    c.run(["systemctl", "start", "litelb"], timeout=60)
    _wait_for(
        "the daemon to log in with the credential",
        lambda: _route_hops(machine) == ["127.0.0.1"] and "in sync" in _show(c, "StatusText"),
        20,
        machine.diag,
    )


def test_bad_config_exits_78_without_restart_loop(machine: Machine) -> None:
    c = machine.c
    # RestartSec=1: three seconds would show a restart loop.
    _configure(machine, config=BAD_CONFIG, dropin=TEST_DROPIN)
    start = c.run(["systemctl", "restart", "litelb"], check=False, timeout=60)
    assert start.returncode != 0
    time.sleep(3)
    assert _is_active(c) == "failed", machine.diag()
    assert _show(c, "ExecMainStatus") == "78", machine.diag()
    assert int(_show(c, "NRestarts")) == 0, machine.diag()
    errors = c.run(["journalctl", "--no-pager", "-o", "cat", "-n", "20", "-u", "litelb"]).stdout
    assert "interfce" in errors and "Traceback" not in errors, errors
    print("bad config:", next(ln for ln in errors.splitlines() if "interfce" in ln))


def test_upgrade_keeps_the_edited_conffile(machine: Machine, upgrade_deb: Path) -> None:
    # An upgrade keeps the operator's configuration and restarts a running daemon
    # on the new code (dh_installsystemd --restart-after-upgrade).
    c = machine.c
    _running(machine)
    c.run(["systemctl", "enable", "litelb"])
    shutil.copy(upgrade_deb, c.path("/root/" + upgrade_deb.name))
    before = _show(c, "MainPID")
    config = c.path("/etc/litelb.toml").read_text()
    _apt(c, "install", "/root/" + upgrade_deb.name)
    assert "upgradetest1" in c.run(["litelb", "version"]).stdout
    assert c.path("/etc/litelb.toml").read_text() == config
    assert c.run(["stat", "-c", "%a", "/etc/litelb.toml"]).stdout.strip() == "600"
    assert c.run(["stat", "-c", "%a", "/etc/litelb"]).stdout.strip() == "700"
    assert _is_active(c) == "active" and _show(c, "MainPID") != before, machine.diag()
    assert c.run(["systemctl", "is-enabled", "litelb"]).stdout.strip() == "enabled"


def test_purge_stops_and_removes_everything(machine: Machine) -> None:
    c = machine.c
    # Purge a running, enabled daemon: removal must stop it, not leave it orphaned.
    _running(machine)
    c.run(["systemctl", "enable", "litelb"])
    files = [f for f in c.run(["dpkg", "-L", "litelb"]).stdout.splitlines() if f.strip()]
    _apt(c, "purge", "litelb")
    left = [f for f in files if f not in ("/.",) and c.path(f).is_file()]
    assert not left, f"left after purge: {left}"
    for gone in (
        "/etc/litelb.toml",
        "/lib/systemd/system/litelb.service",
        "/usr/share/litelb",
        "/usr/lib/python3/dist-packages/litelb",
        "/etc/systemd/system/multi-user.target.wants/litelb.service",
        "/var/lib/systemd/deb-systemd-helper-enabled/litelb.service.dsh-also",
    ):
        assert not os.path.lexists(c.path(gone)), gone
    # The operator's own secret is not the package's to delete.
    assert c.path("/etc/litelb/nsx-password").exists()
    ps = c.run(["python3", "-c", PS]).stdout
    assert "litelb run" not in ps, ps
    assert c.run(["dpkg-query", "-W", "litelb"], check=False).returncode != 0

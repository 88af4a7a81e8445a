"""The .deb as an operator uses it, under a real systemd (Debian 12 in systemd-nspawn).

    apt install ./litelb_*.deb; edit /etc/litelb.toml; litelb check;
    systemctl enable --now litelb; journalctl -u litelb; ... apt purge litelb

The NSX simulator and the fake kube-apiserver run inside the container as
transient services, so the daemon talks to them over the container's own loopback
(`--private-network`: nothing leaves it). Needs root; the first run builds the cached
Debian root with debootstrap (a few minutes), later runs reuse it.
Environment: LITELB_DEB=path skips the package build; LITELB_TEST_KEEP=1 keeps the
container's directory under /var/tmp for a post-mortem; LITELB_TEST_CACHE=dir moves
the cached root (default /var/cache/litelb-test). Phase timings go to
out/packaging-install-test.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import pytest

from tests.packaging.container import Container, booted, ensure_rootfs, missing_tools

pytestmark = [pytest.mark.packaging, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "out"
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


class Phases:
    """Wall-clock time of each phase, printed and saved to out/ for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.start = time.monotonic()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - t0, 2)

    def report(self) -> str:
        self.seconds["total"] = round(time.monotonic() - self.start, 2)
        OUT.mkdir(exist_ok=True)
        (OUT / "packaging-install-test.json").write_text(json.dumps(self.seconds, indent=2) + "\n")
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())


def _ensure_host_tools() -> None:
    """systemd-nspawn and debootstrap come from apt on a fresh Debian machine."""
    if not missing_tools():
        return
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "systemd-container", "debootstrap"],
        capture_output=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )


def _build_deb(workdir: Path, tree: Path = REPO) -> Path:
    prebuilt = os.environ.get("LITELB_DEB")
    if prebuilt and tree == REPO:
        return Path(prebuilt).resolve()
    outdir = workdir / "deb"
    # lintian belongs to `make deb`; here only the package itself matters.
    proc = subprocess.run(
        [str(tree / "scripts/build-deb"), str(outdir)],
        capture_output=True,
        text=True,
        env={**os.environ, "LINTIAN": "0"},
        timeout=900,
    )
    assert proc.returncode == 0, f"scripts/build-deb failed:\n{proc.stdout}\n{proc.stderr}"
    debs = sorted(outdir.glob("litelb_*_all.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def _build_upgrade_deb(workdir: Path) -> Path:
    """The same tree as a later version (VERSION+upgradetest1), to test an upgrade."""
    tree = workdir / "tree"
    shutil.copytree(
        REPO,
        tree,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "out", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    init = tree / "litelb/__init__.py"
    text = init.read_text()
    version = re.search(r'__version__ = "([^"]+)"', text).group(1)  # type: ignore[union-attr]
    init.write_text(text.replace(f'"{version}"', f'"{version}+upgradetest1"'))
    return _build_deb(workdir, tree)


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


def test_deb_install_under_systemd(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, overlay mounts, systemd-nspawn)")
    _ensure_host_tools()
    if shutil.which("systemd-nspawn") is None or shutil.which("debootstrap") is None:
        pytest.skip(
            "systemd-nspawn/debootstrap unavailable (apt-get install systemd-container debootstrap)"
        )

    phase = Phases()
    with phase("build-deb"):
        deb = _build_deb(tmp_path)
    with phase("rootfs"):
        rootfs = ensure_rootfs(log=tmp_path / "debootstrap.log")

    keep = os.environ.get("LITELB_TEST_KEEP") == "1"
    with ExitStack() as stack:
        with phase("boot"):
            c = stack.enter_context(booted(rootfs, keep=keep))

        def diag() -> str:
            parts = []
            for cmd in (
                ["systemctl", "status", "--no-pager", "-l", "litelb", "nsxsim", "kubeapi"],
                [
                    "journalctl",
                    "--no-pager",
                    "-n",
                    "80",
                    "-u",
                    "litelb",
                    "-u",
                    "nsxsim",
                    "-u",
                    "kubeapi",
                ],
            ):
                r = c.run(cmd, check=False)
                parts.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
            return "\n".join(parts)

        with phase("install"):
            shutil.copy(deb, c.path("/root/" + deb.name))
            _apt(c, "install", "/root/" + deb.name)
        files = [f for f in c.run(["dpkg", "-L", "litelb"]).stdout.splitlines() if f.strip()]
        with phase("installed-checks"):
            version = c.run(["litelb", "version"]).stdout
            assert re.search(r"\d+\.\d+\.\d+", version), version
            assert c.run(["litelb", "--version"]).stdout.strip() == version.strip()
            mode = c.run(["stat", "-c", "%a %U", "/etc/litelb.toml"]).stdout.split()
            assert mode == ["600", "root"], mode
            conffiles = c.run(["dpkg-query", "-W", "-f=${Conffiles}", "litelb"]).stdout
            assert "/etc/litelb.toml" in conffiles, conffiles
            rbac = c.path("/usr/share/litelb/rbac.yaml").read_text()
            assert c.run(["litelb", "rbac"]).stdout.strip() == rbac.strip()
            assert c.path("/usr/share/man/man8/litelb.8.gz").exists()
            # Installed, not enabled, not started: the operator edits the config first.
            enabled = c.run(["systemctl", "is-enabled", "litelb"], check=False).stdout.strip()
            assert enabled == "disabled", enabled
            assert _is_active(c) == "inactive"
            verify = c.run(["systemd-analyze", "verify", "--man=no", "litelb.service"], check=False)
            assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
            security = c.run(
                ["systemd-analyze", "security", "--no-pager", "litelb.service"], check=False
            )
            exposure = re.search(
                r"Overall exposure level for litelb.service: ([\d.]+)", security.stdout
            )
            assert exposure and float(exposure.group(1)) <= 3.0, security.stdout[-500:]
            print(f"systemd-analyze security litelb.service: {exposure.group(1)}")

        with phase("fakes"):
            c.write("/etc/litelb/nsx-password", NSX_PASSWORD + "\n", mode=0o600)
            c.path(TESTS_DIR).mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                REPO / "tests",
                c.path(TESTS_DIR) / "tests",
                ignore=shutil.ignore_patterns("__pycache__", "packaging"),
            )
            # kubeadm's directory, where the fake API server writes the kubelet kubeconfig.
            c.path("/etc/kubernetes").mkdir(mode=0o755, exist_ok=True)
            _start_fakes(c, diag)

        c.write("/etc/litelb.toml", GOOD_CONFIG, mode=0o600)
        with phase("check"):
            check = c.run(["litelb", "check"], check=False, timeout=60)
        print(f"litelb check (exit {check.returncode}):\n{check.stdout}{check.stderr}")
        assert check.returncode in (0, 1), check
        assert "Traceback" not in check.stdout + check.stderr
        lines = [ln for ln in check.stdout.splitlines() if ln.strip()]
        assert lines and all(ln.split()[0] in ("ok", "warn", "FAIL") for ln in lines), lines
        assert NSX_PASSWORD not in check.stdout + check.stderr

        with phase("enable-now"):
            # Type=notify: this returns once the daemon sent READY=1.
            c.run(["systemctl", "enable", "--now", "litelb"], timeout=60)
        assert _is_active(c) == "active", diag()
        with phase("route"):
            _wait_for(
                "the route in the NSX simulator",
                lambda: (
                    [h.get("ip_address") for h in _route(c).get("next_hops", [])] == ["127.0.0.1"]
                ),
                20,
                lambda: f"route: {_route(c)}\n{diag()}",
            )
        route = _route(c)
        assert route["network"] == f"{VIP}/32", route
        assert {"scope": "litelb/managed-by", "tag": "litelb"} in route.get("tags", []), route
        lo = c.run(["ip", "-o", "addr", "show", "dev", "lo"]).stdout
        assert f"inet {VIP}/32" in lo, lo
        status_line = _show(c, "StatusText")
        journal = c.run(
            ["journalctl", "--no-pager", "-o", "cat", "_SYSTEMD_UNIT=litelb.service"]
        ).stdout
        assert journal.strip(), "the daemon logged nothing to the journal"
        assert NSX_PASSWORD not in journal
        print(f"STATUS={status_line}\njournal:\n{journal[-1500:]}")

        status = c.run(["litelb", "status", "--json"], check=False)
        assert status.returncode == 0, f"{status.stdout}{status.stderr}"
        assert json.loads(status.stdout)["leader"] is True, status.stdout
        assert NSX_PASSWORD not in status.stdout

        with phase("reload"):
            # ExecReload sends SIGHUP: the daemon re-reads its log level, keeps running.
            pid = _show(c, "MainPID")
            c.run(["systemctl", "reload", "litelb"], timeout=30)
            time.sleep(0.5)
            assert _is_active(c) == "active" and _show(c, "MainPID") == pid, diag()

        with phase("watchdog"):
            c.write("/etc/systemd/system/litelb.service.d/test.conf", TEST_DROPIN)
            c.run(["systemctl", "daemon-reload"])
            c.run(["systemctl", "restart", "litelb"], timeout=60)
            assert _show(c, "WatchdogUSec") == "3s", _show(c, "WatchdogUSec")
            hung = int(_show(c, "MainPID"))
            restarts = int(_show(c, "NRestarts"))
            c.run(["python3", "-c", f"import os, signal; os.kill({hung}, signal.SIGSTOP)"])
            _wait_for(
                "the watchdog to restart the hung daemon",
                lambda: (
                    int(_show(c, "MainPID") or 0) not in (0, hung) and _is_active(c) == "active"
                ),
                30,
                diag,
            )
            assert int(_show(c, "NRestarts")) == restarts + 1
            log = c.run(["journalctl", "--no-pager", "-u", "litelb", "-o", "cat"]).stdout
            assert "Watchdog timeout" in log and "Failed with result 'watchdog'" in log, log[-1500:]

        with phase("upgrade"):
            # An upgrade keeps the operator's configuration and restarts a running
            # daemon on the new code (dh_installsystemd --restart-after-upgrade).
            upgrade = _build_upgrade_deb(tmp_path / "upgrade")
            shutil.copy(upgrade, c.path("/root/" + upgrade.name))
            assert _is_active(c) == "active", diag()
            before = _show(c, "MainPID")
            config = c.path("/etc/litelb.toml").read_text()
            _apt(c, "install", "/root/" + upgrade.name)
            assert "upgradetest1" in c.run(["litelb", "version"]).stdout
            assert c.path("/etc/litelb.toml").read_text() == config
            assert c.run(["stat", "-c", "%a", "/etc/litelb.toml"]).stdout.strip() == "600"
            assert _is_active(c) == "active" and _show(c, "MainPID") != before, diag()
            assert c.run(["systemctl", "is-enabled", "litelb"]).stdout.strip() == "enabled"
            files = [f for f in c.run(["dpkg", "-L", "litelb"]).stdout.splitlines() if f.strip()]

        with phase("credential"):
            # The unit's documented alternative: the password as a systemd credential.
            c.write(
                "/etc/systemd/system/litelb.service.d/credential.conf",
                "[Service]\nLoadCredential=nsx-password:/etc/litelb/nsx-password\n",
            )
            c.write(
                "/etc/litelb.toml",
                GOOD_CONFIG.replace(
                    'password_file = "/etc/litelb/nsx-password"', 'password_file = ""'
                ),
                mode=0o600,
            )
            c.run(["systemctl", "daemon-reload"])
            c.run(["systemctl", "restart", "litelb"], timeout=60)
            _wait_for(
                "the daemon to log in with the credential",
                lambda: "in sync" in _show(c, "StatusText"),
                15,
                diag,
            )
            c.run(["rm", "/etc/systemd/system/litelb.service.d/credential.conf"])
            c.run(["systemctl", "daemon-reload"])

        with phase("bad-config"):
            c.write("/etc/litelb.toml", BAD_CONFIG, mode=0o600)
            start = c.run(["systemctl", "restart", "litelb"], check=False, timeout=60)
            assert start.returncode != 0
            # RestartSec=1 here: three seconds would show a restart loop.
            time.sleep(3)
            assert _is_active(c) == "failed", diag()
            assert _show(c, "ExecMainStatus") == "78", diag()
            assert int(_show(c, "NRestarts")) == 0, diag()
            errors = c.run(
                ["journalctl", "--no-pager", "-o", "cat", "-n", "20", "-u", "litelb"]
            ).stdout
            assert "interfce" in errors and "Traceback" not in errors, errors
            print("bad config:", next(ln for ln in errors.splitlines() if "interfce" in ln))

        with phase("purge"):
            # Purge a running daemon: removal must stop it, not leave it orphaned.
            c.write("/etc/litelb.toml", GOOD_CONFIG, mode=0o600)
            c.run(["rm", "-rf", "/etc/systemd/system/litelb.service.d"])
            c.run(["systemctl", "daemon-reload"])
            c.run(["systemctl", "reset-failed", "litelb"])
            c.run(["systemctl", "start", "litelb"], timeout=60)
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

    print("install test phases:", phase.report())

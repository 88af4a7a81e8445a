"""The RPM from scripts/build-rpm, installed, upgraded and erased by rpm itself.

No RHEL or Fedora userland is reachable here, so the package goes into a root with
nothing of RPM's in it: `rpm --root ROOT -i --nodeps`, with the scriptlets run.
ROOT is a throw-away overlay of the cached Debian 12 root (tests/packaging/rootfs.py),
which gives the scriptlets a /bin/sh and a python3, and the wrapper the libraries
it imports. Fedora's /usr/lib/systemd/systemd-update-helper, which the expanded
systemd macros call, is a stub there that records its arguments.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.builds import build, copy_tree
from tests.packaging.rootfs import RELEASES, ROOT_ENV, ensure_rootfs

pytestmark = [pytest.mark.packaging]

HELPER = "usr/lib/systemd/systemd-update-helper"
HELPER_LOG = "var/log/systemd-update-helper.log"
EDITED = "# edited by the operator\n"


def _rpm(*args: str) -> str:
    return subprocess.run(
        ["rpm", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def next_rpm(rpm_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The next build (release 2), whose packaged configuration changed too."""
    workdir = tmp_path_factory.mktemp("rpm-next")
    tree = copy_tree(workdir / "tree")
    with open(tree / "etc/litelb.toml", "a") as f:
        f.write("# a new comment in release 2\n")
    return build("rpm", workdir / "out", tree, release="2")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """An overlay of the cached Debian 12 root with no RPM database in it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (overlay mount, rpm --root runs scriptlets in a chroot)")
    lower = ensure_rootfs(RELEASES["bookworm"])
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "root"
    for d in (upper, work, merged):
        d.mkdir()
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        helper = merged / HELPER
        helper.write_text(f'#!/bin/sh\necho "$@" >>/{HELPER_LOG}\n')
        helper.chmod(0o755)
        yield merged
    finally:
        if subprocess.run(["umount", str(merged)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(merged)], capture_output=True)


def _debian_quiet() -> list[str]:
    """Debian's rpm warns on every install unless told it is meant (a flag only it knows)."""
    probe = subprocess.run(["rpm", "--force-debian", "--version"], capture_output=True)
    return ["--force-debian"] if probe.returncode == 0 else []


def _rpm_in(root: Path, *args: str, warning: str = "") -> subprocess.CompletedProcess[str]:
    """rpm on the tree, scriptlets included; fails the test on any error or other warning."""
    proc = subprocess.run(
        ["rpm", *_debian_quiet(), "--root", str(root), "--dbpath", "/var/lib/rpm", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr.strip() == warning, (
        f"rpm {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def _helper_calls(root: Path) -> list[str]:
    log = root / HELPER_LOG
    return log.read_text().splitlines() if log.exists() else []


def _mode(path: Path) -> str:
    st = path.stat()
    return f"{st.st_mode & 0o7777:o} {st.st_uid}"


def test_requires_the_distribution_packages(rpm_file: Path) -> None:
    """The names Fedora's and EPEL's spec files give their python3 packages."""
    requires = _rpm("-qp", "--requires", str(rpm_file)).splitlines()
    for dep in (
        # Fedora's python-kubernetes carries Epoch 1.
        "python3-kubernetes >= 1:22.6",
        "python3-requests >= 2.25",
        "python3-pyroute2 >= 0.7",
        "python3-systemd >= 234",
        "python3-prometheus_client >= 0.9",
        # RHEL 9's Python 3.9 has no tomllib.
        "(python3-tomli if python3 < 3.11)",
    ):
        assert dep in requires, requires


def test_config_file_is_noreplace_and_private(rpm_file: Path) -> None:
    assert _rpm("-qp", "--configfiles", str(rpm_file)).split() == ["/etc/litelb.toml"]
    flags = _rpm(
        "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]", str(rpm_file)
    )
    line = next(ln for ln in flags.splitlines() if ln.startswith("/etc/litelb.toml "))
    _, fflags, perms = line.split()
    assert "c" in fflags and "n" in fflags, line  # %config(noreplace)
    assert perms == "-rw-------", line


def test_install_into_an_empty_root(rpm_file: Path, root: Path) -> None:
    _rpm_in(root, "-i", "--nodeps", str(rpm_file))
    assert _rpm_in(root, "-q", "litelb").stdout.strip() == rpm_file.name.removesuffix(".rpm")
    unit = (root / "usr/lib/systemd/system/litelb.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[0] == "/usr/bin/litelb", exec_start
    assert _mode(root / "usr/bin/litelb") == "755 0"
    assert _mode(root / "etc/litelb.toml") == "600 0"
    assert _mode(root / "etc/litelb") == "700 0"
    assert (root / "usr/share/litelb/rbac.yaml").is_file()
    assert (root / "usr/share/man/man8/litelb.8.gz").is_file()
    # %post compiled the bytecode for this machine's python3.
    assert list((root / "usr/lib/litelb/litelb/__pycache__").glob("cli.*.pyc"))
    assert _helper_calls(root) == ["install-system-units litelb.service"]
    # The wrapper finds the package in /usr/lib/litelb.
    version = subprocess.run(
        ["chroot", str(root), "/usr/bin/litelb", "version"],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        timeout=60,
    )
    assert version.returncode == 0 and version.stdout.startswith("litelb "), version


def test_upgrade_keeps_the_edited_config(rpm_file: Path, next_rpm: Path, root: Path) -> None:
    _rpm_in(root, "-i", "--nodeps", str(rpm_file))
    config = root / "etc/litelb.toml"
    edited = config.read_text() + EDITED
    config.write_text(edited)
    # The package's new default lands next to it for the operator to merge.
    rpmnew = "warning: /etc/litelb.toml created as /etc/litelb.toml.rpmnew"
    _rpm_in(root, "-U", "--nodeps", str(next_rpm), warning=rpmnew)
    assert _rpm_in(root, "-q", "litelb").stdout.strip() == next_rpm.name.removesuffix(".rpm")
    assert config.read_text() == edited
    assert _mode(config) == "600 0"
    assert "release 2" in (root / "etc/litelb.toml.rpmnew").read_text()
    assert _helper_calls(root) == [
        "install-system-units litelb.service",
        "mark-restart-system-units litelb.service",
    ]


def test_erase_removes_what_it_installed(rpm_file: Path, root: Path) -> None:
    _rpm_in(root, "-i", "--nodeps", str(rpm_file))
    files = _rpm_in(root, "-ql", "litelb").stdout.split()
    (root / "etc/litelb/nsx-password").write_text("secret\n")
    _rpm_in(root, "-e", "--nodeps", "litelb")
    left = [f for f in files if f != "/etc/litelb" and os.path.lexists(root / f.lstrip("/"))]
    assert not left, f"left after rpm -e: {left}"
    # Also the bytecode %post compiled, which the package does not list.
    assert not (root / "usr/lib/litelb").exists()
    # The operator's own secret is not the package's to delete.
    assert (root / "etc/litelb/nsx-password").read_text() == "secret\n"
    assert _helper_calls(root) == [
        "install-system-units litelb.service",
        "remove-system-units litelb.service",
    ]

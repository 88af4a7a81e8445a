"""The RPM from scripts/build-rpm, checked with rpm itself (no RHEL or Fedora here).

What a dnf install on RHEL 9 or Fedora relies on: the dependencies name the
distributions' python3 packages, /etc/litelb.toml is a noreplace config file of
mode 0600, the scriptlets are the expanded systemd macros, and the files land
where the unit and the wrapper expect them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.packaging]

REPO = Path(__file__).resolve().parents[2]


def _rpm(*args: str) -> str:
    return subprocess.run(
        ["rpm", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


@pytest.fixture(scope="module")
def rpm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("rpm") is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rpm"],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=600,
        )
    if shutil.which("rpm") is None:
        pytest.skip("rpm is not installed (apt-get install rpm)")
    outdir = tmp_path_factory.mktemp("rpm")
    proc = subprocess.run(
        [str(REPO / "scripts/build-rpm"), str(outdir)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"scripts/build-rpm failed:\n{proc.stdout}\n{proc.stderr}"
    rpms = sorted(outdir.glob("litelb-*.noarch.rpm"))
    assert len(rpms) == 1, rpms
    return rpms[0]


def test_requires_the_distribution_packages(rpm_file: Path) -> None:
    requires = _rpm("-qp", "--requires", str(rpm_file)).splitlines()
    for name in (
        "python3-kubernetes",
        "python3-requests",
        "python3-pyroute2",
        "python3-systemd",
        "python3-prometheus_client",
    ):
        assert name in requires, requires
    # RHEL 9's Python 3.9 has no tomllib.
    assert "(python3-tomli if python3 < 3.11)" in requires, requires


def test_config_file_is_noreplace_and_private(rpm_file: Path) -> None:
    assert _rpm("-qp", "--configfiles", str(rpm_file)).split() == ["/etc/litelb.toml"]
    flags = _rpm(
        "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]", str(rpm_file)
    )
    line = next(ln for ln in flags.splitlines() if ln.startswith("/etc/litelb.toml "))
    _, fflags, perms = line.split()
    assert "c" in fflags and "n" in fflags, line  # %config(noreplace)
    assert perms == "-rw-------", line


def test_scriptlets_are_the_systemd_macros(rpm_file: Path) -> None:
    scripts = _rpm("-qp", "--scripts", str(rpm_file))
    for action in ("install-system-units", "remove-system-units", "mark-restart-system-units"):
        assert f"systemd-update-helper {action} litelb.service" in scripts, scripts
    # Installed disabled: the preset decides (and leaves an unknown service off).
    assert "systemctl enable" not in scripts


def test_files_land_where_the_unit_expects(rpm_file: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(
        ["rpm", "-i", "--root", str(root), "--nodeps", "--noscripts", str(rpm_file)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    unit = (root / "usr/lib/systemd/system/litelb.service").read_text()
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    binary = exec_start.split("=", 1)[1].split()[0]
    assert os.access(root / binary.lstrip("/"), os.X_OK), binary
    wrapper = (root / "usr/bin/litelb").read_text()
    assert wrapper.startswith("#!/usr/bin/python3")
    assert '"/usr/lib/litelb"' in wrapper
    assert (root / "usr/lib/litelb/litelb/cli.py").is_file()
    assert (root / "usr/share/litelb/rbac.yaml").is_file()
    assert (root / "etc/litelb.toml").stat().st_mode & 0o777 == 0o600

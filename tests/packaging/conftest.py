"""The packages under test, built once per session by the project's own scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.builds import build


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb of this tree (LITELB_DEB=path: a prebuilt one)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (build dependencies, debootstrap, systemd-nspawn)")
    prebuilt = os.environ.get("LITELB_DEB")
    if prebuilt:
        return Path(prebuilt).resolve()
    return build("deb", tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="session")
def rpm_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .rpm of this tree (release 1)."""
    if shutil.which("rpm") is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "rpm"],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=600,
        )
    if shutil.which("rpm") is None:
        pytest.skip("rpm is not installed (apt-get install rpm)")
    return build("rpm", tmp_path_factory.mktemp("rpm"))

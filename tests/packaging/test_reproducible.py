"""Two builds of one commit give byte-identical packages.

Both build scripts date everything with SOURCE_DATE_EPOCH (the last commit's time),
so anyone can rebuild a released package and compare it with the published one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.packaging.builds import build

pytestmark = [pytest.mark.packaging]


def _listing(kind: str, package: Path) -> list[str]:
    """What differs is easier to see in the file list (modes, sizes, times)."""
    cmd = ["dpkg-deb", "-c"] if kind == "deb" else ["rpm", "-qlvp"]
    return subprocess.run(
        [*cmd, str(package)], capture_output=True, text=True, timeout=60
    ).stdout.splitlines()


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_two_builds_are_byte_identical(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "deb" and os.environ.get("LITELB_DEB"):
        pytest.skip("LITELB_DEB names a package built elsewhere")
    first = request.getfixturevalue("deb" if kind == "deb" else "rpm_file")
    second = build(kind, tmp_path)
    assert first.name == second.name
    if first.read_bytes() != second.read_bytes():
        a, b = _listing(kind, first), _listing(kind, second)
        diff = [f"- {x}" for x in a if x not in b] + [f"+ {x}" for x in b if x not in a]
        pytest.fail(f"{first.name} differs between two builds:\n" + "\n".join(diff[:40]))

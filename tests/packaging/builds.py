"""Building the packages with the project's own scripts, as `make deb` and `make rpm` do."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def copy_tree(dst: Path) -> Path:
    """The source tree without git, venvs and build leftovers, to build a variant of."""
    shutil.copytree(
        REPO,
        dst,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv*", "out", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    return dst


def build(kind: str, outdir: Path, tree: Path = REPO, release: str = "1") -> Path:
    """scripts/build-deb or scripts/build-rpm of `tree` into `outdir`; the one file it made."""
    # lintian belongs to `make deb`; here only the package itself matters.
    env = {**os.environ, "LINTIAN": "0", "RELEASE": release}
    proc = subprocess.run(
        [str(tree / f"scripts/build-{kind}"), str(outdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, f"scripts/build-{kind} failed:\n{proc.stdout}\n{proc.stderr}"
    pattern = "litelb_*_all.deb" if kind == "deb" else f"litelb-*-{release}.noarch.rpm"
    files = sorted(outdir.glob(pattern))
    assert len(files) == 1, files
    return files[0]

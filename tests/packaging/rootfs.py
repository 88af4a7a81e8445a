"""Cached Debian root file systems (debootstrap) for the package and Python 3.9 tests.

One root per release, built once under /var/cache/litelb-test/ and reused; a root
whose package list changed is extended with apt or rebuilt. Callers never write
into a cached root: the install test boots an overlay of it, the Python 3.9 run
keeps its virtualenv next to it.

    python3 -m tests.packaging.rootfs NAME...   # builds them (in parallel) if needed,
                                                # prints their paths
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CACHE_DIR = Path(os.environ.get("LITELB_TEST_CACHE", "/var/cache/litelb-test"))
STAMP = ".litelb-rootfs"
DEFAULT_MIRROR = "http://deb.debian.org/debian/"
# The root's PATH is not inherited from the host's environment (which may name a
# venv that does not exist inside).
ROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}


class RootfsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Release:
    """A Debian root: which suite, which packages, and an import that proves it whole."""

    name: str
    suite: str
    packages: tuple[str, ...]
    probe: str


# Everything litelb's .deb depends on is put into the root, so installing the package
# needs no network and no `apt-get update` inside the container.
# python3-cryptography: tests/pki.py, which the fake kube-apiserver uses.
# python3-cffi-backend: debootstrap does not resolve virtual packages, and
# python3-cryptography depends on python3-cffi-backend-api-{min,max}, which it provides.
# procps: /bin/kill, which the unit's ExecReload names; the .deb depends on it.
# autopkgtest: runs debian/tests against the installed package; dpkg-dev, because it
# reads the tests from a source tree.
_INSTALL_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "iproute2",
    "python3-kubernetes",
    "python3-requests",
    "python3-pyroute2",
    "python3-systemd",
    "python3-prometheus-client",
    "python3-cryptography",
    "python3-cffi-backend",
    "procps",
    "autopkgtest",
    "dpkg-dev",
)
_INSTALL_PROBE = (
    "import kubernetes, requests, pyroute2, systemd.daemon, prometheus_client, cryptography"
)

RELEASES = {
    r.name: r
    for r in (
        Release("bookworm", "bookworm", _INSTALL_PACKAGES, _INSTALL_PROBE),
        Release("trixie", "trixie", _INSTALL_PACKAGES, _INSTALL_PROBE),
        # Debian 11's Python 3.9, the stand-in for RHEL 9's interpreter: the suite runs
        # there in a virtualenv of current PyPI releases. A C compiler and
        # libsystemd-dev because systemd-python has no wheels.
        Release(
            "py39",
            "bullseye",
            (
                "python3",
                "python3-venv",
                "python3-dev",
                "gcc",
                "libc6-dev",
                "libsystemd-dev",
                "pkg-config",
                "iproute2",
                "openssl",
                "procps",
                "ca-certificates",
            ),
            "import venv, ensurepip, sys; assert sys.version_info[:2] == (3, 9)",
        ),
    )
}


def debian_mirror() -> str:
    """The Debian mirror apt on this host already uses (CI may sit behind its own)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(REPO_URI)", "Identifier: Packages"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
        # Security and updates repositories have another layout; any suite of the
        # main archive serves every release.
        for uri in out:
            if "security" not in uri and "debian" in uri:
                return uri
    return DEFAULT_MIRROR


def ensure_host_tools() -> None:
    """debootstrap (and systemd-nspawn for the install test) come from apt; what apt
    said is in the error when they are still missing."""
    wanted = ("systemd-nspawn", "debootstrap")
    if all(shutil.which(t) for t in wanted):
        return
    said = "apt-get needs root"
    if os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-qq", "systemd-container", "debootstrap"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        said = (done.stderr or done.stdout).strip()[-500:]
    missing = [t for t in wanted if shutil.which(t) is None]
    if missing:
        raise RootfsError(f"{' and '.join(missing)} not installed ({said})")


def _key(release: Release) -> str:
    return hashlib.sha256(f"{release.suite} {' '.join(release.packages)}".encode()).hexdigest()[:16]


def rootfs_ok(root: Path, release: Release) -> bool:
    stamp = root / STAMP
    if not stamp.is_file() or stamp.read_text().strip() != _key(release):
        return False
    probe = subprocess.run(
        ["chroot", str(root), "/usr/bin/python3", "-c", release.probe],
        capture_output=True,
        env=ROOT_ENV,
        timeout=60,
    )
    return probe.returncode == 0


def _extend(root: Path, release: Release, log: Path) -> bool:
    """Install what a changed package list added into an intact cached root.

    Cheaper than a new debootstrap (minutes); any failure means a full rebuild.
    """
    if not (root / "usr/bin/apt-get").exists() or not (root / "usr/bin/python3").exists():
        return False
    env = {**ROOT_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    # apt inside a chroot resolves names through the host's resolver configuration.
    with contextlib.suppress(OSError):
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    with open(log, "ab") as out:
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *release.packages],
            ["apt-get", "clean"],
        ):
            proc = subprocess.run(
                ["chroot", str(root), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=900,
            )
            if proc.returncode != 0:
                return False
    (root / STAMP).write_text(_key(release) + "\n")
    return rootfs_ok(root, release)


def ensure_rootfs(release: Release, log: Optional[Path] = None) -> Path:
    """The cached root of `release`, built with debootstrap when missing or broken."""
    ensure_host_tools()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log = log or CACHE_DIR / f"{release.name}.log"
    root = CACHE_DIR / f"{release.name}-rootfs"
    # A lock per root: two runs on one machine must not debootstrap into each other,
    # but different releases may be built at the same time.
    with open(CACHE_DIR / f".{release.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and rootfs_ok(root, release):
            return root
        if root.is_dir() and _extend(root, release, log):
            return root
        tmp = CACHE_DIR / f"{release.name}-rootfs.tmp"
        for stale in (root, tmp):
            if stale.exists():
                shutil.rmtree(stale)
        cmd = [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(release.packages),
            release.suite,
            str(tmp),
            debian_mirror(),
        ]
        with open(log, "ab") as out:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        if proc.returncode != 0:
            raise RootfsError(f"debootstrap {release.suite} failed ({proc.returncode}); see {log}")
        # The downloaded .debs are a second copy of the root's size: not worth caching.
        for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        (tmp / STAMP).write_text(_key(release) + "\n")
        tmp.rename(root)
        if not rootfs_ok(root, release):
            raise RootfsError(f"freshly built {root} fails its probe: {release.probe}")
        return root


def main(argv: list[str]) -> int:
    if not argv or any(name not in RELEASES for name in argv):
        names = " ".join(RELEASES)
        print(f"usage: python3 -m tests.packaging.rootfs NAME... (of {names})", file=sys.stderr)
        return 2
    # Once, before the threads: side by side, all but one apt-get would find dpkg
    # locked and fail.
    try:
        ensure_host_tools()
    except RootfsError as e:
        print(f"rootfs: {e}", file=sys.stderr)
        return 1
    # debootstrap mostly waits for downloads and dpkg: the roots build side by side.
    with ThreadPoolExecutor(len(argv)) as pool:
        futures = [pool.submit(ensure_rootfs, RELEASES[name]) for name in argv]
    failed = 0
    for future in futures:
        try:
            print(future.result())
        except RootfsError as e:
            print(f"rootfs: {e}", file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

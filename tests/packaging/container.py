"""A throw-away Debian machine booted by a real systemd, for the package install test.

The package's promises (the unit starts, `Type=notify` and the watchdog work under
the hardening, `apt purge` cleans up) only show under a real systemd as PID 1, so
the test boots one with `systemd-nspawn` instead of mocking systemctl:

- a minimal Debian root per release (tests/packaging/rootfs.py: debootstrap, with
  litelb's runtime dependencies so the .deb installs offline) is cached and reused;
- every booted container gets its own copy-on-write overlay of it, so the cache
  stays pristine;
- the container is booted with `--keep-unit --register=no` (there is no host systemd
  or machined here) and driven with `nsenter -t <its PID 1> -a ...`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Optional

from tests.packaging.rootfs import ROOT_ENV


class ContainerError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the forked child: SIGTERM (an orderly poweroff, for nspawn) when the parent dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                kids += [
                    int(k) for k in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return kids


def _is_container_init(pid: int) -> bool:
    """PID 1 of its own PID namespace, already running systemd (not nspawn's stub)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    return len(nspid) >= 2 and nspid[-1] == "1" and comm == "systemd"


class Container:
    """One booted container on an overlay of the cached root; use as a context manager."""

    def __init__(self, lower: Path, workdir: Path) -> None:
        self.lower = lower
        self.workdir = workdir
        self.root = workdir / "root"
        self.log = workdir / "console.log"
        self.nspawn: Optional[subprocess.Popen[bytes]] = None
        self.pid1 = 0
        self._mounted = False

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, boot_timeout: float = 60) -> None:
        upper, work = self.workdir / "upper", self.workdir / "work"
        for d in (upper, work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        opts = f"lowerdir={self.lower},upperdir={upper},workdir={work}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(self.root)], check=True
        )
        self._mounted = True
        sweep_stale(keep=self.workdir)
        with open(self.log, "wb") as out:
            self.nspawn = subprocess.Popen(
                [
                    "systemd-nspawn",
                    "-D",
                    str(self.root),
                    "--boot",
                    "--register=no",
                    "--keep-unit",
                    "--private-network",
                    "--console=pipe",
                    f"--machine=litelb-test-{os.getpid()}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C of pytest must not reach the container.
                start_new_session=True,
                # ...but if the test process dies, the container is powered off.
                preexec_fn=_die_with_parent,
            )
        (self.workdir / "pids").write_text(f"{os.getpid()} {self.nspawn.pid}\n")
        deadline = time.monotonic() + boot_timeout
        while not self.pid1:
            if self.nspawn.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited {self.nspawn.returncode}: {self.console()}"
                )
            if time.monotonic() > deadline:
                raise ContainerError(f"no systemd in the container: {self.console()}")
            self.pid1 = next((p for p in _children(self.nspawn.pid) if _is_container_init(p)), 0)
            time.sleep(0.05)
        # Right after exec, PID 1 has no bus socket yet ("Failed to connect to bus"):
        # ask again until it answers, then wait for the boot to finish.
        while True:
            proc = self.run(
                ["systemctl", "is-system-running", "--wait"],
                check=False,
                timeout=max(1.0, deadline - time.monotonic()),
            )
            state = proc.stdout.strip()
            if state or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        # "degraded" is fine: units irrelevant here (e.g. ones needing a real /dev) may fail.
        if state not in ("running", "degraded"):
            raise ContainerError(
                f"container did not boot ({state!r}, {proc.stderr.strip()!r}): {self.console()}"
            )

    def stop(self) -> None:
        if self.nspawn is not None and self.nspawn.poll() is None:
            # SIGTERM asks nspawn for an orderly poweroff of the container.
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=15)
            except subprocess.TimeoutExpired:
                # SIGKILL to a PID namespace's init kills everything inside it.
                if self.pid1:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid1, signal.SIGKILL)
                self.nspawn.kill()
                self.nspawn.wait(timeout=15)
        if self._mounted:
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)
            self._mounted = False

    def console(self, tail: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-tail:]
        return ""

    # -- driving it ------------------------------------------------------------------

    def run(
        self,
        args: Sequence[str],
        check: bool = True,
        timeout: float = 60,
        input: Optional[str] = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside every namespace of the container (as its root)."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=ROOT_ENV,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise ContainerError(
                f"{' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
            )
        return proc

    def sh(self, script: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-ec", script], **kw)  # type: ignore[arg-type]

    def path(self, inside: str) -> Path:
        """Host path of a file inside the container (through the overlay)."""
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)


def sweep_stale(keep: Optional[Path] = None) -> None:
    """Remove what an earlier run left when it was killed before its cleanup ran.

    A container whose owning test process is gone (e.g. pytest got SIGKILL) is
    killed and its overlay unmounted; one whose owner lives belongs to a concurrent
    run and is left alone.
    """
    for workdir in Path("/var/tmp").glob("litelb-install-*"):
        if workdir == keep or not workdir.is_dir():
            continue
        try:
            owner, nspawn = (int(w) for w in (workdir / "pids").read_text().split())
        except (OSError, ValueError):
            owner = nspawn = 0
        if owner and Path(f"/proc/{owner}").exists():
            continue
        with contextlib.suppress(OSError, ProcessLookupError):
            if nspawn and Path(f"/proc/{nspawn}/comm").read_text().strip() == "systemd-nspawn":
                os.kill(nspawn, signal.SIGKILL)
        root = workdir / "root"
        # Its container's init, if still running, is a child of nobody we know: find
        # it by its root directory.
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError, ProcessLookupError):
                    if os.readlink(proc / "root") == str(root) and _is_container_init(
                        int(proc.name)
                    ):
                        os.kill(int(proc.name), signal.SIGKILL)
        if os.path.ismount(root):
            subprocess.run(["umount", "-l", str(root)], capture_output=True)
        if not os.path.ismount(root):
            shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def booted(lower: Path, keep: bool = False) -> Iterator[Container]:
    """A booted container in a fresh /var/tmp/litelb-install-* directory, removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="litelb-install-", dir="/var/tmp"))
    try:
        with Container(lower, workdir) as c:
            yield c
    finally:
        # Never rmtree through a still-mounted overlay (it would only write whiteouts,
        # but a lazily detached mount is gone from the path and safe to remove).
        if not keep and not os.path.ismount(workdir / "root"):
            shutil.rmtree(workdir, ignore_errors=True)

"""The data-plane lab: real packets from a client through a kernel ECMP route to three nodes.

`DataPlaneLab` builds the topology (bench.lab.topology), runs the NSX simulator on the
Tier-1's management address with the realizer turning its route into a kernel route,
one API server process per node (bench.lab.apiserver), the VIP system under test per
node (bench.lab.systems) and the client load (bench.lab.client). Each fault is one
method call. Use it as a context manager: everything it made is removed on exit,
also after an exception, Ctrl-C or SIGTERM. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from bench.lab import topology
from bench.lab.netns import Cleanup, interrupts_raise
from bench.lab.realizer import Realizer
from bench.lab.systems import System, make_system
from bench.lab.topology import API_PORT, NODES, NSX_MANAGER, Topology
from tests.nsxsim import NsxSimulator
from tests.pki import Pki
from tests.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
TIER1 = "cluster-router"
PASSWORD = "lab-Passw0rd!"


def can_run() -> Optional[str]:
    """None if the lab can run here, else why not."""
    if os.geteuid() != 0:
        return "the lab creates network namespaces and needs root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is missing"
    return None


@dataclass(frozen=True)
class Options:
    system: str = "litelb"  # litelb | litelb-noprobe | keepalived
    realize_delay: float = 0.0
    hashing: str = "hash-threshold"
    shutdown_delay: float = 5.0
    lease_ttl: float = 15.0
    lease_interval: float = 10.0


class Process:
    """A process the lab started, stopped by its PID only."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> Optional[int]:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class DataPlaneLab:
    def __init__(self, options: Options = Options(), *, workdir: Optional[Path] = None) -> None:
        self.options = options
        self.cleanup = Cleanup()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="litelb-lab-"))
        if self._own_workdir:
            self.cleanup.add("work directory", lambda: shutil.rmtree(self.workdir, True))
        self.processes: dict[tuple[str, str], Process] = {}
        self.net: Optional[Topology] = None
        self.nsx: Optional[NsxSimulator] = None
        self.realizer: Optional[Realizer] = None
        self.system: Optional[System] = None
        self.state_file = self.workdir / "etcd.json"

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> DataPlaneLab:
        self._interrupts = interrupts_raise()
        self._interrupts.__enter__()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.net = topology.build(self.cleanup)
        self.pki = Pki(
            self.workdir / "pki",
            server_ips=(*NODES, topology.VIP, topology.SEGMENT_VIP, NSX_MANAGER, "127.0.0.1"),
        )
        self.password_file = self.workdir / "nsx-password"
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)
        self.system = make_system(self.options.system, self)
        self.nsx = self.net.tier1.call(
            lambda: NsxSimulator(
                NSX_MANAGER,
                0,
                username="admin",
                password=PASSWORD,
                tls_cert=str(self.pki.server_cert),
                tls_key=str(self.pki.server_key),
            ).start()
        )
        self.cleanup.add("NSX simulator", self.nsx.stop)
        self.nsx.add_tier1(TIER1)
        if self.system.routed:
            self.realizer = Realizer(
                self.net.tier1,
                f"{self.system.vip}/32",
                self.nsx_hops,
                nodes=NODES,
                delay=self.options.realize_delay,
                hashing=self.options.hashing,
            )
            self.cleanup.add("realizer", self.realizer.stop)
            self.nsx.on_route_change(self.realizer.changed)
            self.realizer.start()
        for node in NODES:
            self.start_apiserver(node)
        for node in NODES:
            self.wait_for(lambda n=node: self.listening(n), 30, f"the API server on {node}")
            self.system.start(node)
        self.wait_for(self.system.converged, 60, "the VIP system to converge")
        self.wait_for(lambda: self.probe_vip(), 20, "the VIP to answer")

    def close(self) -> None:
        problems = self.cleanup.run()
        if hasattr(self, "_interrupts"):
            self._interrupts.__exit__(None, None, None)
            del self._interrupts
        for problem in problems:
            print(f"lab cleanup: {problem}", file=sys.stderr)

    # -- processes ----------------------------------------------------------------

    def spawn(self, node: str, name: str, argv: list[str], *, ns: Any = None) -> Process:
        """Start `argv` in `node`'s namespace (or `ns`); its output goes to a log file."""
        namespace = ns or self.net.nodes[node]  # type: ignore[union-attr]
        log = self.workdir / f"{name}-{node}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS"):
            env.pop(key, None)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", namespace.name, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=str(REPO),
            )
        process = Process(name, popen, log)
        previous = self.processes.get((node, name))
        if previous is not None:
            previous.kill()
        self.processes[(node, name)] = process
        self.cleanup.add(f"{name} on {node}", process.kill)
        return process

    def start_apiserver(self, node: str) -> Process:
        return self.spawn(
            node,
            "apiserver",
            [
                sys.executable, "-m", "bench.lab.apiserver",
                "--node", node,
                "--tls-dir", str(self.pki.directory),
                "--state", str(self.state_file),
                "--port", str(API_PORT),
                "--shutdown-delay", str(self.options.shutdown_delay),
                "--lease-ttl", str(self.options.lease_ttl),
                "--lease-interval", str(self.options.lease_interval),
            ],
        )  # fmt: skip

    def process(self, node: str, name: str) -> Process:
        return self.processes[(node, name)]

    # -- what the world looks like ------------------------------------------------

    def nsx_route(self) -> Optional[dict]:
        assert self.nsx is not None and self.system is not None
        return self.nsx.route(TIER1, self.system.route_id)

    def nsx_hops(self) -> Optional[list[str]]:
        route = self.nsx_route()
        return None if route is None else sorted(h["ip_address"] for h in route["next_hops"])

    def leader(self) -> Optional[str]:
        return self.system.leader() if self.system else None

    def kernel_route(self) -> str:
        assert self.net is not None and self.system is not None
        return self.net.tier1.ip("route", "show", f"{self.system.vip}/32").stdout.strip()

    def listening(self, node: str) -> bool:
        def connect() -> bool:
            try:
                socket.create_connection((node, API_PORT), timeout=1).close()
                return True
            except OSError:
                return False

        return self.net.nodes[node].call(connect)  # type: ignore[union-attr]

    def probe_vip(self) -> bool:
        """One request through the VIP from the client namespace."""
        assert self.net is not None and self.system is not None

        def get() -> bool:
            ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            url = f"https://{self.system.vip}:{self.system.client_port}/version"  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    return r.status == 200
            except OSError:
                return False

        return self.net.client.call(get)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        return wait_for(predicate, timeout, what, interval=0.05, context=self.died)

    def died(self) -> str:
        """Processes that exited unasked, with their last log lines (for error messages)."""
        text = ""
        for (node, name), process in self.processes.items():
            if not process.alive() and process.popen.returncode not in (0, -9):
                tail = process.log.read_text(errors="replace")[-800:]
                text += f"\n--- {name} on {node} exited {process.popen.returncode}:\n{tail}"
        return text

    # -- client -------------------------------------------------------------------

    def start_client(self, mode: str = "new", duration: float = 600.0, **flags: Any) -> Path:
        assert self.net is not None and self.system is not None
        out = self.workdir / f"client-{mode}-{time.monotonic_ns()}.jsonl"
        argv = [
            sys.executable, "-m", "bench.lab.client",
            "--host", self.system.vip,
            "--port", str(self.system.client_port),
            "--ca", str(self.pki.ca_cert),
            "--mode", mode,
            "--duration", str(duration),
            "--out", str(out),
        ]  # fmt: skip
        for key, value in flags.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        self.spawn("client", f"client-{mode}", argv, ns=self.net.client)
        return out

    def stop_client(self, mode: str = "new") -> None:
        process = self.processes.get(("client", f"client-{mode}"))
        if process is not None:
            process.stop(10)

    # -- faults: each one call ----------------------------------------------------

    def hang(self, node: str) -> None:
        """The API server freezes: the kernel still accepts TCP, nothing answers."""
        self.process(node, "apiserver").signal(signal.SIGSTOP)

    def unhang(self, node: str) -> None:
        self.process(node, "apiserver").signal(signal.SIGCONT)

    def crash(self, node: str) -> None:
        """The API server process dies: connections are refused or reset."""
        self.process(node, "apiserver").kill()

    def graceful_restart(self, node: str) -> float:
        """SIGTERM (kube-apiserver's graceful shutdown), then start it again; the seconds taken."""
        start = time.monotonic()
        self.process(node, "apiserver").stop(self.options.shutdown_delay + 15)
        self.start_apiserver(node)
        return time.monotonic() - start

    def vm_dies(self, node: str) -> None:
        """Its segment port goes down and every process in it dies, as a powered-off VM."""
        assert self.net is not None
        self.net.port_down(node)
        self.net.nodes[node].kill_all()
        for (where, _), process in list(self.processes.items()):
            if where == node:
                process.kill()
        if self.system is not None:
            self.system.forget(node)

    def leader_vm_dies(self) -> str:
        leader = self.leader()
        if leader is None:
            raise RuntimeError("no leader to kill")
        self.vm_dies(leader)
        return leader

    def node_back(self, node: str) -> None:
        """The VM boots again: link up, API server and the VIP system start."""
        assert self.net is not None and self.system is not None
        self.net.port_up(node)
        self.start_apiserver(node)
        self.system.start(node)

    def nsx_unreachable(self, seconds: float) -> None:
        """Every NSX manager drops connections without an answer for `seconds` (blocks)."""
        assert self.nsx is not None
        self.nsx.down(True)
        try:
            time.sleep(seconds)
        finally:
            self.nsx.down(False)

    def restart_system_rolling(self, pause: float = 5.0) -> None:
        """The VIP daemon restarted on every node, one by one, as `apt upgrade` does."""
        assert self.system is not None
        for node in NODES:
            self.system.restart(node)
            time.sleep(pause)

"""A control plane in a box: a network namespace holding a fake kube-apiserver on
127.0.0.2–4 (three "nodes"), an NSX simulator on 127.0.0.1, and `litelb run`
daemons as real subprocesses, each with its own systemd notify socket.

The simulators run in this test process, but their sockets are created inside the
namespace: a worker thread enters it with setns(2) (which moves only that thread)
and every thread it starts inherits it. So the daemons can really manage the VIP on
the namespace's `lo`, and nothing a test does reaches the host's network.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from tests.kubeapi import FakeKubeApiServer
from tests.netns import InNamespace
from tests.nsxsim import NsxSimulator
from tests.pki import Pki
from tests.wait import wait_for

NODES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
VIP = "192.168.160.249"
TIER1 = "cluster-router"
ROUTE_ID = "litelb-192-168-160-249"
PASSWORD = "s3cret-Passw0rd!"
REPO = Path(__file__).resolve().parents[2]
_counter = itertools.count()


def can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class Netns(InNamespace):
    """A network namespace for one test, with lo up; `call` runs code inside it."""

    def __init__(self) -> None:
        self.name = f"litelb-t{os.getpid()}-{next(_counter)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)
        super().__init__(self.name)

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def addresses(self, interface: str = "lo") -> str:
        return subprocess.run(
            ["ip", "-n", self.name, "addr", "show", "dev", interface],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def close(self) -> None:
        self.stop_threads(wait=True)
        subprocess.run(["ip", "netns", "del", self.name], check=False)


class NotifyListener:
    """Stands in for systemd: receives sd_notify datagrams on a socket of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except OSError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def seen(self, prefix: str) -> list[str]:
        return [m for _, m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


@dataclass
class Node:
    """One `litelb run` subprocess."""

    address: str
    config_path: Path
    log_path: Path
    metrics_port: int
    notify: NotifyListener
    proc: Optional[subprocess.Popen] = None
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        assert self.proc is not None
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


class Lab:
    """Everything one test needs; `close` tears it all down, also after a failure."""

    def __init__(
        self,
        tmp: Path,
        *,
        nodes: Iterable[str] = NODES,
        bookmark_interval: float = 1.0,
        api_addresses: tuple[str, ...] = NODES,
    ) -> None:
        self.tmp = tmp
        self.ns = Netns()
        self.nodes: dict[str, Node] = {}
        self._processes: list[subprocess.Popen] = []
        try:
            self.pki = Pki(tmp / "pki", server_ips=("127.0.0.1", *api_addresses))
            self.kube = self.ns.call(
                lambda: FakeKubeApiServer(
                    self.pki, addresses=api_addresses, bookmark_interval=bookmark_interval
                ).start()
            )
            self.nsx = self.ns.call(
                lambda: NsxSimulator(username="admin", password=PASSWORD).start()
            )
            self.nsx.add_tier1(TIER1)
            self.kube.set_endpoints(list(nodes))
            self.password_file = tmp / "nsx-password"
            self.password_file.write_text(PASSWORD + "\n")
            self.password_file.chmod(0o600)
        except BaseException:
            self.close()
            raise

    # -- daemons -------------------------------------------------------------------

    def config_text(self, address: str, metrics_port: int, **sections: dict[str, Any]) -> str:
        kubeconfig = self.pki.kubeconfig(
            self.tmp / f"kubelet-{address.replace(':', '_')}.conf",
            self.kube.url(address),
            user_cn=f"system:node:node-{address.replace(':', '').rsplit('.', 1)[-1] or 'v6'}",
        )
        base: dict[str, dict[str, Any]] = {
            "vip": {"address": VIP, "interface": "lo", "manage": True},
            "kubernetes": {"kubeconfig": str(kubeconfig), "node_address": address},
            "coordination": {},
            "health": {},
            "nsx": {
                "managers": [self.nsx.url],
                "tier1": TIER1,
                "username": "admin",
                "password_file": str(self.password_file),
                "resync_interval": 5,
                "timeout": 2,
            },
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
            "log": {"level": "debug"},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return "".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for name, values in base.items()
        )

    def start(self, address: str, *, wait_ready: bool = True, **sections: dict[str, Any]) -> Node:
        index = NODES.index(address) if address in NODES else len(self.nodes)
        port = 9651 + index
        safe = address.replace(":", "_")
        previous = self.nodes.pop(address, None)
        if previous is not None:  # a restart of the same node
            previous.kill()
            previous.notify.close()
            previous.notify.path.unlink()
        config = self.tmp / f"litelb-{safe}.toml"
        config.write_text(self.config_text(address, port, **sections))
        config.chmod(0o600)
        node = Node(
            address=address,
            config_path=config,
            log_path=self.tmp / f"litelb-{safe}.log",
            metrics_port=port,
            notify=NotifyListener(self.tmp / f"notify-{safe}.sock"),
        )
        self.nodes[address] = node
        self.launch(node)
        if wait_ready:
            wait_for(lambda: node.notify.seen("READY=1"), 20, f"{address} READY=1", node)
        return node

    def launch(self, node: Node) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(
            NOTIFY_SOCKET=str(node.notify.path),
            WATCHDOG_USEC="2000000",
            PYTHONPATH=str(REPO),
            PYTHONUNBUFFERED="1",
            **node.env,
        )
        with open(node.log_path, "ab") as log:
            node.proc = subprocess.Popen(
                [
                    *self.ns.exec_prefix(),
                    sys.executable,
                    "-m",
                    "litelb",
                    "run",
                    "-c",
                    str(node.config_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO),
            )
        self._processes.append(node.proc)

    def run_cli(
        self, *args: str, env: Optional[dict[str, str]] = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.ns.exec_prefix(), sys.executable, "-m", "litelb", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(REPO),
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )

    def status(self, node: Node) -> dict:
        def get() -> dict:
            url = f"http://127.0.0.1:{node.metrics_port}/status"
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)

        return self.ns.call(get)

    def http_get(self, node: Node, path: str) -> tuple[int, str]:
        def get() -> tuple[int, str]:
            url = f"http://127.0.0.1:{node.metrics_port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        return self.ns.call(get)

    def serve_api(self, address: str) -> None:
        """Bring a refused API server back; its listener must be bound inside the lab."""
        self.ns.call(self.kube.serve, address)

    # -- NSX -----------------------------------------------------------------------

    def route(self) -> Optional[dict]:
        return self.nsx.route(TIER1, ROUTE_ID)

    def hops(self) -> Optional[list[str]]:
        r = self.route()
        return None if r is None else sorted(h["ip_address"] for h in r["next_hops"])

    def leader(self) -> Optional[str]:
        r = self.route()
        if r is None:
            return None
        return next((t["tag"] for t in r.get("tags", []) if t["scope"] == "litelb/leader"), None)

    def route_writes(self) -> list:
        return [w for w in self.nsx.writes() if w.method in ("PUT", "PATCH")]

    # -- teardown ------------------------------------------------------------------

    def close(self) -> None:
        for proc in getattr(self, "_processes", []):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for node in getattr(self, "nodes", {}).values():
            node.notify.close()
        for server in ("kube", "nsx"):
            if hasattr(self, server):
                getattr(self, server).stop()
        self.ns.close()

    def dump(self) -> str:
        return "\n".join(f"--- {a}\n{n.log()[-6000:]}" for a, n in self.nodes.items())


def elapsed_until(predicate: Callable[[], Any], timeout: float, what: str, *nodes: Any) -> float:
    start = time.monotonic()
    wait_for(predicate, timeout, what, *nodes)
    return time.monotonic() - start


@contextmanager
def lab(tmp: Path, **kwargs: Any) -> Iterator[Lab]:
    box = Lab(tmp, **kwargs)
    try:
        yield box
    finally:
        box.close()

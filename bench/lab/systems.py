"""The VIP systems compared in the lab, each started per node by the same calls.

* `litelb`: `litelb run` with its defaults (VIP on lo, route on the Tier-1);
* `litelb-noprobe`: the same with `[health] enabled = false` (the EndpointSlice decides);
* `keepalived`: keepalived + haproxy exactly as the kubeadm HA guide's option 1 sets
  them up (Debian's packages), with the VIP on the node segment instead of routed.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from typing import TYPE_CHECKING, Any, Optional

from bench.lab.topology import API_PORT, NODES, VIP
from litelb.model import default_route_id

if TYPE_CHECKING:
    from bench.lab.lab import DataPlaneLab

SYSTEMS = ("litelb", "litelb-noprobe", "keepalived")
_METRICS_PORT = 9651


class System:
    routed = True
    vip = VIP
    client_port = API_PORT
    route_id = default_route_id(VIP)

    def __init__(self, lab: DataPlaneLab) -> None:
        self.lab = lab
        self.down: set[str] = set()

    def start(self, node: str) -> None:
        raise NotImplementedError

    def restart(self, node: str) -> None:
        raise NotImplementedError

    def converged(self) -> bool:
        raise NotImplementedError

    def leader(self) -> Optional[str]:
        raise NotImplementedError

    def forget(self, node: str) -> None:
        """The node's VM died: its processes are gone, a reboot brings back an empty `lo`."""
        self.down.add(node)
        if self.routed:
            ns = self.lab.net.nodes[node]  # type: ignore[union-attr]
            ns.ip("addr", "del", f"{self.vip}/32", "dev", "lo", check=False)


class Litelb(System):
    def __init__(self, lab: DataPlaneLab, *, probes: bool = True) -> None:
        super().__init__(lab)
        self.probes = probes

    def config(self, node: str, vip: str = VIP) -> str:
        kubeconfig = self.lab.pki.kubeconfig(
            self.lab.workdir / f"kubelet-{node}.conf",
            f"https://{VIP}:{API_PORT}",
            user_cn=f"system:node:node-{node.rsplit('.', 1)[1]}",
        )
        sections: dict[str, dict[str, Any]] = {
            "vip": {"address": vip, "interface": "lo"},
            "kubernetes": {"kubeconfig": str(kubeconfig), "node_address": node},
            "health": {} if self.probes else {"enabled": False},
            "nsx": {
                "managers": [self.lab.nsx.url],  # type: ignore[union-attr]
                "tier1": "cluster-router",
                "username": "admin",
                "password_file": str(self.lab.password_file),
                "ca_file": str(self.lab.pki.ca_cert),
            },
            "metrics": {"listen": f"127.0.0.1:{_METRICS_PORT}"},
        }
        return "".join(
            f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
            for name, values in sections.items()
        )

    def config_path(self, node: str) -> str:
        path = self.lab.workdir / f"litelb-{node}.toml"
        if not path.exists():
            path.write_text(self.config(node))
            path.chmod(0o600)
        return str(path)

    def start(self, node: str) -> None:
        self.down.discard(node)
        self.lab.spawn(
            node, "litelb", [sys.executable, "-m", "litelb", "run", "-c", self.config_path(node)]
        )

    def restart(self, node: str) -> None:
        self.lab.process(node, "litelb").stop()
        self.start(node)
        self.lab.wait_for(lambda: self.status(node) is not None, 20, f"litelb on {node}")

    def status(self, node: str) -> Optional[dict]:
        def get() -> Optional[dict]:
            url = f"http://127.0.0.1:{_METRICS_PORT}/status"
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return json.load(r)
            except (OSError, ValueError):
                return None

        return self.lab.net.nodes[node].call(get)  # type: ignore[union-attr]

    def leader(self) -> Optional[str]:
        route = self.lab.nsx_route()
        if route is None:
            return None
        tags = route.get("tags", [])
        return next((t["tag"] for t in tags if t["scope"] == "litelb/leader"), None)

    def converged(self) -> bool:
        alive = sorted(n for n in NODES if n not in self.down)
        realizer = self.lab.realizer
        return (
            self.lab.nsx_hops() == alive
            and realizer is not None
            and realizer.hops() == alive
            and all(self.status(n) is not None for n in alive)
        )


def make_system(name: str, lab: DataPlaneLab) -> System:
    if name == "litelb":
        return Litelb(lab)
    if name == "litelb-noprobe":
        return Litelb(lab, probes=False)
    if name == "keepalived":
        from bench.lab.keepalived import KeepalivedHaproxy

        return KeepalivedHaproxy(lab)
    raise ValueError(f"unknown system {name!r}; one of {', '.join(SYSTEMS)}")

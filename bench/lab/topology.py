"""The lab's network: a client, a router standing in for the NSX Tier-1, three VMs.

```
client 10.20.1.2 ── 10.20.1.1 [tier1] 10.20.4.1 ── bridge "seg" ─┬─ node1 10.20.4.2
                     NSX manager 10.20.9.1 (on tier1's lo)        ├─ node2 10.20.4.3
                     VIP/32 multipath route, realized from NSX     └─ node3 10.20.4.4
```

The VIP of the routed design (192.168.160.249) lies outside the node segment, as NSX
designs keep it; the keepalived design uses 10.20.4.100 on the segment. All addresses
exist only inside the lab's own namespaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bench.lab.netns import Cleanup, Namespace

NODES = ("10.20.4.2", "10.20.4.3", "10.20.4.4")
GATEWAY = "10.20.4.1"
SEGMENT_PREFIX = 24
CLIENT = "10.20.1.2"
CLIENT_GATEWAY = "10.20.1.1"
NSX_MANAGER = "10.20.9.1"
VIP = "192.168.160.249"
SEGMENT_VIP = "10.20.4.100"
API_PORT = 6443


@dataclass
class Topology:
    client: Namespace
    tier1: Namespace
    nodes: dict[str, Namespace]
    ports: dict[str, str]  # node address -> its bridge port in tier1

    def port_down(self, node: str) -> None:
        self.tier1.ip("link", "set", self.ports[node], "down")

    def port_up(self, node: str) -> None:
        self.tier1.ip("link", "set", self.ports[node], "up")


def build(cleanup: Cleanup, tag: str = "") -> Topology:
    prefix = f"llb{os.getpid()}{tag}"
    tier1 = Namespace(f"{prefix}-tier1", cleanup)
    client = Namespace(f"{prefix}-client", cleanup)
    for ns in (tier1, client):
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0")
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0")
    tier1.sysctl("net.ipv4.ip_forward", "1")
    # Flows spread by 5-tuple, as NSX's ECMP does, not by addresses alone.
    tier1.sysctl("net.ipv4.fib_multipath_hash_policy", "1")
    tier1.ip("addr", "add", f"{NSX_MANAGER}/32", "dev", "lo")

    tier1.ip("link", "add", "cl", "type", "veth", "peer", "name", "eth0", "netns", client.name)
    tier1.ip("addr", "add", f"{CLIENT_GATEWAY}/24", "dev", "cl")
    tier1.ip("link", "set", "cl", "up")
    client.ip("addr", "add", f"{CLIENT}/24", "dev", "eth0")
    client.ip("link", "set", "eth0", "up")
    client.ip("route", "add", "default", "via", CLIENT_GATEWAY)

    tier1.ip("link", "add", "seg", "type", "bridge")
    tier1.ip("addr", "add", f"{GATEWAY}/{SEGMENT_PREFIX}", "dev", "seg")
    tier1.ip("link", "set", "seg", "up")
    nodes: dict[str, Namespace] = {}
    ports: dict[str, str] = {}
    for i, address in enumerate(NODES, 1):
        ns = Namespace(f"{prefix}-node{i}", cleanup)
        port = f"n{i}"
        tier1.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns.name)
        tier1.ip("link", "set", port, "master", "seg")
        tier1.ip("link", "set", port, "up")
        ns.ip("addr", "add", f"{address}/{SEGMENT_PREFIX}", "dev", "eth0")
        ns.ip("link", "set", "eth0", "up")
        ns.ip("route", "add", "default", "via", GATEWAY)
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0")
        nodes[address] = ns
        ports[address] = port
    return Topology(client=client, tier1=tier1, nodes=nodes, ports=ports)

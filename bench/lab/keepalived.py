"""keepalived + haproxy exactly as the kubeadm HA guide's option 1 sets them up.

kubernetes/kubeadm docs/ha-considerations.md, "keepalived and haproxy": keepalived
holds the VIP on the node segment (VRRP, one MASTER at priority 101, both BACKUPs at
100 as written), tracking check_apiserver.sh (interval 3, weight -2, fall 10, rise 2);
haproxy on every node listens on the VIP's port (8443 here, as the guide's
APISERVER_DEST_PORT) in TCP mode and balances round-robin over every API server,
checking GET /healthz over TLS with inter 10s downinter 5s rise 2 fall 2.
Debian's packages (`apt install keepalived haproxy`), run in the node namespaces.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Optional

from bench.lab.systems import System
from bench.lab.topology import API_PORT, NODES, SEGMENT_VIP

if TYPE_CHECKING:
    from bench.lab.lab import DataPlaneLab

HAPROXY_PORT = 8443
_DEFAULT_SERVER = (
    "inter 10s downinter 5s rise 2 fall 2 slowstart 60s maxconn 250 maxqueue 256 weight 100"
)

_KEEPALIVED = """! Configuration File for keepalived
global_defs {{
    router_id LVS_DEVEL
}}
vrrp_script check_apiserver {{
  script "{check}"
  interval 3
  weight -2
  fall 10
  rise 2
}}

vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    authentication {{
        auth_type PASS
        auth_pass 42
    }}
    virtual_ipaddress {{
        {vip}
    }}
    track_script {{
        check_apiserver
    }}
}}
"""

_CHECK = """#!/bin/sh

errorExit() {{
    echo "*** $*" 1>&2
    exit 1
}}

curl -sfk --max-time 2 https://localhost:{port}/ -o /dev/null || \\
    errorExit "Error GET https://localhost:{port}/"
"""

_HAPROXY = """global
    log stdout format raw local0

defaults
    mode                    http
    log                     global
    option                  httplog
    option                  dontlognull
    option http-server-close
    option forwardfor       except 127.0.0.0/8
    option                  redispatch
    retries                 1
    timeout http-request    10s
    timeout queue           20s
    timeout connect         5s
    timeout client          35s
    timeout server          35s
    timeout http-keep-alive 10s
    timeout check           10s

frontend apiserver
    bind *:{port}
    mode tcp
    option tcplog
    default_backend apiserverbackend

backend apiserverbackend
    option httpchk
    http-check connect ssl
    http-check send meth GET uri /healthz
    http-check expect status 200
    mode tcp
    balance     roundrobin
    default-server {default_server}
{servers}
"""


def available() -> Optional[str]:
    """None when both programs are installed, else what is missing."""
    missing = [p for p in ("keepalived", "haproxy", "curl") if shutil.which(p) is None]
    return None if not missing else "apt install " + " ".join(missing)


class KeepalivedHaproxy(System):
    routed = False
    vip = SEGMENT_VIP
    client_port = HAPROXY_PORT
    route_id = "unused"

    def __init__(self, lab: DataPlaneLab) -> None:
        super().__init__(lab)
        missing = available()
        if missing is not None:
            raise RuntimeError(f"keepalived + haproxy need: {missing}")
        self._held: tuple[Optional[str], float] = (None, 0.0)

    def _files(self, node: str) -> tuple[str, str]:
        directory = self.lab.workdir / f"keepalived-{node}"
        directory.mkdir(exist_ok=True)
        check = directory / "check_apiserver.sh"
        check.write_text(_CHECK.format(port=HAPROXY_PORT))
        check.chmod(0o755)
        master = node == NODES[0]
        (directory / "keepalived.conf").write_text(
            _KEEPALIVED.format(
                check=check,
                state="MASTER" if master else "BACKUP",
                priority=101 if master else 100,
                vip=SEGMENT_VIP,
            )
        )
        servers = "\n".join(
            f"    server node{i} {n}:{API_PORT} check verify none" for i, n in enumerate(NODES, 1)
        )
        (directory / "haproxy.cfg").write_text(
            _HAPROXY.format(port=HAPROXY_PORT, servers=servers, default_server=_DEFAULT_SERVER)
        )
        return str(directory), str(check)

    def start(self, node: str) -> None:
        self.down.discard(node)
        directory, _ = self._files(node)
        self.lab.spawn(node, "haproxy", ["haproxy", "-db", "-f", f"{directory}/haproxy.cfg"])
        self._start_keepalived(node, directory)

    def _start_keepalived(self, node: str, directory: str) -> None:
        self.lab.spawn(
            node,
            "keepalived",
            [
                "keepalived", "--dont-fork", "--log-console", "--log-detail",
                "--use-file", f"{directory}/keepalived.conf",
                "--pid", f"{directory}/keepalived.pid",
                "--vrrp_pid", f"{directory}/vrrp.pid",
                "--checkers_pid", f"{directory}/checkers.pid",
            ],
        )  # fmt: skip

    def restart(self, node: str) -> None:
        directory, _ = self._files(node)
        self.lab.process(node, "haproxy").stop()
        self.lab.spawn(node, "haproxy", ["haproxy", "-db", "-f", f"{directory}/haproxy.cfg"])
        self.lab.process(node, "keepalived").stop()
        self._start_keepalived(node, directory)

    def holders(self) -> list[str]:
        ns = self.lab.net.nodes  # type: ignore[union-attr]
        return [
            n
            for n in NODES
            if n not in self.down
            and f" {SEGMENT_VIP}/" in ns[n].ip("-4", "addr", "show", "dev", "eth0").stdout
        ]

    def leader(self) -> Optional[str]:
        holders = self.holders()
        return holders[0] if len(holders) == 1 else None

    def converged(self) -> bool:
        """One holder, unchanged for longer than VRRP's master-down interval (3.6 s)."""
        holders = self.holders()
        now = time.monotonic()
        if len(holders) != 1 or self._held[0] != holders[0]:
            self._held = (holders[0] if len(holders) == 1 else None, now)
            return False
        return now - self._held[1] > 4.0

    def forget(self, node: str) -> None:
        super().forget(node)
        # A rebooted VM comes back without the address keepalived had added.
        ns = self.lab.net.nodes[node]  # type: ignore[union-attr]
        ns.ip("addr", "del", f"{SEGMENT_VIP}/32", "dev", "eth0", check=False)

"""This host's addresses as the kernel sees them, through netlink: whether it owns an
address, and which connected subnets contain one.

An address owned by this host is one the kernel routes as local (RTN_LOCAL):
an address on any interface, and whole local ranges such as 127.0.0.0/8 that
are on no interface as single addresses.
"""

from __future__ import annotations

import errno
import ipaddress
from contextlib import closing

from pyroute2 import IPRoute, NetlinkError

# From <linux/rtnetlink.h>; pyroute2 0.7 and 0.9 export it under different names.
_RTN_LOCAL = 2


class LocalAddressError(Exception):
    """The kernel could not be asked."""


def is_local_address(address: str) -> bool:
    """True when packets to `address` are delivered to this host."""
    try:
        with closing(IPRoute()) as ipr:
            answer = ipr.route("get", dst=address)
    except NetlinkError as e:
        if e.code in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return False
        raise LocalAddressError(
            f"cannot ask the kernel about {address}: netlink error {e.code}"
        ) from e
    except (OSError, ValueError) as e:
        raise LocalAddressError(f"cannot ask the kernel about {address}: {e}") from e
    return any(msg["type"] == _RTN_LOCAL for msg in answer)


def connected_networks(vip: str, vip_interface: str) -> list[tuple[str, str]]:
    """(interface, network) of every connected subnet, other than the VIP's interface and
    lo, that contains the VIP."""
    address = ipaddress.ip_address(vip)
    found = []
    try:
        with closing(IPRoute()) as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            addresses = list(ipr.get_addr())
    except (NetlinkError, OSError) as e:
        raise LocalAddressError(f"cannot list this host's addresses: {e}") from e
    for msg in addresses:
        name = names.get(msg["index"], "")
        raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if not raw or name in ("lo", vip_interface):
            continue
        network = ipaddress.ip_network(f"{raw}/{msg['prefixlen']}", strict=False)
        if network.num_addresses > 1 and address in network:
            found.append((name, str(network)))
    return found

"""Whether this host owns an address: the kernel's own answer, through netlink.

An address owned by this host is one the kernel routes as local (RTN_LOCAL):
an address on any interface, and whole local ranges such as 127.0.0.0/8 that
are on no interface as single addresses.
"""

from __future__ import annotations

import errno
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

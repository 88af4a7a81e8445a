"""Where a simulator may listen: loopback anywhere, any address inside a namespace of its own.

The data-plane lab (bench/lab) puts simulated API servers and NSX managers on private
addresses of network namespaces it created; on the host's own network namespace only
loopback is allowed, so nothing a test starts is reachable from outside.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from pathlib import Path


def in_own_network_namespace() -> bool:
    """True when the calling thread is in a named namespace (`ip netns add`) other than
    PID 1's, where that one is readable."""
    try:
        mine = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return False
    with contextlib.suppress(OSError):
        if os.stat("/proc/1/ns/net").st_ino == mine:
            return False
    named = set()
    with contextlib.suppress(OSError):
        for entry in Path("/run/netns").iterdir():
            with contextlib.suppress(OSError):
                named.add(entry.stat().st_ino)
    return mine in named


def may_listen_on(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback or in_own_network_namespace()

"""The VIP on a local interface, managed through netlink (pyroute2).

Each call opens its own netlink socket and closes it again: the daemon calls
these once per resync, and a long-lived socket would only collect unread
multicast messages in between.

Works with pyroute2 0.7.x (Debian 12) and 0.9.x: ``addr()`` gets keyword
arguments only, and addresses are read with ``get_attr()``.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
from collections.abc import Iterator
from contextlib import closing
from typing import Any, Optional, Union

from pyroute2 import IPRoute, NetlinkError, NetNS

log = logging.getLogger("litelb.vip")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

# Not exported under one name by both pyroute2 versions; from <linux/if_addr.h>.
# Without it an IPv6 address on an interface other than lo stays "tentative"
# (unusable) for the duration of duplicate address detection.
_IFA_F_NODAD = 0x02


class VipError(Exception):
    """The VIP could not be read, added or removed; the message says what to do."""


def _where(interface: str, netns: Optional[str]) -> str:
    return f"interface {interface!r}" + (f" in network namespace {netns!r}" if netns else "")


def _open(netns: Optional[str]) -> Any:
    """A netlink socket in ``netns`` (None: the current namespace)."""
    if netns is None:
        return IPRoute()
    try:
        # flags=0: both pyroute2 versions default to O_CREAT, which would
        # silently create a missing namespace instead of reporting it.
        return NetNS(netns, flags=0)
    except FileNotFoundError as e:
        raise VipError(
            f"network namespace {netns!r} does not exist (no /var/run/netns/{netns})"
        ) from e
    except OSError as e:
        raise VipError(
            f"cannot enter network namespace {netns!r}: {e.strerror or e}; "
            "litelb needs root or CAP_SYS_ADMIN for that"
        ) from e


def _addresses(ipr: Any, index: Optional[int] = None) -> Iterator[tuple[IPAddress, int, int]]:
    """(address, prefix length, interface index) of every address, optionally of one interface."""
    for msg in ipr.get_addr():
        if index is not None and msg["index"] != index:
            continue
        # On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
        raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if not raw:
            continue
        try:
            addr = ipaddress.ip_address(raw)
        except ValueError:
            continue
        yield addr, msg["prefixlen"], msg["index"]


def local_addresses(netns: Optional[str] = None) -> frozenset[str]:
    """Every address on every interface, in canonical text form (no prefix length).

    The daemon finds its own API server address in the EndpointSlice with it.
    """
    try:
        with closing(_open(netns)) as ipr:
            return frozenset(str(addr) for addr, _, _ in _addresses(ipr))
    except NetlinkError as e:
        where = f" in network namespace {netns!r}" if netns else ""
        raise VipError(f"cannot list the local addresses{where}: netlink error {e.code}") from e


class VipManager:
    """Keeps one address, as /32 or /128, on one interface."""

    def __init__(self, address: str, interface: str = "lo", *, netns: Optional[str] = None) -> None:
        try:
            self._address: IPAddress = ipaddress.ip_address(address)
        except ValueError as e:
            raise VipError(
                f"VIP {address!r} is not an IPv4 or IPv6 address (give it without a prefix length)"
            ) from e
        if not interface:
            raise VipError(f"VIP {address}: no interface given")
        self._interface = interface
        self._netns = netns
        self._prefixlen = self._address.max_prefixlen

    @property
    def address(self) -> str:
        return str(self._address)

    @property
    def interface(self) -> str:
        return self._interface

    def ensure(self) -> bool:
        """Add the VIP unless it is there already; True if it had to be added."""
        with closing(_open(self._netns)) as ipr:
            index = self._index(ipr)
            if self._prefixes(ipr, index):
                return False
            kwargs: dict[str, Any] = {}
            if self._address.version == 6:
                kwargs["flags"] = _IFA_F_NODAD
            try:
                ipr.addr(
                    "add",
                    index=index,
                    address=str(self._address),
                    prefixlen=self._prefixlen,
                    **kwargs,
                )
            except NetlinkError as e:
                if e.code == errno.EEXIST:
                    # Someone added it between our read and our write.
                    return False
                raise self._error("add", e) from e
        log.info("added VIP %s/%d to %s", self._address, self._prefixlen, self._place())
        return True

    def present(self) -> bool:
        """Whether the VIP is on the interface (with any prefix length)."""
        with closing(_open(self._netns)) as ipr:
            return bool(self._prefixes(ipr, self._index(ipr)))

    def remove(self) -> bool:
        """Remove the VIP from the interface; True if it was there."""
        removed = False
        with closing(_open(self._netns)) as ipr:
            index = self._index(ipr)
            for prefixlen in self._prefixes(ipr, index):
                try:
                    ipr.addr("del", index=index, address=str(self._address), prefixlen=prefixlen)
                    removed = True
                except NetlinkError as e:
                    if e.code == errno.EADDRNOTAVAIL:
                        # Someone removed it between our read and our write.
                        continue
                    raise self._error("remove", e) from e
        if removed:
            log.info("removed VIP %s from %s", self._address, self._place())
        return removed

    def _place(self) -> str:
        return _where(self._interface, self._netns)

    def _index(self, ipr: Any) -> int:
        try:
            found = ipr.link_lookup(ifname=self._interface)
        except NetlinkError as e:
            raise self._error("look up the interface for", e) from e
        if not found:
            raise VipError(
                f"VIP {self._address}: {self._place()} does not exist; "
                "create it or set vip.interface to an existing one"
            )
        return int(found[0])

    def _prefixes(self, ipr: Any, index: int) -> list[int]:
        try:
            return [p for addr, p, _ in _addresses(ipr, index) if addr == self._address]
        except NetlinkError as e:
            raise self._error("read the addresses for", e) from e

    def _error(self, action: str, e: NetlinkError) -> VipError:
        what = f"cannot {action} VIP {self._address}/{self._prefixlen} on {self._place()}"
        if e.code == errno.EPERM:
            return VipError(
                f"{what}: operation not permitted; litelb needs CAP_NET_ADMIN "
                "(run it as root, with CAP_NET_ADMIN in the unit's CapabilityBoundingSet)"
            )
        if e.code == errno.EACCES and self._address.version == 6:
            # The kernel's answer to adding an IPv6 address where IPv6 is off.
            return VipError(
                f"{what}: IPv6 is disabled there; "
                f"set net.ipv6.conf.{self._interface}.disable_ipv6=0"
            )
        return VipError(f"{what}: {os.strerror(e.code)} (netlink error {e.code})")

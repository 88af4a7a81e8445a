"""The one parser of "host:port" and "[IPv6]:port" that every part of litelb uses."""

from __future__ import annotations

import ipaddress


def split_host_port(value: str) -> tuple[str, int]:
    """(host, port) of "host:port" or "[v6]:port", the host without brackets;
    ValueError says what is wrong, in words that follow the quoted value."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError("must be '[address]:port'")
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"'{host}' in brackets is not an IPv6 address") from None
    else:
        host, colon, port = value.rpartition(":")
        if not colon:
            raise ValueError("must be 'host:port'")
        if ":" in host:
            raise ValueError(f"an IPv6 address needs brackets: '[{host}]:{port}'")
    if not host or any(c.isspace() for c in host):
        raise ValueError("needs a host, e.g. '127.0.0.1:9651' ('0.0.0.0:9651' for all addresses)")
    # isascii: str.isdigit() also accepts digits such as '²' that int() refuses.
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port '{port}' is not a number from 1 to 65535")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """The inverse of split_host_port: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

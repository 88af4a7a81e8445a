"""This node's identity: a configured `kubernetes.node_address` must be an address
this host owns. Two nodes configured with one identity would both act as the
route's leader; an address of another host names a node this one is not.

Checked apart from `config.parse`, which stays pure: this asks the kernel.
"""

from __future__ import annotations

from typing import Optional

from litelb.adapters.local import is_local_address
from litelb.config import Config, ConfigError
from litelb.tomlfile import find_line_in_file

KEY = ("kubernetes", "node_address")


def identity_error(cfg: Config) -> Optional[ConfigError]:
    """The configuration error when node_address is set but not local, else None.

    LocalAddressError (the kernel could not be asked) propagates: that is no
    mistake in the file, and the caller decides whether it can go on.
    """
    address = cfg.kubernetes.node_address
    if not address or is_local_address(address):
        return None
    return ConfigError(
        cfg.path,
        ".".join(KEY),
        f"{address} is not an address of this host; set this node's own API server "
        'address, or "" to find it in the EndpointSlice',
        find_line_in_file(cfg.path, *KEY),
    )

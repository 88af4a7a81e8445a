"""`litelb cleanup`: take back what litelb put in place, and only that."""

from __future__ import annotations

import sys

from litelb.adapters.nsx import NsxClient
from litelb.adapters.nsx_errors import NsxError
from litelb.adapters.vip import VipError, VipManager
from litelb.config import Config


def cleanup(config: Config, *, vip: bool, route: bool) -> int:
    ok = True
    if route:
        ok = _delete_route(config) and ok
    if vip:
        ok = _remove_vip(config) and ok
    return 0 if ok else 1


def _delete_route(config: Config) -> bool:
    path = config.nsx.route_path
    client = NsxClient(config.nsx, max_attempts=3)
    try:
        found = client.get_route()
        if found is None:
            print(f"route {path}: not present")
            return True
        if not found.managed:
            print(
                f"litelb: route {path} lacks the tag litelb/managed-by=litelb; not deleting "
                "what litelb does not own",
                file=sys.stderr,
            )
            return False
        client.delete_route(found.revision)
        print(f"route {path}: deleted (a running litelb leader would create it again)")
        return True
    except NsxError as e:
        print(f"litelb: {e}", file=sys.stderr)
        return False
    finally:
        client.close()


def _remove_vip(config: Config) -> bool:
    where = f"VIP {config.vip.address} on {config.vip.interface}"
    try:
        removed = VipManager(config.vip.address, config.vip.interface).remove()
    except VipError as e:
        print(f"litelb: {e}", file=sys.stderr)
        return False
    print(f"{where}: {'removed' if removed else 'not present'}")
    return True

"""The route litelb wants NSX to hold, and whether NSX holds it. Pure functions."""

from __future__ import annotations

from typing import Optional

from litelb.model import (
    LEADER_SCOPE,
    MANAGED_BY_SCOPE,
    MANAGED_BY_TAG,
    VIP_SCOPE,
    Route,
    Tag,
    host_network,
    ip_sort_key,
)

LITELB_SCOPES = (MANAGED_BY_SCOPE, VIP_SCOPE, LEADER_SCOPE)
# NSX documents at most 8 ECMP paths; more next hops would not all carry traffic.
MAX_NEXT_HOPS = 8


def ecmp_next_hops(
    healthy: tuple[str, ...], held: tuple[str, ...] = (), limit: int = MAX_NEXT_HOPS
) -> tuple[str, ...]:
    """The next hops to write: all of `healthy` if they fit in `limit`, else a stable
    subset, sorted.

    The hops NSX already `held` stay while they are healthy, so a change of the
    healthy set moves as few connections as possible; free places go to the rest
    in address order.
    """
    ordered = sorted(set(healthy), key=ip_sort_key)
    if len(ordered) <= limit:
        return tuple(ordered)
    kept = set(held)
    keep = [a for a in ordered if a in kept][:limit]
    rest = [a for a in ordered if a not in kept][: limit - len(keep)]
    return tuple(sorted(keep + rest, key=ip_sort_key))


def desired_route(
    *,
    vip: str,
    display_name: str,
    next_hops: tuple[str, ...],
    leader: str,
    actual: Optional[Route] = None,
) -> Route:
    """The route for `vip` through `next_hops` (at most MAX_NEXT_HOPS of them, see
    ecmp_next_hops), naming `leader`.

    Tags an operator put on the route in NSX are kept: a PUT replaces the whole
    object, and litelb must not erase what it does not own.
    """
    foreign = tuple(t for t in actual.tags if t.scope not in LITELB_SCOPES) if actual else ()
    return Route(
        network=host_network(vip),
        next_hops=ecmp_next_hops(next_hops, actual.next_hops if actual else ()),
        display_name=display_name,
        tags=(
            Tag(MANAGED_BY_SCOPE, MANAGED_BY_TAG),
            Tag(VIP_SCOPE, vip),
            Tag(LEADER_SCOPE, leader),
            *foreign,
        ),
    )


def same_route(desired: Route, actual: Optional[Route]) -> bool:
    """True when NSX holds everything litelb cares about in `desired`."""
    if actual is None:
        return False
    return (
        actual.network == desired.network
        and tuple(sorted(actual.next_hops, key=ip_sort_key)) == desired.next_hops
        and actual.hops_as_litelb_writes
        and actual.display_name == desired.display_name
        and all(actual.tag_value(s) == desired.tag_value(s) for s in LITELB_SCOPES)
    )

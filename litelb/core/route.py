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


def desired_route(
    *,
    vip: str,
    display_name: str,
    next_hops: tuple[str, ...],
    leader: str,
    actual: Optional[Route] = None,
) -> Route:
    """The route for `vip` through `next_hops`, naming `leader`.

    Tags an operator put on the route in NSX are kept: a PUT replaces the whole
    object, and litelb must not erase what it does not own.
    """
    foreign = tuple(t for t in actual.tags if t.scope not in LITELB_SCOPES) if actual else ()
    return Route(
        network=host_network(vip),
        next_hops=tuple(sorted(set(next_hops), key=ip_sort_key)),
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
        and actual.plain_hops
        and actual.display_name == desired.display_name
        and all(actual.tag_value(s) == desired.tag_value(s) for s in LITELB_SCOPES)
    )

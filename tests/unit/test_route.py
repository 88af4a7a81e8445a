"""The route litelb wants: at most 8 next hops, a stable subset when more are healthy."""

from __future__ import annotations

import pytest

from litelb.core.route import MAX_NEXT_HOPS, desired_route, ecmp_next_hops


def ips(*last: int) -> tuple[str, ...]:
    return tuple(f"10.0.0.{n}" for n in last)


@pytest.mark.parametrize(
    ("healthy", "held", "written"),
    [
        (ips(3, 1, 2), (), ips(1, 2, 3)),
        (ips(*range(1, 9)), (), ips(*range(1, 9))),
        # More than 8: the lowest addresses when NSX holds none of them...
        (ips(*range(1, 11)), (), ips(*range(1, 9))),
        # ... in numeric order, not string order.
        (ips(*range(5, 15)), (), ips(*range(5, 13))),
        # ... and those NSX holds stay while they are healthy.
        (ips(*range(1, 11)), ips(*range(3, 11)), ips(*range(3, 11))),
        # One held hop fails: one free place, the lowest of the rest takes it.
        (ips(1, 2, 3, 4, 6, 7, 8, 9, 10), ips(*range(3, 11)), ips(1, 3, 4, 6, 7, 8, 9, 10)),
        # It comes back: it does not push out the one that replaced it.
        (ips(*range(1, 11)), ips(1, 3, 4, 6, 7, 8, 9, 10), ips(1, 3, 4, 6, 7, 8, 9, 10)),
        # NSX holds more than 8 (someone edited it): 8 of them, lowest first.
        (ips(*range(1, 12)), ips(*range(1, 12)), ips(*range(1, 9))),
        # Held hops that are no longer healthy do not count.
        (ips(*range(11, 21)), ips(1, 2, 3), ips(*range(11, 19))),
        ((), ips(1, 2), ()),
    ],
)  # fmt: skip
def test_ecmp_next_hops(healthy: tuple, held: tuple, written: tuple) -> None:
    assert ecmp_next_hops(healthy, held) == written
    assert len(written) <= MAX_NEXT_HOPS


def test_desired_route_keeps_what_nsx_holds_within_the_limit() -> None:
    held = desired_route(
        vip="192.0.2.1", display_name="x", next_hops=ips(*range(3, 11)), leader="a"
    )
    wanted = desired_route(
        vip="192.0.2.1", display_name="x", next_hops=ips(*range(1, 11)), leader="", actual=held
    )
    assert wanted.next_hops == ips(*range(3, 11))

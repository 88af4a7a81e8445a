"""Rise/fall hysteresis over probe results: a purely computational module, no I/O.

The prober only reports what it saw; these functions decide what that means, so
"withdraw after `fall` failures" is tested with plain values, without a TLS
server, threads or sleeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Optional

# How many API servers that left the EndpointSlices are remembered as withdrawn, so
# one that comes back must pass `rise` probes first. A control plane has a handful;
# the bound only keeps churning addresses from growing the map without end.
REMEMBERED_DEPARTURES = 64


@dataclass(frozen=True)
class Health:
    """One endpoint's verdict.

    `streak` counts the consecutive results contrary to `healthy` seen so far;
    it reaches `fall` (or `rise`) exactly when the verdict flips, and is then 0.
    `failing_since` is when the current run of failed probes began (None after a
    success): an API server "has looked dead" since its first failed probe, which
    is what the takeover rule measures, not since `fall` was reached.
    """

    healthy: bool = True
    streak: int = 0
    failing_since: Optional[float] = None


def step(
    current: Health,
    ok: bool,
    *,
    rise: int,
    fall: int,
    at: Optional[float] = None,
    conclusive: bool = False,
) -> Health:
    """Apply one probe result: `fall` consecutive failures make a healthy endpoint
    unhealthy, `rise` consecutive successes make an unhealthy one healthy again.

    A `conclusive` failure (the host refused or reset a new connection: nothing
    listens) makes it unhealthy at once; a timeout or an error answer may be a
    loaded or briefly unlucky server and needs `fall` in a row.

    A result that agrees with the verdict resets the streak, so a flapping
    endpoint never crosses either threshold. Pure: no side effects.
    """
    if rise < 1 or fall < 1:
        raise ValueError(f"rise and fall must be at least 1, got rise={rise} fall={fall}")
    since = None if ok else (current.failing_since if current.failing_since is not None else at)
    if not ok and conclusive:
        return Health(healthy=False, failing_since=since)
    if ok == current.healthy:
        return Health(healthy=current.healthy, failing_since=since)
    streak = current.streak + 1
    if streak >= (fall if current.healthy else rise):
        return Health(healthy=ok, failing_since=since)
    return Health(healthy=current.healthy, streak=streak, failing_since=since)


def step_all(
    current: Mapping[str, Health],
    results: Mapping[str, bool],
    *,
    rise: int,
    fall: int,
    at: Optional[float] = None,
    conclusive: Set[str] = frozenset(),
) -> dict[str, Health]:
    """Apply one probe round to every endpoint, keyed by address; `conclusive` holds
    the addresses whose failure is proof (see :func:`step`).

    An address never seen before starts healthy, because the EndpointSlice already
    calls it ready, and then takes its first step, so one failure alone does not
    withdraw it unless `fall` is 1 or the failure is conclusive.

    An address absent from `results` left the EndpointSlice (or is no longer
    ready): it is kept as withdrawn, so when it comes back it must pass `rise`
    probes before it is a next hop again, as after any failure. The most recent
    REMEMBERED_DEPARTURES departures are kept. Pure: no side effects.
    """
    states = {
        address: step(
            current.get(address, Health()),
            ok,
            rise=rise,
            fall=fall,
            at=at,
            conclusive=address in conclusive,
        )
        for address, ok in results.items()
    }
    departed = [a for a in current if a not in states][:REMEMBERED_DEPARTURES]
    states.update((a, Health(healthy=False)) for a in departed)
    return states


def healthy_addresses(states: Mapping[str, Health], ready: Iterable[str]) -> tuple[str, ...]:
    """The `ready` addresses that are healthy, in the order of `ready`, without duplicates.

    An address without a state has not been probed yet and counts as healthy,
    like a new address in :func:`step_all`.

    Fail-static: when none of the ready addresses is healthy, all of them are
    returned. Every node probes every API server, so probes failing against all of
    them at once far more likely mean a problem on the prober's side (its own
    network path, an expired client certificate, a rotated CA it has not
    re-read) than every API server being dead while the EndpointSlice still lists
    them ready. Withdrawing everything would take the VIP down for a fault the API
    servers do not have; keeping what Kubernetes calls ready costs nothing when
    they are really all dead, since no route could help then anyway.
    Pure: no side effects.
    """
    return passing_addresses(states, ready) or tuple(dict.fromkeys(ready))


def passing_addresses(states: Mapping[str, Health], ready: Iterable[str]) -> tuple[str, ...]:
    """The `ready` addresses whose probes pass, in order, without duplicates, and
    without fail-static: what `litelb_endpoints_healthy` and /status report, so an
    operator sees failing probes even while the route keeps every next hop.
    Pure: no side effects."""
    unique = tuple(dict.fromkeys(ready))
    return tuple(a for a in unique if states.get(a, Health()).healthy)

"""Who writes the route, and what: the leader rule and fail-static.

Pure: the engine hands in a snapshot of what this node sees and what NSX holds,
and gets back a Decision that carries its reason and, when a timer matters, the
moment at which the answer may change. No I/O, no clock, no configuration module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Optional

from litelb.core.route import desired_route, same_route
from litelb.model import Action, Reason, Route, ip_sort_key


@dataclass(frozen=True)
class LeaderTimeouts:
    """How long the leader rule waits, in seconds (the `[coordination]` settings)."""

    takeover_after: float = 1.0  # the leader must look dead this long before a takeover
    stale_after: float = 10.0  # the route may keep a hop the EndpointSlices dropped this long
    hold_down: float = 30.0  # no takeover this long after a change of leader this node saw


@dataclass(frozen=True)
class View:
    """What this node sees right now."""

    node: Optional[str]  # this node's identity: its own API server address
    ready: tuple[str, ...]  # addresses the EndpointSlices call ready (the shared truth)
    # The next hops this node would write: the ready addresses its probes pass, or all
    # of them when none passes (fail-static, see core.health.healthy_addresses).
    routable: tuple[str, ...]
    synced: bool = True  # the first EndpointSlice list has completed
    stopping: bool = False  # SIGTERM: hand leadership over


@dataclass(frozen=True)
class TimerStarts:
    """Now, and when each timer of the leader rule started (monotonic seconds)."""

    now: float
    dead_since: Mapping[str, float] = field(default_factory=dict)
    stale_since: Optional[float] = None
    # this node's last takeover, or the last change to another leader it saw
    hold_down_since: Optional[float] = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    route: Optional[Route] = None
    recheck_at: Optional[float] = None  # decide again then, even if nothing else changes
    takeover: bool = False  # the write claims leadership (starts this node's hold-down)


def decide(
    view: View,
    actual: Optional[Route],
    timers: TimerStarts,
    timeouts: LeaderTimeouts,
    *,
    vip: str,
    display_name: str,
) -> Decision:
    """Decide what to do about the route NSX holds (`actual`, None when missing). Pure."""
    if not view.synced:
        return Decision(Action.NOOP, Reason.NOT_SYNCED)
    if actual is not None and not actual.managed:
        return Decision(Action.NOOP, Reason.FOREIGN_ROUTE)
    me = view.node
    if me is not None and actual is not None and actual.leader == me:
        return _lead(view, actual, vip=vip, display_name=display_name)
    if me is None or me not in view.ready:
        return Decision(Action.NOOP, Reason.NOT_LISTED)
    if view.stopping:
        return Decision(Action.NOOP, Reason.NOT_LEADER)

    reason, recheck_at = _takeover_reason(actual, timers, timeouts)
    if reason is None:
        return Decision(Action.NOOP, Reason.NOT_LEADER, recheck_at=recheck_at)
    # Creating a missing route cannot make it flap (a second creator gets 412),
    # and without it no client reaches the VIP at all: hold-down does not apply.
    if reason is not Reason.CREATE and timers.hold_down_since is not None:
        free_at = timers.hold_down_since + timeouts.hold_down
        if timers.now < free_at:
            return Decision(Action.NOOP, Reason.HOLD_DOWN, recheck_at=free_at)
    if not view.routable:
        return Decision(Action.NOOP, Reason.NO_HEALTHY_ENDPOINTS)
    route = desired_route(
        vip=vip, display_name=display_name, next_hops=view.routable, leader=me, actual=actual
    )
    return Decision(Action.WRITE, reason, route, takeover=True)


def _lead(view: View, actual: Route, *, vip: str, display_name: str) -> Decision:
    hops = view.routable
    leader = view.node or ""
    reason = Reason.DRIFT
    if view.stopping:
        successor = next((a for a in (*view.routable, *view.ready) if a != view.node), None)
        if successor is None:
            return Decision(Action.NOOP, Reason.IN_SYNC)
        leader, reason = successor, Reason.HANDOVER
        hops = hops or actual.next_hops
    if not hops:
        # Fail-static: an empty list would blackhole the VIP; the last route stays.
        return Decision(Action.NOOP, Reason.NO_HEALTHY_ENDPOINTS)
    route = desired_route(
        vip=vip, display_name=display_name, next_hops=hops, leader=leader, actual=actual
    )
    if same_route(route, actual):
        return Decision(Action.NOOP, Reason.IN_SYNC)
    return Decision(Action.WRITE, reason, route)


def _takeover_reason(
    actual: Optional[Route], timers: TimerStarts, timeouts: LeaderTimeouts
) -> tuple[Optional[Reason], Optional[float]]:
    """May this node take the route over (missing or leaderless, leader dead, stale hop),
    and if not yet, from when?"""
    if actual is None:
        return Reason.CREATE, None
    if actual.leader is None:
        return Reason.TAKEOVER, None
    due: list[float] = []
    dead_since = timers.dead_since.get(actual.leader)
    if dead_since is not None:
        due.append(dead_since + timeouts.takeover_after)
    if timers.stale_since is not None:
        due.append(timers.stale_since + timeouts.stale_after)
    if any(timers.now >= t for t in due):
        return Reason.TAKEOVER, None
    return None, min(due, default=None)


def track_dead(
    previous: Mapping[str, float],
    alive: Iterable[str],
    watched: Iterable[str],
    now: float,
    failing_since: Optional[Mapping[str, float]] = None,
) -> dict[str, float]:
    """Since when each watched address has looked dead; alive ones are forgotten.

    `failing_since` says when an address's current run of failed probes began,
    which may be before this node first saw it as dead (the `fall` threshold
    takes a few probes to reach). Pure.
    """
    alive_set = set(alive)
    hints = failing_since or {}
    return {
        a: previous.get(a, min(hints.get(a, now), now)) for a in set(watched) if a not in alive_set
    }


def track_stale(
    previous: Optional[float], actual: Optional[Route], ready: Iterable[str], now: float
) -> Optional[float]:
    """Since when NSX's route has kept a next hop the EndpointSlices no longer call ready.

    A live leader withdraws such a hop at once, so one that stays means the leader's
    daemon is dead or cannot write. Only the shared truth (the EndpointSlices) counts,
    never this node's probes, so nodes whose probes disagree cannot fight over it. Pure.
    """
    if actual is None or not actual.managed:
        return None
    ready_set = set(ready)
    if all(h in ready_set for h in actual.next_hops):
        return None
    return previous if previous is not None else now


def own_identity(
    configured: str, local_addresses: Iterable[str], listed: Iterable[str]
) -> Optional[str]:
    """This node's identity: `node_address`, else its local address that the EndpointSlices list."""
    if configured:
        return configured
    mine = sorted(set(local_addresses) & set(listed), key=ip_sort_key)
    return mine[0] if mine else None


def track_hold_down(
    previous: Optional[float],
    *,
    last_leader: Optional[str],
    actual: Optional[Route],
    node: Optional[str],
    now: float,
) -> Optional[float]:
    """When this node's hold-down began: also when it sees another node take the route.

    `last_leader` is the leader named in the route this node read (or wrote) last,
    None before its first read. A takeover starts the taker's hold-down (the engine
    records that when the write succeeds); seeing the leader change to another node
    starts this node's too, whether it was displaced or only watched. Nodes that
    cannot probe each other would otherwise hand the route round: with only the
    displaced node held, each of the others may take over takeover_after after the
    last, so n nodes split n ways change the leader n - 1 times per hold_down. Held
    by any change they see, they change it at most once per hold_down. Pure.
    """
    if actual is None or last_leader is None:
        return previous
    if actual.leader not in (None, node, last_leader):
        return now
    return previous


@dataclass(frozen=True)
class RuleMemory:
    """What the leader rule carries from one pass to the next: the route last read
    (or written) and when each of its timers started. Kept in memory only: a
    restarted node waits the timers out afresh."""

    actual: Optional[Route] = None
    dead_since: Mapping[str, float] = field(default_factory=dict)
    stale_since: Optional[float] = None
    held_since: Optional[float] = None
    last_ready: tuple[str, ...] = ()

    def starts(self, now: float) -> TimerStarts:
        return TimerStarts(now, self.dead_since, self.stale_since, self.held_since)

    def wrote(self, route: Route, *, takeover: bool, now: float) -> RuleMemory:
        """After this node wrote `route`; a takeover starts its own hold-down."""
        return replace(self, actual=route, held_since=now if takeover else self.held_since)


def remember(
    memory: RuleMemory,
    view: View,
    actual: Optional[Route],
    failing_since: Mapping[str, float],
    now: float,
) -> RuleMemory:
    """The memory after reading `actual` at `now`: every timer of the leader rule
    moved on. `failing_since` holds when each failing API server's run of failed
    probes began. Pure."""
    last_leader = memory.actual.leader if memory.actual is not None else None
    watched = set(view.ready) | set(memory.last_ready)
    if actual is not None:
        watched |= set(actual.next_hops) | ({actual.leader} if actual.leader else set())
    return RuleMemory(
        actual=actual,
        dead_since=track_dead(
            memory.dead_since,
            alive=view.routable,
            watched=watched,
            now=now,
            failing_since=failing_since,
        ),
        stale_since=track_stale(memory.stale_since, actual, view.ready, now),
        held_since=track_hold_down(
            memory.held_since, last_leader=last_leader, actual=actual, node=view.node, now=now
        ),
        last_ready=view.ready,
    )

"""The leader rule and fail-static, as tables of situations."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from typing import Optional

import pytest

from litelb.core.decide import (
    Decision,
    LeaderTimeouts,
    RuleMemory,
    TimerStarts,
    View,
    decide,
    own_identity,
    remember,
    track_dead,
    track_hold_down,
    track_stale,
)
from litelb.core.route import desired_route, same_route
from litelb.model import Action, Reason, Route, Tag

VIP = "192.168.160.249"
NAME = "litelb-192-168-160-249"
A, B, C = "10.20.4.2", "10.20.4.3", "10.20.4.10"
COORD = LeaderTimeouts(takeover_after=1.0, stale_after=10.0, hold_down=30.0)


def route(hops: tuple[str, ...], leader: Optional[str], **kw: object) -> Route:
    r = desired_route(vip=VIP, display_name=NAME, next_hops=hops, leader=leader or "")
    if leader is None:
        r = replace(r, tags=tuple(t for t in r.tags if t.scope != "litelb/leader"))
    return replace(r, **{"revision": 7, **kw})


def run(view: View, actual: Optional[Route], timers: Optional[TimerStarts] = None) -> Decision:
    return decide(view, actual, timers or TimerStarts(now=100.0), COORD, vip=VIP, display_name=NAME)


ALL = (A, B, C)


@pytest.mark.parametrize(
    ("view", "actual", "timers", "action", "reason"),
    [
        # nothing happens before the first EndpointSlice list
        (View(A, ALL, ALL, synced=False), None, None, Action.NOOP, Reason.NOT_SYNCED),
        # a route at our id without our tag is never touched
        (
            View(A, ALL, ALL),
            replace(route(ALL, A), tags=()),
            None,
            Action.NOOP,
            Reason.FOREIGN_ROUTE,
        ),
        # missing route: any listed node creates it
        (View(A, ALL, ALL), None, None, Action.WRITE, Reason.CREATE),
        # a node not in the EndpointSlices never leads
        (View("10.9.9.9", ALL, ALL), None, None, Action.NOOP, Reason.NOT_LISTED),
        (View(None, ALL, ALL), None, None, Action.NOOP, Reason.NOT_LISTED),
        # managed route without a leader: take it over
        (View(A, ALL, ALL), route(ALL, None), None, Action.WRITE, Reason.TAKEOVER),
        # the leader with the route as it wants it: nothing to do
        (View(A, ALL, ALL), route(ALL, A), None, Action.NOOP, Reason.IN_SYNC),
        # the leader withdraws an unhealthy hop
        (View(A, ALL, (A, B)), route(ALL, A), None, Action.WRITE, Reason.DRIFT),
        # fail-static: nothing healthy, nothing written
        (View(A, ALL, ()), route(ALL, A), None, Action.NOOP, Reason.NO_HEALTHY_ENDPOINTS),
        # an admin distance changed in the UI is drift
        (
            View(A, ALL, ALL),
            route(ALL, A, hops_as_litelb_writes=False),
            None,
            Action.WRITE,
            Reason.DRIFT,
        ),
        # a follower with a live leader follows
        (View(B, ALL, ALL), route(ALL, A), None, Action.NOOP, Reason.NOT_LEADER),
        # leader dead for takeover_after: take over
        (
            View(B, ALL, (B, C)),
            route(ALL, A),
            TimerStarts(100.0, {A: 99.0}),
            Action.WRITE,
            Reason.TAKEOVER,
        ),
        # ... but not before
        (
            View(B, ALL, (B, C)),
            route(ALL, A),
            TimerStarts(100.0, {A: 99.5}),
            Action.NOOP,
            Reason.NOT_LEADER,
        ),
        # a stale hop for stale_after: take over (the leader's daemon is gone)
        (
            View(B, (A, B), (A, B)),
            route(ALL, A),
            TimerStarts(100.0, stale_since=90.0),
            Action.WRITE,
            Reason.TAKEOVER,
        ),
        (
            View(B, (A, B), (A, B)),
            route(ALL, A),
            TimerStarts(100.0, stale_since=95.0),
            Action.NOOP,
            Reason.NOT_LEADER,
        ),
        # hold-down after this node's own takeover
        (
            View(B, ALL, (B, C)),
            route(ALL, A),
            TimerStarts(100.0, {A: 90.0}, hold_down_since=80.0),
            Action.NOOP,
            Reason.HOLD_DOWN,
        ),
        (
            View(B, ALL, (B, C)),
            route(ALL, A),
            TimerStarts(100.0, {A: 90.0}, hold_down_since=70.0),
            Action.WRITE,
            Reason.TAKEOVER,
        ),
        # hold-down never keeps a missing route missing
        (
            View(B, ALL, ALL),
            None,
            TimerStarts(100.0, hold_down_since=99.0),
            Action.WRITE,
            Reason.CREATE,
        ),
        # a takeover with nothing healthy would write an empty list: no
        (
            View(B, ALL, ()),
            route(ALL, A),
            TimerStarts(100.0, {A: 50.0}),
            Action.NOOP,
            Reason.NO_HEALTHY_ENDPOINTS,
        ),
        # a stopping follower does nothing
        (View(B, ALL, ALL, stopping=True), None, None, Action.NOOP, Reason.NOT_LEADER),
        # a stopping leader hands over to the next healthy node
        (View(A, ALL, ALL, stopping=True), route(ALL, A), None, Action.WRITE, Reason.HANDOVER),
        # ... unless it is alone
        (View(A, (A,), (A,), stopping=True), route((A,), A), None, Action.NOOP, Reason.IN_SYNC),
    ],
)
def test_decision_table(
    view: View,
    actual: Optional[Route],
    timers: Optional[TimerStarts],
    action: Action,
    reason: Reason,
) -> None:
    d = run(view, actual, timers)
    assert (d.action, d.reason) == (action, reason)
    if d.action is Action.WRITE:
        assert d.route is not None and d.route.next_hops, "never an empty next-hop list"


def test_written_route_is_sorted_tagged_and_keeps_foreign_tags() -> None:
    actual = replace(route(ALL, A), tags=(*route(ALL, A).tags, Tag("owner", "netops")))
    d = run(View(A, ALL, (C, B, A)), replace(actual, next_hops=(A,)))
    assert d.route is not None
    assert d.route.network == VIP + "/32"
    assert d.route.next_hops == (A, B, C)  # numeric order: .10 after .3
    assert d.route.tag_value("litelb/managed-by") == "litelb"
    assert d.route.tag_value("litelb/vip") == VIP
    assert d.route.leader == A
    assert Tag("owner", "netops") in d.route.tags
    assert d.route.revision is None


def test_handover_names_successor_and_keeps_hops() -> None:
    d = run(View(A, ALL, ALL, stopping=True), route(ALL, A))
    assert d.route is not None and d.route.leader == B and d.route.next_hops == ALL


def test_recheck_at_says_when_takeover_becomes_due() -> None:
    d = run(View(B, ALL, (B, C)), route(ALL, A), TimerStarts(100.0, {A: 99.5}, stale_since=95.0))
    assert d.recheck_at == pytest.approx(100.5)
    d = run(
        View(B, ALL, (B, C)), route(ALL, A), TimerStarts(100.0, {A: 90.0}, hold_down_since=80.0)
    )
    assert d.recheck_at == pytest.approx(110.0)


def test_same_route_ignores_order_and_foreign_tags() -> None:
    want = route((A, B), A, revision=None)
    got = replace(want, next_hops=(B, A), tags=(*want.tags, Tag("x", "y")), revision=3)
    assert same_route(want, got)
    assert not same_route(want, replace(got, display_name="renamed"))
    assert not same_route(want, None)


def test_ipv6_vip_is_a_host_route() -> None:
    r = desired_route(vip="2001:db8::10", display_name="x", next_hops=("2001:db8::2",), leader="a")
    assert r.network == "2001:db8::10/128"


def test_track_dead_remembers_first_moment_and_forgets_alive() -> None:
    d = track_dead({}, alive={A}, watched={A, B}, now=5.0)
    assert d == {B: 5.0}
    d = track_dead(d, alive={A}, watched={A, B, C}, now=6.0)
    assert d == {B: 5.0, C: 6.0}
    assert track_dead(d, alive={A, B, C}, watched={A, B, C}, now=7.0) == {}


def test_track_stale_only_counts_the_endpointslice() -> None:
    r = route(ALL, A)
    assert track_stale(None, r, ready=ALL, now=1.0) is None
    assert track_stale(None, r, ready=(A, B), now=1.0) == 1.0
    assert track_stale(1.0, r, ready=(A, B), now=4.0) == 1.0
    assert track_stale(1.0, None, ready=(A, B), now=4.0) is None


def test_track_hold_down_starts_when_the_leader_changes_to_another_node() -> None:
    kw = {"node": A, "now": 9.0}
    # displaced
    assert track_hold_down(None, last_leader=A, actual=route(ALL, B), **kw) == 9.0
    # still the leader, or its own takeover read back
    assert track_hold_down(None, last_leader=A, actual=route(ALL, A), **kw) is None
    assert track_hold_down(3.0, last_leader=B, actual=route(ALL, A), **kw) == 3.0
    # found by the model check: a node that only watched B take over from C is held
    # too, or n nodes that cannot see each other change the leader n - 1 times per
    # hold_down
    assert track_hold_down(None, last_leader=C, actual=route(ALL, B), **kw) == 9.0
    # no change, no earlier read, or a leaderless route: the hold-down stays as it was
    assert track_hold_down(3.0, last_leader=B, actual=route(ALL, B), **kw) == 3.0
    assert track_hold_down(None, last_leader=None, actual=route(ALL, B), **kw) is None
    assert track_hold_down(None, last_leader=B, actual=route(ALL, None), **kw) is None


def test_own_identity() -> None:
    assert own_identity("10.0.0.1", {"10.0.0.9"}, [B]) == "10.0.0.1"
    assert own_identity("", {"127.0.0.1", B}, [A, B]) == B
    assert own_identity("", {"127.0.0.1"}, [A, B]) is None


def test_two_nodes_that_cannot_see_each_other_change_leader_at_most_once_per_hold_down() -> None:
    """A and B each think the other's API server is dead; the route must not flap."""
    store: dict[str, Optional[Route]] = {"route": route((A, B), A)}
    state = {n: {"dead": {}, "held": None, "last": A} for n in (A, B)}
    changes: list[tuple[float, str]] = []
    t = 0.0
    while t < 185.0:
        for node in (A, B):
            s = state[node]
            actual = store["route"]
            s["held"] = track_hold_down(
                s["held"], last_leader=s["last"], actual=actual, node=node, now=t
            )
            s["dead"] = track_dead(s["dead"], alive={node}, watched={A, B}, now=t)
            d = decide(
                View(node, (A, B), (node,)),
                actual,
                TimerStarts(t, s["dead"], hold_down_since=s["held"]),
                COORD,
                vip=VIP,
                display_name=NAME,
            )
            if d.action is Action.WRITE:
                assert d.route is not None
                if actual is None or d.route.leader != actual.leader:
                    changes.append((t, d.route.leader or ""))
                store["route"] = d.route
                if d.takeover:
                    s["held"] = t
            s["last"] = store["route"].leader if store["route"] is not None else None
        t += 0.5
    gaps = [b[0] - a[0] for a, b in zip(changes, changes[1:])]
    assert changes, "the nodes do fight, but slowly"
    assert all(g >= COORD.hold_down for g in gaps), changes


def test_track_dead_dates_death_from_the_first_failed_probe() -> None:
    d = track_dead({}, alive={A}, watched={A, B, C}, now=5.0, failing_since={B: 3.0})
    assert d == {B: 3.0, C: 5.0}
    # a remembered moment is kept; a hint from the future is not believed
    assert track_dead(d, alive={A}, watched={B}, now=6.0, failing_since={B: 5.5}) == {B: 3.0}
    assert track_dead({}, alive=(), watched={B}, now=6.0, failing_since={B: 9.0}) == {B: 6.0}


def test_the_core_imports_no_configuration_module() -> None:
    code = (
        "import sys, litelb.core.decide, litelb.core.route, litelb.core.health; "
        "print(sorted(m for m in sys.modules if m.startswith('litelb') and "
        "not m.startswith('litelb.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['litelb', 'litelb.model']"


def test_memory_across_passes_times_a_dead_leader_from_its_first_failed_probe() -> None:
    view = View(B, ALL, (B, C))
    first = remember(RuleMemory(), view, route(ALL, A), {A: 98.5}, now=99.0)
    assert first.dead_since == {A: 98.5} and first.held_since is None
    assert first.starts(99.0) == TimerStarts(99.0, {A: 98.5}, None, None)
    assert run(view, route(ALL, A), first.starts(99.0)).action is Action.NOOP
    # The leader's probes have failed for takeover_after: this node takes over.
    second = remember(first, view, route(ALL, A), {A: 98.5}, now=99.6)
    assert second.dead_since == {A: 98.5}
    decision = run(view, route(ALL, A), second.starts(99.6))
    assert decision.reason is Reason.TAKEOVER and decision.route is not None
    after = second.wrote(decision.route, takeover=True, now=99.6)
    assert after.held_since == 99.6 and after.actual == decision.route


def test_memory_starts_the_hold_down_when_another_node_takes_the_route() -> None:
    view = View(C, ALL, ALL)
    seen = remember(RuleMemory(), view, route(ALL, A), {}, now=10.0)
    assert seen.held_since is None, "the first read is no change of leader"
    taken = remember(seen, view, route(ALL, B), {}, now=11.0)
    assert taken.held_since == 11.0
    again = remember(taken, view, route(ALL, B), {}, now=12.0)
    assert again.held_since == 11.0
    # Only a takeover starts this node's own hold-down, not every write.
    assert again.wrote(route(ALL, B), takeover=False, now=13.0).held_since == 11.0


def test_memory_times_a_hop_the_endpointslices_dropped() -> None:
    view = View(C, (A, C), (A, C))
    kept = remember(RuleMemory(), view, route(ALL, A), {}, now=5.0)
    assert kept.stale_since == 5.0 and kept.last_ready == (A, C)
    assert remember(kept, view, route((A, C), A), {}, now=6.0).stale_since is None

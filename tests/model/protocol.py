"""A model check of the leader protocol: the real decision functions of 3, 5 and 7
simulated nodes against an in-memory compare-and-swap store.

Everything is simulated and seeded: time advances in ticks, probes see what the
fault schedule lets them see, NSX calls take a random while (so passes of several
nodes interleave between their read and their write), and a schedule injects
partitions, API server deaths, daemon deaths, SIGTERM hand-overs, watch cuts, NSX
outages and lost answers. Only the glue between the functions is written here; it
mirrors `litelb/engine.py` (see `Daemon.reconcile` and `Daemon.one_pass`).

Invariants, checked on every write and every tick:
- the route is never empty and never deleted, and a write is accepted only at the
  revision the store holds (the store is the judge; a stale one gets 412);
- a node writes only as the leader the route names, or through a takeover
  (creation included) that wins the compare-and-swap;
- under a stable partition the leader changes at most once per hold_down (less
  one NSX read, see World.check_flapping), except where the taker could not see
  the change: A, then B, then A again between two of its reads looks like no
  change in the leader tag; such changes are counted and printed, not failed;
- after the faults stop, the route holds exactly the API servers that serve
  within takeover_after + fall × interval plus one pass (see `settle_bound`).

`python -m tests.model.protocol --runs 20000` runs a larger check than the test.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Optional

from litelb.core.decide import (
    Decision,
    LeaderTimeouts,
    RuleMemory,
    View,
    decide,
    remember,
)
from litelb.core.health import Health, healthy_addresses, step_all
from litelb.model import Action, Reason, Route

VIP = "192.168.160.249"
NAME = "litelb-192-168-160-249"
TICK = 0.1  # simulated seconds per step of the world
COALESCE = 0.1  # engine.COALESCE_WINDOW
WRITE_SPACING = 0.6  # engine.WRITE_SPACING
CONFLICT_ROUNDS = 3  # engine.CONFLICT_ROUNDS
RETRY_MAX = 10.0  # engine.RETRY_MAX
NSX_DELAY = 0.3  # the longest a simulated NSX call takes
SLICE_LAG = 0.5  # the longest the EndpointSlices take to follow an API server
TRACE = 80  # events kept for a violation's trace


class Conflict(Exception):
    """412: the revision sent is not the one the store holds."""


class Unavailable(Exception):
    """NSX did not answer (outage, cut, 503 after the client's retries)."""


class Violation(Exception):
    pass


@dataclass(frozen=True)
class Params:
    seed: int
    nodes: int
    kind: str  # "chaos": random faults; "partition": one partition held still
    timeouts: LeaderTimeouts
    interval: float
    fall: int
    rise: int
    resync: float
    fault_end: float  # no fault after this moment
    flaky: float  # chance that one probe fails for no reason while faults last
    lost_answer: float  # chance that a write applies but its answer is lost

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(f"10.0.0.{i + 1}" for i in range(self.nodes))

    @property
    def settle_bound(self) -> float:
        """How long after the faults stop the route must hold the serving API servers.

        takeover_after + fall × interval is the rule (a dead leader is noticed after
        `fall` probes and replaced takeover_after after its first failed one). One
        pass adds: the probe's phase (one interval), the EndpointSlice lag, the
        coalescing window, the write spacing, two NSX calls and a tick. A restored
        API server instead needs `rise` probes. Timers still running when the faults
        stop (a hold-down, a backoff) come first: see World.settle_after_heal.
        """
        t = self.timeouts
        one_pass = self.interval + SLICE_LAG + COALESCE + WRITE_SPACING + 2 * NSX_DELAY + TICK
        return max(t.takeover_after + self.fall * self.interval, self.rise * self.interval) + (
            one_pass
        )


def params_for(seed: int, nodes: int) -> Params:
    rng = random.Random(seed)
    return Params(
        seed=seed,
        nodes=nodes,
        kind=rng.choice(("chaos", "chaos", "partition")),
        timeouts=LeaderTimeouts(
            takeover_after=rng.choice((0.5, 1.0, 2.0)),
            stale_after=rng.choice((2.0, 5.0)),
            hold_down=rng.choice((4.0, 8.0)),
        ),
        interval=rng.choice((0.5, 1.0)),
        fall=rng.choice((1, 2, 3)),
        rise=rng.choice((1, 2)),
        resync=rng.choice((3.0, 10.0)),
        fault_end=rng.choice((15.0, 30.0)),
        flaky=rng.choice((0.0, 0.05, 0.3)),
        lost_answer=rng.choice((0.0, 0.1)),
    )


@dataclass
class Store:
    """NSX's route: one object, a revision per write, 412 on a stale revision."""

    route: Optional[Route] = None
    writes: int = 0
    conflicts: int = 0

    def get(self) -> Optional[Route]:
        return self.route

    def put(self, route: Route, revision: Optional[int]) -> Route:
        current = self.route.revision if self.route is not None else None
        if revision != current:
            self.conflicts += 1
            raise Conflict(f"sent _revision={revision}, current _revision={current}")
        self.route = replace(route, revision=0 if current is None else current + 1)
        self.writes += 1
        return self.route


@dataclass
class Schedule:
    """When the worker runs next (engine.scheduler.Schedule)."""

    last_write: float = float("-inf")
    next_resync: float = 0.0
    recheck_at: Optional[float] = None
    retry_at: Optional[float] = None
    failures: int = 0


@dataclass
class Daemon:
    """One node's litelb: its watch view, its probes and its reconcile worker."""

    world: World
    address: str
    memory: RuleMemory = field(default_factory=RuleMemory)
    schedule: Schedule = field(default_factory=Schedule)
    ready: tuple[str, ...] = ()  # what its EndpointSlice watch shows
    synced: bool = False
    health: dict[str, Health] = field(default_factory=dict)
    probe_phase: float = 0.0
    kicked_at: Optional[float] = None
    kicked_by_probes: bool = False  # a probe verdict skips the coalescing window
    in_flight: Optional[Generator[float, None, Optional[Decision]]] = None
    resume_at: float = 0.0
    stopping: bool = False  # SIGTERM received: one last pass, then gone
    final_pass: bool = False  # that last pass has started
    # the revision of the last read that showed it a new leader (see World.unseen)
    saw_change_at: Optional[int] = None

    def view(self) -> View:
        """engine.Engine._view."""
        if not self.synced:
            return View(None, (), (), synced=False, stopping=self.stopping)
        routable = healthy_addresses(self.health, self.ready)
        return View(self.address, self.ready, routable, synced=True, stopping=self.stopping)

    def reconcile(self) -> Generator[float, None, Optional[Decision]]:
        """engine.Engine.reconcile: up to CONFLICT_ROUNDS passes; a 412 re-reads at once.

        It yields the simulated duration of each NSX call, so other nodes act meanwhile.
        """
        m = self.schedule
        decision: Optional[Decision] = None
        for _ in range(CONFLICT_ROUNDS):
            try:
                decision = yield from self.one_pass()
                break
            except Conflict as e:
                self.world.note(self.address, f"412, re-reading ({e})")
            except Unavailable as e:
                self.failed(str(e))
                return None
        else:
            self.failed("lost the race three times")
            return None
        m.failures = 0
        m.retry_at = None
        m.recheck_at = decision.recheck_at if decision else None
        m.next_resync = self.world.now + self.world.p.resync
        return decision

    def failed(self, what: str) -> None:
        """engine.Engine._failed (the jitter comes from the world's seeded random)."""
        m = self.schedule
        m.failures += 1
        delay = min(RETRY_MAX, 0.5 * 2 ** (m.failures - 1)) * self.world.rng.uniform(0.8, 1.2)
        m.retry_at = self.world.now + delay
        self.world.note(self.address, f"failed ({what}), retry in {delay:.1f} s")

    def one_pass(self) -> Generator[float, None, Decision]:
        """engine.Engine._pass and _write: read, track the timers, decide, CAS write."""
        w, m = self.world, self.memory
        now = w.now
        view = self.view()
        if not view.synced:
            return Decision(Action.NOOP, Reason.NOT_SYNCED)
        yield w.nsx_delay()
        actual = w.nsx_get(self.address)
        now = w.now  # the timers start when the route was seen, as in the engine
        last_leader = m.actual.leader if m.actual is not None else None
        if actual is not None and last_leader not in (None, actual.leader):
            self.saw_change_at = actual.revision
        failing = {
            a: h.failing_since for a, h in self.health.items() if h.failing_since is not None
        }
        m = self.memory = remember(m, view, actual, failing, now)
        decision = decide(view, actual, m.starts(now), w.p.timeouts, vip=VIP, display_name=NAME)
        if decision.action is Action.WRITE and decision.route is not None:
            spaced_at = self.schedule.last_write + WRITE_SPACING
            if now < spaced_at and not view.stopping:
                return replace(decision, action=Action.NOOP, recheck_at=spaced_at)
            self.schedule.last_write = now
            yield w.nsx_delay()
            written = w.nsx_put(self.address, decision, actual)
            self.memory = self.memory.wrote(written, takeover=decision.takeover, now=now)
        return decision

    def due(self, now: float) -> bool:
        """engine.Engine.run and _next_deadline: a kick after the coalescing window, or a timer."""
        m = self.schedule
        if self.kicked_at is not None and (
            self.kicked_by_probes or now >= self.kicked_at + COALESCE
        ):
            return True
        if m.retry_at is not None:
            return now >= m.retry_at
        deadline = m.next_resync if m.recheck_at is None else min(m.next_resync, m.recheck_at)
        return now >= deadline


@dataclass
class Event:
    at: float
    what: str
    args: tuple[int, ...] = ()


class World:
    """The simulated cluster: API servers, the EndpointSlices, the network, NSX."""

    def __init__(self, p: Params) -> None:
        self.p = p
        self.rng = random.Random(p.seed * 7919 + 1)
        self.now = 0.0
        self.addresses = p.addresses
        self.store = Store()
        self.serving = {a: True for a in self.addresses}
        self.slice_ready = {a: True for a in self.addresses}
        self.slice_due: dict[str, tuple[float, bool]] = {}
        self.cut: set[frozenset[str]] = set()  # pairs that cannot reach each other
        self.watch_cut: set[str] = set()
        self.nsx_out = False
        self.nsx_cut: set[str] = set()
        self.daemons: dict[str, Optional[Daemon]] = {a: None for a in self.addresses}
        self.trace: deque[str] = deque(maxlen=TRACE)
        self.passes = 0
        # (when, from, to, revision written, whether the writer could have seen the
        # change before it)
        self.leader_changes: list[tuple[float, Optional[str], Optional[str], int, bool]] = []
        self.unseen_changes = 0
        self.stable_since: Optional[float] = None  # a partition held still since then
        self.last_fault = 0.0
        for i, a in enumerate(self.addresses):
            self.start_daemon(a, phase=(i * p.interval / p.nodes))

    # -- NSX -----------------------------------------------------------------------

    def nsx_delay(self) -> float:
        return self.rng.uniform(0.0, NSX_DELAY)

    def nsx_get(self, node: str) -> Optional[Route]:
        if self.nsx_out or node in self.nsx_cut:
            raise Unavailable("NSX unreachable")
        return self.store.get()

    def nsx_put(self, node: str, decision: Decision, read: Optional[Route]) -> Route:
        if self.nsx_out or node in self.nsx_cut:
            raise Unavailable("NSX unreachable")
        assert decision.route is not None
        before = self.store.route
        if not decision.route.next_hops:
            self.fail(f"{node} wrote an empty next-hop list ({decision.reason.value})")
        named = before.leader if before is not None else None
        written = self.store.put(decision.route, read.revision if read else None)
        # The compare-and-swap succeeded, so `read` is what the store held.
        if named != node and not decision.takeover:
            self.fail(f"{node} wrote as {decision.reason.value} while the route names {named}")
        if decision.takeover and decision.reason not in (Reason.CREATE, Reason.TAKEOVER):
            self.fail(f"{node} claimed leadership for {decision.reason.value}")
        self.note(
            node,
            f"wrote rev {written.revision} hops {','.join(written.next_hops)} "
            f"leader {written.leader} ({decision.reason.value})",
        )
        if written.leader != named:
            seen = not self.unseen(self.daemons[node])
            assert written.revision is not None
            self.leader_changes.append((self.now, named, written.leader, written.revision, seen))
        if self.rng.random() < self.p.lost_answer and self.now < self.p.fault_end:
            raise Unavailable("the write applied but its answer was lost")
        return written

    # -- the world -----------------------------------------------------------------

    def unseen(self, daemon: Optional[Daemon]) -> bool:
        """Could this daemon not know of the last change of leader?

        It knows only from a read that shows another leader than its read before. The
        leader tag alone cannot show A, then B, then A again between two reads, so such
        a daemon is not held down by that change: a known limit of the protocol,
        counted apart rather than reported as a violation.
        """
        if daemon is None or not self.leader_changes:
            return False
        changed_at = self.leader_changes[-1][3]
        return daemon.saw_change_at is None or daemon.saw_change_at < changed_at

    def note(self, who: str, what: str) -> None:
        self.trace.append(f"{self.now:7.2f} {who:>9} {what}")

    def fail(self, what: str) -> None:
        raise Violation(what)

    def reaches(self, a: str, b: str) -> bool:
        return a == b or frozenset((a, b)) not in self.cut

    def start_daemon(self, address: str, phase: float = 0.0) -> None:
        d = Daemon(self, address, probe_phase=phase)
        d.schedule.next_resync = self.now
        self.daemons[address] = d
        self.note(address, "daemon starts")

    def kill_daemon(self, address: str) -> None:
        self.daemons[address] = None
        self.note(address, "daemon dies")

    def set_serving(self, address: str, up: bool) -> None:
        if self.serving[address] != up:
            self.serving[address] = up
            self.slice_due[address] = (self.now + self.rng.uniform(0.0, SLICE_LAG), up)
            self.note(address, "API server " + ("serves" if up else "stops"))

    def tick(self) -> None:
        now = self.now
        for a, (at, up) in list(self.slice_due.items()):
            if now >= at:
                self.slice_ready[a] = up
                del self.slice_due[a]
        shared = tuple(a for a in self.addresses if self.slice_ready[a])
        order = [d for d in self.daemons.values() if d is not None]
        self.rng.shuffle(order)
        for d in order:
            self.observe(d, shared)
        for d in order:
            self.work(d)

    def observe(self, d: Daemon, shared: tuple[str, ...]) -> None:
        """The daemon's watch and probes; a change kicks its worker (engine.set_snapshot/health)."""
        if d.address not in self.watch_cut and (shared != d.ready or not d.synced):
            d.ready, d.synced = shared, True
            d.kicked_at = d.kicked_at if d.kicked_at is not None else self.now
        phase = (self.now - d.probe_phase) / self.p.interval
        if phase < 0 or abs(phase - round(phase)) > 1e-6:
            return
        faulty = self.now < self.p.fault_end
        results = {
            a: self.serving[a]
            and self.reaches(d.address, a)
            and not (faulty and self.rng.random() < self.p.flaky)
            for a in d.ready
        }
        before = {a for a, h in d.health.items() if h.healthy}
        d.health = step_all(d.health, results, rise=self.p.rise, fall=self.p.fall, at=self.now)
        if before != {a for a, h in d.health.items() if h.healthy}:
            d.kicked_at = d.kicked_at if d.kicked_at is not None else self.now
            d.kicked_by_probes = True

    def work(self, d: Daemon) -> None:
        if d.in_flight is None:
            if d.stopping:
                d.final_pass = True
            elif not d.due(self.now):
                return
            d.kicked_at, d.kicked_by_probes = None, False
            d.in_flight = d.reconcile()
            self.passes += 1
            self.resume(d)
        elif self.now >= d.resume_at:
            self.resume(d)

    def resume(self, d: Daemon) -> None:
        assert d.in_flight is not None
        try:
            d.resume_at = self.now + next(d.in_flight)
        except StopIteration:
            d.in_flight = None
            if d.final_pass:
                self.kill_daemon(d.address)

    # -- the run ---------------------------------------------------------------------

    def check_tick(self) -> None:
        r = self.store.route
        if self.now > 5.0 and r is None:
            self.fail("no route 5 s after start")
        if r is not None and not r.next_hops:
            self.fail("the route is empty")

    def check_flapping(self) -> None:
        if self.stable_since is None:
            return
        hold = self.p.timeouts.hold_down
        changes = [
            (t, seen)
            for t, old, _, _, seen in self.leader_changes
            if t >= self.stable_since and old
        ]
        # The engine starts a hold-down at the `now` of the pass, taken before its read,
        # so a node that learns of a change from that read counts from up to one read
        # earlier than the change itself.
        for (first, _), (second, seen) in zip(changes, changes[1:]):
            if second - first >= hold - NSX_DELAY - 1e-9:
                continue
            if not seen:
                self.unseen_changes += 1
                continue
            self.fail(
                f"under a stable partition the leader changed at {first:.2f} and "
                f"{second:.2f}, less than hold_down={hold} apart"
            )

    def settle_after_heal(self) -> float:
        """settle_bound, counted from when the last timer running as the faults stop ends.

        A hold-down exists to delay a takeover, and after an NSX outage a daemon learns
        that NSX is back only when its backoff lets it ask again: both may run past the
        end of the faults, and the bound counts from their end.
        """
        later = [0.0]
        for d in self.daemons.values():
            if d is None or d.stopping:
                continue
            m = d.memory
            if m.held_since is not None:
                later.append(m.held_since + self.p.timeouts.hold_down - self.now)
            if d.schedule.retry_at is not None:
                later.append(d.schedule.retry_at - self.now)
        return max(later) + self.p.settle_bound

    def check_settled(self) -> None:
        want = tuple(a for a in self.addresses if self.serving[a])
        r = self.store.route
        if want and (r is None or r.next_hops != want):
            self.fail(
                f"{self.now - self.p.fault_end:.1f} s after the faults stopped the route "
                f"holds {r.next_hops if r else None}, the serving API servers are {want}"
            )


def schedule(p: Params, rng: random.Random) -> list[Event]:
    """The faults of one run, all before p.fault_end; the world heals at fault_end."""
    n = p.nodes
    events: list[Event] = []
    if p.kind == "partition":
        start = rng.uniform(1.0, 4.0)
        events.append(Event(start, "partition", tuple(rng.randrange(3) for _ in range(n))))
        return events
    t = rng.uniform(0.5, 3.0)
    kinds = (
        "api-down", "api-up", "kill", "start", "sigterm", "partition", "heal",
        "watch-cut", "watch-ok", "nsx-out", "nsx-ok", "nsx-cut",
    )  # fmt: skip
    while t < p.fault_end - 1.0:
        kind = rng.choice(kinds)
        if kind == "partition":
            events.append(Event(t, kind, tuple(rng.randrange(3) for _ in range(n))))
        else:
            events.append(Event(t, kind, (rng.randrange(n),)))
        t += rng.expovariate(1.0 / 1.5)
    return events


def apply(w: World, e: Event) -> None:
    a = w.addresses[e.args[0]] if e.args and e.what != "partition" else ""
    if e.what == "api-down":
        w.set_serving(a, False)
    elif e.what == "api-up":
        w.set_serving(a, True)
    elif e.what == "kill" and w.daemons[a] is not None:
        w.kill_daemon(a)
    elif e.what == "start" and w.daemons[a] is None:
        w.start_daemon(a, phase=w.now % w.p.interval)
    elif e.what == "sigterm" and w.daemons[a] is not None:
        daemon = w.daemons[a]
        assert daemon is not None
        daemon.stopping = True
        w.note(a, "SIGTERM")
    elif e.what == "partition":
        groups = dict(zip(w.addresses, e.args))
        w.cut = {
            frozenset((x, y))
            for x in w.addresses
            for y in w.addresses
            if x < y and groups[x] != groups[y]
        }
        w.note("world", f"partition {sorted(sorted(map(str, g)) for g in _groups(groups))}")
        if w.p.kind == "partition":
            w.stable_since = w.now
    elif e.what == "heal":
        w.cut = set()
        w.note("world", "partition healed")
    elif e.what == "watch-cut":
        w.watch_cut.add(a)
    elif e.what == "watch-ok":
        w.watch_cut.discard(a)
    elif e.what == "nsx-out":
        w.nsx_out = True
        w.note("world", "NSX outage")
    elif e.what == "nsx-ok":
        w.nsx_out = False
        w.nsx_cut = set()
        w.note("world", "NSX back")
    elif e.what == "nsx-cut":
        w.nsx_cut.add(a)
        w.note(a, "cut from NSX")


def _groups(groups: dict[str, int]) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for a, g in groups.items():
        out.setdefault(g, []).append(a)
    return list(out.values())


def heal(w: World, rng: random.Random) -> None:
    """The faults stop: network and NSX healthy, every daemon running (systemd restarts
    it), each API server serving or stopped for good, at least one serving."""
    w.cut, w.watch_cut, w.nsx_cut, w.nsx_out = set(), set(), set(), False
    for a in w.addresses:
        if w.daemons[a] is None or w.daemons[a].stopping:  # type: ignore[union-attr]
            if w.daemons[a] is not None:
                w.kill_daemon(a)
            w.start_daemon(a, phase=w.now % w.p.interval)
    final = [rng.random() < 0.8 for _ in w.addresses]
    if not any(final):
        final[rng.randrange(len(final))] = True
    for a, up in zip(w.addresses, final):
        w.set_serving(a, up)
    w.note("world", "faults stop")


@dataclass(frozen=True)
class Outcome:
    params: Params
    passes: int
    writes: int
    conflicts: int
    unseen: int = 0  # leader changes within hold_down that the taker could not see
    violation: Optional[str] = None
    trace: tuple[str, ...] = ()


def run(seed: int, nodes: int) -> Outcome:
    p = params_for(seed, nodes)
    rng = random.Random(seed)
    if p.kind == "partition":
        p = replace(p, fault_end=4.0 + 3 * p.timeouts.hold_down)
    w = World(p)
    events = deque(schedule(p, rng))
    deadline: Optional[float] = None
    try:
        while deadline is None or w.now < deadline + 2.0:
            while events and events[0].at <= w.now:
                apply(w, events.popleft())
            if deadline is None and w.now >= p.fault_end:
                w.check_flapping()
                w.stable_since = None
                deadline = w.now + w.settle_after_heal()
                heal(w, rng)
            w.tick()
            w.check_tick()
            if deadline is not None and w.now >= deadline:
                w.check_settled()
            w.now = round(w.now + TICK, 6)
    except Violation as v:
        return Outcome(
            p, w.passes, w.store.writes, w.store.conflicts, w.unseen_changes, str(v), tuple(w.trace)
        )
    return Outcome(p, w.passes, w.store.writes, w.store.conflicts, w.unseen_changes)


def check(runs: int, first_seed: int = 0) -> list[Outcome]:
    """Run `runs` seeds over 3, 5 and 7 nodes; print a summary and the first violations."""
    started = time.monotonic()
    outcomes = [run(first_seed + i, (3, 5, 7)[i % 3]) for i in range(runs)]
    bad = [o for o in outcomes if o.violation]
    print(
        f"model check: {len(outcomes)} runs, {sum(o.passes for o in outcomes)} passes, "
        f"{sum(o.writes for o in outcomes)} writes, {sum(o.conflicts for o in outcomes)} "
        f"lost races (412), {len(bad)} violations, {time.monotonic() - started:.1f} s; "
        f"{sum(o.unseen for o in outcomes)} leader changes within hold_down that the "
        "taker could not see (A, B, A between two of its reads)"
    )
    for o in bad[:5]:
        print(f"\nseed {o.params.seed}, {o.params.nodes} nodes: {o.violation}\n  {o.params}")
        print("\n".join("  " + line for line in o.trace))
    return outcomes


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    args = parser.parse_args(argv)
    outcomes = check(args.runs, args.seed)
    return 1 if any(o.violation for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())

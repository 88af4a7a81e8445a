"""`make demo`: real packets through the VIP while API servers hang, restart and VMs die.

A lab of network namespaces on this machine: a client, a router standing in for the NSX
Tier-1 (its VIP route is a kernel multipath route, realized from what the NSX simulator
holds), and three control-plane "VMs", each with an API server process and a `litelb run`
daemon. A line per second shows what the client sees (a new TLS connection to the VIP
every 20 ms). Everything is removed at the end, also on Ctrl-C. Needs root.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from bench.lab.lab import DataPlaneLab, Options, can_run
from bench.lab.live import Ticker
from bench.lab.results import load, outcome
from bench.lab.topology import NODES, SEGMENT_VIP, VIP


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def short(hops: object) -> str:
    if not hops:
        return "(none)"
    return " ".join(f".{h.rsplit('.', 1)[1]}" for h in hops)  # type: ignore[attr-defined]


def show_segment_check(lab: DataPlaneLab) -> None:
    """`litelb check` on a node whose configuration puts the VIP inside the node segment."""
    node = NODES[0]
    say(f"`litelb check` on {node} with a VIP inside the node segment ({SEGMENT_VIP}):")
    config = lab.workdir / "litelb-vip-in-segment.toml"
    config.write_text(lab.system.config(node, vip=SEGMENT_VIP))  # type: ignore[union-attr]
    config.chmod(0o600)
    ns = lab.net.nodes[node]  # type: ignore[union-attr]
    result = ns.run(sys.executable, "-m", "litelb", "check", "-c", str(config), check=False)
    for line in result.stdout.splitlines():
        if "VIP" in line:
            print(f"    {line}")


def main() -> int:
    why = can_run()
    if why is not None:
        print(f"make demo: {why}.\nRun it as root: sudo make demo", file=sys.stderr)
        return 1
    say("Building the lab: client ── tier1 router ── segment 10.20.4.0/24 ── three VMs")
    with DataPlaneLab(Options()) as lab:
        print(f"    NSX route {VIP}/32 -> {short(lab.nsx_hops())}   leader {lab.leader()}")
        print(f"    tier1 kernel route: {' '.join(lab.kernel_route().split())}")
        log = lab.start_client("new", duration=300)

        def hops() -> str:
            return short(lab.nsx_hops())

        ticker = Ticker(log, hops, lambda line: print(line, flush=True))

        def until(predicate: Callable[[], object], what: Callable[[], str]) -> None:
            start = time.monotonic()
            lab.wait_for(predicate, 30, what())
            took = time.monotonic() - start
            ticker.note(f"... {what()} after {took:.2f} s")

        phases: list[tuple[str, float, float]] = []

        def phase(
            name: str,
            fault: Callable[[], object],
            done: Callable[[], object],
            what: Callable[[], str],
            pause: float,
        ) -> None:
            t = time.monotonic()
            fault()
            until(done, what)
            phases.append((name, t, time.monotonic()))
            time.sleep(pause)

        def full() -> bool:
            return lab.nsx_hops() == sorted(NODES)

        with ticker:
            time.sleep(4)
            leader = lab.leader() or NODES[0]
            others = [n for n in NODES if n != leader]
            hung, restarted = others[0], others[1]

            ticker.note(f"The API server on {hung} hangs (SIGSTOP: TCP accepted, nothing answered)")
            phase(
                "hang",
                lambda: lab.hang(hung),
                lambda: hung not in (lab.nsx_hops() or []),
                lambda: f"{hung} withdrawn",
                3,
            )
            ticker.note(f"The API server on {hung} answers again")
            phase("unhang", lambda: lab.unhang(hung), full, lambda: f"{hung} restored", 2)
            ticker.note(f"Graceful restart of the API server on {restarted} (shutdown delay 5 s)")
            phase(
                "graceful restart",
                lambda: lab.graceful_restart(restarted),
                full,
                lambda: f"{restarted} back in the route",
                2,
            )
            ticker.note(f"The leader's VM ({leader}) dies: link down, every process killed")
            phase(
                "leader's VM dies",
                lambda: lab.vm_dies(leader),
                lambda: lab.leader() in others and leader not in (lab.nsx_hops() or []),
                lambda: f"new leader {lab.leader()} wrote the route without {leader}",
                3,
            )
            ticker.note(f"{leader} boots again")
            phase("node back", lambda: lab.node_back(leader), full, lambda: f"{leader} is back", 3)
        lab.stop_client("new")
        requests = load(log)
        say(f"{len(requests)} requests in all, {sum(not r.ok for r in requests)} failed")
        for name, start, end in phases:
            o = outcome(requests, start, end)
            window = "" if o.failure_end is None else f", last {o.failure_end:.2f} s after"
            print(f"    {name:<18} {o.requests:5d} requests, {o.failed:3d} failed{window}")
        print(f"    leader now: {lab.leader()}; NSX saw {len(lab.nsx.writes())} route writes")  # type: ignore[union-attr]
        show_segment_check(lab)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; the lab is removed", file=sys.stderr)
        sys.exit(130)

"""`make bench-dataplane`: what a client sees, litelb side by side with keepalived + haproxy.

Each run builds a fresh lab (bench/lab) for one system, starts the client load (a new
TLS connection to the VIP every 20 ms, 2 s timeout), injects one fault and records every
request. Prints one table, scenario × system: failed requests and the failure window
(seconds from the fault to the start of the last failed request; "slow until" also
counts requests slower than 0.5 s), median and max over the repetitions, and litelb's
ratio to the best other system. Writes one PNG per scenario and the raw figures as JSON.
A second part counts long-lived keep-alive connections broken by a graceful restart,
for both kernel hashing modes of the Tier-1 stand-in. Needs root.

Usage: python -m bench.dataplane [--reps N] [--systems ...] [--scenarios ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from bench.lab.lab import DataPlaneLab, Options, can_run
from bench.lab.realizer import HASHING_MODES
from bench.lab.results import Outcome, Request, load, outcome
from bench.lab.systems import SYSTEMS
from bench.lab.topology import NODES


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    fault: Callable[[DataPlaneLab, str], object]  # (lab, a node that is not the leader)
    observe: float  # seconds of traffic recorded after the fault call returned


def _leader_vm(lab: DataPlaneLab, node: str) -> object:
    return lab.leader_vm_dies()


SCENARIOS = (
    Scenario("hang", "an API server hangs (SIGSTOP)", DataPlaneLab.hang, 32),
    Scenario("crash", "an API server crashes (SIGKILL)", DataPlaneLab.crash, 32),
    Scenario("vm-dies", "a VM dies (not the leader's)", DataPlaneLab.vm_dies, 32),
    Scenario("leader-vm-dies", "the leader's VM dies", _leader_vm, 35),
    Scenario("graceful", "graceful API server restart", DataPlaneLab.graceful_restart, 12),
    Scenario(
        "rolling-restart",
        "the VIP daemon restarted on every node",
        lambda lab, node: lab.restart_system_rolling(),
        5,
    ),
    Scenario(
        "nsx-unreachable",
        "every NSX manager unreachable for 60 s",
        lambda lab, node: lab.nsx_unreachable(60),
        5,
    ),
)


@dataclass(frozen=True)
class Run:
    scenario: str
    system: str
    rep: int
    outcome: Outcome
    fault_at: float
    requests: tuple[Request, ...]


def run_one(scenario: Scenario, system: str, rep: int, options: Options, phase: float = 0.0) -> Run:
    """One lab, one fault. `phase` (0 ≤ phase < 1) delays the fault by that share of
    a second: the lab starts the same way every time, so without it every
    repetition would strike at the same point of the daemons' 1 s probe rounds,
    and the median would describe that one point instead of any moment."""
    with DataPlaneLab(options) as lab:
        log = lab.start_client("new", duration=scenario.observe + 120)
        time.sleep(3 + phase)
        victim = next(n for n in NODES if n != lab.leader())
        fault_at = time.monotonic()
        scenario.fault(lab, victim)
        time.sleep(scenario.observe)
        end = time.monotonic()
        lab.stop_client("new")
        requests = load(log)
    result = outcome(requests, fault_at, end)
    return Run(scenario.name, system, rep, result, fault_at, tuple(requests))


def broken_connections(hashing: str, options: Options) -> tuple[int, int]:
    """Long-lived connections broken by one graceful restart: (to others, in all)."""
    with DataPlaneLab(Options(**{**asdict(options), "hashing": hashing})) as lab:
        log = lab.start_client("keepalive", duration=120, connections=30, period=0.5)
        time.sleep(4)
        victim = next(n for n in NODES if n != lab.leader())
        fault_at = time.monotonic()
        lab.graceful_restart(victim)
        lab.wait_for(lambda: lab.nsx_hops() == sorted(NODES), 30, "the node back in the route")
        time.sleep(5)
        lab.stop_client("keepalive")
        requests = load(log)
    last_node: dict[Optional[int], Optional[str]] = {}  # who each connection last reached
    broken_to_others = 0
    broken = 0
    for r in requests:
        if r.ok:
            last_node[r.conn] = r.node
        elif r.broken and r.t + r.d >= fault_at:
            broken += 1
            if last_node.get(r.conn) != victim:
                broken_to_others += 1
    return broken_to_others, broken


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} / {max(values):.2f}"


def _ratio(mine: float, best: float) -> str:
    if mine == best:
        return "="
    if best == 0:
        return f"worse ({mine:.2f} s vs 0)"
    return f"{mine / best:.2f}"


def table(runs: list[Run], systems: Sequence[str], scenarios: Sequence[Scenario]) -> str:
    lines = [
        "| scenario | system | runs | failed (median / max) | failures end s (median / max)"
        " | failed or slow end s (median / max) | litelb ÷ best other |",
        "|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        windows: dict[str, float] = {}
        for system in systems:
            mine = [r for r in runs if r.scenario == scenario.name and r.system == system]
            if not mine:
                continue
            ends = [r.outcome.slow_end or 0.0 for r in mine]
            windows[system] = statistics.median(ends)
        for system in systems:
            mine = [r for r in runs if r.scenario == scenario.name and r.system == system]
            if not mine:
                continue
            failed = [float(r.outcome.failed) for r in mine]
            fail_end = [r.outcome.failure_end or 0.0 for r in mine]
            slow_end = [r.outcome.slow_end or 0.0 for r in mine]
            ratio = ""
            others = [w for s, w in windows.items() if s != "litelb"]
            if system == "litelb" and others:
                ratio = _ratio(windows["litelb"], min(others))
            lines.append(
                f"| {scenario.name} | {system} | {len(mine)} | "
                f"{statistics.median(failed):g} / {max(failed):g} | {_stat(fail_end)} | "
                f"{_stat(slow_end)} | {ratio} |"
            )
    return "\n".join(lines)


def plot(runs: list[Run], scenario: Scenario, systems: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s for s in systems if any(r.scenario == scenario.name and r.system == s for r in runs)]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 1.9 * len(shown) + 0.6), sharex=True)
    axes = [axes] if len(shown) == 1 else list(axes)
    for ax, system in zip(axes, shown):
        run = next(r for r in runs if r.scenario == scenario.name and r.system == system)
        ok = [(r.t - run.fault_at, r.d) for r in run.requests if r.ok]
        bad = [(r.t - run.fault_at, r.d) for r in run.requests if not r.ok]
        ax.scatter([x for x, _ in ok], [y for _, y in ok], s=3, c="tab:green", label="ok")
        ax.scatter([x for x, _ in bad], [y for _, y in bad], s=6, c="tab:red", label="failed")
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("seconds")
        ax.set_title(f"{system}: {run.outcome.failed} failed", fontsize=9, loc="left")
        ax.set_xlim(-3, scenario.observe + 3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel(f"request start, seconds after the fault ({scenario.what})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _outcome(saved: dict) -> Outcome:
    return Outcome(**{k: saved[k] for k in Outcome.__dataclass_fields__})


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataplane", description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--scenarios", nargs="+", choices=names, default=names)
    parser.add_argument("--hashing", nargs="*", choices=HASHING_MODES, default=list(HASHING_MODES))
    parser.add_argument("--realize-delay", type=float, default=0.0)
    parser.add_argument(
        "--route-hashing",
        choices=HASHING_MODES,
        default=HASHING_MODES[0],
        help="the Tier-1 stand-in's ECMP hashing in the scenario runs",
    )
    parser.add_argument("--out", type=Path, default=Path("out/dataplane"))
    parser.add_argument(
        "--table-from", nargs="+", type=Path, metavar="JSON", help="print the table of earlier runs"
    )
    args = parser.parse_args(argv)
    if args.table_from:
        saved = [
            Run(r["scenario"], r["system"], r["rep"], _outcome(r), 0.0, ())
            for path in args.table_from
            for r in json.loads(path.read_text())["runs"]
        ]
        print(table(saved, args.systems, [s for s in SCENARIOS if s.name in args.scenarios]))
        return 0
    why = can_run()
    if why is not None:
        print(f"bench.dataplane: {why}; run it as root", file=sys.stderr)
        return 1
    if importlib.util.find_spec("matplotlib") is None:
        # Found out before the first run rather than after it.
        print(
            "bench.dataplane: matplotlib is missing for the plots: run `make bench-dataplane`, "
            "or pip install -e '.[bench]' first",
            file=sys.stderr,
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    options = Options(realize_delay=args.realize_delay, hashing=args.route_hashing)
    scenarios = [s for s in SCENARIOS if s.name in args.scenarios]
    runs: list[Run] = []
    broken: dict[str, dict[str, list[int]]] = {}

    def save() -> None:  # after every run, so an interrupted bench keeps what it measured
        results = [
            {"scenario": r.scenario, "system": r.system, "rep": r.rep, **asdict(r.outcome)}
            for r in runs
        ]
        (args.out / "results.json").write_text(
            json.dumps({"runs": results, "broken_long_lived": broken}, indent=1)
        )

    for scenario in scenarios:
        systems = [s for s in args.systems if s != "keepalived" or "nsx" not in scenario.name]
        for rep in range(args.reps):
            for system in systems:
                chosen = Options(**{**asdict(options), "system": system})
                run = run_one(scenario, system, rep, chosen, phase=rep / args.reps)
                o = run.outcome
                errors = Counter(
                    r.err.split(":")[0] for r in run.requests if not r.ok and r.t >= run.fault_at
                )
                why = ", ".join(f"{e} {n}" for e, n in errors.most_common(3))
                print(
                    f"{scenario.name:<16} {system:<15} rep {rep + 1}: {o.failed:4d} failed,"
                    f" failures end {o.failure_end or 0:.2f} s, slow until {o.slow_end or 0:.2f} s"
                    + (
                        f"  ({', '.join(f'{e} {n}' for e, n in errors.most_common(3))})"
                        if errors
                        else ""
                    ),
                    flush=True,
                )
                runs.append(run)
                save()
        plot(runs, scenario, args.systems, args.out / f"{scenario.name}.png")
    if runs:
        print("\n" + table(runs, args.systems, scenarios), flush=True)
    for rep in range(args.reps):
        for hashing in args.hashing:
            to_others, total = broken_connections(hashing, options)
            counts = broken.setdefault(hashing, {"to_other_servers": [], "all": []})
            counts["to_other_servers"].append(to_others)
            counts["all"].append(total)
            save()
            print(
                f"graceful restart, 30 long-lived connections, {hashing} rep {rep + 1}:"
                f" {total} broken, {to_others} of them to the other API servers",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench-control`: litelb's control-plane speed figures, measured on real daemons in a lab.

Each figure comes with a baseline measured in the same process, so a loaded machine
shifts both and the ratio stays meaningful. Needs root (network namespaces).
Usage: python -m bench.run [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Optional

from litelb.adapters.nsx import NsxClient
from litelb.config import NsxConfig, Secret
from litelb.model import Route
from tests.integration.lab import NODES, PASSWORD, ROUTE_ID, TIER1, Lab
from tests.wait import wait_for

A, B, C = NODES
# No route write for this long: the route has settled (rise × interval + 1 s).
QUIET = 3.0
ROWS: list[tuple[str, str, str, str]] = []


def row(what: str, figure: str, baseline: str = "", target: str = "") -> None:
    ROWS.append((what, figure, baseline, target))
    print(f"  {what}: {figure}" + (f"  [baseline {baseline}]" if baseline else ""), flush=True)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> float:
    start = time.monotonic()
    wait_for(predicate, timeout, "bench condition", interval=interval)
    return time.monotonic() - start


def write_after(box: Lab, since: float, timeout: float = 5.0) -> float:
    """Seconds from `since` to the first route write the simulator received after it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in box.route_writes():
            if w.timestamp >= since and w.status == 200:
                return w.timestamp - since
        time.sleep(0.005)
    raise AssertionError("no write arrived")


def direct_put_baseline(box: Lab, samples: int = 50) -> list[float]:
    """What one PUT plus read-back costs through litelb's NSX client, no daemon involved."""
    cfg = NsxConfig(
        managers=(box.nsx.url,),
        tier1=TIER1,
        route_id="bench-baseline",
        password=Secret(PASSWORD),
    )
    client = box.ns.call(lambda: NsxClient(cfg))
    route = Route(network="10.255.0.1/32", next_hops=(A,), display_name="baseline")
    times = []
    current: Optional[Route] = None
    for i in range(samples):
        hops = (A,) if i % 2 else (A, B)
        start = time.monotonic()
        current = box.ns.call(
            client.put_route, replace(route, next_hops=hops), current.revision if current else None
        )
        times.append(time.monotonic() - start)
    client.close()
    return times


def bench_latency(box: Lab, samples: int) -> None:
    print("EndpointSlice change → route written (1 node, NSX answering at once)", flush=True)
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    withdrawals, returns = [], []
    for i in range(samples):
        leaving = i % 2 == 0
        endpoints = [A, B] if leaving else list(NODES)
        # Paced beyond the burst spacing, so each change is an isolated one.
        time.sleep(0.7)
        start = time.monotonic()
        box.kube.set_endpoints(endpoints)
        # A returning API server is restored only after `rise` probes pass.
        (withdrawals if leaving else returns).append(write_after(box, start))
    base = direct_put_baseline(box)
    p50, p99 = statistics.median(withdrawals) * 1000, pct(withdrawals, 99) * 1000
    b50 = statistics.median(base) * 1000
    row(
        f"change → write p50 (an API server leaves, {len(withdrawals)} changes)",
        f"{p50:.0f} ms",
        f"PUT+GET {b50:.1f} ms",
        "",
    )
    row(
        "change → write p99 (an API server leaves)",
        f"{p99:.0f} ms",
        f"ratio p99/PUT {p99 / b50:.0f}×",
        "≤ 100 ms + window (100 ms)",
    )
    row(
        f"change → write p50 (it returns, {len(returns)} changes)",
        f"{statistics.median(returns) * 1000:.0f} ms",
        "waits for rise = 2 probes, 1 s apart",
        "",
    )


def bench_burst(box: Lab) -> None:
    print("1,000 EndpointSlice events in 10 s", flush=True)
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    time.sleep(1.0)
    before = len(box.route_writes())
    start = time.monotonic()
    for i in range(1000):
        target = start + i * 0.01
        time.sleep(max(0.0, target - time.monotonic()))
        box.kube.set_endpoints([A, B] if i % 3 == 0 else ([A, C] if i % 3 == 1 else [B, C]))
    box.kube.set_endpoints([A, C])
    sent = time.monotonic() - start
    # Every server left and came back hundreds of times: each returns to the route
    # only after `rise` probes pass (2 s with the defaults), so the route settles
    # then, not at the last event.
    settled_at, writes_seen = time.monotonic(), len(box.route_writes())
    while time.monotonic() - settled_at < QUIET and time.monotonic() - start < sent + 15:
        time.sleep(0.05)
        if len(box.route_writes()) != writes_seen:
            settled_at, writes_seen = time.monotonic(), len(box.route_writes())
    settle = settled_at - (start + sent)
    writes = len(box.route_writes()) - before
    exact = box.hops() == [A, C]
    row(
        "route writes for 1,001 events",
        f"{writes} writes in {sent:.1f} s",
        "1,001 writes without coalescing",
        "≤ 20, final route exact",
    )
    row("final route exact", f"yes, {settle:.2f} s after the last event" if exact else "NO")
    node.terminate()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_idle(box: Lab, seconds: float) -> None:
    import subprocess

    print(f"idle cost over {seconds:.0f} s (1 node, default settings)", flush=True)
    node = box.start(A, nsx={"resync_interval": 60}, log={"level": "info"})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "initial route", node)
    time.sleep(2.0)
    pid = node.proc.pid  # type: ignore[union-attr]
    # `ip netns exec` execs the interpreter, so the pid is the daemon's own.
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    rss = rss_kb(pid) / 1024
    baseline = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import kubernetes, requests, pyroute2, prometheus_client, time;"
            "print('x', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    assert baseline.stdout is not None
    baseline.stdout.readline()
    base_rss = rss_kb(baseline.pid) / 1024
    baseline.kill()
    baseline.wait()
    row("idle CPU", f"{cpu:.2f} % of one core", "", "≤ 0.5 %")
    row("idle RSS", f"{rss:.1f} MB", f"bare imports {base_rss:.1f} MB", "≤ 60 MB")
    node.terminate()


def bench_ready(box: Lab, runs: int) -> None:
    print("start → READY=1", flush=True)
    times = []
    for _ in range(runs):
        start = time.monotonic()
        node = box.start(A)
        ready_at = next(t for t, m in node.notify.messages if m == "READY=1")
        times.append(ready_at - start)
        node.terminate()
    row(
        f"start → READY=1 (median of {runs})",
        f"{statistics.median(times):.2f} s",
        f"max {max(times):.2f} s",
        "≤ 2 s",
    )


def three(box: Lab, **sections: dict) -> None:
    box.start(A, **sections)
    wait_for(lambda: box.leader() == A and box.hops() == sorted(NODES), 10, "A leads")
    box.start(B, **sections)
    box.start(C, **sections)


def restore_all(box: Lab) -> None:
    """All three API servers listed again, and the route back to all of them."""
    box.kube.set_endpoints(list(NODES))
    wait_for(lambda: box.hops() == sorted(NODES), 20, "all three restored")
    time.sleep(1.0)


def stop_all(box: Lab) -> None:
    for node in box.nodes.values():
        if node.alive():
            node.kill()


def bench_steady(box: Lab, seconds: float) -> None:
    print(f"steady state NSX load, 3 nodes, resync_interval 5 s, {seconds:.0f} s", flush=True)
    three(box)
    time.sleep(3)
    box.nsx.clear_requests()
    time.sleep(seconds)
    reqs = box.nsx.requests()
    writes = [r for r in reqs if r.method != "GET"]
    per = len(reqs) / 3 / (seconds / 5)
    row("NSX writes in steady state", f"{len(writes)}", "", "0")
    row("NSX reads per node per resync_interval", f"{per:.2f}", "", "1")
    stop_all(box)


def strike_at_phase(run: int, runs: int) -> None:
    """Wait run/runs of a probe interval (1 s) before a fault. Each fault follows a
    restore or a start that is itself timed by the probe rounds, so without it every
    run would strike at the same point of a round, and the median would describe
    that one point rather than any moment."""
    time.sleep(run / runs)


def bench_hang(box: Lab, runs: int, lease: float) -> None:
    print("API server hangs → withdrawn from the route (3 nodes)", flush=True)
    three(box)
    with_probes = []
    for run in range(runs):
        strike_at_phase(run, runs)
        box.kube.hang(C)
        with_probes.append(timed(lambda: box.hops() == [A, B], 20))
        box.serve_api(C)
        restore_all(box)
    stop_all(box)
    three(box, health={"enabled": False})
    without = []
    for _ in range(runs):
        start = time.monotonic()
        box.kube.hang(C)
        # Without probes only the EndpointSlice can tell: the dead API server's
        # endpoint lease (15 s) must expire before the others drop it.
        time.sleep(max(0.0, start + lease - time.monotonic()))
        box.kube.set_endpoints([A, B])
        wait_for(lambda: box.hops() == [A, B], 20, "withdrawn by slice")
        without.append(time.monotonic() - start)
        box.serve_api(C)
        restore_all(box)
    stop_all(box)
    m1, m2 = statistics.median(with_probes), statistics.median(without)
    row(
        f"non-leader API server hang → withdrawn, probes on (median of {runs})",
        f"{m1:.2f} s",
        f"probes off, slice after {lease:.0f} s lease: {m2:.2f} s ({m2 / m1:.1f}× slower)",
        "≤ 3 s (keepalived: 32 s)",
    )


def bench_graceful(box: Lab, runs: int) -> None:
    print("graceful API server stop → withdrawn (3 nodes)", flush=True)
    three(box)
    times = []
    for _ in range(runs):
        start = time.monotonic()
        # A stopping kube-apiserver removes its own endpoint and fails /readyz at once,
        # then keeps serving for --shutdown-delay-duration.
        box.kube.set_endpoints([A, B])
        box.kube.set_ready(C, False)
        write = write_after(box, start)
        times.append(write)
        box.kube.set_ready(C, True)
        restore_all(box)
    stop_all(box)
    row(
        f"graceful API server stop → withdrawn (median of {runs})",
        f"{statistics.median(times) * 1000:.0f} ms",
        f"max {max(times) * 1000:.0f} ms",
        "0 failed requests with --shutdown-delay-duration ≥ this + NSX realization",
    )


def bench_leader(box: Lab, runs: int) -> None:
    print("leader's API server hangs / leader VM dies → route corrected (3 nodes)", flush=True)
    hang_times, vm_times = [], []
    for run in range(runs):
        three(box)
        strike_at_phase(run, runs)
        box.kube.hang(A)
        hang_times.append(timed(lambda: box.leader() in (B, C) and box.hops() == [B, C], 20))
        stop_all(box)
        box.serve_api(A)
        box.nsx.ui_delete(TIER1, ROUTE_ID)
        three(box)
        strike_at_phase(run, runs)
        # The whole VM goes: the daemon dies and its API server stops answering.
        box.nodes[A].kill()
        box.kube.hang(A)
        vm_times.append(timed(lambda: box.leader() in (B, C) and box.hops() == [B, C], 20))
        stop_all(box)
        box.serve_api(A)
        box.nsx.ui_delete(TIER1, ROUTE_ID)
    row(
        f"leader's API server hang → new leader, route corrected (median of {runs})",
        f"{statistics.median(hang_times):.2f} s",
        f"max {max(hang_times):.2f} s",
        "",
    )
    row(
        f"leader VM death → new leader, route corrected (median of {runs})",
        f"{statistics.median(vm_times):.2f} s",
        f"max {max(vm_times):.2f} s",
        "≤ 4 s (keepalived: 2.95 s median, 7.9 s max)",
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    quick = args.quick
    benches: dict[str, Callable[[Lab], None]] = {
        "ready": lambda b: bench_ready(b, 3 if quick else 5),
        "latency": lambda b: bench_latency(b, 20 if quick else 200),
        "burst": bench_burst,
        "idle": lambda b: bench_idle(b, 5 if quick else 30),
        "steady": lambda b: bench_steady(b, 10 if quick else 30),
        "hang": lambda b: bench_hang(b, 2 if quick else 5, 15.0),
        "graceful": lambda b: bench_graceful(b, 2 if quick else 5),
        "leader": lambda b: bench_leader(b, 2 if quick else 5),
    }
    for name, bench in benches.items():
        if args.only is not None and name not in args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="litelb-bench-") as tmp:
            # A real kube-apiserver sends a bookmark about once a minute; the tests'
            # one per second would be idle work no production daemon does.
            box = Lab(Path(tmp), bookmark_interval=60.0 if name == "idle" else 1.0)
            try:
                bench(box)
            finally:
                box.close()
    width = max(len(r[0]) for r in ROWS)
    print("\n" + "what".ljust(width), "| figure | baseline / comparison | target")
    for what, figure, baseline, target in ROWS:
        print(what.ljust(width), "|", figure, "|", baseline or "-", "|", target or "-")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Real packets through the VIP (bench/lab): one API server hang, one graceful restart.

Correctness, not timing: traffic recovers after the hang, NSX and the Tier-1's kernel
route hold exactly the healthy nodes, and a graceful restart costs no request beyond
those in flight at the instant the route changes (stateless ECMP re-hashes them).
Also `litelb check` on a node whose segment contains the VIP.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bench.lab import topology
from bench.lab.lab import DataPlaneLab, Options, can_run
from bench.lab.netns import Cleanup
from bench.lab.results import load, outcome
from bench.lab.topology import NODES
from litelb.check import segment_check
from litelb.config import VipConfig
from litelb.model import CheckResult

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def kernel_hops(lab: DataPlaneLab) -> list[str]:
    assert lab.realizer is not None
    return sorted(lab.realizer.kernel_hops())


def test_hang_then_graceful_restart() -> None:
    why = can_run()
    if why is not None:
        pytest.skip(why)
    # A resilient next-hop group moves only the flows of a removed hop: under hash-threshold
    # ECMP a TCP handshake to another node that straddles the route change can be reset,
    # which is the router's doing, not litelb's (bench.dataplane measures both modes).
    with DataPlaneLab(Options(shutdown_delay=3.0, hashing="resilient")) as lab:
        assert kernel_hops(lab) == sorted(NODES)
        log = lab.start_client("new", duration=90)
        time.sleep(1)
        leader = lab.leader()
        hung, restarted = (n for n in NODES if n != leader)
        others = sorted(n for n in NODES if n != hung)

        hang_at = time.monotonic()
        lab.hang(hung)
        lab.wait_for(lambda: lab.nsx_hops() == others, 30, f"{hung} withdrawn")
        lab.wait_for(lambda: kernel_hops(lab) == others, 10, "the kernel route without it")
        recovered_at = time.monotonic()
        time.sleep(4.5)  # every request started 1 s after the withdrawal must succeed
        unhang_at = time.monotonic()
        lab.unhang(hung)
        lab.wait_for(lambda: lab.nsx_hops() == sorted(NODES), 30, f"{hung} restored")
        lab.wait_for(lambda: kernel_hops(lab) == sorted(NODES), 10, "kernel route restored")
        time.sleep(1)

        restart_at = time.monotonic()
        lab.graceful_restart(restarted)
        lab.wait_for(lambda: lab.nsx_hops() == sorted(NODES), 30, f"{restarted} back")
        time.sleep(2)
        end = time.monotonic()
        lab.stop_client("new")
        requests = load(log)

        hang = outcome(requests, hang_at, restart_at)
        assert hang.failed > 0, "a frozen API server behind the VIP must have cost something"
        after = [r for r in requests if recovered_at + 1.0 <= r.t < unhang_at]
        assert after and all(r.ok for r in after), [r for r in after if not r.ok][:5]
        assert {r.node for r in after} == set(others)

        graceful = outcome(requests, restart_at, end)
        assert graceful.requests > 100
        # The stopping server keeps serving while litelb withdraws it, so nothing fails for
        # want of a server. What stateless ECMP cannot avoid: a connection already open to it
        # when the route changes is re-hashed to another node mid-request and reset (a few
        # milliseconds of requests, sometimes one). Nothing may fail later, when the server
        # stops listening: that would mean it was withdrawn too late, or not at all.
        failed = [r for r in requests if r.t >= restart_at and not r.ok]
        assert len(failed) <= 2 and all(r.t < restart_at + 1.0 for r in failed), failed[:5]
        answered = {r.node for r in requests if r.t >= end - 1.5}
        assert answered == set(NODES), "the restarted API server takes traffic again"
        assert kernel_hops(lab) == sorted(NODES) == lab.nsx_hops()


def test_check_warns_about_a_vip_inside_the_node_segment() -> None:
    why = can_run()
    if why is not None:
        pytest.skip(why)
    cleanup = Cleanup()
    try:
        net = topology.build(cleanup, tag="chk")
        node = net.nodes[NODES[0]]
        vip = VipConfig(address=topology.SEGMENT_VIP)
        outside = VipConfig(address=topology.VIP)

        def check(v: VipConfig) -> CheckResult:
            return segment_check(SimpleNamespace(vip=v))  # type: ignore[arg-type]

        warned = node.call(check, vip)
        assert warned.level == "warn"
        assert "arp_ignore=1" in warned.text and "arp_announce=2" in warned.text
        assert "outside the segment" in warned.text
        assert node.call(check, outside).level == "ok"
        node.sysctl("net.ipv4.conf.all.arp_ignore", "1")
        node.sysctl("net.ipv4.conf.all.arp_announce", "2")
        assert node.call(check, vip).level == "ok"
    finally:
        assert cleanup.run() == []

"""`make demo`: three real `litelb run` daemons keep one NSX route through failures.

Everything runs on this machine inside a throwaway network namespace: a fake
kube-apiserver on 127.0.0.2–4 (three control-plane nodes), an NSX Policy API
simulator on 127.0.0.1, and the daemons as subprocesses. Needs root.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.integration.lab import NODES, ROUTE_ID, TIER1, VIP, Lab, wait_for

A, B, C = NODES


def say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def show(box: Lab) -> None:
    route = box.route()
    if route is None:
        print("    NSX holds no route", flush=True)
        return
    print(
        f"    NSX route {route['network']} -> {', '.join(box.hops() or [])}"
        f"   (leader {box.leader()}, _revision {route['_revision']})",
        flush=True,
    )


def timed(box: Lab, predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    wait_for(predicate, timeout, what, *box.nodes.values())
    print(f"    {what}: {time.monotonic() - start:.2f} s", flush=True)
    show(box)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="litelb-demo-") as tmp:
        box = Lab(Path(tmp))
        try:
            say(f"Starting litelb on node {A}; NSX has Tier-1 {TIER1!r} and no route yet")
            box.start(A)
            timed(box, lambda: box.hops() == sorted(NODES), "route created")
            print(f"    VIP on the node's lo: {VIP in box.ns.addresses()}")

            say(f"Starting litelb on {B} and {C}: they follow, nothing is written")
            box.start(B)
            box.start(C)
            time.sleep(1)
            show(box)

            say("`litelb status` on the leader:")
            print(box.run_cli("status", "-c", str(box.nodes[A].config_path)).stdout)

            say(f"The API server on {C} hangs (VM frozen): probes withdraw it")
            box.kube.hang(C)
            timed(box, lambda: box.hops() == [A, B], "withdrawn after")
            box.serve_api(C)
            timed(box, lambda: box.hops() == sorted(NODES), "restored after")

            say("An operator edits the route in the NSX UI: the leader corrects the drift")
            box.nsx.ui_edit(TIER1, ROUTE_ID, next_hops=[{"ip_address": "10.9.9.9"}])
            show(box)
            timed(box, lambda: box.hops() == sorted(NODES), "corrected after", 15)

            say(f"The leader's VM ({A}) dies: daemon killed, API server silent")
            box.nodes[A].kill()
            box.kube.hang(A)
            timed(
                box,
                lambda: box.leader() in (B, C) and box.hops() == [B, C],
                "new leader, route corrected after",
            )

            say(f"{box.leader()} is stopped with SIGTERM: it hands over")
            leader = box.leader()
            assert leader is not None
            code, took = box.nodes[leader].terminate()
            print(f"    exit status {code} after {took:.2f} s")
            show(box)

            writes = box.route_writes()
            reads = [r for r in box.nsx.requests() if r.method == "GET"]
            say(f"NSX saw {len(writes)} writes and {len(reads)} reads in all")
        finally:
            box.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One node's API server: `python -m bench.lab.apiserver`, run in the node's namespace.

Each node's API server is a process of its own, so freezing or killing it hits one node
only. The three present one cluster state as API servers sharing etcd do: a small
JSON file (the "etcd") holds the endpoint leases, its revision and the endpoint list,
written under a lock; every server mirrors it into its own store.

The `default/kubernetes` EndpointSlice follows kube-apiserver's lease endpoint
reconciler (pkg/controlplane/reconcilers/lease.go): every `--lease-interval` (10 s)
each server renews its own lease (TTL `--lease-ttl`, 15 s) and publishes the
addresses whose leases are alive, so one that dies abruptly stays listed until its lease
expired and another server's reconciler ran. A graceful stop (SIGTERM) follows
kube-apiserver too: /readyz fails and the server removes its own lease and endpoint at
once, keeps serving for `--shutdown-delay` seconds (--shutdown-delay-duration), then
stops listening, closes its connections and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tests.kubeapi import FakeKubeApiServer

_BASE_REVISION = 1000
_MIRROR_INTERVAL = 0.05


class TlsFiles(NamedTuple):
    """What FakeKubeApiServer reads from a Pki: the lab issues the files once for all nodes."""

    server_cert: Path
    server_key: Path
    ca_cert: Path


class SharedState:
    """The lab's etcd: leases and the endpoint list in one JSON file, changed under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_suffix(".lock")

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"revision": 0, "leases": {}, "endpoints": []}

    def update(self, change: Any) -> dict[str, Any]:
        """Apply `change(state)` atomically; bump the revision if the endpoints changed."""
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read()
            before = list(state["endpoints"])
            change(state)
            if state["endpoints"] != before:
                state["revision"] += 1
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)
            return state


def reconcile(state: dict[str, Any], node: str, ttl: float, now: float, alive: bool) -> None:
    """One pass of the lease reconciler for `node`: renew (or drop) its lease, publish."""
    leases: dict[str, float] = state["leases"]
    if alive:
        leases[node] = now + ttl
    else:
        leases.pop(node, None)
    for address, expiry in list(leases.items()):
        if expiry <= now:
            del leases[address]
    if leases:  # the reconciler never writes an empty list
        state["endpoints"] = sorted(leases)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lab.apiserver", description=__doc__)
    parser.add_argument("--node", required=True, help="this node's address")
    parser.add_argument("--tls-dir", type=Path, required=True, help="ca.crt, server.crt/key")
    parser.add_argument("--state", type=Path, required=True, help="the shared state file")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--shutdown-delay", type=float, default=5.0)
    parser.add_argument("--lease-ttl", type=float, default=15.0)
    parser.add_argument("--lease-interval", type=float, default=10.0)
    args = parser.parse_args(argv)

    tls = TlsFiles(
        args.tls_dir / "server.crt", args.tls_dir / "server.key", args.tls_dir / "ca.crt"
    )
    shared = SharedState(args.state)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server = FakeKubeApiServer(
        tls,  # type: ignore[arg-type]
        addresses=("0.0.0.0",),
        port=args.port,
        bookmark_interval=5.0,
        node_name=args.node,
    )
    done = threading.Event()
    seen = [-1]

    def mirror_once() -> None:
        state = shared.read()
        if state["revision"] != seen[0] and state["endpoints"]:
            server.set_endpoints(
                state["endpoints"],
                port=args.port,
                resource_version=_BASE_REVISION + state["revision"],
            )
            seen[0] = state["revision"]

    def mirror() -> None:
        while not done.wait(_MIRROR_INTERVAL):
            mirror_once()

    mirror_once()  # serve the cluster's state from the first request on
    server.start()
    threading.Thread(target=mirror, name="mirror", daemon=True).start()
    print(f"apiserver {args.node} listening on :{args.port}", flush=True)
    while not stopping.is_set():
        shared.update(lambda s: reconcile(s, args.node, args.lease_ttl, time.time(), True))
        stopping.wait(args.lease_interval)

    # Graceful shutdown, in kube-apiserver's order.
    server.set_ready("0.0.0.0", False)
    shared.update(lambda s: reconcile(s, args.node, args.lease_ttl, time.time(), False))
    print(f"apiserver {args.node} shutting down in {args.shutdown_delay:g} s", flush=True)
    time.sleep(args.shutdown_delay)
    done.set()
    with contextlib.suppress(Exception):
        server.stop()
    print(f"apiserver {args.node} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

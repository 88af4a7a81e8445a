"""`litelb run` against an NSX that misbehaves: answers of the wrong shape, an outage
of 503s, a black-holed manager, and principal identities that protect their objects."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.lab import NODES, PASSWORD, TIER1, Lab, Node
from tests.nsxsim import NsxSimulator
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES


def metric(box: Lab, node: Node, name: str) -> float:
    code, body = box.http_get(node, "/metrics")
    assert code == 200
    found = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(
    ("body", "pad_to", "words"),
    [
        ('{"network": "192.168.160.249/32", "next_hops": ["10.0.0.1"], "_revision": 0}', 0,
         "a next hop is str"),
        ('{"network": "192.168.160.249/32", "next_hops": [{"ip_address": "10.0.0.1/32"}], '
         '"_revision": 0}', 0, "'10.0.0.1/32' is not an IP address"),
        ('{"network": "192.168.160.249/32"}', 0, "next_hops is missing"),
        ("<html><body>502 Bad Gateway</body></html>", 0, "not a JSON object"),
        ("{}", 10_000_000, "longer than 1048576 bytes"),
    ],
    ids=["hop-not-an-object", "hop-not-an-address", "no-hops", "not-json", "10-MB"],
)  # fmt: skip
def test_an_nsx_answer_of_the_wrong_shape_fails_one_pass_and_nothing_else(
    box: Lab, body: str, pad_to: int, words: str
) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route created", node)
    errors_before = metric(box, node, "litelb_reconcile_errors_total")
    writes_before = len(box.route_writes())
    box.nsx.malformed(body, count=2, method="GET", pad_to=pad_to)
    box.kube.set_endpoints([A, B])  # a change: the daemon reads the route at once
    wait_for(
        lambda: words in (box.status(node)["route"]["last_error"] or ""),
        5,
        f"/status route.last_error saying {words!r}",
        node,
    )
    assert len(box.route_writes()) == writes_before, "nothing written from a bad answer"
    assert metric(box, node, "litelb_reconcile_errors_total") > errors_before
    # The worker carries on: once NSX answers properly again, the change is written.
    wait_for(lambda: box.hops() == [A, B], 10, "route updated after the bad answers", node)
    wait_for(lambda: box.status(node)["route"]["last_error"] is None, 5, "error cleared", node)
    assert node.alive() and box.http_get(node, "/healthz") == (200, "ok\n")
    log = node.log()
    assert words in log and "Traceback" not in log, log[-3000:]
    assert "not making progress" not in log


def test_an_nsx_outage_of_503s_is_met_with_backoff_not_load(box: Lab) -> None:
    nodes = [box.start(A)]
    wait_for(lambda: box.leader() == A, 10, "A leads", *nodes)
    nodes += [box.start(B), box.start(C)]
    time.sleep(1.0)
    box.nsx.clear_requests()
    box.nsx.fail(503, count=1_000_000)
    outage = 20.0
    start = time.monotonic()
    # Changes keep coming during the outage, each a reason to try NSX again.
    for ready in ([A, B], [A, B, C], [A, C], [A, B, C]):
        box.kube.set_endpoints(ready)
        time.sleep(outage / 4)
    box.nsx.clear_faults()
    during = [r for r in box.nsx.requests() if r.timestamp - start <= outage]
    print(f"\n3 daemons, NSX answering 503 for {outage:.0f} s: {len(during)} requests")
    # At most one request per node per second on average (it was 93 before backoff).
    assert len(during) <= 3 * outage, len(during)
    wait_for(lambda: box.hops() == sorted(NODES), 40, "route correct after the outage", *nodes)
    for node in nodes:
        assert node.alive() and box.http_get(node, "/healthz") == (200, "ok\n")


def use_tls_nsx_with_principals(box: Lab) -> None:
    """Replace the lab's NSX with one on HTTPS that knows client-certificate principals."""
    box.nsx.stop()
    pki = box.pki
    box.nsx = box.ns.call(
        lambda: NsxSimulator(
            username="admin",
            password=PASSWORD,
            tls_cert=str(pki.server_cert),
            tls_key=str(pki.server_key),
            client_ca=str(pki.ca_cert),
        ).start()
    )
    box.nsx.add_tier1(TIER1)


def principal(box: Lab, name: str) -> dict:
    cert, key = box.pki.client_cert(name)
    return {
        "auth": "certificate",
        "client_cert": str(cert),
        "client_key": str(key),
        "ca_file": str(box.pki.ca_cert),
    }


def test_takeover_and_handover_across_principal_identities(box: Lab) -> None:
    use_tls_nsx_with_principals(box)
    box.kube.set_endpoints([A, B])
    coordination = {"takeover_after": 1, "hold_down": 1}
    a = box.start(A, nsx=principal(box, "litelb-node-a"), coordination=coordination)
    wait_for(lambda: box.leader() == A and box.hops() == [A, B], 10, "A creates", a)
    created = box.route()
    assert created is not None and created["_create_user"] == "litelb-node-a"
    assert created["_protection"] == "REQUIRE_OVERRIDE"
    b = box.start(B, nsx=principal(box, "litelb-node-b"), coordination=coordination)
    # A dies and its API server leaves the EndpointSlice: B takes over A's object.
    a.kill()
    box.kube.set_endpoints([B])
    wait_for(lambda: box.leader() == B and box.hops() == [B], 15, "B takes over", a, b)
    a = box.start(A, nsx=principal(box, "litelb-node-a"), coordination=coordination)
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 10, "B writes A back", a, b)
    # SIGTERM: B hands the route over to A, in an object A's identity created.
    code, took = b.terminate()
    assert code == 0 and took < 5.0
    wait_for(lambda: box.leader() == A, 5, "A leads after the hand-over", a, b)
    assert box.route()["_create_user"] == "litelb-node-a"
    refused = [w for w in box.nsx.writes() if w.status >= 400]
    assert refused == [], refused
    writers = {w.headers.get("x-allow-overwrite") for w in box.nsx.writes()}
    assert writers == {"true"}


@pytest.mark.slow
def test_a_black_holed_first_manager_is_waited_out_not_watchdogged(box: Lab) -> None:
    # nsx.timeout above the old fixed 30 s stall limit: one request into the black
    # hole is a legitimate wait, and the daemon must reach the second manager.
    hole = box.ns.call(lambda: NsxSimulator(username="admin", password=PASSWORD).start())
    try:
        hole.black_hole(True)
        node = box.start(A, nsx={"managers": [hole.url, box.nsx.url], "timeout": 32})
        unhealthy = []
        deadline = time.monotonic() + 60
        while box.hops() != sorted(NODES) and time.monotonic() < deadline:
            code, _ = box.http_get(node, "/healthz")
            if code != 200:
                unhealthy.append(code)
            time.sleep(0.5)
        assert box.hops() == sorted(NODES), node.log()[-3000:]
        assert len(hole.requests()) == 1, "the black-holed manager got one request"
        assert unhealthy == [], node.log()[-3000:]
        assert "not making progress" not in node.log()
        assert box.status(node)["nsx"]["manager"] == box.nsx.url
    finally:
        hole.stop()


def test_sigterm_with_the_hand_over_still_in_flight(box: Lab) -> None:
    box.kube.set_endpoints([A, B])
    a = box.start(A, nsx={"auth": "session", "timeout": 10})
    wait_for(lambda: box.leader() == A and box.hops() == [A, B], 10, "A leads", a)
    b = box.start(B, nsx={"auth": "session"})
    time.sleep(0.5)
    box.nsx.latency(3.0)  # the hand-over's read and write take longer than the stop budget
    code, took = a.terminate()
    assert code == 0 and took < 5.0, (code, took, a.log()[-2000:])
    assert "still in flight" in a.log()
    box.nsx.latency(0.0)
    # The write that was in flight still lands: B leads.
    wait_for(lambda: box.leader() == B, 10, "B leads after the hand-over", a, b)
    destroyed = [r for r in box.nsx.requests() if r.path == "/api/session/destroy"]
    assert destroyed == [], "no logout while a request of the same session is in flight"

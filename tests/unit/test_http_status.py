"""The status endpoint, served for real on 127.0.0.1 and read with urllib."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from litelb.adapters.http import StatusServer, StatusServerError
from litelb.metrics import Metrics
from litelb.status import (
    DaemonStatus,
    EndpointStatus,
    KubernetesStatus,
    NsxStatus,
    RouteStatus,
    VipStatus,
)

PATH = "/infra/tier-1s/cluster-router/static-routes/litelb-192-168-160-249"


def a_status(
    leader: bool = True, hops: tuple[str, ...] = ("10.20.4.2", "10.20.4.3")
) -> DaemonStatus:
    return DaemonStatus(
        version="1.2.3",
        node="10.20.4.2",
        leader=leader,
        leader_identity="10.20.4.2" if leader else "10.20.4.3",
        reason="in-sync",
        vip=VipStatus("192.168.160.249", "lo", True, True),
        endpoints=(
            EndpointStatus("10.20.4.2", True, True, "200 in 3 ms"),
            EndpointStatus("10.20.4.3", True, False, "timeout after 1.0s"),
        ),
        route=RouteStatus(PATH, hops, hops, (), True, 1.7672256e9, None),
        nsx=NsxStatus("https://nsx.example.com", True),
        kubernetes=KubernetesStatus("https://10.20.4.2:6443", None, True, None),
    )


DOCUMENTED_METRICS = (
    "litelb_is_leader",
    "litelb_vip_present",
    "litelb_endpoints_ready",
    "litelb_endpoints_healthy",
    "litelb_route_next_hops",
    "litelb_route_in_sync",
    "litelb_route_writes_total",
    "litelb_nsx_requests_total",
    "litelb_nsx_request_duration_seconds",
    "litelb_reconcile_errors_total",
    "litelb_last_sync_timestamp_seconds",
)
DOCUMENTED_TYPES = {
    "litelb_route_writes_total": "counter",
    "litelb_nsx_requests_total": "counter",
    "litelb_reconcile_errors_total": "counter",
    "litelb_nsx_request_duration_seconds": "histogram",
}


@dataclass
class Daemon:
    """What the server reads: changed by the tests while it serves."""

    healthy: bool = True
    status: DaemonStatus = field(default_factory=a_status)
    metrics: Metrics = field(default_factory=Metrics)


@dataclass(frozen=True)
class Response:
    code: int
    content_type: str
    body: bytes


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
def server(daemon: Daemon) -> Iterator[tuple[StatusServer, str]]:
    srv = StatusServer(
        ("127.0.0.1", 0),
        status=lambda: daemon.status,
        healthy=lambda: daemon.healthy,
        metrics=daemon.metrics,
    )
    host, port = srv.start()
    try:
        yield srv, f"http://{host}:{port}"
    finally:
        srv.stop()


def fetch(url: str, method: str = "GET") -> Response:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return Response(r.status, r.headers["Content-Type"], r.read())
    except urllib.error.HTTPError as e:
        with e:
            return Response(e.code, e.headers["Content-Type"], e.read())


def test_healthz_follows_healthy(server: tuple[StatusServer, str], daemon: Daemon) -> None:
    _, base = server
    r = fetch(base + "/healthz")
    assert (r.code, r.body) == (200, b"ok\n")
    assert r.content_type.startswith("text/plain")

    daemon.healthy = False
    assert (fetch(base + "/healthz").code, fetch(base + "/healthz").body) == (503, b"unhealthy\n")

    daemon.healthy = True
    assert fetch(base + "/healthz").code == 200


def test_healthz_is_unhealthy_when_the_check_raises(daemon: Daemon) -> None:
    def broken() -> bool:
        raise RuntimeError("worker table corrupt")

    srv = StatusServer(("127.0.0.1", 0), status=a_status, healthy=broken, metrics=daemon.metrics)
    host, port = srv.start()
    try:
        assert fetch(f"http://{host}:{port}/healthz").code == 503
    finally:
        srv.stop()


def test_status_is_the_json_of_status(server: tuple[StatusServer, str], daemon: Daemon) -> None:
    _, base = server
    r = fetch(base + "/status")
    assert r.code == 200
    assert r.content_type == "application/json"
    assert json.loads(r.body) == {
        "version": "1.2.3",
        "node": "10.20.4.2",
        "leader": True,
        "leader_identity": "10.20.4.2",
        "reason": "in-sync",
        "vip": {"address": "192.168.160.249", "interface": "lo", "managed": True, "present": True},
        "endpoints": [
            {"address": "10.20.4.2", "ready": True, "healthy": True, "probe": "200 in 3 ms"},
            {
                "address": "10.20.4.3",
                "ready": True,
                "healthy": False,
                "probe": "timeout after 1.0s",
            },
        ],
        "route": {
            "path": PATH,
            "next_hops": ["10.20.4.2", "10.20.4.3"],
            "desired_next_hops": ["10.20.4.2", "10.20.4.3"],
            "left_out_next_hops": [],
            "in_sync": True,
            "last_sync": "2026-01-01T00:00:00Z",
            "last_error": None,
        },
        "nsx": {"manager": "https://nsx.example.com", "reachable": True},
        "kubernetes": {
            "server": "https://10.20.4.2:6443",
            "waiting_for": None,
            "synced": True,
            "last_error": None,
        },
    }

    daemon.status = a_status(leader=False, hops=("10.20.4.3",))
    changed = json.loads(fetch(base + "/status").body)
    assert changed["leader"] is False and changed["route"]["next_hops"] == ["10.20.4.3"]


def test_metrics_has_every_spec_metric(server: tuple[StatusServer, str], daemon: Daemon) -> None:
    _, base = server
    daemon.metrics.observe_nsx_request("get", "200", 0.042)
    daemon.metrics.route_writes_total.inc()
    daemon.metrics.is_leader.set(1)

    r = fetch(base + "/metrics")
    assert r.code == 200
    assert r.content_type == "text/plain; version=0.0.4; charset=utf-8"
    text = r.body.decode()
    for name in DOCUMENTED_METRICS:
        kind = DOCUMENTED_TYPES.get(name, "gauge")
        assert f"# TYPE {name} {kind}\n" in text, name
    assert "\nlitelb_is_leader 1.0\n" in text
    assert "\nlitelb_route_writes_total 1.0\n" in text
    assert 'litelb_nsx_requests_total{code="200",method="GET"} 1.0\n' in text
    assert "\nlitelb_nsx_request_duration_seconds_count 1.0\n" in text
    assert 'litelb_nsx_request_duration_seconds_bucket{le="0.05"} 1.0\n' in text


def test_metrics_registries_are_independent() -> None:
    a, b = Metrics(), Metrics()
    a.reconcile_errors_total.inc()
    assert b"litelb_reconcile_errors_total 1.0" in a.render()
    assert b"litelb_reconcile_errors_total 0.0" in b.render()


def test_unknown_path_is_404(server: tuple[StatusServer, str]) -> None:
    _, base = server
    assert fetch(base + "/").code == 404
    assert fetch(base + "/metricsx").code == 404


def test_query_string_is_ignored(server: tuple[StatusServer, str]) -> None:
    _, base = server
    assert fetch(base + "/healthz?verbose=1").code == 200


def test_head(server: tuple[StatusServer, str]) -> None:
    _, base = server
    r = fetch(base + "/healthz", method="HEAD")
    assert (r.code, r.body) == (200, b"")
    assert fetch(base + "/status", method="HEAD").content_type == "application/json"


def test_requests_are_logged_at_debug_not_on_stderr(
    server: tuple[StatusServer, str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    _, base = server
    with caplog.at_level(logging.DEBUG, logger="litelb.http"):
        fetch(base + "/healthz")
        # The handler thread logs after the response reached us.
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
    assert any("/healthz" in rec.getMessage() for rec in caplog.records)
    assert all(rec.levelno == logging.DEBUG for rec in caplog.records)
    assert "/healthz" not in capfd.readouterr().err


def test_port_in_use_is_a_clear_error(daemon: Daemon) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        srv = StatusServer(
            ("127.0.0.1", port), status=a_status, healthy=lambda: True, metrics=daemon.metrics
        )
        with pytest.raises(StatusServerError, match=f"127.0.0.1:{port}.*already in use"):
            srv.start()
        srv.stop()


def test_stop_is_idempotent_quick_and_frees_the_port(daemon: Daemon) -> None:
    srv = StatusServer(
        ("127.0.0.1", 0), status=a_status, healthy=lambda: True, metrics=daemon.metrics
    )
    srv.stop()
    host, port = srv.start()
    began = time.monotonic()
    srv.stop()
    srv.stop()
    assert time.monotonic() - began < 2
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=2)
    again = StatusServer(
        ("127.0.0.1", port), status=a_status, healthy=lambda: True, metrics=daemon.metrics
    )
    assert again.start()[1] == port
    again.stop()


def test_ipv6_loopback(daemon: Daemon) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = StatusServer(("::1", 0), status=a_status, healthy=lambda: True, metrics=daemon.metrics)
    try:
        host, port = srv.start()
    except StatusServerError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    try:
        assert host == "::1"
        assert fetch(f"http://[::1]:{port}/healthz").code == 200
    finally:
        srv.stop()

"""The NSX client against the NSX simulator, through real sockets on 127.0.0.1.

Every test asserts on what the simulator holds or what reached it, not on
which methods the client called.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

import pytest

from litelb.adapters.nsx import NsxClient
from litelb.adapters.nsx_errors import (
    NsxAuthError,
    NsxConflictError,
    NsxError,
    NsxNotFoundError,
    NsxResponseError,
    NsxUnavailableError,
)
from litelb.backoff import BackoffPolicy
from litelb.config import NsxConfig, Secret
from litelb.model import LEADER_SCOPE, MANAGED_BY_SCOPE, VIP_SCOPE, Route, Tag
from tests.nsxsim import NsxSimulator
from tests.pki import Pki, serial

PASSWORD = "pw-Zq9#never-shown"
ROUTE_ID = "litelb-192-168-160-249"
TAGS = (
    Tag(MANAGED_BY_SCOPE, "litelb"),
    Tag(VIP_SCOPE, "192.168.160.249"),
    Tag(LEADER_SCOPE, "10.20.4.2"),
)
DESIRED = Route("192.168.160.249/32", ("10.20.4.2", "10.20.4.3"), "litelb VIP", TAGS)


class Recorder:
    """Stands in for time.sleep and collects on_request calls."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.codes: list[tuple[str, str]] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_request(self, method: str, code: str, seconds: float) -> None:
        assert seconds >= 0
        self.codes.append((method, code))


def start_sim(**kwargs: Any) -> NsxSimulator:
    sim = NsxSimulator(password=PASSWORD, **kwargs).start()
    sim.add_tier1("t1")
    return sim


@pytest.fixture
def sim() -> Iterator[NsxSimulator]:
    s = start_sim()
    yield s
    s.stop()


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def config(*managers: str, **overrides: Any) -> NsxConfig:
    fields: dict[str, Any] = {
        "managers": managers,
        "tier1": "t1",
        "route_id": ROUTE_ID,
        "password": Secret(PASSWORD),
        "timeout": 3.0,
    }
    fields.update(overrides)
    return NsxConfig(**fields)


def make_client(cfg: NsxConfig, rec: Recorder, **kwargs: Any) -> NsxClient:
    # The command-line tools' few rounds, with waits the Recorder only notes down.
    kwargs.setdefault("max_attempts", 6)
    kwargs.setdefault("backoff", BackoffPolicy(first=0.01, cap=0.05))
    return NsxClient(cfg, on_request=rec.on_request, sleep=rec.sleep, **kwargs)


@pytest.fixture
def client(sim: NsxSimulator, rec: Recorder) -> Iterator[NsxClient]:
    c = make_client(config(sim.url), rec)
    yield c
    c.close()


def stored(sim: NsxSimulator, project: str = "") -> Optional[dict]:
    return sim.route("t1", ROUTE_ID, project=project)


def hops(body: Optional[dict]) -> list[str]:
    assert body is not None
    return sorted(h["ip_address"] for h in body["next_hops"])


def dead_url() -> str:
    """The URL of a loopback port nobody listens on any more."""
    sim = NsxSimulator(password=PASSWORD).start()
    url = sim.url
    sim.stop()
    return url


# --- Tier-1 ---------------------------------------------------------------------


def test_get_tier1(sim: NsxSimulator, client: NsxClient) -> None:
    info = client.get_tier1()
    assert info.path == "/infra/tier-1s/t1"
    assert info.advertises_static_routes
    assert info.tier0_path == "/infra/tier-0s/t0"
    assert client.reachable is True
    assert client.manager == sim.url


def test_tier1_that_does_not_advertise_static_routes(sim: NsxSimulator, rec: Recorder) -> None:
    sim.add_tier1("t2", route_advertisement_types=("TIER1_CONNECTED",), tier0_path=None)
    info = make_client(config(sim.url, tier1="t2"), rec).get_tier1()
    assert not info.advertises_static_routes
    assert info.tier0_path == ""


def test_missing_tier1_is_not_found(sim: NsxSimulator, rec: Recorder) -> None:
    c = make_client(config(sim.url, tier1="nope"), rec)
    with pytest.raises(NsxNotFoundError) as tier1:
        c.get_tier1()
    assert tier1.value.status == 404
    assert "/infra/tier-1s/nope" in str(tier1.value)
    # A route under a missing Tier-1: NSX answers 400 "path is invalid", not 404.
    with pytest.raises(NsxNotFoundError) as route:
        c.get_route()
    assert (route.value.status, route.value.error_code) == (400, 500012)
    with pytest.raises(NsxNotFoundError):
        c.put_route(DESIRED, None)
    assert rec.sleeps == []


# --- compare-and-swap writes ----------------------------------------------------------


def test_create_then_update_with_revision(sim: NsxSimulator, client: NsxClient) -> None:
    assert client.get_route() is None
    created = client.put_route(DESIRED, None)
    assert created.revision == 0
    assert created.next_hops == ("10.20.4.2", "10.20.4.3")
    assert created.tags == TAGS
    body = stored(sim)
    assert hops(body) == ["10.20.4.2", "10.20.4.3"]
    assert body is not None and body["display_name"] == "litelb VIP"
    assert [(t["scope"], t["tag"]) for t in body["tags"]] == [(t.scope, t.tag) for t in TAGS]
    create = sim.writes()[0]
    assert "_revision" not in create.body
    assert all("scope" not in h for h in create.body["next_hops"])

    wider = Route(DESIRED.network, ("10.20.4.2", "10.20.4.3", "10.20.4.4"), "litelb VIP", TAGS)
    updated = client.put_route(wider, created.revision)
    assert updated.revision == 1
    assert hops(stored(sim)) == ["10.20.4.2", "10.20.4.3", "10.20.4.4"]
    assert client.get_route() == updated
    # The client writes only by compare-and-swap: PUT with the revision it read.
    assert [(w.method, w.body.get("_revision")) for w in sim.writes()] == [
        ("PUT", None),
        ("PUT", 0),
    ]
    client.delete_route()
    # Every write may replace an object another principal identity created.
    assert [w.headers.get("x-allow-overwrite") for w in sim.writes()] == ["true"] * 3


def test_stale_revision_is_a_conflict_and_changes_nothing(
    sim: NsxSimulator, client: NsxClient, rec: Recorder
) -> None:
    first = client.put_route(DESIRED, None)
    sim.ui_edit("t1", ROUTE_ID, display_name="edited by hand")
    before = stored(sim)
    other = Route(DESIRED.network, ("10.20.4.9",), "litelb VIP", TAGS)
    with pytest.raises(NsxConflictError) as exc:
        client.put_route(other, first.revision)
    assert exc.value.status == 412
    assert stored(sim) == before
    # Creating over an existing route is the same race, lost the same way.
    with pytest.raises(NsxConflictError):
        client.put_route(other, None)
    assert stored(sim) == before
    assert rec.sleeps == []
    assert all(w.method == "PUT" for w in sim.writes())


def test_write_that_does_not_read_back_is_an_error(sim: NsxSimulator) -> None:
    def edit_after_put(method: str, code: str, seconds: float) -> None:
        # An operator's edit lands between the PUT and the client's read-back.
        if (method, code) == ("PUT", "200"):
            sim.ui_edit("t1", ROUTE_ID, next_hops=[{"ip_address": "10.9.9.9"}])

    c = NsxClient(config(sim.url), on_request=edit_after_put)
    with pytest.raises(NsxError) as exc:
        c.put_route(DESIRED, None)
    assert type(exc.value) is NsxError
    assert f"accepted PUT /policy/api/v1/infra/tier-1s/t1/static-routes/{ROUTE_ID}" in str(
        exc.value
    )
    assert "found next hops 10.9.9.9" in str(exc.value)


def test_refuses_an_empty_next_hop_list(sim: NsxSimulator, client: NsxClient) -> None:
    with pytest.raises(ValueError):
        client.put_route(Route(DESIRED.network, (), "x", TAGS), None)
    assert sim.writes() == []


def test_delete(sim: NsxSimulator, client: NsxClient) -> None:
    written = client.put_route(DESIRED, None)
    sim.ui_edit("t1", ROUTE_ID, display_name="edited by hand")
    with pytest.raises(NsxConflictError) as exc:
        client.delete_route(written.revision)
    assert str(exc.value).startswith("litelb did not send DELETE")
    assert stored(sim) is not None
    client.delete_route(written.revision + 1)
    assert stored(sim) is None
    client.delete_route()  # already gone is fine
    client.delete_route(5)
    assert [w.method for w in sim.writes()] == ["PUT", "DELETE", "DELETE"]


def test_route_in_a_project(rec: Recorder) -> None:
    with NsxSimulator(password=PASSWORD) as sim:
        sim.add_tier1("t1", project="p1")
        c = make_client(config(sim.url, project="p1"), rec)
        assert c.get_tier1().path == "/orgs/default/projects/p1/infra/tier-1s/t1"
        c.put_route(DESIRED, None)
        assert hops(stored(sim, "p1")) == ["10.20.4.2", "10.20.4.3"]
        assert stored(sim) is None
        assert c.realization_state() == "REALIZED"
        realized = [r for r in sim.requests() if "realized-entities" in r.path]
        assert realized[-1].path.startswith("/policy/api/v1/orgs/default/projects/p1/infra/")
        assert realized[-1].query == {
            "intent_path": f"/orgs/default/projects/p1/infra/tier-1s/t1/static-routes/{ROUTE_ID}"
        }


def test_realization_state(sim: NsxSimulator, client: NsxClient) -> None:
    assert client.realization_state() is None
    client.put_route(DESIRED, None)
    assert client.realization_state() == "REALIZED"
    sim.set_realization("ERROR")
    assert client.realization_state() == "ERROR"
    sim.set_realization("UNREALIZED")
    assert client.realization_state() == "UNREALIZED"


# --- retries and failover ---------------------------------------------------------------


def test_429_with_retry_after_is_honoured(
    sim: NsxSimulator, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    sim.fail(429, 2, retry_after=0.03)
    c = make_client(config(sim.url), rec, backoff=BackoffPolicy(0.01, 10.0), random=lambda: 0.0)
    with caplog.at_level(logging.DEBUG, logger="litelb.nsx"):
        assert c.get_tier1().advertises_static_routes
    assert rec.sleeps == [0.03, 0.03]
    assert rec.codes == [("GET", "429"), ("GET", "429"), ("GET", "200")]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1


def test_retry_after_is_capped(sim: NsxSimulator, rec: Recorder) -> None:
    sim.fail(503, 1, retry_after=3600)
    c = make_client(config(sim.url), rec, backoff=BackoffPolicy(0.01, 0.05))
    c.get_tier1()
    assert rec.sleeps == [0.05]


def test_503_and_502_are_retried_with_jittered_backoff(sim: NsxSimulator, rec: Recorder) -> None:
    sim.fail(503, 2)
    sim.fail(502, 1)
    c = make_client(config(sim.url), rec, backoff=BackoffPolicy(0.01, 1.0))
    c.put_route(DESIRED, None)
    assert hops(stored(sim)) == ["10.20.4.2", "10.20.4.3"]
    assert len(rec.sleeps) == 3
    for n, delay in enumerate(rec.sleeps, 1):
        assert 0.01 <= delay <= 0.01 * 2**n
    assert [code for _, code in rec.codes] == ["503", "503", "502", "200", "200"]


def test_by_default_one_round_and_the_hint_goes_to_the_caller(
    sim: NsxSimulator, rec: Recorder
) -> None:
    sim.fail(503, 5, retry_after=7)
    c = NsxClient(config(sim.url), on_request=rec.on_request, sleep=rec.sleep)
    with pytest.raises(NsxUnavailableError) as exc:
        c.get_route()
    assert exc.value.retry_after == 7.0
    assert len(sim.requests()) == 1 and rec.sleeps == []


def test_by_default_one_round_still_fails_over(rec: Recorder) -> None:
    a, b = start_sim(), start_sim()
    try:
        a.down(True)
        c = NsxClient(config(a.url, b.url), on_request=rec.on_request, sleep=rec.sleep)
        assert c.get_route() is None
        assert c.manager == b.url and rec.sleeps == []
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"network": "192.168.160.249/32", "next_hops": ["10.0.0.1"], "_revision": 1}',
         "a next hop is str"),
        ('{"network": "192.168.160.249/32", "next_hops": [{"ip_address": "10.0.0.1/32"}], '
         '"_revision": 1}', "'10.0.0.1/32' is not an IP address"),
        ("<html>Service Unavailable</html>", "not a JSON object"),
        ("[1, 2]", "not a JSON object"),
        ("[" * 100000, "not a JSON object"),
    ],
)  # fmt: skip
def test_an_answer_of_the_wrong_shape_is_a_response_error(
    sim: NsxSimulator, client: NsxClient, body: str, words: str
) -> None:
    sim.malformed(body)
    with pytest.raises(NsxResponseError) as exc:
        client.get_route()
    assert words in str(exc.value)
    assert sim.url in str(exc.value) and "GET" in str(exc.value)
    assert client.reachable is True


def test_a_huge_answer_is_not_read(sim: NsxSimulator, client: NsxClient) -> None:
    client.put_route(DESIRED, None)
    sim.malformed("{}", pad_to=10_000_000)
    with pytest.raises(NsxResponseError, match="longer than 1048576 bytes"):
        client.get_route()
    assert client.get_route() is not None, "the next answer is read normally"


def test_gives_up_after_max_attempts(
    sim: NsxSimulator, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    sim.fail(503, 100)
    c = make_client(config(sim.url), rec, max_attempts=4)
    with (
        caplog.at_level(logging.DEBUG, logger="litelb.nsx"),
        pytest.raises(NsxUnavailableError) as exc,
    ):
        c.get_route()
    assert exc.value.status == 503
    assert sim.url in str(exc.value)
    assert "4 attempts" in str(exc.value)
    assert len(sim.requests()) == 4
    assert len(rec.sleeps) == 3
    assert c.reachable is False
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_dropped_connections_are_retried(
    sim: NsxSimulator, client: NsxClient, rec: Recorder
) -> None:
    sim.drop(2)
    assert client.get_route() is None
    assert [r.status for r in sim.requests()] == [0, 0, 404]
    assert [code for _, code in rec.codes] == ["error", "error", "404"]
    assert len(rec.sleeps) == 2
    assert client.reachable is True


def test_read_timeout_is_retried_then_unavailable(sim: NsxSimulator, rec: Recorder) -> None:
    sim.latency(1.0)
    c = make_client(config(sim.url, timeout=0.2), rec, max_attempts=2)
    with pytest.raises(NsxUnavailableError) as exc:
        c.get_tier1()
    assert exc.value.status is None
    assert "timed out" in str(exc.value).lower()
    assert rec.codes == [("GET", "error"), ("GET", "error")]


def test_all_managers_down(rec: Recorder, caplog: pytest.LogCaptureFixture) -> None:
    a, b = start_sim(), start_sim()
    try:
        a.down(True)
        b.down(True)
        c = make_client(config(a.url, b.url), rec, max_attempts=2)
        with (
            caplog.at_level(logging.DEBUG, logger="litelb.nsx"),
            pytest.raises(NsxUnavailableError) as exc,
        ):
            c.get_tier1()
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
        assert exc.value.status is None
        assert exc.value.manager == b.url
        assert b.url in str(exc.value)
        assert len(a.requests()) == 2
        assert len(b.requests()) == 2
        # A round tries every manager; the wait comes between rounds.
        assert len(rec.sleeps) == 1
        assert c.reachable is False
    finally:
        a.stop()
        b.stop()


def test_failover_to_the_next_manager_which_stays_preferred(rec: Recorder) -> None:
    a, b = start_sim(), start_sim()
    try:
        a.down(True)
        c = make_client(config(a.url, b.url), rec)
        c.put_route(DESIRED, None)
        assert c.manager == b.url
        assert hops(stored(b)) == ["10.20.4.2", "10.20.4.3"]
        assert rec.sleeps == []
        a.down(False)
        a.clear_requests()
        c.get_route()
        assert a.requests() == []
    finally:
        a.stop()
        b.stop()


def test_failover_from_a_refused_connection(sim: NsxSimulator, rec: Recorder) -> None:
    c = make_client(config(dead_url(), sim.url), rec)
    assert c.get_tier1().advertises_static_routes
    assert c.manager == sim.url
    assert rec.codes == [("GET", "error"), ("GET", "200")]


# --- authentication -----------------------------------------------------------------


def _assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text


def test_wrong_password_is_not_retried(
    sim: NsxSimulator, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    cfg = config(sim.url, password=Secret("wrong-" + PASSWORD))
    c = make_client(cfg, rec, clock=lambda: now[0], auth_retry_after=60.0)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(NsxAuthError) as first:
            c.get_route()
        for _ in range(5):
            with pytest.raises(NsxAuthError) as again:
                c.put_route(DESIRED, None)
            assert str(again.value) == str(first.value)
    assert len(sim.requests()) == 1
    assert first.value.status == 403
    assert "credentials were incorrect" in str(first.value)
    assert "password_file" in str(first.value)
    assert rec.sleeps == []
    _assert_no_password(str(first.value), repr(first.value), repr(c), caplog.text)
    # Only after auth_retry_after does the client try NSX again.
    now[0] += 61
    with pytest.raises(NsxAuthError):
        c.get_route()
    assert len(sim.requests()) == 2


def test_password_never_shows(
    sim: NsxSimulator, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    sim.fail(503, 100)
    with caplog.at_level(logging.DEBUG):
        for auth in ("basic", "session"):
            c = make_client(config(sim.url, dead_url(), auth=auth), rec, max_attempts=3)
            with pytest.raises(NsxError) as exc:
                c.get_tier1()
            _assert_no_password(str(exc.value), repr(exc.value), repr(c), caplog.text)
            c.close()


def test_session_auth_logs_in_once_and_again_after_expiry(sim: NsxSimulator, rec: Recorder) -> None:
    c = make_client(config(sim.url, auth="session"), rec)
    c.get_tier1()
    c.put_route(DESIRED, None)
    seen = [(r.method, r.path, r.status) for r in sim.requests()]
    assert seen[0] == ("POST", "/api/session/create", 200)
    assert [s for s in seen if s[1] == "/api/session/create"] == [seen[0]]
    assert all("x-xsrf-token" in r.headers for r in sim.requests()[1:])
    assert all("authorization" not in r.headers for r in sim.requests())

    sim.expire_sessions()
    sim.clear_requests()
    assert c.get_route() is not None
    assert [(r.method, r.path, r.status) for r in sim.requests()] == [
        ("GET", f"/policy/api/v1/infra/tier-1s/t1/static-routes/{ROUTE_ID}", 403),
        ("POST", "/api/session/create", 200),
        ("GET", f"/policy/api/v1/infra/tier-1s/t1/static-routes/{ROUTE_ID}", 200),
    ]
    sim.clear_requests()
    c.close()
    assert [(r.method, r.path, r.status) for r in sim.requests()] == [
        ("POST", "/api/session/destroy", 200)
    ]


def test_session_wrong_password(sim: NsxSimulator, rec: Recorder) -> None:
    c = make_client(config(sim.url, auth="session", password=Secret("nope")), rec)
    with pytest.raises(NsxAuthError) as exc:
        c.get_tier1()
    assert "POST /api/session/create" in str(exc.value)
    for _ in range(5):
        with pytest.raises(NsxAuthError):
            c.get_tier1()
    assert [(r.method, r.path) for r in sim.requests()] == [("POST", "/api/session/create")]
    _assert_no_password(str(exc.value))


def test_one_session_per_manager(rec: Recorder) -> None:
    a, b = start_sim(), start_sim()
    try:
        c = make_client(config(a.url, b.url, auth="session"), rec)
        c.get_tier1()
        a.down(True)
        c.get_tier1()
        assert c.manager == b.url
        assert [r.path for r in b.requests()][:1] == ["/api/session/create"]
        assert b.requests()[-1].status == 200
    finally:
        a.stop()
        b.stop()


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("nsx-pki"))


@pytest.fixture
def tls_sim(pki: Pki) -> Iterator[NsxSimulator]:
    s = start_sim(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    yield s
    s.stop()


def _thumbprint(cert: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def test_https_with_a_ca_file(tls_sim: NsxSimulator, pki: Pki, rec: Recorder) -> None:
    assert tls_sim.url.startswith("https://127.0.0.1:")
    c = make_client(config(tls_sim.url, ca_file=str(pki.ca_cert)), rec)
    c.put_route(DESIRED, None)
    assert hops(stored(tls_sim)) == ["10.20.4.2", "10.20.4.3"]


def test_https_with_an_unknown_ca_fails_at_once(tls_sim: NsxSimulator, rec: Recorder) -> None:
    c = make_client(config(tls_sim.url), rec)
    with pytest.raises(NsxError) as exc:
        c.get_tier1()
    assert not isinstance(exc.value, NsxUnavailableError)
    assert "ca_file" in str(exc.value)
    assert rec.codes == [("GET", "error")]
    assert rec.sleeps == []


def test_thumbprint_pinning(tls_sim: NsxSimulator, pki: Pki, rec: Recorder) -> None:
    right = make_client(config(tls_sim.url, thumbprint=_thumbprint(pki.server_cert)), rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert right.get_tier1().advertises_static_routes

    rec.codes.clear()
    wrong = make_client(config(tls_sim.url, thumbprint=_thumbprint(pki.ca_cert)), rec)
    with pytest.raises(NsxError) as exc:
        wrong.get_tier1()
    assert not isinstance(exc.value, NsxUnavailableError)
    assert "thumbprint" in str(exc.value)
    assert rec.codes == [("GET", "error")]
    assert rec.sleeps == []


def test_bad_thumbprint_is_a_config_error(sim: NsxSimulator, rec: Recorder) -> None:
    with pytest.raises(ValueError):
        make_client(config(sim.url, thumbprint="abc"), rec)


def test_insecure_skips_verification_without_a_warning_per_request(
    tls_sim: NsxSimulator, rec: Recorder
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = make_client(config(tls_sim.url, insecure=True), rec)
        c.get_tier1()
        c.get_route()
    assert [str(w.message) for w in caught] == []


class _MutualTlsTier1(BaseHTTPRequestHandler):
    """Answers every GET with a Tier-1 named after the client certificate's CN."""

    def do_GET(self) -> None:
        peer = self.request.getpeercert()
        cn = dict(x[0] for x in peer["subject"])["commonName"]
        body = json.dumps({"path": f"/infra/tier-1s/{cn}", "route_advertisement_types": []})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_certificate_auth_presents_the_client_certificate(pki: Pki, rec: Recorder) -> None:
    # The simulator does not do mutual TLS, so a small server that requires it stands in.
    cert, key = pki.client_cert("litelb-principal")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    context.load_verify_locations(str(pki.ca_cert))
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MutualTlsTier1)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}"
        cfg = config(
            url,
            auth="certificate",
            password=None,
            client_cert=str(cert),
            client_key=str(key),
            ca_file=str(pki.ca_cert),
        )
        c = make_client(cfg, rec)
        assert c.get_tier1().path == "/infra/tier-1s/litelb-principal"
        c.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def principal_sim(pki: Pki) -> Iterator[NsxSimulator]:
    s = start_sim(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), client_ca=str(pki.ca_cert)
    )
    yield s
    s.stop()


def _principal_client(sim: NsxSimulator, pki: Pki, rec: Recorder, cn: str) -> NsxClient:
    cert, key = pki.client_cert(cn)
    cfg = config(
        sim.url,
        auth="certificate",
        password=None,
        client_cert=str(cert),
        client_key=str(key),
        ca_file=str(pki.ca_cert),
    )
    # A clock that never moves: only new credentials can end an authentication wait.
    return make_client(cfg, rec, clock=lambda: 0.0)


def _rotate(pki: Pki, sim: NsxSimulator, cn: str, revoke: bool = True) -> None:
    """What an operator does: a new certificate for the same principal identity in
    the same files, and NSX forgets the old one."""
    cert = pki.directory / f"client-{cn}.crt"
    old = serial(cert)
    pki.client_cert(cn)
    assert serial(cert) != old
    if revoke:
        sim.revoke_certificate(old)


def test_a_certificate_replaced_while_a_request_is_on_its_way_is_used_at_once(
    principal_sim: NsxSimulator, pki: Pki, rec: Recorder
) -> None:
    c = _principal_client(principal_sim, pki, rec, "litelb-race")
    c.put_route(DESIRED, None)
    principal_sim.latency(0.5)
    rotated = threading.Timer(0.1, _rotate, (pki, principal_sim, "litelb-race"))
    rotated.start()
    route = c.get_route()
    rotated.join()
    assert route is not None
    # The request that met the revoked certificate is repeated once, with the new one.
    assert rec.codes[-2:] == [("GET", "403"), ("GET", "200")]
    assert rec.sleeps == []
    c.close()


def test_a_replaced_certificate_ends_the_authentication_wait(
    principal_sim: NsxSimulator, pki: Pki, rec: Recorder
) -> None:
    c = _principal_client(principal_sim, pki, rec, "litelb-wait")
    c.put_route(DESIRED, None)
    cert = pki.directory / "client-litelb-wait.crt"
    principal_sim.revoke_certificate(serial(cert))
    with pytest.raises(NsxAuthError):
        c.get_route()
    sent = len(rec.codes)
    with pytest.raises(NsxAuthError):
        c.get_route()
    assert len(rec.codes) == sent, "a refused identity is not tried again before the wait ends"
    _rotate(pki, principal_sim, "litelb-wait", revoke=False)
    assert c.get_route() is not None
    assert rec.codes[-1] == ("GET", "200")
    c.close()

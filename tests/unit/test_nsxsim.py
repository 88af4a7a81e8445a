"""The NSX simulator answers like NSX: checked over real sockets with `requests`."""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import nsxsim
from tests.nsxsim import NsxSimulator
from tests.wait import wait_for

T1 = "/policy/api/v1/infra/tier-1s/t1"
ROUTE = T1 + "/static-routes/r1"
PROJECT_T1 = "/policy/api/v1/orgs/default/projects/p1/infra/tier-1s/pt1"
REPO = Path(__file__).resolve().parents[2]


def body(*hops: str, network: str = "192.0.2.10/32", **extra: Any) -> dict[str, Any]:
    return {"network": network, "next_hops": [{"ip_address": h} for h in hops], **extra}


@pytest.fixture
def sim() -> Iterator[NsxSimulator]:
    with NsxSimulator(lockout_after=3, lockout_seconds=0.5) as s:
        s.add_tier1("t1")
        s.add_tier1("pt1", project="p1")
        yield s


@pytest.fixture
def nsx(sim: NsxSimulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = ("admin", "secret")
    session.headers["Accept"] = "application/json"
    with session:
        yield session


def test_tier1_in_infra_and_in_a_project(sim: NsxSimulator, nsx: requests.Session) -> None:
    t1 = nsx.get(sim.url + T1).json()
    assert t1["id"] == "t1"
    assert t1["path"] == "/infra/tier-1s/t1"
    assert t1["resource_type"] == "Tier1"
    assert t1["route_advertisement_types"] == ["TIER1_STATIC_ROUTES"]
    assert t1["tier0_path"] == "/infra/tier-0s/t0"
    assert t1["_revision"] == 0
    pt1 = nsx.get(sim.url + PROJECT_T1).json()
    assert pt1["path"] == "/orgs/default/projects/p1/infra/tier-1s/pt1"
    missing = nsx.get(sim.url + "/policy/api/v1/infra/tier-1s/nope")
    assert missing.status_code == 404
    assert missing.json()["httpStatus"] == "NOT_FOUND"


def test_tier1_without_tier0_or_advertisement(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.add_tier1("lonely", route_advertisement_types=(), tier0_path=None)
    t1 = nsx.get(sim.url + "/policy/api/v1/infra/tier-1s/lonely").json()
    assert "tier0_path" not in t1
    assert t1["route_advertisement_types"] == []


def test_put_creates_then_compare_and_swaps(sim: NsxSimulator, nsx: requests.Session) -> None:
    assert nsx.get(sim.url + ROUTE).status_code == 404
    created = nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    assert created.status_code == 200
    route = created.json()
    assert route["_revision"] == 0
    assert route["path"] == "/infra/tier-1s/t1/static-routes/r1"
    assert route["parent_path"] == "/infra/tier-1s/t1"
    assert route["display_name"] == "r1"
    assert route["resource_type"] == "StaticRoutes"
    assert route["next_hops"] == [{"ip_address": "10.0.0.1", "admin_distance": 1}]
    assert nsx.get(sim.url + ROUTE).json() == route == sim.route("t1", "r1")

    updated = nsx.put(sim.url + ROUTE, json=body("10.0.0.2", _revision=0))
    assert updated.status_code == 200
    assert updated.json()["_revision"] == 1

    for revision in (0, None):
        stale = nsx.put(sim.url + ROUTE, json=body("10.0.0.3", _revision=revision))
        assert stale.status_code == 412
        error = stale.json()
        assert error["httpStatus"] == "PRECONDITION_FAILED"
        assert error["error_code"] == 604
        assert error["related_errors"] == []
    held = sim.route("t1", "r1")
    assert held is not None
    assert held["next_hops"][0]["ip_address"] == "10.0.0.2"
    assert held["_revision"] == 1


def test_concurrent_compare_and_swap_has_one_winner(
    sim: NsxSimulator, nsx: requests.Session
) -> None:
    nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    contenders = [f"10.0.1.{i}" for i in range(1, 9)]

    def contend(hop: str) -> int:
        with requests.Session() as s:
            s.auth = ("admin", "secret")
            return s.put(sim.url + ROUTE, json=body(hop, _revision=0), timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(len(contenders)) as pool:
        statuses = list(pool.map(contend, contenders))
    assert sorted(statuses) == [200] + [412] * (len(contenders) - 1)
    route = sim.route("t1", "r1")
    assert route is not None
    assert route["_revision"] == 1
    assert route["next_hops"][0]["ip_address"] == contenders[statuses.index(200)]


def test_put_creating_with_a_revision_is_rejected(sim: NsxSimulator, nsx: requests.Session) -> None:
    answer = nsx.put(sim.url + ROUTE, json=body("10.0.0.1", _revision=3))
    assert answer.status_code == 412
    assert sim.route("t1", "r1") is None


def test_patch_replaces_whole_object_with_empty_answer(
    sim: NsxSimulator, nsx: requests.Session
) -> None:
    first = body("10.0.0.1", "10.0.0.2", tags=[{"scope": "s", "tag": "t"}], description="d")
    answer = nsx.patch(sim.url + ROUTE, json=first)
    assert answer.status_code == 200
    assert answer.content == b""
    read_only = {
        "path": "/elsewhere",
        "id": "other",
        "resource_type": "Tier0",
        "_create_user": "mallory",
        "_system_owned": True,
        "marked_for_delete": True,
        "_revision": 42,
    }
    assert nsx.patch(sim.url + ROUTE, json=body("10.0.0.3", **read_only)).status_code == 200
    route = sim.route("t1", "r1")
    assert route is not None
    assert route["_revision"] == 1
    assert route["next_hops"] == [{"ip_address": "10.0.0.3", "admin_distance": 1}]
    assert "tags" not in route and "description" not in route
    assert route["id"] == "r1"
    assert route["path"] == "/infra/tier-1s/t1/static-routes/r1"
    assert route["resource_type"] == "StaticRoutes"
    assert route["_create_user"] == "admin"
    assert route["_system_owned"] is False
    assert route["marked_for_delete"] is False


def test_next_hop_details_are_kept(sim: NsxSimulator, nsx: requests.Session) -> None:
    hop = {"ip_address": "2001:db8::1", "admin_distance": 7, "scope": ["/infra/x"]}
    nsx.patch(sim.url + ROUTE, json={"network": "2001:db8::10/128", "next_hops": [hop]})
    assert nsx.get(sim.url + ROUTE).json()["next_hops"] == [hop]


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        ({"network": "192.0.2.1/32", "next_hops": [{"ip_address": "10.0.0.1", "x": 1}]}, 287),
        ({"network": "192.0.2.1/32", "next_hops": ["10.0.0.1"]}, 287),
        ({"network": "192.0.2.1/32", "next_hops": []}, 255),
        ({"network": "192.0.2.1/32"}, 255),
        ({"next_hops": [{"ip_address": "10.0.0.1"}]}, 255),
        (body("10.0.0.1", network="192.0.2.300/32"), 255),
        (body("10.0.0.1", network="garbage"), 255),
        (body("10.0.0.1", network="192.0.2.1"), 255),
        (body("10.0.0.999"), 255),
        ({"network": "192.0.2.1/32", "next_hops": [{"admin_distance": 1}]}, 255),
        (
            {"network": "192.0.2.1/32", "next_hops": [{"ip_address": "10.0.0.1", "scope": []}]},
            255,
        ),
        (
            {
                "network": "192.0.2.1/32",
                "next_hops": [{"ip_address": "10.0.0.1", "admin_distance": 256}],
            },
            255,
        ),
        (body("10.0.0.1", display_name="x" * 256), 255),
        (body("10.0.0.1", description="x" * 1025), 255),
        (body("10.0.0.1", tags=[{"scope": "s", "tag": str(i)} for i in range(31)]), 255),
        (body("10.0.0.1", tags=[{"scope": "s" * 129, "tag": "t"}]), 255),
        (body("10.0.0.1", tags=[{"scope": "s", "tag": "t" * 257}]), 255),
        (["not", "an", "object"], 287),
    ],
)
def test_invalid_routes_are_rejected(
    sim: NsxSimulator, nsx: requests.Session, sent: Any, code: int
) -> None:
    for method in ("PUT", "PATCH"):
        answer = nsx.request(method, sim.url + ROUTE, json=sent)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error_code"] == code
    assert sim.route("t1", "r1") is None


def test_limits_themselves_are_accepted(sim: NsxSimulator, nsx: requests.Session) -> None:
    tags = [{"scope": "s" * 128, "tag": "t" * 256}] * 30
    sent = body("10.0.0.1", display_name="x" * 255, description="d" * 1024, tags=tags)
    assert nsx.patch(sim.url + ROUTE, json=sent).status_code == 200


def test_malformed_json_is_a_deserialization_error(
    sim: NsxSimulator, nsx: requests.Session
) -> None:
    answer = nsx.patch(sim.url + ROUTE, data=b"{not json", headers={"Content-Type": "json"})
    assert (answer.status_code, answer.json()["error_code"]) == (400, 287)


def test_route_under_missing_tier1(sim: NsxSimulator, nsx: requests.Session) -> None:
    url = sim.url + "/policy/api/v1/infra/tier-1s/ghost/static-routes/r1"
    for method in ("GET", "PUT", "PATCH"):
        answer = nsx.request(method, url, json=body("10.0.0.1"))
        assert answer.status_code == 400
        error = answer.json()
        assert error["error_code"] == 500012
        assert "/infra/tier-1s/ghost" in error["error_message"]


def test_list_and_delete(sim: NsxSimulator, nsx: requests.Session) -> None:
    nsx.patch(sim.url + T1 + "/static-routes/b", json=body("10.0.0.1"))
    nsx.patch(sim.url + T1 + "/static-routes/a", json=body("10.0.0.2"))
    nsx.patch(sim.url + PROJECT_T1 + "/static-routes/c", json=body("10.0.0.3"))
    listed = nsx.get(sim.url + T1 + "/static-routes").json()
    assert listed["result_count"] == 2
    assert [r["id"] for r in listed["results"]] == ["a", "b"]
    assert nsx.delete(sim.url + T1 + "/static-routes/a").status_code == 200
    assert nsx.delete(sim.url + T1 + "/static-routes/a").status_code == 200
    assert nsx.get(sim.url + T1 + "/static-routes/a").status_code == 404
    project_route = sim.route("pt1", "c", project="p1")
    assert project_route is not None
    assert project_route["path"] == "/orgs/default/projects/p1/infra/tier-1s/pt1/static-routes/c"


def test_realization(sim: NsxSimulator, nsx: requests.Session) -> None:
    url = sim.url + "/policy/api/v1/infra/realized-state/realized-entities"
    path = "/infra/tier-1s/t1/static-routes/r1"
    assert nsx.get(url, params={"intent_path": path}).json() == {"results": [], "result_count": 0}
    nsx.patch(sim.url + ROUTE, json=body("10.0.0.1"))
    realized = nsx.get(url, params={"intent_path": path}).json()
    assert realized["result_count"] == 1
    assert realized["results"][0]["state"] == "REALIZED"
    assert realized["results"][0]["intent_paths"] == [path]
    sim.set_realization("ERROR")
    assert nsx.get(url, params={"intent_path": path}).json()["results"][0]["state"] == "ERROR"


def test_bad_or_missing_credentials(sim: NsxSimulator) -> None:
    for auth in (None, ("admin", "wrong"), ("root", "secret")):
        answer = requests.get(sim.url + T1, auth=auth, timeout=10)
        assert answer.status_code == 403
        assert answer.json()["error_message"] == (
            "The credentials were incorrect or the account specified has been locked."
        )
    assert requests.get(sim.url + T1, auth=("admin", "secret"), timeout=10).status_code == 200


def test_repeated_failures_lock_the_account() -> None:
    with NsxSimulator(lockout_after=3, lockout_seconds=1.5) as sim:
        sim.add_tier1("t1")
        for _ in range(2):
            assert requests.get(sim.url + T1, auth=("admin", "bad"), timeout=10).status_code == 403
        # A success in between starts the count again.
        assert requests.get(sim.url + T1, auth=("admin", "secret"), timeout=10).status_code == 200
        for _ in range(3):
            assert requests.get(sim.url + T1, auth=("admin", "bad"), timeout=10).status_code == 403
        assert requests.get(sim.url + T1, auth=("admin", "secret"), timeout=10).status_code == 403
        form = {"j_username": "admin", "j_password": "secret"}
        created = requests.post(sim.url + "/api/session/create", data=form, timeout=10)
        assert created.status_code == 403
        wait_for(
            lambda: (
                requests.get(sim.url + T1, auth=("admin", "secret"), timeout=10).status_code == 200
            ),
            10.0,
            "the lockout to end",
        )


def test_session_auth(sim: NsxSimulator) -> None:
    with requests.Session() as s:
        bad = s.post(
            sim.url + "/api/session/create", data={"j_username": "admin", "j_password": "x"}
        )
        assert bad.status_code == 403
        form = {"j_username": "admin", "j_password": "secret"}
        created = s.post(sim.url + "/api/session/create", data=form)
        assert created.status_code == 200
        assert "HttpOnly" in created.headers["Set-Cookie"]
        assert s.cookies.get("JSESSIONID")
        token = created.headers["x-xsrf-token"]
        assert s.get(sim.url + T1).status_code == 403  # cookie without the XSRF token
        s.headers["X-XSRF-TOKEN"] = token
        assert s.get(sim.url + T1).status_code == 200
        assert s.post(sim.url + "/api/session/destroy").status_code == 200
        gone = s.get(sim.url + T1)
        assert (gone.status_code, gone.json()["error_code"]) == (403, 98)

        s.headers["X-XSRF-TOKEN"] = s.post(sim.url + "/api/session/create", data=form).headers[
            "x-xsrf-token"
        ]
        assert s.get(sim.url + T1).status_code == 200
        sim.expire_sessions()
        expired = s.get(sim.url + T1)
        assert (expired.status_code, expired.json()["error_code"]) == (403, 98)
    recorded = [r for r in sim.requests() if r.path == "/api/session/create"]
    assert recorded and all(r.body is None for r in recorded)  # never the password


def test_fail_by_method_with_retry_after(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.fail(429, count=2, method="PUT", retry_after=1)
    assert nsx.get(sim.url + T1).status_code == 200
    for _ in range(2):
        answer = nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "1"
        assert answer.json()["httpStatus"] == "TOO_MANY_REQUESTS"
    assert nsx.put(sim.url + ROUTE, json=body("10.0.0.1")).status_code == 200
    sim.fail(503)
    answer = nsx.get(sim.url + T1)
    assert answer.status_code == 503
    assert "Retry-After" not in answer.headers
    assert nsx.get(sim.url + T1).status_code == 200


def test_latency(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.latency(0.3)
    started = time.monotonic()
    nsx.get(sim.url + T1)
    assert time.monotonic() - started >= 0.3
    sim.latency(0)


def test_malformed_bodies_on_demand(sim: NsxSimulator, nsx: requests.Session) -> None:
    nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    sim.malformed('{"network": "192.0.2.10/32", "next_hops": ["10.0.0.1"]}', count=2)
    for _ in range(2):
        answer = nsx.get(sim.url + ROUTE)
        assert answer.status_code == 200
        assert answer.json()["next_hops"] == ["10.0.0.1"]
    assert nsx.get(sim.url + ROUTE).json()["next_hops"][0]["ip_address"] == "10.0.0.1"
    sim.malformed("<html>proxy error</html>", method="PUT")
    assert nsx.get(sim.url + ROUTE).status_code == 200, "only PUT is affected"
    assert nsx.put(sim.url + ROUTE, json=body("10.0.0.2")).text == "<html>proxy error</html>"
    assert sim.route("t1", "r1")["next_hops"][0]["ip_address"] == "10.0.0.1", "not stored"
    sim.malformed("{}", pad_to=10_000_000)
    huge = nsx.get(sim.url + ROUTE)
    assert len(huge.content) == 10_000_000 and huge.json() == {}


def test_black_hole_accepts_and_never_answers(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.black_hole(True)
    start = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        nsx.get(sim.url + T1, timeout=(1.0, 0.3))
    assert time.monotonic() - start >= 0.3
    assert [r.status for r in sim.requests()] == [0]
    sim.black_hole(False)
    assert nsx.get(sim.url + T1, timeout=2).status_code == 200


def test_drop_and_down(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.drop(2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            nsx.get(sim.url + T1)
    assert nsx.get(sim.url + T1).status_code == 200
    sim.down(True)
    for _ in range(3):
        with pytest.raises(requests.ConnectionError):
            nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    sim.down(False)
    assert nsx.put(sim.url + ROUTE, json=body("10.0.0.1")).status_code == 200
    statuses = [r.status for r in sim.requests()]
    assert statuses == [0, 0, 200, 0, 0, 0, 200]


def test_requests_and_writes_are_recorded(sim: NsxSimulator, nsx: requests.Session) -> None:
    nsx.get(sim.url + ROUTE)
    nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    nsx.put(sim.url + ROUTE, json=body("10.0.0.2"))  # no _revision: 412
    nsx.get(sim.url + "/policy/api/v1/infra/realized-state/realized-entities?intent_path=/x")
    requests.post(sim.url + "/_sim/latency", json={"seconds": 0}, timeout=10)
    seen = sim.requests()
    assert [(r.method, r.status) for r in seen] == [
        ("GET", 404),
        ("PUT", 200),
        ("PUT", 412),
        ("GET", 200),
    ]
    assert seen[1].body == body("10.0.0.1")
    assert seen[3].query == {"intent_path": "/x"}
    assert seen[0].client[0] == "127.0.0.1"
    assert "authorization" not in seen[0].headers
    assert seen[0].timestamp <= seen[3].timestamp
    assert [(w.method, w.status) for w in sim.writes()] == [("PUT", 200), ("PUT", 412)]
    sim.clear_requests()
    assert sim.requests() == []


def test_ui_edits_bump_the_revision(sim: NsxSimulator, nsx: requests.Session) -> None:
    nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    sim.ui_edit("t1", "r1", next_hops=[{"ip_address": "10.9.9.9"}])
    route = nsx.get(sim.url + ROUTE).json()
    assert route["_revision"] == 1
    assert route["next_hops"] == [{"ip_address": "10.9.9.9", "admin_distance": 1}]
    assert route["_last_modified_user"] != "admin"
    assert nsx.put(sim.url + ROUTE, json=body("10.0.0.1", _revision=0)).status_code == 412
    sim.ui_put("t1", "r1", body("10.0.0.5", display_name="hand made"))
    assert nsx.get(sim.url + ROUTE).json()["_revision"] == 2
    with pytest.raises(ValueError):
        sim.ui_edit("t1", "r1", next_hops=[])
    with pytest.raises(KeyError):
        sim.ui_edit("t1", "absent", display_name="x")
    assert sim.ui_delete("t1", "r1") is True
    assert sim.ui_delete("t1", "r1") is False
    assert nsx.get(sim.url + ROUTE).status_code == 404
    # The UI's own writes are not NSX requests.
    assert [(w.method, w.status) for w in sim.writes()] == [("PUT", 200), ("PUT", 412)]


def test_control_over_http(sim: NsxSimulator, nsx: requests.Session) -> None:
    def control(name: str, **args: Any) -> Any:
        answer = requests.post(f"{sim.url}/_sim/{name}", json=args, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    control("add_tier1", tier1_id="t2")
    control("ui_put", tier1="t2", route_id="r", body=body("10.0.0.1"))
    control("ui_edit", tier1="t2", route_id="r", fields={"display_name": "edited"})
    assert control("route", tier1="t2", route_id="r")["display_name"] == "edited"
    assert control("route", tier1="t2", route_id="absent") is None
    control("fail", status=502, count=1, method="GET")
    assert nsx.get(sim.url + "/policy/api/v1/infra/tier-1s/t2").status_code == 502
    control("set_realization", state="UNREALIZED")
    control("drop", count=1)
    with pytest.raises(requests.ConnectionError):
        nsx.get(sim.url + T1)
    requests_seen = control("requests")
    assert [r["status"] for r in requests_seen] == [502, 0]
    control("clear_requests")
    assert control("requests") == []
    control("down", is_down=True)
    with pytest.raises(requests.ConnectionError):
        nsx.get(sim.url + T1)
    control("down", is_down=False)
    assert control("ui_delete", tier1="t2", route_id="r") is True
    bad = requests.post(sim.url + "/_sim/no_such_thing", json={}, timeout=10)
    assert bad.status_code == 400


def test_pending_delete(sim: NsxSimulator, nsx: requests.Session) -> None:
    sim.delete_delay(30)
    nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    assert nsx.delete(sim.url + ROUTE).status_code == 200
    assert nsx.get(sim.url + ROUTE).status_code == 404
    again = nsx.put(sim.url + ROUTE, json=body("10.0.0.1"))
    assert (again.status_code, again.json()["error_code"]) == (400, 500045)
    sim.delete_delay(0)
    assert nsx.patch(sim.url + T1 + "/static-routes/other", json=body("10.0.0.1")).ok
    assert nsx.delete(sim.url + T1 + "/static-routes/other").ok
    assert nsx.put(sim.url + T1 + "/static-routes/other", json=body("10.0.0.1")).ok


def test_unknown_path_is_404(sim: NsxSimulator, nsx: requests.Session) -> None:
    assert nsx.get(sim.url + "/policy/api/v1/infra/segments/s").status_code == 404


def test_restart_on_same_port_drops_old_connections() -> None:
    first = NsxSimulator().start()
    first.add_tier1("old")
    port = first.port
    with requests.Session() as s:
        s.auth = ("admin", "secret")
        assert s.get(first.url + "/policy/api/v1/infra/tier-1s/old").status_code == 200
        first.stop()
        first.stop()
        with NsxSimulator(port=port) as second:
            second.add_tier1("new")
            # The kept-alive connection to the first simulator must not answer for it.
            assert s.get(second.url + "/policy/api/v1/infra/tier-1s/old").status_code == 404
            assert s.get(second.url + "/policy/api/v1/infra/tier-1s/new").status_code == 200


def test_only_loopback() -> None:
    with pytest.raises(ValueError):
        NsxSimulator(host="0.0.0.0")


def _pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate "litelb-pi"."""
    pytest.importorskip("cryptography")
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    paths: dict[str, Path] = {}

    def issue(name: str, issuer: Any, issuer_key: Any, *extensions: Any) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[name + "-key"] = directory / f"{name}-key.pem"
        paths[name + "-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert, key

    ca, ca_key = issue("ca", None, None, (x509.BasicConstraints(ca=True, path_length=0), True))
    ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    issue("server", ca.subject, ca_key, (x509.SubjectAlternativeName([ip]), False))
    issue("litelb-pi", ca.subject, ca_key)
    return paths


def test_tls(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    ca = str(pki["ca"])
    with NsxSimulator(tls_cert=str(pki["server"]), tls_key=str(pki["server-key"])) as sim:
        sim.add_tier1("t1")
        assert sim.url.startswith("https://127.0.0.1:")
        answer = requests.get(sim.url + T1, auth=("admin", "secret"), verify=ca, timeout=10)
        assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(sim.url + T1, timeout=10)
        # A failed handshake must not take the simulator down.
        again = requests.get(sim.url + T1, auth=("admin", "secret"), verify=ca, timeout=10)
        assert again.status_code == 200


def test_client_certificate_principal_owns_its_route(tmp_path: Path) -> None:
    pki = _pki(tmp_path)
    with NsxSimulator(
        tls_cert=str(pki["server"]), tls_key=str(pki["server-key"]), client_ca=str(pki["ca"])
    ) as sim:
        sim.add_tier1("t1")
        with requests.Session() as pi, requests.Session() as admin:
            # requests lets $REQUESTS_CA_BUNDLE override a Session's verify unless told not to.
            pi.trust_env = admin.trust_env = False
            pi.verify = admin.verify = str(pki["ca"])
            pi.cert = (str(pki["litelb-pi"]), str(pki["litelb-pi-key"]))
            admin.auth = ("admin", "secret")
            assert pi.put(sim.url + ROUTE, json=body("10.0.0.1")).status_code == 200
            route = sim.route("t1", "r1")
            assert route is not None
            assert (route["_create_user"], route["_protection"]) == (
                "litelb-pi",
                "REQUIRE_OVERRIDE",
            )
            refused = admin.put(sim.url + ROUTE, json=body("10.0.0.2", _revision=0))
            assert (refused.status_code, refused.json()["error_code"]) == (400, 98)
            assert admin.delete(sim.url + ROUTE).status_code == 400
            forced = admin.put(
                sim.url + ROUTE,
                json=body("10.0.0.2", _revision=0),
                headers={"X-Allow-Overwrite": "true"},
            )
            assert forced.status_code == 200
            assert forced.json()["_protection"] == "REQUIRE_OVERRIDE"
            assert pi.put(sim.url + ROUTE, json=body("10.0.0.3", _revision=1)).status_code == 200
            # Without a certificate, the password still works on the same port.
            assert requests.get(sim.url + T1, verify=str(pki["ca"]), timeout=10).status_code == 403


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "nsxsim printed nothing"
    return proc.stdout.readline()


def test_command_line(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret\n")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.nsxsim",
            "--listen",
            "127.0.0.1:0",
            "--tier1",
            "cluster-router",
            "--tier1",
            "proj/pt1",
            "--username",
            "admin",
            "--password-file",
            str(password_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = _read_line(proc, 30)
        assert line.startswith("nsxsim listening on http://127.0.0.1:")
        url = line.split()[-1]
        auth = ("admin", "s3cret")
        t1 = requests.get(
            url + "/policy/api/v1/infra/tier-1s/cluster-router", auth=auth, timeout=10
        )
        assert t1.status_code == 200
        project = url + "/policy/api/v1/orgs/default/projects/proj/infra/tier-1s/pt1"
        assert requests.get(project, auth=auth, timeout=10).status_code == 200
        requests.post(url + "/_sim/fail", json={"status": 504}, timeout=10)
        assert requests.get(project, auth=auth, timeout=10).status_code == 504
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def test_command_line_refuses_other_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        nsxsim.main(["--listen", "0.0.0.0:0"])
    assert exited.value.code == 2
    assert "loopback" in capsys.readouterr().err

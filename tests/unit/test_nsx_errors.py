"""Pure parts of the NSX client: error bodies, error classes, Route <-> StaticRoutes JSON."""

from __future__ import annotations

import json
import re

import pytest

from litelb.adapters.nsx_body import (
    InvalidBody,
    Tier1Info,
    read_back_matches,
    route_from_body,
    route_to_body,
)
from litelb.adapters.nsx_errors import (
    NsxAuthError,
    NsxConflictError,
    NsxError,
    NsxNotFoundError,
    NsxUnavailableError,
    error_class,
    parse_error_body,
    retry_after,
)
from litelb.model import LEADER_SCOPE, MANAGED_BY_SCOPE, VIP_SCOPE, Route, Tag

TAGS = (
    Tag(MANAGED_BY_SCOPE, "litelb"),
    Tag(VIP_SCOPE, "192.168.160.249"),
    Tag(LEADER_SCOPE, "10.20.4.2"),
)
DESIRED = Route(
    network="192.168.160.249/32",
    next_hops=("10.20.4.2", "10.20.4.10", "10.20.4.3"),
    display_name="litelb VIP",
    tags=TAGS,
)


def nsx_body(**overrides: object) -> dict:
    """A StaticRoutes object shaped like NSX's GET answer."""
    body = {
        "network": "192.168.160.249/32",
        "next_hops": [
            {"ip_address": "10.20.4.10", "admin_distance": 1},
            {"ip_address": "10.20.4.2", "admin_distance": 1},
            {"ip_address": "10.20.4.3", "admin_distance": 1},
        ],
        "display_name": "litelb VIP",
        "tags": [
            {"scope": LEADER_SCOPE, "tag": "10.20.4.2"},
            {"scope": MANAGED_BY_SCOPE, "tag": "litelb"},
            {"scope": VIP_SCOPE, "tag": "192.168.160.249"},
        ],
        "resource_type": "StaticRoutes",
        "id": "litelb-192-168-160-249",
        "path": "/infra/tier-1s/t1/static-routes/litelb-192-168-160-249",
        "marked_for_delete": False,
        "_create_user": "admin",
        "_revision": 7,
    }
    body.update(overrides)
    return body


# --- error bodies ---------------------------------------------------------------


def test_error_body_joins_message_and_related_errors() -> None:
    text = json.dumps(
        {
            "httpStatus": "BAD_REQUEST",
            "error_code": 500012,
            "module_name": "Policy",
            "error_message": "The path=[/infra/tier-1s/nope] is invalid.",
            "related_errors": [
                {"error_code": 1, "error_message": " first cause "},
                {"error_code": 2},
                "not an object",
                {"error_message": "second cause"},
            ],
        }
    )
    code, detail = parse_error_body(text)
    assert code == 500012
    assert detail == "The path=[/infra/tier-1s/nope] is invalid.; first cause; second cause"


def test_error_body_that_is_not_json_gives_a_short_excerpt() -> None:
    html = "<html><body><h1>502 Bad Gateway</h1>" + "x" * 1000 + "</body></html>"
    code, detail = parse_error_body(html, "Bad Gateway")
    assert code is None
    assert detail.startswith("502 Bad Gateway")
    assert len(detail) <= 300


@pytest.mark.parametrize("text", ["", "[]", "null", '{"error_code": "x"}'])
def test_error_body_without_message_falls_back_to_reason(text: str) -> None:
    assert parse_error_body(text, "Service Unavailable") == (None, "Service Unavailable")


@pytest.mark.parametrize(
    ("status", "code", "detail", "cls"),
    [
        (403, 403, "The credentials were incorrect or the account specified has been locked.",
         NsxAuthError),
        (401, None, "", NsxAuthError),
        (412, 604, "The object was modified by somebody else. Please retry.", NsxConflictError),
        (409, None, "", NsxConflictError),
        (400, 1, "Object was modified by somebody else", NsxConflictError),
        (400, 500045, "pending delete", NsxConflictError),
        (404, 600, "The requested object : /infra/tier-1s/t1 could not be found.",
         NsxNotFoundError),
        (400, 500012, "The path=[/infra/tier-1s/t1] is invalid.", NsxNotFoundError),
        (400, 287, "Json de-serialization error: Unrecognized field", NsxError),
        (429, 102, "exceeded request rate", NsxUnavailableError),
        (503, 103, "too many concurrent requests", NsxUnavailableError),
        (502, None, "", NsxUnavailableError),
        (504, None, "", NsxUnavailableError),
        (500, 99, "internal", NsxError),
    ],
)  # fmt: skip
def test_error_class(status: int, code: object, detail: str, cls: type) -> None:
    assert error_class(status, code, detail) is cls  # type: ignore[arg-type]


def test_error_line_names_manager_answer_request_and_what_to_do() -> None:
    err = NsxAuthError(
        "PUT",
        "https://nsx-a/policy/api/v1/infra/tier-1s/t1/static-routes/litelb-x",
        403,
        403,
        "The credentials were incorrect or the account specified has been locked.",
        manager="https://nsx-a",
        hint="check username and password_file",
    )
    assert str(err) == (
        "NSX manager https://nsx-a answered 403 for PUT "
        "/policy/api/v1/infra/tier-1s/t1/static-routes/litelb-x: "
        "The credentials were incorrect or the account specified has been locked. "
        "(error 403): check username and password_file"
    )
    again = err.again()
    assert type(again) is NsxAuthError
    assert str(again) == str(err)
    assert (again.method, again.url, again.status, again.error_code, again.detail) == (
        err.method,
        err.url,
        err.status,
        err.error_code,
        err.detail,
    )


def test_error_line_for_no_answer_counts_attempts() -> None:
    err = NsxUnavailableError(
        "GET",
        "http://127.0.0.1:1/policy/api/v1/infra/tier-1s/t1",
        None,
        detail="Connection refused",
        manager="http://127.0.0.1:1",
        attempts=6,
    )
    assert str(err) == (
        "NSX manager http://127.0.0.1:1 did not answer GET /policy/api/v1/infra/tier-1s/t1 "
        "(after 6 attempts): Connection refused"
    )
    assert err.status is None
    assert err.error_code is None


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("3", 3.0), (" 0.5 ", 0.5), ("-1", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)  # fmt: skip
def test_retry_after_seconds(header: object, seconds: object) -> None:
    assert retry_after(header) == seconds  # type: ignore[arg-type]


# --- Route <-> JSON ------------------------------------------------------------


def test_route_to_body_sends_only_fields_nsx_accepts() -> None:
    body = route_to_body(DESIRED, "litelb-192-168-160-249", None)
    assert body == {
        "resource_type": "StaticRoutes",
        "id": "litelb-192-168-160-249",
        "display_name": "litelb VIP",
        "network": "192.168.160.249/32",
        "next_hops": [
            {"ip_address": "10.20.4.2", "admin_distance": 1},
            {"ip_address": "10.20.4.10", "admin_distance": 1},
            {"ip_address": "10.20.4.3", "admin_distance": 1},
        ],
        "tags": [
            {"scope": MANAGED_BY_SCOPE, "tag": "litelb"},
            {"scope": VIP_SCOPE, "tag": "192.168.160.249"},
            {"scope": LEADER_SCOPE, "tag": "10.20.4.2"},
        ],
    }
    assert all("scope" not in hop for hop in body["next_hops"])


def test_route_to_body_carries_revision_for_a_replace_and_defaults_the_name() -> None:
    body = route_to_body(Route("10.0.0.1/32", ("10.1.0.1",)), "r1", 0)
    assert body["_revision"] == 0
    assert body["display_name"] == "r1"


def test_route_from_body_sorts_hops_keeps_tag_order_and_revision() -> None:
    route = route_from_body(nsx_body())
    assert route.network == "192.168.160.249/32"
    assert route.next_hops == ("10.20.4.2", "10.20.4.3", "10.20.4.10")
    assert [t.scope for t in route.tags] == [LEADER_SCOPE, MANAGED_BY_SCOPE, VIP_SCOPE]
    assert route.revision == 7
    assert route.hops_as_litelb_writes
    assert route.managed
    assert route.leader == "10.20.4.2"
    assert read_back_matches(route, DESIRED, "litelb-192-168-160-249")


def test_route_round_trip() -> None:
    body = route_to_body(DESIRED, "r", 3)
    read = route_from_body(body)
    assert read.revision == 3
    assert read_back_matches(read, DESIRED, "r")


@pytest.mark.parametrize(
    "hop",
    [
        {"ip_address": "10.20.4.3", "admin_distance": 2},
        {"ip_address": "10.20.4.3", "admin_distance": 1, "scope": ["/infra/segments/s"]},
        {"admin_distance": 1},
    ],
)
def test_a_hop_litelb_never_writes_makes_the_route_differ(hop: dict) -> None:
    body = nsx_body(next_hops=[{"ip_address": "10.20.4.2", "admin_distance": 1}, hop])
    route = route_from_body(body)
    assert not route.hops_as_litelb_writes
    desired = Route(DESIRED.network, ("10.20.4.2", "10.20.4.3"), DESIRED.display_name, TAGS)
    assert not read_back_matches(route, desired, "r")


def test_holds_notices_every_difference() -> None:
    read = route_from_body(nsx_body())
    assert not read_back_matches(
        read, Route("192.168.160.250/32", DESIRED.next_hops, "litelb VIP", TAGS), "r"
    )
    assert not read_back_matches(
        read, Route(DESIRED.network, ("10.20.4.2",), "litelb VIP", TAGS), "r"
    )
    assert not read_back_matches(
        read, Route(DESIRED.network, DESIRED.next_hops, "other", TAGS), "r"
    )
    assert not read_back_matches(
        read, Route(DESIRED.network, DESIRED.next_hops, "litelb VIP", TAGS[:2]), "r"
    )


def test_ipv6_hops_are_compared_in_canonical_form() -> None:
    body = nsx_body(
        network="2001:db8::1/128",
        next_hops=[
            {"ip_address": "2001:DB8:0:0::10", "admin_distance": 1},
            {"ip_address": "2001:db8::9", "admin_distance": 1},
        ],
    )
    route = route_from_body(body)
    assert route.next_hops == ("2001:db8::9", "2001:db8::10")
    desired = Route("2001:db8::1/128", ("2001:db8::10", "2001:db8::9"), "litelb VIP", TAGS)
    assert read_back_matches(route, desired, "r")


def test_route_from_a_sparse_body() -> None:
    route = route_from_body({"network": "10.0.0.1/32", "next_hops": [], "_revision": 0})
    assert route == Route("10.0.0.1/32", (), "", (), 0, True)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"next_hops": ["10.0.0.1"]}, "a next hop is str"),
        ({"next_hops": [{"ip_address": "10.0.0.1/32"}]}, "'10.0.0.1/32' is not an IP address"),
        ({"next_hops": [{"ip_address": 10}]}, "ip_address is int"),
        ({"next_hops": [{"ip_address": "10.0.0.1", "admin_distance": "1"}]}, "admin_distance"),
        ({"next_hops": [{"ip_address": "10.0.0.1", "admin_distance": True}]}, "admin_distance"),
        ({"next_hops": {"ip_address": "10.0.0.1"}}, "next_hops is dict"),
        ({"next_hops": None}, "next_hops is missing"),
        ({"network": None}, "network is missing"),
        ({"network": "somewhere"}, "'somewhere' is not an address range"),
        ({"network": ["10.0.0.1/32"]}, "network is list"),
        ({"tags": "litelb"}, "tags is str"),
        ({"tags": [["litelb/leader", "10.0.0.1"]]}, "a tag is list"),
        ({"tags": [{"scope": "litelb/leader", "tag": 7}]}, "tag is int"),
        ({"display_name": {"x": 1}}, "display_name is dict"),
        ({"_revision": "7"}, "_revision is str"),
        ({"_revision": None}, "_revision is missing"),
    ],
)
def test_a_route_body_of_the_wrong_shape_is_invalid(overrides: dict, words: str) -> None:
    with pytest.raises(InvalidBody, match=re.escape(words)):
        route_from_body(nsx_body(**overrides))


@pytest.mark.parametrize("body", [None, [], "route", 7, 1.5, True])
def test_a_route_body_that_is_not_an_object_is_invalid(body: object) -> None:
    with pytest.raises(InvalidBody, match="not a JSON object"):
        route_from_body(body)


def test_tier1_info_advertises_static_routes() -> None:
    assert Tier1Info("/infra/tier-1s/t1", ("TIER1_STATIC_ROUTES",), "").advertises_static_routes
    assert not Tier1Info("/infra/tier-1s/t1", ("TIER1_CONNECTED",), "/infra/tier-0s/t0")\
        .advertises_static_routes  # fmt: skip

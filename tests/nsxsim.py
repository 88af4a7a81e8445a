"""A small NSX-T Policy API simulator: Tier-1 gateways, their static routes, auth, faults.

It serves the part of the NSX Policy API that litelb uses, with the semantics
NSX documents, so the NSX client, the daemon and the demo can be tested against
it through real sockets. Sources for the behaviour:

- vmware/vcf-api-specs `specifications/nsx/openapi-2.0/nsx_policy_api.yaml`:
  `StaticRoutes` (required `network` and `next_hops` with `minItems: 1`, length
  limits of `display_name`, `description`, `tags`), `RouterNexthop`
  (`additionalProperties: false`; `ip_address`, `admin_distance` 1-255 default 1,
  `scope` with `minItems: 1`), `_revision` and the read-only fields, PATCH
  answering 200 with no body, realized-state/realized-entities.
- vmware/vsphere-automation-sdk (Go and Python bindings): the error body
  (`httpStatus`, `error_code`, `module_name`, `error_message`, `related_errors`)
  and session authentication (`/api/session/create`, JSESSIONID, X-XSRF-TOKEN).
- vmware/terraform-provider-nsxt: PATCH with the whole object, reading back
  after a write, 412 on a stale `_revision`.
- openstack vmware-nsxlib (`v3/client.py`): how clients read the answers: 412
  (and 409) is a stale `_revision`, 403 with error_code 98 a bad XSRF token or
  session, 400 with 500045 a pending delete, 429 and 503 are retried; 403 "The
  credentials were incorrect or the account specified has been locked." for bad
  basic credentials.
- The error codes NSX managers answer with (287 "Json de-serialization error",
  255 field validation, 500012 "The path=[...] is invalid", 604 "The object was
  modified by somebody else", 600 not found), account lockout, principal
  identities (client certificates) whose objects others may only change with
  `X-Allow-Overwrite: true`, as litelb's FACTS.md records them.

Only the standard library is used, so the package install test can run it on a
bare Debian python3:

    python3 -m tests.nsxsim --listen 127.0.0.1:8443 --tier1 cluster-router \
        --username admin --password-file F [--tls-cert C --tls-key K [--client-ca CA]]

It prints `nsxsim listening on URL` once it accepts connections and serves until
SIGTERM or SIGINT, then exits 0.

Tests drive faults and inspect what reached "NSX" either through the Python
API of `NsxSimulator` or, for a simulator in another process, with a POST of a
JSON object to `/_sim/<method name>` (no NSX auth, never recorded), e.g.
`/_sim/fail` with `{"status": 503, "count": 2}` or `/_sim/route` with
`{"tier1": "t1", "route_id": "r"}`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import http
import ipaddress
import json
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union
from urllib.parse import parse_qsl, unquote, urlsplit

from .isolation import may_listen_on

_ROOT = r"/policy/api/v1(?:/orgs/default/projects/(?P<project>[^/]+))?/infra"
_TIER1_RE = re.compile(_ROOT + r"/tier-1s/(?P<tier1>[^/]+)$")
_ROUTES_RE = re.compile(_ROOT + r"/tier-1s/(?P<tier1>[^/]+)/static-routes$")
_ROUTE_RE = re.compile(_ROOT + r"/tier-1s/(?P<tier1>[^/]+)/static-routes/(?P<route>[^/]+)$")
_REALIZED_RE = re.compile(_ROOT + r"/realized-state/realized-entities$")
_CONTROL_PREFIX = "/_sim/"

_BAD_CREDENTIALS = "The credentials were incorrect or the account specified has been locked."
_NEXT_HOP_FIELDS = frozenset({"ip_address", "admin_distance", "scope"})
# What NSX's rate limiter and its reverse proxy say; other statuses get the HTTP phrase.
_FAULT_ERRORS = {
    429: (102, "Client exceeded the request rate of 100 per second."),
    503: (103, "Client exceeded the limit of 40 concurrent requests."),
    502: (502, "Bad gateway: the NSX API service is not answering."),
    504: (504, "Gateway timeout: the NSX API service did not answer in time."),
}
_WRITES = frozenset({"PUT", "PATCH", "DELETE"})
# `_last_modified_user` of what ui_put/ui_edit write: a person at the NSX console.
_UI_USER = "ui-operator"

_Key = tuple[str, str, str]  # (project, tier1, route id); project "" is /infra


@dataclass(frozen=True)
class RecordedRequest:
    """One NSX request as the simulator saw it.

    `status` 0: the connection was closed without an answer (drop, down). `body`: the
    parsed JSON, or None. `headers`: lower-case names, without Authorization and Cookie.
    """

    method: str
    path: str
    query: dict[str, str]
    status: int
    body: Any
    timestamp: float
    client: tuple[str, int]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    client: tuple[str, int]
    principal: Optional[str]  # the CN of a verified client certificate


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class _Fault:
    status: int
    remaining: int
    method: Optional[str]
    retry_after: Optional[str]
    body: Optional[bytes] = None  # sent as is instead of NSX's error object


class _Reject(Exception):
    """An NSX error answer, raised from deep inside request handling."""

    def __init__(self, response: _Response):
        super().__init__(response.body.decode())
        self.response = response


def _reject(status: int, code: int, message: str) -> _Reject:
    return _Reject(_error(status, code, message))


def _json(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = json.dumps(obj, indent=2).encode()
    return _Response(status, body, (("Content-Type", "application/json"), *headers))


def _error(status: int, code: int, message: str) -> _Response:
    return _json(
        status,
        {
            "httpStatus": http.HTTPStatus(status).name,
            "error_code": code,
            "module_name": "common-services",
            "error_message": message,
            "related_errors": [],
        },
    )


def _forbidden() -> _Response:
    # NSX's auth filter answers with this shorter body, not the usual error shape.
    return _json(
        403,
        {"module_name": "common-services", "error_code": 403, "error_message": _BAD_CREDENTIALS},
    )


def _root_path(project: str) -> str:
    return f"/orgs/default/projects/{project}/infra" if project else "/infra"


def _tier1_path(project: str, tier1: str) -> str:
    return f"{_root_path(project)}/tier-1s/{tier1}"


def _route_path(key: _Key) -> str:
    return f"{_tier1_path(key[0], key[1])}/static-routes/{key[2]}"


def _field_error(message: str) -> _Reject:
    return _reject(400, 255, f"Field level validation errors: {{{message}}}")


def _deserialization_error(message: str) -> _Reject:
    return _reject(400, 287, f"Json de-serialization error: {message}")


def _check_string(body: dict[str, Any], name: str, limit: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise _deserialization_error(f"{name} must be a string")
    if len(value) > limit:
        raise _field_error(f"{name}: size must be between 0 and {limit}")


def _next_hop(hop: Any) -> dict[str, Any]:
    if not isinstance(hop, dict):
        raise _deserialization_error("next_hops items must be RouterNexthop objects")
    unknown = sorted(set(hop) - _NEXT_HOP_FIELDS)
    if unknown:
        raise _deserialization_error(
            f'Unrecognized field "{unknown[0]}" (class RouterNexthop), not marked as ignorable'
        )
    address = hop.get("ip_address")
    try:
        ipaddress.ip_address(address)  # type: ignore[arg-type]
    except ValueError:
        raise _field_error(f"ip_address: invalid IP address {address!r}") from None
    distance = hop.get("admin_distance", 1)
    if isinstance(distance, bool) or not isinstance(distance, int) or not 1 <= distance <= 255:
        raise _field_error("admin_distance: must be between 1 and 255")
    out: dict[str, Any] = {"ip_address": address, "admin_distance": distance}
    if "scope" in hop:
        scope = hop["scope"]
        if not isinstance(scope, list) or not scope or not all(isinstance(s, str) for s in scope):
            raise _field_error("scope: size must be at least 1")
        out["scope"] = list(scope)
    return out


def _writable_fields(body: Any) -> dict[str, Any]:
    """Validate a StaticRoutes body as NSX does; return only the fields a client may set."""
    if not isinstance(body, dict):
        raise _deserialization_error("expected a StaticRoutes object")
    network = body.get("network")
    if not isinstance(network, str) or "/" not in network:
        raise _field_error(f"network: invalid CIDR {network!r}")
    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise _field_error(f"network: invalid CIDR {network!r}") from None
    hops = body.get("next_hops")
    if not isinstance(hops, list) or not hops:
        raise _field_error("next_hops: size must be at least 1")
    out: dict[str, Any] = {"network": network, "next_hops": [_next_hop(h) for h in hops]}
    _check_string(body, "display_name", 255)
    _check_string(body, "description", 1024)
    for name in ("display_name", "description"):
        if body.get(name) is not None:
            out[name] = body[name]
    tags = body.get("tags")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
            raise _deserialization_error("tags must be a list of Tag objects")
        if len(tags) > 30:
            raise _field_error("tags: size must be between 0 and 30")
        for tag in tags:
            _check_string(tag, "scope", 128)
            _check_string(tag, "tag", 256)
        out["tags"] = [{"scope": t.get("scope") or "", "tag": t.get("tag") or ""} for t in tags]
    return out


def _revision_of(body: Any) -> Optional[int]:
    revision = body.get("_revision") if isinstance(body, dict) else None
    if revision is not None and (isinstance(revision, bool) or not isinstance(revision, int)):
        raise _deserialization_error("_revision must be an integer")
    return revision


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sim: NsxSimulator):
        self.sim = sim
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        # Kept-alive connections would otherwise keep serving a stopped simulator's state.
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up, failed TLS handshakes and stop() are normal here.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; Nagle would hold the body for a delayed ACK.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return "nsxsim"

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # Done here, not on accept, so one stuck client cannot stall the accept loop.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_PATCH = do_POST = do_DELETE = do_GET

    def _serve(self) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        path = unquote(url.path).rstrip("/") or "/"
        query = dict(parse_qsl(url.query))
        if path.startswith(_CONTROL_PREFIX):
            self._write(sim._control(path[len(_CONTROL_PREFIX) :], self._read_body()))
            return
        request = _Request(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            client=(self.client_address[0], self.client_address[1]),
            principal=self._principal(),
        )
        if not sim._admit(request):
            self.close_connection = True
            return
        if sim._swallow(request):
            # A black hole: the connection stays open and nothing ever comes back.
            sim._stopped.wait()
            self.close_connection = True
            return
        if sim._delay():
            # The certificate is checked again when the request is answered, so a
            # test can revoke it while a request is on its way.
            request = replace(request, principal=self._principal())
        self._write(sim._respond(request, self._read_body()))

    def _principal(self) -> Optional[str]:
        peer = self.request.getpeercert() if isinstance(self.request, ssl.SSLSocket) else None
        if peer and int(str(peer.get("serialNumber", "0")), 16) in self.server.sim._revoked:
            # NSX no longer knows this principal identity's certificate.
            return None
        for rdn in (peer or {}).get("subject", ()):
            for name, value in rdn:
                if name == "commonName":
                    return str(value)
        return None

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _write(self, response: _Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)


class NsxSimulator:
    """An NSX manager on a loopback port. Thread-safe; every method may be called any time."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        username: str = "admin",
        password: str = "secret",
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        client_ca: Optional[str] = None,
        lockout_after: int = 5,
        lockout_seconds: float = 900.0,
    ):
        if not may_listen_on(host):
            raise ValueError(
                f"nsxsim serves only on loopback addresses outside a lab namespace, not {host}"
            )
        self._username = username
        self._password = password
        self._lockout_after = lockout_after
        self._lockout_seconds = lockout_seconds
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._tier1s: dict[tuple[str, str], dict[str, Any]] = {}
        self._routes: dict[_Key, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._latency = 0.0
        self._drops = 0
        self._down = False
        self._black_hole = False
        self._realization = "REALIZED"
        self._failed_logins = 0
        self._login_failures: list[float] = []  # monotonic times of refused passwords
        self._revoked: set[int] = set()  # serials of client certificates no longer accepted
        self._locked_until = 0.0
        self._sessions: dict[str, str] = {}  # JSESSIONID -> XSRF token
        self._delete_delay = 0.0
        self._pending_deletes: dict[_Key, float] = {}  # until (monotonic) re-creation fails
        self._server = _Server((host, port), self)
        self._tls = tls_cert is not None
        self._client_ca = client_ca
        if tls_cert is not None:
            try:
                self._server.socket = self._tls_context(tls_cert, tls_key, client_ca).wrap_socket(
                    self._server.socket, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ValueError):
                self._server.server_close()
                raise
        self._thread: Optional[threading.Thread] = None
        self._on_change: Optional[Callable[[], None]] = None

    def on_route_change(self, callback: Optional[Callable[[], None]]) -> None:
        """Call `callback` after any static route is stored or deleted (the data-plane lab
        realizes routes from it). It runs with the simulator locked: it must only signal,
        never call back into the simulator."""
        with self._lock:
            self._on_change = callback

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    @staticmethod
    def _tls_context(cert: str, key: Optional[str], client_ca: Optional[str]) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_ca is not None:
            # Optional, as on NSX: the same port serves password and certificate clients.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(client_ca)
        return context

    # ---- lifecycle -------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    def start(self) -> NsxSimulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"nsxsim-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> NsxSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- setup, faults and observation -----------------------------------------------

    def add_tier1(
        self,
        tier1_id: str,
        project: str = "",
        route_advertisement_types: tuple[str, ...] = ("TIER1_STATIC_ROUTES",),
        tier0_path: Optional[str] = "/infra/tier-0s/t0",
    ) -> None:
        """Create (or replace) a Tier-1 gateway; `tier0_path=None`: not connected to a Tier-0."""
        path = _tier1_path(project, tier1_id)
        now = _now_ms()
        with self._lock:
            self._tier1s[(project, tier1_id)] = {
                "id": tier1_id,
                "display_name": tier1_id,
                "path": path,
                "relative_path": tier1_id,
                "parent_path": _root_path(project),
                "resource_type": "Tier1",
                "route_advertisement_types": list(route_advertisement_types),
                "unique_id": str(uuid.uuid4()),
                "marked_for_delete": False,
                "overridden": False,
                "_create_time": now,
                "_create_user": self._username,
                "_last_modified_time": now,
                "_last_modified_user": self._username,
                "_system_owned": False,
                "_protection": "NOT_PROTECTED",
                "_revision": 0,
            }
            if tier0_path:
                self._tier1s[(project, tier1_id)]["tier0_path"] = tier0_path

    def latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = float(seconds)

    def fail(
        self,
        status: int,
        count: int = 1,
        method: Optional[str] = None,
        retry_after: Union[float, str, None] = None,
    ) -> None:
        """The next `count` NSX requests (of `method`, if given) answer `status`.

        A numeric `retry_after` is sent as given, fractions included, so tests stay fast.
        """
        http.HTTPStatus(status)  # ValueError now rather than in a request thread later
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        header = retry_after if not isinstance(retry_after, (int, float)) else f"{retry_after:g}"
        with self._lock:
            self._faults.append(_Fault(int(status), int(count), method and method.upper(), header))

    def clear_faults(self) -> None:
        """Forget the answers fail() and malformed() still had queued."""
        with self._lock:
            self._faults.clear()

    def drop(self, count: int = 1) -> None:
        """Close the connections of the next `count` NSX requests without answering."""
        with self._lock:
            self._drops += int(count)

    def down(self, is_down: bool = True) -> None:
        with self._lock:
            self._down = bool(is_down)

    def black_hole(self, on: bool = True) -> None:
        """Accept connections and requests but never answer (until the simulator stops),
        like a manager behind a firewall that drops replies or a hung NSX proxy."""
        with self._lock:
            self._black_hole = bool(on)

    def malformed(
        self, body: str, count: int = 1, method: Optional[str] = "GET", pad_to: int = 0
    ) -> None:
        """The next `count` NSX requests (of `method`) answer 200 with `body` as it is,
        padded with spaces to `pad_to` bytes: JSON of the wrong shape, not JSON at all,
        or a valid object buried in a 10 MB answer."""
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        raw = body.encode()
        raw += b" " * max(0, int(pad_to) - len(raw))
        with self._lock:
            self._faults.append(_Fault(200, int(count), method and method.upper(), None, raw))

    def delete_delay(self, seconds: float) -> None:
        """For `seconds` after an API DELETE, writing the same route answers 400 500045.

        NSX deletes asynchronously: the object is gone from reads at once but still
        "marked for delete" until the deletion is realized.
        """
        with self._lock:
            self._delete_delay = float(seconds)

    def set_realization(self, state: str) -> None:
        with self._lock:
            self._realization = state

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def use_certificate(self, cert: str, key: Optional[str] = None) -> None:
        """Serve a new certificate (a renewed manager certificate, perhaps from another
        CA) from the next connection on; open connections are closed."""
        if not self._tls:
            raise ValueError("this simulator serves plain HTTP")
        listening = self._server.socket
        assert isinstance(listening, ssl.SSLSocket)
        # accept() wraps each connection with the listening socket's context; the
        # public setter works only on connected sockets.
        listening._context = self._tls_context(cert, key, self._client_ca)
        self._server.close_connections()

    def set_password(self, password: str) -> None:
        """An operator changing the NSX user's password; sessions already open stay valid."""
        with self._lock:
            self._password = password

    def login_failures(self) -> list[float]:
        """When (time.monotonic()) a login or a request was refused for its password."""
        with self._lock:
            return list(self._login_failures)

    def revoke_certificate(self, serial: int) -> None:
        """Refuse the client certificate with this serial (a rotated principal identity):
        requests made with it are answered 403, even on connections already open."""
        with self._lock:
            self._revoked.add(serial)

    def ui_put(self, tier1: str, route_id: str, body: dict[str, Any], project: str = "") -> None:
        """An operator replacing (or creating) the route in the NSX UI. ValueError if invalid."""
        with self._lock:
            self._ui_store((project, tier1, route_id), body)

    def ui_edit(self, tier1: str, route_id: str, project: str = "", **fields: Any) -> None:
        """An operator changing some fields of an existing route. KeyError if it is absent."""
        with self._lock:
            current = copy.deepcopy(self._routes[(project, tier1, route_id)])
            current.update(fields)
            self._ui_store((project, tier1, route_id), current)

    def _ui_store(self, key: _Key, body: Any) -> None:
        try:
            self._require_tier1(key[0], key[1])
            self._store(key, _writable_fields(body), _UI_USER)
        except _Reject as e:
            raise ValueError(str(e)) from None

    def ui_delete(self, tier1: str, route_id: str, project: str = "") -> bool:
        with self._lock:
            deleted = self._routes.pop((project, tier1, route_id), None) is not None
            self._changed()
            return deleted

    def route(self, tier1: str, route_id: str, project: str = "") -> Optional[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._routes.get((project, tier1, route_id)))

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def writes(self) -> list[RecordedRequest]:
        """The PUT, PATCH and DELETE of static routes, whatever they were answered."""
        return [
            r
            for r in self.requests()
            if r.method in _WRITES and _ROUTE_RE.match(r.path) is not None
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---- request handling (called from the handler threads) --------------------------

    def _admit(self, request: _Request) -> bool:
        """False when the request's connection must be closed with no answer."""
        with self._lock:
            if self._down or self._drops > 0:
                if not self._down:
                    self._drops -= 1
                self._record(request, 0, None)
                return False
            return True

    def _swallow(self, request: _Request) -> bool:
        with self._lock:
            if self._black_hole:
                self._record(request, 0, None)
            return self._black_hole

    def _delay(self) -> bool:
        """Wait the configured latency; True when there was one."""
        with self._lock:
            latency = self._latency
        if latency > 0:
            self._stopped.wait(latency)
        return latency > 0

    def _respond(self, request: _Request, raw: bytes) -> _Response:
        body: Any = None
        if raw and request.path != "/api/session/create":
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        with self._lock:
            try:
                response = self._dispatch(request, raw, body)
            except _Reject as e:
                response = e.response
            self._record(request, response.status, body)
            return response

    def _record(self, request: _Request, status: int, body: Any) -> None:
        headers = request.headers
        shown = {k: v for k, v in headers.items() if k not in ("authorization", "cookie")}
        self._requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                status=status,
                body=body,
                timestamp=time.monotonic(),
                client=request.client,
                headers=shown,
            )
        )

    def _next_fault(self, method: str) -> Optional[_Response]:
        for fault in self._faults:
            if fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                if fault.body is not None:
                    return _Response(200, fault.body, (("Content-Type", "application/json"),))
                phrase = http.HTTPStatus(fault.status).phrase
                code, message = _FAULT_ERRORS.get(fault.status, (fault.status, phrase))
                response = _error(fault.status, code, message)
                if fault.retry_after is not None:
                    extra = (("Retry-After", fault.retry_after),)
                    response = _Response(response.status, response.body, response.headers + extra)
                return response
        return None

    def _dispatch(self, request: _Request, raw: bytes, body: Any) -> _Response:
        method, path = request.method, request.path
        fault = self._next_fault(method)
        if fault is not None:
            return fault
        if path == "/api/session/create" and method == "POST":
            return self._session_create(raw)
        user = request.principal or self._authenticate(request.headers)
        if path == "/api/session/destroy" and method == "POST":
            self._sessions.pop(self._session_id(request.headers) or "", None)
            return _Response(200)
        match = _ROUTE_RE.match(path)
        if match:
            project, tier1 = match["project"] or "", match["tier1"]
            self._require_tier1(project, tier1)
            key = (project, tier1, match["route"])
            return self._route_request(request, key, body, user)
        match = _ROUTES_RE.match(path)
        if match and method == "GET":
            project, tier1 = match["project"] or "", match["tier1"]
            self._require_tier1(project, tier1)
            results = [
                copy.deepcopy(v)
                for k, v in sorted(self._routes.items())
                if k[:2] == (project, tier1)
            ]
            return _json(200, {"results": results, "result_count": len(results)})
        match = _TIER1_RE.match(path)
        if match and method == "GET":
            tier1 = self._tier1s.get((match["project"] or "", match["tier1"]))
            if tier1 is None:
                raise _not_found(path)
            return _json(200, tier1)
        if _REALIZED_RE.match(path) and method == "GET":
            return _json(200, self._realized(request.query.get("intent_path", "")))
        raise _not_found(path)

    def _realized(self, intent_path: str) -> dict[str, Any]:
        objects = [*self._routes.values(), *self._tier1s.values()]
        found = [o for o in objects if o["path"] == intent_path]
        results = [
            {
                "resource_type": "GenericPolicyRealizedResource",
                "id": f"{o['id']}-realized",
                "intent_paths": [intent_path],
                # Not a field of NSX's answer; spares tests from unpacking intent_paths.
                "intent_path": intent_path,
                "state": self._realization,
                "entity_type": "RealizedLogicalRouterStaticRoute"
                if o["resource_type"] == "StaticRoutes"
                else "RealizedLogicalRouter",
                "runtime_status": "UNKNOWN",
                "_revision": o["_revision"],
            }
            for o in found
        ]
        return {"results": results, "result_count": len(results)}

    def _require_tier1(self, project: str, tier1: str) -> None:
        if (project, tier1) not in self._tier1s:
            raise _reject(400, 500012, f"The path=[{_tier1_path(project, tier1)}] is invalid.")

    def _route_request(self, request: _Request, key: _Key, body: Any, user: str) -> _Response:
        method = request.method
        current = self._routes.get(key)
        if method == "GET":
            if current is None:
                raise _not_found(_route_path(key))
            return _json(200, current)
        if current is not None:
            self._check_protection(request, current, user)
        if method == "DELETE":
            deleted = self._routes.pop(key, None) is not None
            self._changed()
            if deleted and self._delete_delay > 0:
                self._pending_deletes[key] = time.monotonic() + self._delete_delay
            return _Response(200)
        if method in ("PUT", "PATCH") and time.monotonic() < self._pending_deletes.get(key, 0.0):
            raise _reject(
                400,
                500045,
                f"The object path=[{_route_path(key)}] is marked for deletion; "
                "retry once the delete is done.",
            )
        if method == "PATCH":
            self._store(key, _writable_fields(body), user, request.principal is not None)
            return _Response(200)
        if method == "PUT":
            fields = _writable_fields(body)
            revision = _revision_of(body)
            if current is None and revision is not None:
                raise _reject(
                    412,
                    604,
                    f"The object {_route_path(key)} does not exist; "
                    "a new object must not carry a _revision.",
                )
            if current is not None and revision != current["_revision"]:
                raise _reject(
                    412,
                    604,
                    "The object was modified by somebody else. Please retry. "
                    f"(sent _revision={revision}, current _revision={current['_revision']})",
                )
            return _json(200, self._store(key, fields, user, request.principal is not None))
        raise _reject(405, 501, f"Method {method} is not supported on {_route_path(key)}")

    @staticmethod
    def _check_protection(request: _Request, current: dict[str, Any], user: str) -> None:
        """Objects a principal identity created are its own unless the writer insists."""
        if current["_protection"] != "REQUIRE_OVERRIDE" or current["_create_user"] == user:
            return
        if request.headers.get("x-allow-overwrite", "").lower() != "true":
            raise _reject(
                400,
                98,
                f"Principal '{user}' attempts to delete or modify an object of type "
                f"StaticRoutes it doesn't own. (createUser={current['_create_user']}, "
                "allowOverwrite=null)",
            )

    def _store(
        self, key: _Key, fields: dict[str, Any], user: str, principal: bool = False
    ) -> dict[str, Any]:
        """Create or replace a route from validated fields; returns a copy of what is stored.

        `principal`: the writer authenticated by client certificate, so a new object is
        protected as NSX protects what a principal identity creates.
        """
        current = self._routes.get(key)
        protection = "REQUIRE_OVERRIDE" if principal else "NOT_PROTECTED"
        now = _now_ms()
        project, tier1, route_id = key
        stored: dict[str, Any] = {
            **fields,
            "display_name": fields.get("display_name", route_id),
            "resource_type": "StaticRoutes",
            "id": route_id,
            "path": _route_path(key),
            "relative_path": route_id,
            "parent_path": _tier1_path(project, tier1),
            "unique_id": current["unique_id"] if current else str(uuid.uuid4()),
            "marked_for_delete": False,
            "overridden": False,
            "_create_time": current["_create_time"] if current else now,
            "_create_user": current["_create_user"] if current else user,
            "_last_modified_time": now,
            "_last_modified_user": user,
            "_system_owned": False,
            "_protection": current["_protection"] if current else protection,
            "_revision": current["_revision"] + 1 if current else 0,
        }
        self._routes[key] = stored
        self._changed()
        self._pending_deletes.pop(key, None)
        return copy.deepcopy(stored)

    # ---- authentication --------------------------------------------------------------

    def _check_password(self, username: str, password: str) -> bool:
        """Counts failures against the simulated account and locks it, as NSX does."""
        now = time.monotonic()
        if username != self._username:
            return False
        if now < self._locked_until:
            return False
        if password == self._password:
            self._failed_logins = 0
            return True
        self._failed_logins += 1
        self._login_failures.append(now)
        if self._failed_logins >= self._lockout_after:
            self._failed_logins = 0
            self._locked_until = now + self._lockout_seconds
        return False

    @staticmethod
    def _session_id(headers: dict[str, str]) -> Optional[str]:
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get("JSESSIONID")
        return morsel.value if morsel is not None else None

    def _authenticate(self, headers: dict[str, str]) -> str:
        """The user making the request; raises the 403 NSX answers otherwise."""
        session = self._session_id(headers)
        if session is not None:
            token = self._sessions.get(session)
            if token is None:
                raise _reject(403, 98, "The session has expired or is invalid. Log in again.")
            if headers.get("x-xsrf-token") != token:
                raise _reject(403, 98, "Missing or incorrect X-XSRF-TOKEN header.")
            return self._username
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(encoded, validate=True).decode()
            except ValueError:
                decoded = ""
            username, _, password = decoded.partition(":")
            if self._check_password(username, password):
                return username
        raise _Reject(_forbidden())

    def _session_create(self, raw: bytes) -> _Response:
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        if not self._check_password(form.get("j_username", ""), form.get("j_password", "")):
            return _forbidden()
        session, token = secrets.token_hex(16).upper(), secrets.token_urlsafe(24)
        self._sessions[session] = token
        cookie = f"JSESSIONID={session}; Path=/; HttpOnly" + ("; Secure" if self._tls else "")
        return _Response(200, b"", (("Set-Cookie", cookie), ("x-xsrf-token", token)))

    # ---- the /_sim/ control path -----------------------------------------------------

    def _control(self, name: str, raw: bytes) -> _Response:
        try:
            args = json.loads(raw) if raw else {}
            result = self._control_call(name, args)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            return _json(400, {"error": f"{type(e).__name__}: {e}"})
        return _json(200, {"result": result})

    def _control_call(self, name: str, args: dict[str, Any]) -> Any:
        if name in ("requests", "writes"):
            return [asdict(r) for r in getattr(self, name)()]
        if name == "ui_edit":
            args = dict(args)
            fields = args.pop("fields", {})
            return self.ui_edit(**args, **fields)
        calls = {
            "latency": self.latency,
            "fail": self.fail,
            "drop": self.drop,
            "down": self.down,
            "black_hole": self.black_hole,
            "malformed": self.malformed,
            "clear_faults": self.clear_faults,
            "set_realization": self.set_realization,
            "delete_delay": self.delete_delay,
            "expire_sessions": self.expire_sessions,
            "set_password": self.set_password,
            "login_failures": self.login_failures,
            "revoke_certificate": self.revoke_certificate,
            "add_tier1": self.add_tier1,
            "ui_put": self.ui_put,
            "ui_delete": self.ui_delete,
            "route": self.route,
            "clear_requests": self.clear_requests,
        }
        if name not in calls:
            raise KeyError(f"no control call {name!r}")
        return calls[name](**args)


def _not_found(path: str) -> _Reject:
    return _reject(
        404,
        600,
        f"The requested object : {path} could not be found. Object identifiers are case sensitive.",
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.nsxsim", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8443", help="HOST:PORT, loopback only")
    parser.add_argument(
        "--tier1",
        action="append",
        default=[],
        metavar="[PROJECT/]ID",
        help="a Tier-1 gateway to create (repeatable)",
    )
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password-file", help="the password, first line (default: secret)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca", help="accept client certificates signed by this CA")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    password = "secret"
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.readline().rstrip("\r\n")
    try:
        sim = NsxSimulator(
            host.strip("[]"),
            int(port),
            username=args.username,
            password=password,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            client_ca=args.client_ca,
        )
    except (ValueError, OSError) as e:
        parser.error(str(e))
    for spec in args.tier1:
        project, _, tier1 = spec.rpartition("/")
        sim.add_tier1(tier1, project=project)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with sim:
        print(f"nsxsim listening on {sim.url}", flush=True)
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

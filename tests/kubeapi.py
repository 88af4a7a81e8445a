"""A fake kube-apiserver, just large enough for litelb and the official Python client.

Standard library plus :mod:`tests.pki` (``cryptography``) only, so it also runs on a
bare Debian 12 ``python3``.  What it serves follows the Kubernetes API reference:

* API concepts, https://kubernetes.io/docs/reference/using-api/api-concepts/ :
  "Efficient detection of changes" (list, then watch from the list's
  ``metadata.resourceVersion``; events are JSON objects ``{"type", "object"}`` sent
  one per line over a chunked HTTP/1.1 response), "Watch bookmarks" (a ``BOOKMARK``
  event whose object holds only kind, apiVersion and ``metadata.resourceVersion``,
  sent only when ``allowWatchBookmarks=true``), "410 Gone responses" (a watch from a
  resourceVersion older than the retained history gets HTTP 200 and then one
  ``ERROR`` event carrying a ``Status`` with ``code`` 410, ``reason`` "Expired",
  as the watch cache does) and "Resource versions" (``resourceVersion`` unset or
  "0" on a watch: synthetic ``ADDED`` events for the current state first; any other
  value: exactly the events newer than it).  ``timeoutSeconds`` ends a watch cleanly.
* discovery.k8s.io/v1 EndpointSlice,
  https://kubernetes.io/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/
  (``addressType``, ``endpoints[].addresses``, ``endpoints[].conditions.ready``/
  ``serving``/``terminating``, ``ports``, label ``kubernetes.io/service-name``), and
  the core v1 Endpoints derived from the same data.
* authorization.k8s.io/v1 SelfSubjectAccessReview,
  https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/self-subject-access-review-v1/
  (answered 201 with ``status.allowed``), and RBAC's 403 ``Status`` wording;
  authentication.k8s.io/v1 SelfSubjectReview (``kubectl auth whoami``).
* X.509 client authentication,
  https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates
  (user = subject CN, groups = subject O).  Without a client certificate only the
  public paths (``/readyz``, ``/livez``, ``/healthz``, ``/version``, as the
  ``system:public-info-viewer`` role allows) answer; everything else is 401.

All listeners share one store (the "etcd") and one port; each stands for one
control-plane node's API server and can be made to hang (half-open: TCP accepted,
nothing answered), refuse connections, or fail ``/readyz``.

Run ``python3 -m tests.kubeapi --help`` for the stand-alone mode used by the demo.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import ipaddress
import json
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, NamedTuple, Union

from .isolation import may_listen_on
from .pki import Pki

Endpoint = Union[str, tuple[str, bool], tuple[str, bool, bool]]
Rule = tuple[str, str, str, str]

_SERVICE_LABEL = "kubernetes.io/service-name"
_DISCOVERY = "discovery.k8s.io"
_HANDSHAKE_TIMEOUT = 10.0
# Idle keep-alive connections are closed after this long, so threads cannot pile up.
_IDLE_TIMEOUT = 120.0
_JOIN_TIMEOUT = 5.0
_FIRST_RESOURCE_VERSION = 1000

_SERVING, _HUNG, _REFUSED = "serving", "hung", "refused"


class Request(NamedTuple):
    """One answered request, for tests to assert on."""

    address: str
    method: str
    path: str
    query: dict[str, str]
    user: str | None


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _parse_bool(value: str) -> bool:
    # Go's strconv.ParseBool, which the API server uses; the Python client sends "True".
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise ValueError(value)


def _parse_selector(text: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=", 1).split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda labels, k=absent: k not in labels)
        elif term.replace("/", "").replace(".", "").replace("-", "").replace("_", "").isalnum():
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return lambda labels: all(t(labels) for t in tests)


def _normalize(endpoint: Endpoint) -> tuple[str, bool, bool | None]:
    if isinstance(endpoint, str):
        return endpoint, True, None
    if len(endpoint) == 2:
        return endpoint[0], bool(endpoint[1]), None
    return endpoint[0], bool(endpoint[1]), bool(endpoint[2])  # type: ignore[misc]


def _timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Store:
    """The shared state: objects by (namespace, name) plus the event history of a watch cache.

    Not locked itself: the server's condition guards it.
    """

    def __init__(self, history: int) -> None:
        self.rv = _FIRST_RESOURCE_VERSION
        self.objects: dict[tuple[str, str], dict] = {}
        self.history: deque[tuple[int, str, dict]] = deque()
        self.limit = max(1, history)
        # Watches from a resourceVersion >= oldest can be served from history.
        self.oldest = self.rv

    def _record(self, event_type: str, obj: dict) -> None:
        self.history.append((self.rv, event_type, obj))
        while len(self.history) > self.limit:
            self.oldest = self.history.popleft()[0]

    def put(self, obj: dict) -> bool:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self.objects.get(key)
        if old is not None:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            meta["generation"] = old["metadata"]["generation"]
            if _without_rv(old) == _without_rv(obj):
                return False  # like etcd: a no-op update is no write and no event
            meta["generation"] += 1
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[key] = obj
        self._record("ADDED" if old is None else "MODIFIED", obj)
        return True

    def delete(self, namespace: str, name: str) -> bool:
        old = self.objects.pop((namespace, name), None)
        if old is None:
            return False
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", gone)
        return True

    def compact(self) -> None:
        self.history.clear()
        self.oldest = self.rv

    def select(self, namespace: str | None, selector: Callable[[dict], bool]) -> list[dict]:
        return [
            obj
            for (ns, _), obj in sorted(self.objects.items())
            if (namespace is None or ns == namespace)
            and selector(obj["metadata"].get("labels", {}))
        ]

    def events_after(
        self, rv: int, namespace: str | None, selector: Callable[[dict], bool]
    ) -> list[tuple[str, dict]] | None:
        """Matching events newer than ``rv``; None when history no longer reaches back."""
        if rv < self.oldest:
            return None
        return [
            (event_type, obj)
            for event_rv, event_type, obj in self.history
            if event_rv > rv
            and (namespace is None or obj["metadata"]["namespace"] == namespace)
            and selector(obj["metadata"].get("labels", {}))
        ]


def _without_rv(obj: dict) -> dict:
    clone = copy.deepcopy(obj)
    clone["metadata"].pop("resourceVersion", None)
    return clone


class _Conn:
    """One accepted TCP connection; ``owned`` when a thread serves it."""

    def __init__(self, sock: socket.socket, generation: int) -> None:
        self.sock = sock
        self.generation = generation
        self.owned = False
        self.watching = False
        self.dropped = False
        self.thread: threading.Thread | None = None

    def cut(self) -> None:
        # OS-level shutdown (not SSLSocket.shutdown) so a thread blocked in recv or send
        # on this socket wakes up at once; that thread closes the socket itself.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


class _Listener:
    def __init__(self, address: str) -> None:
        self.address = address
        self.family = (
            socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else (socket.AF_INET)
        )
        self.sock: socket.socket | None = None
        self.wake: tuple[socket.socket, socket.socket] | None = None
        self.thread: threading.Thread | None = None
        self.mode = _SERVING
        # Bumped whenever connections are cut (the end of a hang, refuse, stop).
        self.generation = 0
        self.ready = True
        self.unready_for: set[str] = set()
        self.health_delay = 0.0
        self.conns: set[_Conn] = set()


class _Accepting(NamedTuple):
    sock: socket.socket
    wake: tuple[socket.socket, socket.socket]
    thread: threading.Thread


def _close_listener(accepting: _Accepting | None) -> None:
    """Close a detached listening socket; call without the server's lock."""
    if accepting is None:
        return
    # Stop the accept thread first so it never selects on a closed descriptor.
    accepting.wake[0].send(b"x")
    accepting.thread.join(_JOIN_TIMEOUT)
    accepting.sock.close()
    for s in accepting.wake:
        s.close()


def _bind(address: str, family: int, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class FakeKubeApiServer:
    """Fake API servers on ``addresses`` (all on one port) sharing one store.

    Controls are thread-safe and take effect at once for new requests and open
    watches.  Use as a context manager or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        pki: Pki,
        *,
        addresses: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        bookmark_interval: float = 1.0,
        history: int = 1000,
        node_name: str = "",
    ) -> None:
        if not addresses:
            raise ValueError("at least one address")
        for address in addresses:
            if not may_listen_on(address):
                raise ValueError(
                    f"{address}: outside a network namespace of its own, "
                    "the fake API server only listens on loopback"
                )
        self._pki = pki
        self._want_port = port
        self._port: int | None = None
        self._bookmark_interval = bookmark_interval
        # Sent as X-Api-Server-Node in every answer, so a client behind a VIP sees who answered.
        self.node_name = node_name
        self._cond = threading.Condition(threading.RLock())
        self._store = _Store(history)
        self._listeners = {a: _Listener(a) for a in addresses}
        self._rules: frozenset[Rule] | None = None
        self._revoked: set[int] = set()
        self._log: list[Request] = []
        self._stopped = False
        self._started = False
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        self._ctx.load_verify_locations(cafile=str(pki.ca_cert))
        # Optional, as kube-apiserver: anonymous clients may still read the health paths.
        self._ctx.verify_mode = ssl.CERT_OPTIONAL

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> FakeKubeApiServer:
        with self._cond:
            if self._started:
                return self
            listeners = list(self._listeners.values())
            attempts = 1 if self._want_port else 20
            for attempt in range(attempts):
                bound: list[socket.socket] = []
                try:
                    first = _bind(listeners[0].address, listeners[0].family, self._want_port)
                    bound.append(first)
                    port = first.getsockname()[1]
                    for lst in listeners[1:]:
                        bound.append(_bind(lst.address, lst.family, port))
                except OSError:
                    for sock in bound:
                        sock.close()
                    # The free port of the first address may be taken on another one.
                    if attempt == attempts - 1:
                        raise
                    continue
                break
            self._port = port
            for lst, sock in zip(listeners, bound):
                self._run_listener(lst, sock)
            self._started = True
        return self

    def stop(self) -> None:
        with self._cond:
            if self._stopped or not self._started:
                self._stopped = True
                return
            self._stopped = True
            closing = [self._detach_listener(lst) for lst in self._listeners.values()]
            threads = [t for lst in self._listeners.values() for t in self._cut_connections(lst)]
            self._cond.notify_all()
        for detached in closing:
            _close_listener(detached)
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeKubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("not started")
        return self._port

    @property
    def addresses(self) -> list[str]:
        return list(self._listeners)

    def url(self, address: str | None = None) -> str:
        address = address or next(iter(self._listeners))
        host = f"[{address}]" if ":" in address else address
        return f"https://{host}:{self.port}"

    # -- controls: data -----------------------------------------------------------

    def set_endpoints(
        self,
        endpoints: Iterable[Endpoint],
        *,
        slice_name: str = "kubernetes",
        namespace: str = "default",
        service: str = "kubernetes",
        port: int | None = None,
        resource_version: int | None = None,
    ) -> None:
        """Create, replace or (empty list) delete one EndpointSlice.

        An endpoint is an address, ``(address, ready)`` or ``(address, ready,
        terminating)``; the 3-tuple also sets ``serving`` to ``ready``.
        ``resource_version``: the shared store's revision of this change, so several
        API server processes mirroring one state (as sharing etcd) agree on it.
        """
        items = [_normalize(e) for e in endpoints]
        if not items:
            self.delete_slice(slice_name, namespace=namespace)
            return
        versions = {ipaddress.ip_address(a).version for a, _, _ in items}
        if len(versions) != 1:
            raise ValueError("one EndpointSlice holds one address family")
        eps = []
        for address, ready, terminating in items:
            conditions: dict[str, bool] = {"ready": ready}
            if terminating is not None:
                conditions.update(serving=ready, terminating=terminating)
            eps.append({"addresses": [address], "conditions": conditions})
        obj = {
            "kind": "EndpointSlice",
            "apiVersion": f"{_DISCOVERY}/v1",
            "metadata": {
                "name": slice_name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "generation": 1,
                "creationTimestamp": _timestamp(),
                "labels": {_SERVICE_LABEL: service},
            },
            "addressType": "IPv4" if versions == {4} else "IPv6",
            "endpoints": eps,
            "ports": [{"name": "https", "port": port or self.port, "protocol": "TCP"}],
        }
        with self._cond:
            if resource_version is not None and resource_version > self._store.rv:
                self._store.rv = resource_version - 1
            if self._store.put(obj):
                self._cond.notify_all()

    def put_slice(self, obj: dict) -> None:
        """Store any EndpointSlice body as it is, however malformed below its metadata
        (which needs ``namespace``, ``name`` and ``labels`` to be found): what a
        buggy controller or a hostile writer with RBAC on EndpointSlices could do."""
        obj = copy.deepcopy(obj)
        obj.setdefault("kind", "EndpointSlice")
        obj.setdefault("apiVersion", f"{_DISCOVERY}/v1")
        meta = obj["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _timestamp())
        meta.setdefault("generation", 1)
        with self._cond:
            if self._store.put(obj):
                self._cond.notify_all()

    def delete_slice(self, name: str, *, namespace: str = "default") -> None:
        with self._cond:
            if self._store.delete(namespace, name):
                self._cond.notify_all()

    def compact(self) -> None:
        """Forget the history: watches from any older resourceVersion get 410."""
        with self._cond:
            self._store.compact()

    @property
    def resource_version(self) -> str:
        with self._cond:
            return str(self._store.rv)

    # -- controls: behaviour ------------------------------------------------------

    def drop_watches(self) -> None:
        """Cut every open watch mid-stream (no terminating chunk)."""
        with self._cond:
            for lst in self._listeners.values():
                for conn in lst.conns:
                    if conn.watching:
                        conn.dropped = True
                        conn.cut()
            self._cond.notify_all()

    def hang(self, address: str) -> None:
        """Accept TCP but answer nothing, and freeze open streams: a powered-off VM."""
        with self._cond:
            lst = self._listeners[address]
            if lst.mode == _REFUSED:
                self._run_listener(lst, _bind(lst.address, lst.family, self.port))
            lst.mode = _HUNG
            self._cond.notify_all()

    def refuse(self, address: str) -> None:
        """Stop listening and reset open connections: the API server process is gone."""
        with self._cond:
            lst = self._listeners[address]
            if lst.mode == _REFUSED:
                return
            lst.mode = _REFUSED
            detached = self._detach_listener(lst)
            self._cut_connections(lst)
            self._cond.notify_all()
        _close_listener(detached)

    def serve(self, address: str) -> None:
        """Back to normal; connections from a hang are dead, as after a reboot."""
        with self._cond:
            lst = self._listeners[address]
            if lst.mode == _REFUSED:
                self._run_listener(lst, _bind(lst.address, lst.family, self.port))
            elif lst.mode == _HUNG:
                self._cut_connections(lst)
            lst.mode = _SERVING
            self._cond.notify_all()

    def set_ready(self, address: str, ok: bool, *, user: str | None = None) -> None:
        """Health paths of `address` answer 200 or 500; with `user`, only for that client
        certificate's user (a node whose probes cannot reach one API server)."""
        with self._cond:
            listener = self._listeners[address]
            if user is None:
                listener.ready = ok
            elif ok:
                listener.unready_for.discard(user)
            else:
                listener.unready_for.add(user)

    def revoke(self, serial: int) -> None:
        """Reject the client certificate with this serial number from now on: every
        request presenting it, on any path, gets 401 (as an expired one does once
        anonymous access is disabled). Open watches are not cut, as in kube-apiserver,
        which checks a certificate when a request starts."""
        with self._cond:
            self._revoked.add(serial)

    def _is_revoked(self, serial: int | None) -> bool:
        with self._cond:
            return serial in self._revoked

    def slow(self, address: str, seconds: float) -> None:
        """Health paths of `address` answer only after `seconds`: a loaded API server
        that is slow but alive."""
        with self._cond:
            self._listeners[address].health_delay = seconds

    def set_rules(self, rules: Iterable[Rule] | None) -> None:
        """Allowed ``(verb, group, resource, namespace)``; "*" matches any; None allows all."""
        with self._cond:
            self._rules = None if rules is None else frozenset(rules)

    def requests(self) -> list[Request]:
        with self._cond:
            return list(self._log)

    # -- listeners and connections (call with self._cond held) --------------------

    def _run_listener(self, lst: _Listener, sock: socket.socket) -> None:
        lst.sock = sock
        lst.wake = socket.socketpair()
        lst.thread = threading.Thread(
            target=self._accept_loop,
            args=(lst, sock, lst.wake[1]),
            name=f"kubeapi-accept-{lst.address}",
            daemon=True,
        )
        lst.thread.start()

    @staticmethod
    def _detach_listener(lst: _Listener) -> _Accepting | None:
        if lst.sock is None or lst.wake is None or lst.thread is None:
            return None
        detached = _Accepting(lst.sock, lst.wake, lst.thread)
        lst.sock, lst.wake, lst.thread = None, None, None
        return detached

    def _cut_connections(self, lst: _Listener) -> list[threading.Thread]:
        # Requests held by a hang see the new generation and die without an answer.
        lst.generation += 1
        threads = []
        for conn in list(lst.conns):
            if conn.owned:
                conn.cut()
                if conn.thread is not None:
                    threads.append(conn.thread)
            else:
                conn.sock.close()
                lst.conns.discard(conn)
        return threads

    def _accept_loop(self, lst: _Listener, sock: socket.socket, wake: socket.socket) -> None:
        while True:
            readable, _, _ = select.select([sock, wake], [], [])
            if wake in readable:
                return
            try:
                raw, _ = sock.accept()
            except OSError:
                continue
            with self._cond:
                if self._stopped or lst.sock is not sock:
                    raw.close()
                    return
                conn = _Conn(raw, lst.generation)
                lst.conns.add(conn)
                if lst.mode == _HUNG:
                    continue  # parked: no TLS handshake, no answer, until serve()
                conn.owned = True
                conn.thread = threading.Thread(
                    target=self._serve_conn,
                    args=(lst, conn),
                    name=f"kubeapi-conn-{lst.address}",
                    daemon=True,
                )
                conn.thread.start()

    def _serve_conn(self, lst: _Listener, conn: _Conn) -> None:
        raw = conn.sock
        try:
            raw.settimeout(_HANDSHAKE_TIMEOUT)
            tls = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            with self._cond:
                lst.conns.discard(conn)
            return
        with self._cond:
            conn.sock = tls
        try:
            tls.settimeout(_IDLE_TIMEOUT)
            _Handler(tls, lst, conn, self)
        except (OSError, ssl.SSLError):
            pass  # the client went away or we cut the connection
        finally:
            tls.close()
            with self._cond:
                lst.conns.discard(conn)

    # -- used by the handler ------------------------------------------------------

    def _hung(self, lst: _Listener, conn: _Conn) -> bool:
        """Block while ``lst`` hangs; True when ``conn`` must then die without a word."""
        with self._cond:
            while lst.mode == _HUNG and not self._stopped:
                self._cond.wait(1.0)
            return self._stopped or conn.generation != lst.generation or conn.dropped

    def _record(self, request: Request) -> None:
        with self._cond:
            self._log.append(request)

    def _allows_everything(self) -> bool:
        with self._cond:
            return self._rules is None

    def _allowed(self, verb: str, group: str, resource: str, namespace: str) -> bool:
        with self._cond:
            rules = self._rules
        if rules is None:
            return True
        wanted = (verb, group, resource, namespace)
        return any(all(r in ("*", w) for r, w in zip(rule, wanted)) for rule in rules)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate sends; Nagle would delay the body ~40 ms.
    disable_nagle_algorithm = True
    server_version = "fake-kube-apiserver"
    sys_version = ""

    def __init__(
        self, sock: ssl.SSLSocket, lst: _Listener, conn: _Conn, api: FakeKubeApiServer
    ) -> None:
        self.lst = lst
        self.conn = conn
        self.api = api
        self.user: str | None = None
        self.groups: list[str] = []
        cert = sock.getpeercert()
        self.serial = int(cert["serialNumber"], 16) if cert and "serialNumber" in cert else None
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    self.user = value
                elif key == "organizationName":
                    self.groups.append(value)
        super().__init__(sock, sock.getpeername(), None)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -----------------------------------------------------------------

    def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        if self.api.node_name:
            self.send_header("X-Api-Server-Node", self.api.node_name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any) -> None:
        self._send(code, _dumps(obj))

    def _send_status(self, code: int, reason: str, message: str, **details: Any) -> None:
        self._send_json(code, _status(code, reason, message, details or None))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _dispatch(self, method: str) -> None:
        if self.api._hung(self.lst, self.conn):
            self.close_connection = True
            self.conn.cut()
            return
        split = urllib.parse.urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items()}
        self.api._record(Request(self.lst.address, method, path, query, self.user))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = path.strip("/").split("/")

        if self.api._is_revoked(self.serial):
            self._send_status(401, "Unauthorized", "Unauthorized")
            return
        if path in ("/readyz", "/livez", "/healthz"):
            time.sleep(self.lst.health_delay)
            if method != "GET":
                self._method_not_allowed()
            elif self.lst.ready and self.user not in self.lst.unready_for:
                self._send(200, b"ok", "text/plain; charset=utf-8")
            else:
                check = path[1:]
                text = f"[+]ping ok\n[-]etcd failed: reason withheld\n{check} check failed\n"
                self._send(500, text.encode(), "text/plain; charset=utf-8")
            return
        if path == "/version" and method == "GET":
            self._send_json(
                200,
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-fake",
                    "gitCommit": "0" * 40,
                    "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z",
                    "goVersion": "go1.22.0",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                },
            )
            return
        if self.user is None:
            self._send_status(401, "Unauthorized", "Unauthorized")
            return

        try:
            if parts[:3] == ["apis", _DISCOVERY, "v1"]:
                self._discovery(method, parts[3:], query)
            elif parts[:2] == ["api", "v1"] and len(parts) == 6 and parts[4] == "endpoints":
                self._endpoints(method, parts[3], parts[5])
            elif parts == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]:
                self._ssar(method, body)
            elif parts == ["apis", "authentication.k8s.io", "v1", "selfsubjectreviews"]:
                self._whoami(method)
            else:
                self._not_found()
        except ValueError as e:
            self._send_status(400, "BadRequest", str(e))

    def _not_found(self) -> None:
        self._send_status(404, "NotFound", "the server could not find the requested resource")

    def _method_not_allowed(self) -> None:
        self._send_status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    def _forbidden(self, verb: str, group: str, resource: str, namespace: str, name: str) -> None:
        qualified = f"{resource}.{group}" if group else resource
        subject = f'{qualified} "{name}"' if name else qualified
        scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
        self._send_status(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}" {scope}',
            **({"name": name} if name else {}),
            group=group,
            kind=resource,
        )

    # -- resources ----------------------------------------------------------------

    def _discovery(self, method: str, rest: list[str], query: dict[str, str]) -> None:
        if rest == ["endpointslices"]:
            namespace, name = None, ""
        elif len(rest) == 3 and rest[0] == "namespaces" and rest[2] == "endpointslices":
            namespace, name = rest[1], ""
        elif len(rest) == 4 and rest[0] == "namespaces" and rest[2] == "endpointslices":
            namespace, name = rest[1], rest[3]
        else:
            self._not_found()
            return
        if method != "GET":
            self._method_not_allowed()
            return
        watch = _parse_bool(query.get("watch", "false"))
        verb = "watch" if watch else ("get" if name else "list")
        if not self.api._allowed(verb, _DISCOVERY, "endpointslices", namespace or ""):
            self._forbidden(verb, _DISCOVERY, "endpointslices", namespace or "", name)
            return
        selector = _parse_selector(query.get("labelSelector", ""))
        if watch:
            self._watch(namespace, selector, name, query)
            return
        with self.api._cond:
            items = self.api._store.select(namespace, selector)
            rv = str(self.api._store.rv)
        if name:
            found = [o for o in items if o["metadata"]["name"] == name]
            if not found:
                self._send_status(
                    404,
                    "NotFound",
                    f'endpointslices.{_DISCOVERY} "{name}" not found',
                    name=name,
                    group=_DISCOVERY,
                    kind="endpointslices",
                )
                return
            self._send_json(200, found[0])
            return
        listed = []
        for obj in items:
            item = dict(obj)
            # A list's items carry no kind/apiVersion of their own, as the real server's.
            item.pop("kind", None)
            item.pop("apiVersion", None)
            listed.append(item)
        self._send_json(
            200,
            {
                "kind": "EndpointSliceList",
                "apiVersion": f"{_DISCOVERY}/v1",
                "metadata": {"resourceVersion": rv},
                "items": listed,
            },
        )

    def _endpoints(self, method: str, namespace: str, name: str) -> None:
        if method != "GET":
            self._method_not_allowed()
            return
        if not self.api._allowed("get", "", "endpoints", namespace):
            self._forbidden("get", "", "endpoints", namespace, name)
            return
        with self.api._cond:
            slices = self.api._store.select(namespace, lambda lb: lb.get(_SERVICE_LABEL) == name)
        if not slices:
            self._send_status(
                404, "NotFound", f'endpoints "{name}" not found', name=name, kind="endpoints"
            )
            return
        subsets = []
        for es in slices:
            ready = [e["addresses"][0] for e in es["endpoints"] if e["conditions"]["ready"]]
            not_ready = [e["addresses"][0] for e in es["endpoints"] if not e["conditions"]["ready"]]
            subset: dict[str, Any] = {"ports": es["ports"]}
            if ready:
                subset["addresses"] = [{"ip": a} for a in ready]
            if not_ready:
                subset["notReadyAddresses"] = [{"ip": a} for a in not_ready]
            subsets.append(subset)
        self._send_json(
            200,
            {
                "kind": "Endpoints",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": str(
                        max(int(s["metadata"]["resourceVersion"]) for s in slices)
                    ),
                    "creationTimestamp": slices[0]["metadata"]["creationTimestamp"],
                },
                "subsets": subsets,
            },
        )

    def _whoami(self, method: str) -> None:
        if method != "POST":
            self._method_not_allowed()
            return
        groups = [*self.groups, "system:authenticated"]
        self._send_json(
            201,
            {
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "status": {"userInfo": {"username": self.user, "groups": groups}},
            },
        )

    def _ssar(self, method: str, body: bytes) -> None:
        if method != "POST":
            self._method_not_allowed()
            return
        try:
            review = json.loads(body or b"{}")
        except json.JSONDecodeError as e:
            raise ValueError(f"invalid JSON: {e}") from None
        spec = review.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        if attrs is not None:
            allowed = self.api._allowed(
                attrs.get("verb", ""),
                attrs.get("group", ""),
                attrs.get("resource", ""),
                attrs.get("namespace", ""),
            )
        else:
            # Non-resource URLs are outside the rule set: only allow-all grants them.
            allowed = self.api._allows_everything()
        status: dict[str, Any] = {"allowed": allowed}
        if allowed:
            status["reason"] = "allowed by the fake API server's rules"
        self._send_json(
            201,
            {
                "kind": "SelfSubjectAccessReview",
                "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "spec": spec,
                "status": status,
            },
        )

    def _watch(
        self,
        namespace: str | None,
        selector: Callable[[dict], bool],
        name: str,
        query: dict[str, str],
    ) -> None:
        api, store = self.api, self.api._store

        def wanted(obj: dict) -> bool:
            return not name or obj["metadata"]["name"] == name

        rv_param = query.get("resourceVersion", "")
        timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        bookmarks = _parse_bool(query.get("allowWatchBookmarks", "false"))
        with api._cond:
            if rv_param in ("", "0"):
                initial = [("ADDED", o) for o in store.select(namespace, selector) if wanted(o)]
                last = store.rv
            else:
                try:
                    last = int(rv_param)
                except ValueError:
                    raise ValueError(f"invalid resource version: {rv_param}") from None
                initial = []
            expired_at = store.oldest if last < store.oldest else None

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        if expired_at is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if expired_at is not None:
            self._expired(last, expired_at)
            return
        with api._cond:
            self.conn.watching = True
        now = time.monotonic()
        deadline = now + timeout if timeout is not None else None
        interval = api._bookmark_interval
        next_bookmark = now + interval if bookmarks else None
        for event_type, obj in initial:
            self._event(event_type, obj)

        while True:
            with api._cond:
                while True:
                    if api._stopped or self.conn.dropped:
                        self._abort()
                        return
                    if self.lst.mode == _HUNG:
                        break
                    events = store.events_after(last, namespace, selector)
                    if events is None:
                        expired_at = store.oldest
                        break
                    now = time.monotonic()
                    if events or (deadline is not None and now >= deadline):
                        break
                    if next_bookmark is not None and now >= next_bookmark:
                        break
                    waits = [1.0]
                    if deadline is not None:
                        waits.append(deadline - now)
                    if next_bookmark is not None:
                        waits.append(next_bookmark - now)
                    api._cond.wait(max(0.0, min(waits)))
                hung = self.lst.mode == _HUNG
                previous, last = last, store.rv
            if hung:
                # Send nothing and keep the socket open until the hang ends.
                api._hung(self.lst, self.conn)
                self._abort()
                return
            if expired_at is not None:
                self._expired(previous, expired_at)
                return
            for event_type, obj in events or []:
                if wanted(obj):
                    self._event(event_type, obj)
            if deadline is not None and now >= deadline:
                self._chunk(b"")
                with api._cond:
                    self.conn.watching = False
                return
            if next_bookmark is not None and now >= next_bookmark:
                self._event(
                    "BOOKMARK",
                    {
                        "kind": "EndpointSlice",
                        "apiVersion": f"{_DISCOVERY}/v1",
                        "metadata": {"resourceVersion": str(last)},
                    },
                )
                next_bookmark = now + interval

    def _event(self, event_type: str, obj: dict) -> None:
        self._chunk(_dumps({"type": event_type, "object": obj}) + b"\n")

    def _expired(self, requested: int, oldest: int) -> None:
        self._event(
            "ERROR",
            _status(410, "Expired", f"too old resource version: {requested} ({oldest})"),
        )
        self._chunk(b"")
        self.close_connection = True

    def _abort(self) -> None:
        self.close_connection = True
        self.conn.cut()


# -- stand-alone mode -------------------------------------------------------------


def _read_endpoints_file(path: Path) -> list[Endpoint] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    endpoints: list[Endpoint] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        ipaddress.ip_address(words[0])
        endpoints.append((words[0], "not-ready" not in words[1:]))
    return endpoints


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tests.kubeapi", description="Fake kube-apiserver for litelb demos."
    )
    parser.add_argument("--pki-dir", type=Path, required=True, help="CA and certificates here")
    parser.add_argument(
        "--listen", action="append", help="loopback address; repeat for more (127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=0, help="shared port (0: any free one)")
    parser.add_argument("--endpoints", default="", help="comma-separated ready addresses")
    parser.add_argument(
        "--endpoints-file",
        type=Path,
        help="one 'ADDRESS [not-ready]' per line; re-read when it changes",
    )
    parser.add_argument("--kubeconfig-out", type=Path, help="write a kubelet-style kubeconfig")
    parser.add_argument("--bookmark-interval", type=float, default=60.0)
    args = parser.parse_args(argv)

    addresses = args.listen or ["127.0.0.1"]
    pki = Pki(args.pki_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = FakeKubeApiServer(
        pki, addresses=addresses, port=args.port, bookmark_interval=args.bookmark_interval
    )
    with server:
        endpoints: list[Endpoint] | None = None
        if args.endpoints_file is not None:
            endpoints = _read_endpoints_file(args.endpoints_file)
        if endpoints is None:
            endpoints = [a for a in args.endpoints.split(",") if a] or list(addresses)
        server.set_endpoints(endpoints)
        if args.kubeconfig_out is not None:
            pki.kubeconfig(args.kubeconfig_out, server.url())
        for address in addresses:
            print(f"kubeapi listening on {server.url(address)}", flush=True)
        seen = endpoints
        while not stop.wait(0.2):
            if args.endpoints_file is None:
                continue
            try:
                current = _read_endpoints_file(args.endpoints_file)
            except ValueError as e:
                print(f"kubeapi: {args.endpoints_file}: {e}", file=sys.stderr, flush=True)
                continue
            if current is not None and current != seen:
                server.set_endpoints(current)
                seen = current
    return 0


if __name__ == "__main__":
    sys.exit(main())

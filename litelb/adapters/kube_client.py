"""The Kubernetes API client: the API servers litelb may talk to, with failover and TLS.

Everything here talks to Kubernetes through the official client, as the kubelet's
identity, and only reads.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, Callable, Optional, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes.client.rest import ApiException
from urllib3.connection import HTTPConnection

from litelb.adapters.kube_slices import (
    ADDRESS_TYPES,
    KubeShapeError,
    endpoints_to_snapshot,
    parse_event,
    parse_list,
    resource_version,
    slices_to_snapshot,
)
from litelb.adapters.kubeconfig import KubeCredentials, KubeError
from litelb.config import KubernetesConfig
from litelb.model import EndpointSnapshot

log = logging.getLogger("litelb.kube")

RBAC_FIX = "litelb rbac | kubectl apply -f -"
DISCOVERY_GROUP = "discovery.k8s.io"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


# Linux keepalive: a peer that vanished (powered-off VM, cut link) is noticed after
# about IDLE + INTVL * CNT = 8 s even while a watch legitimately waits in silence.
KEEPALIVE_IDLE = 2
KEEPALIVE_INTERVAL = 2
KEEPALIVE_COUNT = 3

# The API server ends a watch exactly at timeoutSeconds; this covers scheduling and
# network delay, so a quiet but healthy watch never trips its read timeout.
WATCH_CLOSE_SLACK = 3.0
# After a server failed, others are preferred for this long.
FAILED_SERVER_PENALTY = 30.0
# The service's EndpointSlices are a few kilobytes; an answer or a watch event far
# larger is not one litelb asked for, and is not read into memory.
MAX_BODY = 4 * 1024 * 1024
# How urllib3 1.26 and 2.x word a certificate that does not name the address dialled.
_NAME_MISMATCH = re.compile(r"mismatch|doesn't match")
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException)
_T = TypeVar("_T")


class KubeForbiddenError(KubeError):
    """RBAC denies what litelb needs; the text names the permission and the fix."""

    def __init__(self, verb: str, resource: str, namespace: str, user: str, detail: str) -> None:
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.user = user
        super().__init__(
            f"forbidden: {user} may not {verb} {resource} in namespace {namespace!r} "
            f"({detail}); grant it with: {RBAC_FIX}"
        )


class KubeGoneError(KubeError):
    """410: the resourceVersion is older than the server's history; list again."""


class KubeUnavailableError(KubeError):
    """No API server answered: connection refused, timed out or failed TLS verification.

    `nothing_listening`: every server refused the connection. That costs them
    nothing, and it is what the node sees before `kubeadm init` has started the
    API server, so litelb asks again soon rather than backing off.
    """

    def __init__(self, message: str, *, nothing_listening: bool = False) -> None:
        super().__init__(message)
        self.nothing_listening = nothing_listening


def _refused(error: BaseException) -> bool:
    """Whether a connection refusal is behind `error` (urllib3 wraps it, differently
    in 1.26 and 2.x)."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, ConnectionRefusedError):
            return True
        seen.add(id(current))
        reason = getattr(current, "reason", None)
        current = (
            reason
            if isinstance(reason, BaseException)
            else current.__cause__ or current.__context__
        )
    return False


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _url(address: str, port: int) -> str:
    return f"https://{_host(address)}:{port}"


def _keepalive_socket_options() -> list[tuple[int, int, int]]:
    options = list(HTTPConnection.default_socket_options)
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, name):  # Linux has all three; the daemon only runs there
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return options


def _status_message(e: ApiException) -> str:
    body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
    try:
        message = json.loads(body or "")["message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    return str(message) if message else f"{e.status} {e.reason}"


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        # Status 0 is how the client reports a TLS failure.
        return str(e.reason).strip().replace("\n", ": ") if e.status == 0 else _status_message(e)
    return f"{type(e).__name__}: {e}"


_NAME_KEYS = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def _peer_name_text(name: Any) -> str:
    """A certificate name as ssl.getpeercert() gives it, written the way openssl prints it."""
    parts = (f"{_NAME_KEYS.get(k, k)}={v}" for rdn in name or () for k, v in rdn)
    return ",".join(parts) or "(empty)"


class KubeClient:
    """The API servers litelb may talk to, with failover between them.

    All servers share the kubeconfig's CA and client credentials and are always
    verified. When the credential files change on disk, or a server answers 401,
    the next request uses them as they are now. Thread-safe.
    """

    def __init__(
        self,
        cfg: KubernetesConfig,
        credentials: KubeCredentials,
        *,
        read_timeout: float = 10.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self._cfg = cfg
        self._credentials = credentials
        self._path = credentials.path
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._generation = credentials.generation
        self._kubeconfig_server = credentials.server
        self._kubeconfig_host = urllib.parse.urlsplit(self._kubeconfig_server).hostname or ""
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, Optional[str]], k8s_client.ApiClient] = {}
        # Servers whose certificate is verified for the kubeconfig's host name.
        self._aliases: dict[str, str] = {}
        self._current = self._kubeconfig_server
        self._failed_at: dict[str, float] = {}
        self._endpoint_servers: tuple[str, ...] = ()
        self._streams: set[Any] = set()
        self._announced = False
        self._closed = False

    # -- servers and failover -------------------------------------------------------

    @property
    def server(self) -> str:
        with self._lock:
            return self._current

    @property
    def service(self) -> str:
        return self._cfg.service

    def note_endpoints(self, snapshot: EndpointSnapshot) -> None:
        servers = tuple(_url(e.address, e.port) for e in snapshot.endpoints if e.ready)
        with self._lock:
            self._endpoint_servers = servers

    def _candidates(self) -> list[str]:
        """Servers to try, current first; recently failed ones last, oldest failure first."""
        with self._lock:
            known = [self._kubeconfig_server, *self._endpoint_servers, *self._cfg.api_servers]
            current = self._current
            failed_at = dict(self._failed_at)
        ordered = list(dict.fromkeys(s.rstrip("/") for s in known))
        now = time.monotonic()

        def recently_failed(server: str) -> bool:
            return now - failed_at.get(server, -FAILED_SERVER_PENALTY) < FAILED_SERVER_PENALTY

        fine = [s for s in ordered if not recently_failed(s)]
        if current in fine:
            fine.remove(current)
            fine.insert(0, current)
        failed = sorted((s for s in ordered if recently_failed(s)), key=lambda s: failed_at[s])
        return fine + failed

    def _new_api_client(self, configuration: k8s_client.Configuration) -> k8s_client.ApiClient:
        api = k8s_client.ApiClient(configuration)
        # Configuration.socket_options only exists in newer clients; the pool manager's
        # keyword arguments reach every connection pool in all of them.
        api.rest_client.pool_manager.connection_pool_kw["socket_options"] = (
            _keepalive_socket_options()
        )
        return api

    def _api(self, server: str, alias: Optional[str]) -> k8s_client.ApiClient:
        key = (server, alias)
        generation = self._credentials.refresh()
        stale: list[k8s_client.ApiClient] = []
        with self._lock:
            if self._closed:
                raise KubeError("the Kubernetes client was closed")
            if generation != self._generation:
                # New credentials: no pooled connection may keep presenting the old ones.
                stale, self._clients = list(self._clients.values()), {}
                self._generation = generation
            api = self._clients.get(key)
        _close_all(stale)
        if api is None:
            configuration = self._credentials.configuration(server)
            if alias is not None:
                configuration.assert_hostname = alias
            api = self._new_api_client(configuration)
            with self._lock:
                api = self._clients.setdefault(key, api)
        return api

    def _attempt(self, server: str, request: Callable[[k8s_client.ApiClient], _T]) -> _T:
        """One request to `server`; after a 401 once more if the credentials changed."""
        before = self._generation
        try:
            return self._attempt_verified(server, request)
        except ApiException as e:
            if e.status != 401 or self._credentials.rejected(server) == before:
                raise
        return self._attempt_verified(server, request)

    def _attempt_verified(self, server: str, request: Callable[[k8s_client.ApiClient], _T]) -> _T:
        with self._lock:
            alias = self._aliases.get(server)
        try:
            return request(self._api(server, alias))
        except ApiException as e:
            mismatch = e.status == 0 and _NAME_MISMATCH.search(str(e.reason))
            if not mismatch or alias is not None or server == self._kubeconfig_server:
                raise
        # Clients reach any API server through the kubeconfig's server name, so every
        # API server's certificate names it: verify this one as that, never less.
        result = request(self._api(server, self._kubeconfig_host))
        with self._lock:
            self._aliases[server] = self._kubeconfig_host
        log.info(
            "%s: its certificate does not name that address; verifying it as %s",
            server,
            self._kubeconfig_host,
        )
        return result

    def _use(self, server: str) -> None:
        with self._lock:
            self._failed_at.pop(server, None)
            previous, self._current = self._current, server
            first, self._announced = not self._announced, True
        if previous != server:
            log.info("kubernetes API server in use: %s (was %s)", server, previous)
        elif first:
            log.info("kubernetes API server in use: %s", server)

    def _mark_failed(self, server: str) -> None:
        with self._lock:
            self._failed_at[server] = time.monotonic()

    def _call(self, what: str, request: Callable[[k8s_client.ApiClient], _T]) -> tuple[str, _T]:
        """Run `request` against the current server, failing over to the others."""
        failures = []
        refused = True
        for server in self._candidates():
            try:
                result = self._attempt(server, request)
            except ApiException as e:
                # Status 0 is a TLS failure; 5xx and 429 say this server cannot serve now.
                if e.status == 0 or e.status == 429 or e.status >= 500:
                    self._mark_failed(server)
                    failures.append(f"{server}: {_describe(e)}")
                    refused = False
                    continue
                self._use(server)
                raise
            except _TRANSPORT_ERRORS as e:
                self._mark_failed(server)
                failures.append(f"{server}: {_describe(e)}")
                refused = refused and _refused(e)
                continue
            self._use(server)
            return server, result
        raise KubeUnavailableError(
            f"{what}: no Kubernetes API server answered ({'; '.join(failures)})",
            nothing_listening=refused and bool(failures),
        )

    def _timeout(self, read: Optional[float] = None) -> tuple[float, float]:
        return (self._connect_timeout, self._read_timeout if read is None else read)

    # -- requests -------------------------------------------------------------------

    def _rejected(self, what: str, e: ApiException, verb: str, resource: str) -> KubeError:
        """The error for an answer other than success from a server that works."""
        message = _status_message(e)
        if e.status == 403:
            match = re.search(r'User "([^"]+)"', message)
            user = match.group(1) if match else f"the user of {self._path}"
            return KubeForbiddenError(verb, resource, self._cfg.namespace, user, message)
        if e.status == 410:
            return KubeGoneError(f"{what}: {message}")
        if e.status == 401:
            return KubeError(
                f"{what}: 401 Unauthorized: the API server rejected the credentials in "
                f"{self._path} (expired or foreign client certificate?)"
            )
        return KubeError(f"{what}: {message}")

    def _read_json(
        self, what: str, verb: str, resource: str, request: Callable[[k8s_client.ApiClient], Any]
    ) -> Any:
        def read(api: k8s_client.ApiClient) -> bytes:
            response = request(api)
            try:
                data = response.read(MAX_BODY + 1)
                if len(data) > MAX_BODY:
                    response.close()  # the rest must not go back to the pool
                return data
            finally:
                response.release_conn()

        try:
            server, data = self._call(what, read)
        except ApiException as e:
            raise self._rejected(what, e, verb, resource) from e
        if len(data) > MAX_BODY:
            raise KubeShapeError(f"{what}: {server} answered more than {MAX_BODY} bytes")
        try:
            return json.loads(data)
        except ValueError as e:
            raise KubeShapeError(
                f"{what}: {server} answered something that is not JSON: {e}"
            ) from e

    def list_slice_objects(self) -> tuple[list[Any], str]:
        """The raw EndpointSlices of the service (each checked by its user) and the
        list's resourceVersion."""
        ns, name = self._cfg.namespace, self._cfg.service_name
        body = self._read_json(
            f"list EndpointSlices of {self._cfg.service}",
            "list",
            f"{DISCOVERY_GROUP}/endpointslices",
            lambda api: k8s_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
                ns,
                label_selector=f"{SERVICE_NAME_LABEL}={name}",
                _preload_content=False,
                _request_timeout=self._timeout(),
            ),
        )
        return parse_list(body)

    def list_slices(self, family: Optional[int] = None) -> EndpointSnapshot:
        """The merged EndpointSlices of `family` (4 or 6); None: of both families."""
        items, rv = self.list_slice_objects()
        if family is not None:
            return slices_to_snapshot(items, family, rv)
        both = (slices_to_snapshot(items, f, rv).endpoints for f in ADDRESS_TYPES)
        return EndpointSnapshot(
            endpoints=tuple(e for part in both for e in part), resource_version=rv
        )

    def get_endpoints(self, family: int) -> EndpointSnapshot:
        """The service's core v1 Endpoints: what the Node authorizer lets every kubelet get."""
        ns, name = self._cfg.namespace, self._cfg.service_name
        body = self._read_json(
            f"get Endpoints {self._cfg.service}",
            "get",
            "endpoints",
            lambda api: k8s_client.CoreV1Api(api).read_namespaced_endpoints(
                name, ns, _preload_content=False, _request_timeout=self._timeout()
            ),
        )
        return endpoints_to_snapshot(body, family, resource_version(body, "Endpoints"))

    def watch_slices(self, version: str, timeout_seconds: int) -> Iterator[tuple[str, dict]]:
        """(event type, raw object) from a watch of the service's EndpointSlices.

        ERROR events are passed on (a 410 arrives as one); a 410 or 403 on the
        request itself raises KubeGoneError or KubeForbiddenError. The stream ends
        cleanly after `timeout_seconds`; a silent or broken one raises
        KubeUnavailableError, at the latest WATCH_CLOSE_SLACK seconds after that.
        """
        ns, name = self._cfg.namespace, self._cfg.service_name
        what = f"watch EndpointSlices of {self._cfg.service}"
        # A healthy server is never silent for longer (it ends the stream at
        # timeout_seconds), so this is also how soon a hung one is noticed.
        read_timeout = timeout_seconds + WATCH_CLOSE_SLACK
        try:
            server, response = self._call(
                what,
                lambda api: k8s_client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
                    ns,
                    label_selector=f"{SERVICE_NAME_LABEL}={name}",
                    watch=True,
                    allow_watch_bookmarks=True,
                    resource_version=version,
                    timeout_seconds=timeout_seconds,
                    _preload_content=False,
                    _request_timeout=self._timeout(read_timeout),
                ),
            )
        except ApiException as e:
            raise self._rejected(what, e, "watch", f"{DISCOVERY_GROUP}/endpointslices") from e
        complete = False
        with self._lock:
            self._streams.add(response)
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_BODY:
                    raise KubeShapeError(f"{what}: an event of more than {MAX_BODY} bytes")
                for line in lines:
                    if line.strip():
                        yield parse_event(json.loads(line))
            complete = True
        except (*_TRANSPORT_ERRORS, ValueError) as e:
            self._mark_failed(server)
            raise KubeUnavailableError(f"{what} through {server}: {_describe(e)}") from e
        finally:
            with self._lock:
                self._streams.discard(response)
            if not complete:
                # Unread data must not go back to the pool with the connection.
                response.close()
            response.release_conn()

    def interrupt(self) -> None:
        """Wake every watch blocked in a read, so a stopping daemon need not wait for it."""
        with self._lock:
            streams = list(self._streams)
        for response in streams:
            sock = getattr(response.connection, "sock", None)
            if sock is not None:
                # The plain socket's shutdown: SSLSocket's would tear down TLS state
                # under the reading thread's feet.
                with suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def access_review(self, verb: str, group: str, resource: str, namespace: str) -> bool:
        """Whether this identity may do it, per a SelfSubjectAccessReview (any user may ask)."""
        review = k8s_client.V1SelfSubjectAccessReview(
            spec=k8s_client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=k8s_client.V1ResourceAttributes(
                    verb=verb, group=group, resource=resource, namespace=namespace
                )
            )
        )
        body = self._read_json(
            f"SelfSubjectAccessReview of {verb} {resource}",
            "create",
            "authorization.k8s.io/selfsubjectaccessreviews",
            lambda api: k8s_client.AuthorizationV1Api(api).create_self_subject_access_review(
                review, _preload_content=False, _request_timeout=self._timeout()
            ),
        )
        status = body.get("status") if isinstance(body, dict) else None
        return isinstance(status, dict) and status.get("allowed") is True

    def _peer_certificate(self) -> dict:
        server = self.server
        parts = urllib.parse.urlsplit(server)
        host, port = parts.hostname or "", parts.port or 443
        context = ssl.create_default_context(cafile=self._credentials.tls_files()[0])
        with self._lock:
            # Only read for display, and the chain is still verified; requests to this
            # server check the name it is known by (see _attempt).
            context.check_hostname = server not in self._aliases
        try:
            with socket.create_connection((host, port), timeout=self._connect_timeout) as raw:
                raw.settimeout(self._read_timeout)
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    return tls.getpeercert() or {}
        except (OSError, ssl.SSLError) as e:
            raise KubeUnavailableError(f"TLS handshake with {server}: {e}") from e

    def server_certificate(self) -> tuple[str, tuple[str, ...]]:
        """Subject and SANs (DNS names and IPs, IPs normalized) of the server in use."""
        cert = self._peer_certificate()
        sans = []
        for kind, value in cert.get("subjectAltName", ()):
            if kind == "IP Address":
                sans.append(ipaddress.ip_address(value.strip()).compressed)
            elif kind == "DNS":
                sans.append(value)
        return _peer_name_text(cert.get("subject")), tuple(sans)

    def server_certificate_sans(self) -> tuple[str, ...]:
        return self.server_certificate()[1]

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        _close_all(clients)


def _close_all(clients: list[k8s_client.ApiClient]) -> None:
    for api in clients:
        api.rest_client.pool_manager.clear()
        api.close()

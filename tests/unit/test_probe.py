from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from litelb.adapters.probe import UNAUTHORIZED, Prober, tls_context
from litelb.model import Endpoint
from tests.pki import Pki

TIMEOUT = 0.5
SLACK = 0.5  # what a loaded 2-core box may add on top of TIMEOUT


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"), server_ips=("127.0.0.1", "127.0.0.2", "::1"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"))


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TlsServer

    def do_GET(self) -> None:
        peer = self.connection.getpeercert()
        self.server.seen.append((self.path, self.headers.get("Host"), peer))
        time.sleep(self.server.delay)
        status = self.server.status
        subject = dict(rdn[0] for rdn in (peer or {}).get("subject", ()))
        if subject.get("commonName") in self.server.revoked:
            status = 401
        body = b"ok" if status < 300 else b"not ready"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _KeepAliveHandler(_Handler):
    """HTTP/1.1 with keep-alive, as kube-apiserver; drops the connection silently
    (no "Connection: close") after `server.per_connection` requests, as an API
    server restart would."""

    protocol_version = "HTTP/1.1"
    served = 0

    def do_GET(self) -> None:
        super().do_GET()
        self.served += 1
        if self.served >= self.server.per_connection:
            self.close_connection = True


class _TlsServer(http.server.ThreadingHTTPServer):
    """An HTTPS server whose handshake runs in the request thread, so a client that
    stalls or fails it does not block other clients."""

    daemon_threads = True

    def __init__(self, host: str, context: ssl.SSLContext, status: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), _Handler)
        self.context = context
        self.status = status
        self.seen: list[tuple[str, str, object]] = []
        self.connections = 0
        self.per_connection = 1_000_000
        self.delay = 0.0
        self.revoked: set[str] = set()

    def finish_request(self, request, client_address) -> None:
        self.connections += 1
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return
        with tls:
            self.RequestHandlerClass(tls, client_address, self)


@contextmanager
def https_server(
    pki: Pki,
    *,
    status: int = 200,
    host: str = "127.0.0.1",
    client_ca: Path | None = None,
    keep_alive: bool = False,
) -> Iterator[_TlsServer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    server = _TlsServer(host, context, status)
    if keep_alive:
        server.RequestHandlerClass = _KeepAliveHandler
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_listener(host: str = "127.0.0.1") -> Iterator[int]:
    """A port whose kernel completes the TCP handshake but nobody ever answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        s.listen(8)
        yield s.getsockname()[1]


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    """Servers and probers a test opens, closed when it ends, pass or fail."""
    with ExitStack() as s:
        yield s


@pytest.fixture
def prober(pki: Pki) -> Iterator[Prober]:
    with Prober(path="/readyz", timeout=TIMEOUT, context=tls_context(str(pki.ca_cert))) as p:
        yield p


def test_200_is_ok(pki, prober):
    with https_server(pki) as server:
        port = server.server_address[1]
        result = prober.probe("127.0.0.1", port)
    assert result.ok
    assert result.detail == "200"
    assert 0 <= result.seconds < TIMEOUT
    assert server.seen == [("/readyz", f"127.0.0.1:{port}", None)]


def test_500_is_not_ok(pki, prober):
    with https_server(pki, status=500) as server:
        result = prober.probe("127.0.0.1", server.server_address[1])
    assert not result.ok
    assert result.detail == "500"


def test_silent_server_fails_within_timeout(prober):
    with silent_listener() as port:
        started = time.monotonic()
        result = prober.probe("127.0.0.1", port)
        elapsed = time.monotonic() - started
    assert not result.ok
    assert result.detail == f"timeout after {TIMEOUT}s"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK


def test_closed_port_is_refused(prober):
    result = prober.probe("127.0.0.1", closed_port())
    assert not result.ok
    assert result.detail == "connection refused"


def test_wrong_ca_is_a_tls_failure(pki, other_pki, stack):
    context = tls_context(str(other_pki.ca_cert))
    server = stack.enter_context(https_server(pki))
    prober = stack.enter_context(Prober(path="/readyz", timeout=TIMEOUT, context=context))
    result = prober.probe("127.0.0.1", server.server_address[1])
    assert not result.ok
    assert result.detail.startswith("TLS: certificate verify failed")
    assert server.seen == []


def test_address_missing_from_the_certificate_is_a_tls_failure(pki, prober):
    # The certificate names 127.0.0.1 and 127.0.0.2 only.
    with https_server(pki, host="127.0.0.3") as server:
        result = prober.probe("127.0.0.3", server.server_address[1])
    assert not result.ok
    assert result.detail.startswith("TLS: certificate verify failed")
    assert "127.0.0.3" in result.detail


def test_client_certificate_is_presented(pki):
    cert, key = pki.client_cert("system:node:node-1", ["system:nodes"])
    with https_server(pki, client_ca=pki.ca_cert) as server:
        port = server.server_address[1]
        anonymous = tls_context(str(pki.ca_cert))
        with Prober(path="/readyz", timeout=TIMEOUT, context=anonymous) as prober:
            assert not prober.probe("127.0.0.1", port).ok
        context = tls_context(str(pki.ca_cert), str(cert), str(key))
        with Prober(path="/readyz", timeout=TIMEOUT, context=context) as prober:
            result = prober.probe("127.0.0.1", port)
    assert result.ok, result.detail
    ((_, _, peer),) = server.seen
    assert (("commonName", "system:node:node-1"),) in peer["subject"]


def test_combined_client_pem(pki, tmp_path):
    cert, key = pki.client_cert("system:node:node-2")
    combined = tmp_path / "kubelet-client-current.pem"
    combined.write_bytes(cert.read_bytes() + key.read_bytes())
    with https_server(pki, client_ca=pki.ca_cert) as server:
        context = tls_context(str(pki.ca_cert), str(combined))
        with Prober(path="/readyz", timeout=TIMEOUT, context=context) as prober:
            assert prober.probe("127.0.0.1", server.server_address[1]).ok


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6(pki, prober):
    with https_server(pki, host="::1") as server:
        port = server.server_address[1]
        result = prober.probe("::1", port)
    assert result.ok, result.detail
    assert server.seen[0][1] == f"[::1]:{port}"


def test_host_name_is_refused_without_a_lookup(prober):
    result = prober.probe("localhost", 1)
    assert not result.ok
    assert result.detail == "not an IP address: 'localhost'"


def test_probe_all_runs_concurrently(pki, prober, stack):
    up = stack.enter_context(https_server(pki))
    down = stack.enter_context(https_server(pki, host="127.0.0.2", status=503))
    silent = stack.enter_context(silent_listener("127.0.0.3"))
    endpoints = [
        Endpoint("127.0.0.1", up.server_address[1]),
        Endpoint("127.0.0.2", down.server_address[1]),
        Endpoint("127.0.0.3", silent),
        Endpoint("127.0.0.4", closed_port()),
    ]
    started = time.monotonic()
    results = prober.probe_all(endpoints)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK
    assert {a: (r.ok, r.detail) for a, r in results.items()} == {
        "127.0.0.1": (True, "200"),
        "127.0.0.2": (False, "503"),
        "127.0.0.3": (False, f"timeout after {TIMEOUT}s"),
        "127.0.0.4": (False, "connection refused"),
    }


def test_probe_all_with_several_hanging_takes_one_timeout(prober, stack):
    hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    endpoints = [Endpoint(h, stack.enter_context(silent_listener(h))) for h in hosts]
    started = time.monotonic()
    results = prober.probe_all(endpoints)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK  # serially it would be 3 * TIMEOUT
    assert [r.ok for r in results.values()] == [False, False, False]


def test_probe_all_bounded_when_workers_are_busy(pki, stack):
    context = tls_context(str(pki.ca_cert))
    prober = stack.enter_context(
        Prober(path="/readyz", timeout=TIMEOUT, context=context, max_workers=1)
    )
    hosts = ("127.0.0.1", "127.0.0.2")
    endpoints = [Endpoint(h, stack.enter_context(silent_listener(h))) for h in hosts]
    started = time.monotonic()
    results = prober.probe_all(endpoints)
    elapsed = time.monotonic() - started
    assert elapsed < TIMEOUT + SLACK
    assert not results["127.0.0.2"].ok
    assert results["127.0.0.2"].detail == f"timeout after {TIMEOUT}s"


def test_probe_all_empty(prober):
    assert prober.probe_all([]) == {}


@pytest.mark.parametrize("path", ["readyz", "/ready z", "/readyz\r\nX: y"])
def test_bad_path_is_rejected(pki, path):
    with pytest.raises(ValueError, match="probe path"):
        Prober(path=path, timeout=1, context=tls_context(str(pki.ca_cert)))


def test_keeps_the_connection_alive_and_reconnects_when_it_is_gone(pki, prober):
    with https_server(pki, keep_alive=True) as server:
        server.per_connection = 3
        port = server.server_address[1]
        results = [prober.probe("127.0.0.1", port) for _ in range(7)]
        assert [r.ok for r in results] == [True] * 7, [r.detail for r in results]
        assert len(server.seen) == 7
        # 3 probes per connection, and the dropped ones cost no failed probe
        assert server.connections == 3


def test_a_hung_server_on_a_kept_connection_times_out(pki, prober):
    with https_server(pki, keep_alive=True) as server:
        port = server.server_address[1]
        assert prober.probe("127.0.0.1", port).ok
        hang = threading.Event()
        original = _KeepAliveHandler.do_GET
        _KeepAliveHandler.do_GET = lambda self: hang.wait(10)  # type: ignore[method-assign]
        try:
            start = time.monotonic()
            result = prober.probe("127.0.0.1", port)
            assert not result.ok
            assert time.monotonic() - start < TIMEOUT + 0.5
        finally:
            _KeepAliveHandler.do_GET = original  # type: ignore[method-assign]
            hang.set()


# -- what a failure proves --------------------------------------------------------------


def test_a_refused_connection_is_conclusive(prober):
    result = prober.probe("127.0.0.1", closed_port())
    assert not result.ok and result.conclusive


def test_a_reset_of_a_fresh_connection_is_conclusive(prober):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)

        def reset_one() -> None:
            conn, _ = listener.accept()
            # Linger 0: close sends RST, as the kernel does for a process that died.
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

        thread = threading.Thread(target=reset_one)
        thread.start()
        result = prober.probe("127.0.0.1", listener.getsockname()[1])
        thread.join(5)
    assert not result.ok and result.conclusive, result
    assert result.detail == "connection reset"


def test_a_silent_server_is_not_conclusive(prober):
    with silent_listener() as port:
        result = prober.probe("127.0.0.1", port)
    assert not result.ok and not result.conclusive


def test_a_full_backlog_is_a_timeout_not_a_refusal(pki):
    # An overloaded API server whose accept queue is full: the kernel drops the SYN
    # (tcp_abort_on_overflow is 0 by default), so the client waits, it is not refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", port))
                fillers.append(f)
            time.sleep(0.1)
            with Prober(
                path="/readyz", timeout=TIMEOUT, context=tls_context(str(pki.ca_cert))
            ) as p:
                result = p.probe("127.0.0.1", port)
        finally:
            for f in fillers:
                f.close()
    assert not result.ok and not result.conclusive, result
    assert result.detail.startswith("timeout")


def test_a_slow_but_alive_server_passes(pki):
    # Answers after 0.8 s with a 1 s timeout: a loaded API server is not down.
    with https_server(pki) as server:
        server.delay = 0.8
        with Prober(path="/readyz", timeout=1.0, context=tls_context(str(pki.ca_cert))) as p:
            result = p.probe("127.0.0.1", server.server_address[1])
    assert result.ok, result


# -- credentials that change ------------------------------------------------------------


def test_a_401_reloads_the_credentials_and_retries_once(pki):
    old = tls_context(str(pki.ca_cert), *map(str, pki.client_cert("old")))
    new = tls_context(str(pki.ca_cert), *map(str, pki.client_cert("new")))
    current = [old]
    rejected: list[str] = []

    def on_unauthorized(where: str) -> None:
        rejected.append(where)
        current[0] = new

    with https_server(pki, client_ca=pki.ca_cert, keep_alive=True) as server:
        port = server.server_address[1]
        with Prober(
            path="/readyz",
            timeout=TIMEOUT,
            context=lambda: current[0],
            on_unauthorized=on_unauthorized,
        ) as prober:
            assert prober.probe("127.0.0.1", port).ok
            server.revoked.add("old")
            result = prober.probe("127.0.0.1", port)
            assert result.ok, result
            assert len(rejected) == 1 and f"127.0.0.1:{port}" in rejected[0]
            # Revoked too, and nothing new on disk: reported as what it is.
            server.revoked.add("new")
            result = prober.probe("127.0.0.1", port)
    assert not result.ok and not result.conclusive
    assert result.detail == UNAUTHORIZED
    assert len(rejected) == 2

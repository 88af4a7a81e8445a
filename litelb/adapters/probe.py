"""Active health probes of the API servers: `GET https://<ip>:<port>/readyz`.

A probe only reports what it saw; the rise/fall verdict is litelb.core.health's.

The request is written on an `ssl` socket by hand rather than through
`http.client`, whose timeout applies to each socket operation: a server that
trickles its answer a byte at a time could hold a probe far beyond its timeout,
and a pool of such probes would starve the next round. Here every blocking call
gets only the time left until one deadline, and only the status line is read.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Optional, Union

from litelb import __version__
from litelb.model import Endpoint

# A status line is a few dozen bytes; anything longer is not an HTTP server.
_MAX_HEAD = 16384

# probe_all's backstop beyond the probes' own deadline, for threads that a loaded
# machine schedules late.
_GRACE = 0.2


@dataclass(frozen=True)
class ProbeResult:
    """`detail` is the status code ("200", "503") or why there is none
    ("timeout after 1.0s", "connection refused", "TLS: certificate verify failed: …").

    `conclusive`: the failure proves the API server is down, not merely slow: its
    host refused a new connection, or reset it. A loaded server is slow (a
    timeout) but never refuses: the kernel drops a SYN its backlog has no room
    for, and the client times out.
    """

    ok: bool
    detail: str
    seconds: float
    conclusive: bool = False


class _Failed(Exception):
    """The probe got no status code; the message is the ProbeResult detail."""


class _Refused(Exception):
    """A fresh connection was refused or reset: conclusive evidence of a dead server."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


# The client certificate could not be presented or was not accepted: the API
# server answered, so it is the prober's credentials that are at fault.
UNAUTHORIZED = "401 Unauthorized: the API server rejected the client certificate"

TlsContext = Union[ssl.SSLContext, Callable[[], ssl.SSLContext]]


def tls_context(
    ca_file: Optional[str], cert_file: Optional[str] = None, key_file: Optional[str] = None
) -> ssl.SSLContext:
    """A client context that verifies the API server against the cluster CA
    (`ca_file`; None = the system store) and its IP address against the
    certificate's SANs.

    `cert_file`/`key_file`: a client certificate, for clusters where anonymous
    access to /readyz is disabled; `key_file` None when `cert_file` holds both, as
    the kubelet's rotated `kubelet-client-current.pem` does.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    # Python 3.13 turns on strict RFC 5280 checks that Go's crypto/x509, which
    # kubectl and the kubelet use, does not make; certificates from older
    # installers would then fail every probe although the cluster accepts them.
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout()
    return left


def _host_header(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip.compressed}:{port}"


def _status_code(head: bytes) -> int:
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise _Failed(f"not an HTTP response: {line[:40]!r}")
    return int(parts[1])


def _reusable_length(head: bytes) -> Optional[int]:
    """The body length when the connection may carry the next probe, else None."""
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 "):
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get(b"connection") == b"close" or b"transfer-encoding" in headers:
        return None
    length = headers.get(b"content-length", b"")
    return int(length) if length.isdigit() and int(length) <= _MAX_HEAD else None


def _describe(error: OSError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    return error.strerror or str(error) or type(error).__name__


class Prober:
    """Probes API servers concurrently, each probe bounded by `timeout` seconds.

    `context` is the TLS context, or a function returning the one to use now (the
    client certificate is rotated on disk); `on_unauthorized` is told when a server
    answers 401, so the credentials are read again, and the probe is then repeated
    once with the context `context` gives after that.

    Keeps a thread pool for its life; call close() (or use it as a context
    manager) when done.
    """

    def __init__(
        self,
        *,
        path: str,
        timeout: float,
        context: TlsContext,
        on_unauthorized: Optional[Callable[[str], None]] = None,
        max_workers: int = 8,
    ) -> None:
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValueError(f"probe path must start with '/' and contain no spaces: {path!r}")
        if timeout <= 0:
            raise ValueError(f"probe timeout must be positive: {timeout!r}")
        self._path = path
        self._timeout = timeout
        self._context = context
        self._on_unauthorized = on_unauthorized
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="litelb-probe")
        self._lock = threading.Lock()
        # Each kept-alive connection with the context it was made with: one made with
        # credentials since replaced is not reused.
        self._idle: dict[tuple[str, int], tuple[ssl.SSLSocket, ssl.SSLContext]] = {}

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _timed_out(self, started: float) -> ProbeResult:
        return ProbeResult(
            False, f"timeout after {float(self._timeout)}s", time.monotonic() - started
        )

    def probe(self, address: str, port: int) -> ProbeResult:
        """GET https://address:port/path; any 2xx is ok. Never raises for network
        or TLS trouble: that is what the result reports."""
        started = time.monotonic()
        deadline = started + self._timeout
        try:
            context = self._current_context()
            code = self._status(address, port, deadline, context)
            if code == 401 and self._on_unauthorized is not None:
                self._on_unauthorized(f"the API server {address}:{port} (probe)")
                renewed = self._current_context()
                if renewed is not context:
                    code = self._status(address, port, deadline, renewed)
        except socket.timeout:
            return self._timed_out(started)
        except _Failed as e:
            return ProbeResult(False, str(e), time.monotonic() - started)
        except _Refused as e:
            return ProbeResult(False, _describe(e.error), time.monotonic() - started, True)
        except OSError as e:
            return ProbeResult(False, _describe(e), time.monotonic() - started)
        detail = UNAUTHORIZED if code == 401 else str(code)
        return ProbeResult(200 <= code < 300, detail, time.monotonic() - started)

    def _current_context(self) -> ssl.SSLContext:
        if isinstance(self._context, ssl.SSLContext):
            return self._context
        try:
            return self._context()
        except (OSError, ssl.SSLError, ValueError) as e:
            raise _Failed(f"no usable client credentials: {e}") from e

    def _status(self, address: str, port: int, deadline: float, context: ssl.SSLContext) -> int:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            # A host name would need a DNS lookup, which no timeout bounds.
            raise _Failed(f"not an IP address: {address!r}") from None
        key = (ip.compressed, port)
        with self._lock:
            idle = self._idle.pop(key, None)
        if idle is not None:
            # A kept-alive connection costs no handshake: probing three API servers
            # every second then costs next to no CPU. If the server closed it in the
            # meantime (a restart), a fresh connection answers within the same deadline.
            tls, made_with = idle
            if made_with is context:
                try:
                    return self._exchange(tls, key, ip, port, deadline, context)
                except (OSError, _Failed):
                    pass
            tls.close()
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        raw = socket.socket(family, socket.SOCK_STREAM)
        try:
            raw.settimeout(_left(deadline))
            raw.connect((ip.compressed, port))
            raw.settimeout(_left(deadline))
            # The handshake runs inside wrap_socket, bounded by raw's timeout; the
            # certificate's IP SANs are checked against server_hostname.
            tls = context.wrap_socket(raw, server_hostname=ip.compressed)
        except (ConnectionRefusedError, ConnectionResetError) as e:
            # On a fresh connection, unlike on one kept idle: the host is up and
            # nothing listens on the port any more.
            raw.close()
            raise _Refused(e) from e
        except BaseException:
            raw.close()
            raise
        try:
            return self._exchange(tls, key, ip, port, deadline, context)
        except ConnectionResetError as e:
            tls.close()
            raise _Refused(e) from e
        except BaseException:
            tls.close()
            raise

    def _exchange(
        self,
        tls: ssl.SSLSocket,
        key: tuple[str, int],
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
        port: int,
        deadline: float,
        context: ssl.SSLContext,
    ) -> int:
        """One GET on `tls`; keeps the connection for the next probe when HTTP allows."""
        request = (
            f"GET {self._path} HTTP/1.1\r\n"
            f"Host: {_host_header(ip, port)}\r\n"
            f"User-Agent: litelb/{__version__}\r\n"
            "Accept: */*\r\n\r\n"
        ).encode("ascii")
        tls.settimeout(_left(deadline))
        tls.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HEAD:
                raise _Failed("not an HTTP response: header too long")
            tls.settimeout(_left(deadline))
            chunk = tls.recv(4096)
            if not chunk:
                if b"\r\n" in data:
                    break  # closed after the status line: still an answer
                raise _Failed("connection closed without a response")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        code = _status_code(head)
        length = _reusable_length(head)
        if length is None:
            tls.close()
            return code
        while len(body) < length:
            tls.settimeout(_left(deadline))
            chunk = tls.recv(4096)
            if not chunk:
                tls.close()
                return code
            body += chunk
        if len(body) == length:
            with self._lock:
                self._idle[key] = (tls, context)
        else:
            tls.close()
        return code

    def probe_all(self, endpoints: Iterable[Endpoint]) -> dict[str, ProbeResult]:
        """Probe every endpoint at once; keyed by address (the first port listed
        for an address wins). Returns within about `timeout` even if some hang."""
        started = time.monotonic()
        futures = {}
        for endpoint in endpoints:
            if endpoint.address not in futures:
                futures[endpoint.address] = self._pool.submit(
                    self.probe, endpoint.address, endpoint.port
                )
        deadline = started + self._timeout + _GRACE
        results = {}
        for address, future in futures.items():
            try:
                results[address] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                # Not started yet (every worker busy) or stuck beyond its own deadline.
                future.cancel()
                results[address] = self._timed_out(started)
        return results

    def close(self) -> None:
        """Stop the pool without waiting: running probes end by their own deadline."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = list(self._idle.values()), {}
        for tls, _ in idle:
            tls.close()

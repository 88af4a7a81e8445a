"""The status endpoint: /healthz, /status, /metrics.

The stdlib's threading HTTP server in a daemon thread: three read-only pages
for a local scraper need nothing more, and every supported distribution has it.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from litelb.hostport import join_host_port
from litelb.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from litelb.metrics import Metrics
from litelb.status import DaemonStatus, status_json

log = logging.getLogger("litelb.http")

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

# How often the serving loop checks for stop(): bounds how long stop() takes.
_POLL_INTERVAL = 0.1


class StatusServerError(Exception):
    """The endpoint cannot listen where configured; the message says why."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: StatusServer) -> None:
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS lookup that
        # can stall startup for seconds; nothing here uses the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes; with Nagle on, the second waits ~40 ms.
    disable_nagle_algorithm = True
    server: _Server
    # A client that connects and sends nothing must not hold a thread forever.
    timeout = 10

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, *, body: bool) -> None:
        status, content_type, payload = self.server.app.page(urlsplit(self.path).path)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib writes every request to stderr, i.e. into the journal.
        log.debug("%s %s", self.address_string(), format % args)


class StatusServer:
    """Serves /healthz, /status and /metrics on ``address`` (host, port; port 0 = any
    free one) from a daemon thread."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        status: Callable[[], DaemonStatus],
        healthy: Callable[[], bool],
        metrics: Metrics,
    ) -> None:
        self._listen = join_host_port(*address)
        self._address = address
        self._status = status
        self._healthy = healthy
        self._metrics = metrics
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> tuple[str, int]:
        """Listen and serve; returns the bound (host, port), useful with port 0."""
        with self._lock:
            if self._server is None:
                self._server = self._bind()
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": _POLL_INTERVAL},
                    name="litelb-http",
                    daemon=True,
                )
                self._thread.start()
                log.info("serving /healthz, /status, /metrics on %s", self._listen)
            host, port = self._server.server_address[:2]
            return str(host), int(port)

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call more than once."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=1)

    def page(self, path: str) -> tuple[int, str, bytes]:
        """(status code, content type, body) for a GET of ``path``."""
        if path == "/healthz":
            try:
                ok = bool(self._healthy())
            except Exception:
                log.exception("health check for /healthz failed")
                ok = False
            return (200, _TEXT, b"ok\n") if ok else (503, _TEXT, b"unhealthy\n")
        if path == "/status":
            try:
                text = json.dumps(status_json(self._status()))
            except Exception:
                log.exception("building /status failed")
                return 500, _TEXT, b"internal error, see the daemon's log\n"
            return 200, _JSON, (text + "\n").encode()
        if path == "/metrics":
            return 200, METRICS_CONTENT_TYPE, self._metrics.render()
        return 404, _TEXT, b"not found; try /healthz, /status or /metrics\n"

    def _bind(self) -> _Server:
        host, port = self._address
        server_class = _Server6 if ":" in host else _Server
        try:
            return server_class((host, port), self)
        except OSError as e:
            raise StatusServerError(self._bind_error(e)) from e

    def _bind_error(self, e: OSError) -> str:
        where = f"cannot listen on {self._listen} ([metrics] listen)"
        if e.errno == errno.EADDRINUSE:
            return (
                f"{where}: address already in use; another litelb or another program "
                "holds it (see `ss -ltnp`) — stop it or choose another port"
            )
        if e.errno == errno.EADDRNOTAVAIL:
            return f"{where}: no local interface has that address"
        if e.errno == errno.EACCES:
            return f"{where}: permission denied; ports below 1024 need CAP_NET_BIND_SERVICE"
        return f"{where}: {e.strerror or e}"

"""How litelb proves its identity to an NSX manager: basic, session or certificate.

Each strategy configures one `requests.Session` per manager; the NSX client
owns the sessions and the sending, so retries and metrics stay in one place.
"""

from __future__ import annotations

import base64
from typing import Callable, Optional

import requests
from requests.auth import AuthBase

from litelb.config import NsxConfig, Secret

# send(method, path, **requests_kwargs) on one manager's session, counted like any request.
Send = Callable[..., requests.Response]

SESSION_CREATE = "/api/session/create"
SESSION_DESTROY = "/api/session/destroy"
XSRF_HEADER = "X-XSRF-TOKEN"
# NSX answers a request with an expired or unknown session cookie with 403 and this code.
SESSION_EXPIRED_CODE = 98

_PASSWORD_HINT = (
    "check username and password_file; the account locks after repeated failures, "
    "so litelb waits before it tries again"
)


class _SecretBasicAuth(AuthBase):
    """HTTP basic auth that reveals the password only while building the header."""

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username
        self.password = password

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        raw = f"{self._username}:{self.password.reveal()}".encode()
        r.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        return r

    def __repr__(self) -> str:
        return f"_SecretBasicAuth({self._username!r}, '***')"


class Auth:
    """One way of authenticating; the default is 'nothing beyond the TLS session'."""

    kind = ""
    # What an operator should check when NSX rejects the credentials.
    hint = ""
    # True when the manager hands out a session that must be created before requests.
    needs_login = False

    def configure(self, session: requests.Session) -> None:
        """Prepare a fresh per-manager session."""

    def login(self, session: requests.Session, send: Send) -> requests.Response:
        raise NotImplementedError

    def logout(self, session: requests.Session, send: Send) -> None:
        """End what login started; best effort."""

    def expired(self, status: int, error_code: Optional[int]) -> bool:
        """Whether an answer means 'log in again' rather than 'bad credentials'."""
        return False

    def use_password(self, password: Secret) -> bool:
        """Send `password` from now on; True when it differs from the one in use."""
        return False


class BasicAuth(Auth):
    kind = "basic"
    hint = _PASSWORD_HINT

    def __init__(self, username: str, password: Secret) -> None:
        self._auth = _SecretBasicAuth(username, password)

    def configure(self, session: requests.Session) -> None:
        session.auth = self._auth

    def use_password(self, password: Secret) -> bool:
        changed = password != self._auth.password
        self._auth.password = password
        return changed


class SessionAuth(Auth):
    """NSX's session: a JSESSIONID cookie plus an XSRF token, valid on one manager node."""

    kind = "session"
    hint = _PASSWORD_HINT
    needs_login = True

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username
        self._password = password

    def login(self, session: requests.Session, send: Send) -> requests.Response:
        # A stale cookie or token must not ride along with the new login.
        session.cookies.clear()
        session.headers.pop(XSRF_HEADER, None)
        resp = send(
            "POST",
            SESSION_CREATE,
            data={"j_username": self._username, "j_password": self._password.reveal()},
        )
        token = resp.headers.get("x-xsrf-token")
        if resp.status_code == 200 and token:
            session.headers[XSRF_HEADER] = token
        return resp

    def logout(self, session: requests.Session, send: Send) -> None:
        send("POST", SESSION_DESTROY)
        session.cookies.clear()
        session.headers.pop(XSRF_HEADER, None)

    def expired(self, status: int, error_code: Optional[int]) -> bool:
        return status == 403 and error_code == SESSION_EXPIRED_CODE

    def use_password(self, password: Secret) -> bool:
        changed = password != self._password
        self._password = password
        return changed


class CertificateAuth(Auth):
    """A principal identity: mutual TLS with a client certificate, no password.

    The NSX client presents the certificate: it follows the files on disk."""

    kind = "certificate"
    hint = "check client_cert and client_key and that NSX knows this principal identity"


def auth_for(cfg: NsxConfig) -> Auth:
    """The strategy `cfg.auth` names; ValueError when its inputs are missing."""
    if cfg.auth == "certificate":
        if not cfg.client_cert:
            raise ValueError("[nsx] auth = 'certificate' needs client_cert")
        return CertificateAuth()
    if cfg.auth not in ("basic", "session"):
        raise ValueError(f"[nsx] auth must be basic, session or certificate, not {cfg.auth!r}")
    if cfg.password is None:
        raise ValueError(f"[nsx] auth = {cfg.auth!r} needs a password")
    if cfg.auth == "session":
        return SessionAuth(cfg.username, cfg.password)
    return BasicAuth(cfg.username, cfg.password)

"""Requests to the NSX managers of one cluster, and everything that is not the API itself.

A session per manager; failover from one that does not answer; retries, with
backoff, of what NSX means as "later" (429, 502, 503, 504, lost connections);
the credentials (password or session login, client certificate, CA bundle or
pinned thumbprint), followed when they change; and the wait after NSX rejects
them, so a wrong password never locks the account. What the requests mean is
litelb.adapters.nsx's job. One thread uses a transport at a time.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import warnings
from functools import partial
from random import SystemRandom
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from litelb.adapters.nsx_auth import Auth, CertificateAuth, auth_for
from litelb.adapters.nsx_errors import (
    MAX_DETAIL,
    RETRYABLE_STATUS,
    NsxAuthError,
    NsxConflictError,
    NsxError,
    NsxNotFoundError,
    NsxResponseError,
    NsxUnavailableError,
    error_class,
    parse_error_body,
    retry_after,
)
from litelb.adapters.nsx_tls import TlsFiles
from litelb.backoff import AUTH_RETRY, Backoff, BackoffPolicy
from litelb.config import NsxConfig, Secret

log = logging.getLogger("litelb.nsx")

API = "/policy/api/v1"
# NSX protects an object a principal identity (client certificate) created from every
# other user; each node may have its own identity, and takeover and hand-over must work
# across them, so every write says it means to overwrite.
_WRITE_HEADERS = {"X-Allow-Overwrite": "true"}
# Logging out is a courtesy; it must not hold up a daemon that systemd is stopping.
_LOGOUT_TIMEOUT = 2.0
# A route, a Tier-1 or a realization answer is a few kB; anything much bigger is not
# NSX's and is not read into memory.
MAX_BODY = 1 << 20


def _short_cause(exc: BaseException) -> str:
    """The innermost useful words of a requests/urllib3 connection error."""
    reason: BaseException = exc
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, urllib3.exceptions.MaxRetryError) and inner.reason is not None:
        reason = inner.reason
    elif isinstance(inner, BaseException):
        reason = inner
    if isinstance(reason, urllib3.exceptions.ProtocolError) and len(reason.args) == 2:
        # ('Connection aborted.', RemoteDisconnected('Remote end closed ...'))
        return f"{str(reason.args[0]).rstrip('.')}: {reason.args[1]}"[:MAX_DETAIL]
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>: |\w+\(host=[^)]*\): ", "", str(reason))
    return (text or type(reason).__name__)[:MAX_DETAIL]


# --- transport ----------------------------------------------------------------


class BodyTooLarge(requests.RequestException):
    """An answer longer than MAX_BODY; the rest of it was never read."""


def _read_capped(resp: requests.Response) -> None:
    """Read the body of a streamed answer into resp.content, at most MAX_BODY bytes."""
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY:
                raise BodyTooLarge(f"the answer is longer than {MAX_BODY} bytes", response=resp)
            chunks.append(chunk)
    except BaseException:
        resp.close()
        raise
    # What requests itself does once a streamed body has been read.
    resp._content = b"".join(chunks)
    resp._content_consumed = True


class _PinnedAdapter(HTTPAdapter):
    """Accepts exactly the manager certificate with this SHA-256 fingerprint.

    urllib3's assert_fingerprint works the same on 1.26 and 2.x; requests then
    must not verify against a CA, which the caller arranges with verify=False.
    """

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


def _fingerprint(thumbprint: str) -> str:
    fp = thumbprint.replace(":", "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", fp):
        raise ValueError("[nsx] thumbprint must be a SHA-256 fingerprint (64 hex digits)")
    return fp


def _manager_url(manager: str) -> str:
    url = manager.strip().rstrip("/")
    return url if "://" in url else "https://" + url


class _Manager:
    """One NSX manager node and the HTTP session kept with it."""

    def __init__(self, url: str, session: requests.Session) -> None:
        self.url = url
        self.session = session
        self.logged_in = False


class NsxTransport:
    """Sends requests under API to the managers of `cfg`.

    By default each call makes one round over the managers and leaves waiting and
    trying again to its caller (the engine's backoff spans calls and passes); the
    command-line tools ask for a few rounds, spaced by `backoff`.
    """

    def __init__(
        self,
        cfg: NsxConfig,
        *,
        on_request: Optional[Callable[[str, str, float], None]] = None,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 1,
        backoff: Optional[BackoffPolicy] = None,
        auth_retry_after: float = AUTH_RETRY,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = SystemRandom().random,
        reread_password: Optional[Callable[[], Optional[Secret]]] = None,
    ) -> None:
        """`reread_password` reads the NSX password again after NSX rejected the one
        in use; it returns None (having said why) when it cannot."""
        if not cfg.managers:
            raise ValueError("[nsx] managers must name at least one manager")
        self._cfg = cfg
        self._on_request = on_request
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff or BackoffPolicy()
        self._auth_retry_after = auth_retry_after
        self._clock = clock
        self._random = random
        self._auth: Auth = auth_for(cfg)
        self._timeout = (cfg.timeout, cfg.timeout)
        self._fingerprint = _fingerprint(cfg.thumbprint) if cfg.thumbprint else ""
        verified_by_ca = not (cfg.insecure or self._fingerprint)
        certificate = isinstance(self._auth, CertificateAuth)
        self._tls = TlsFiles(
            cfg.client_cert if certificate else "",
            cfg.client_key if certificate else "",
            cfg.ca_file if verified_by_ca else "",
        )
        self._verify: Any = verified_by_ca
        self._managers = [self._connect(_manager_url(m)) for m in cfg.managers]
        self._current = 0
        self._reachable: Optional[bool] = None
        self._auth_failure: Optional[NsxAuthError] = None
        self._auth_blocked_until = 0.0
        self._reread_password = reread_password
        # Set by any thread (systemctl reload), taken up by the one using the client.
        self._new_password: Optional[Secret] = None
        self._new_password_lock = threading.Lock()
        if cfg.insecure and not self._fingerprint:
            self._silence_insecure_warnings()

    def _connect(self, url: str) -> _Manager:
        session = requests.Session()
        # The configuration is the only source of truth: no proxy, CA bundle or
        # .netrc credentials from the environment.
        session.trust_env = False
        session.headers["Accept"] = "application/json"
        if self._fingerprint:
            session.mount("https://", _PinnedAdapter(self._fingerprint))
        self._auth.configure(session)
        self._use_tls_files(session)
        return _Manager(url, session)

    def _use_tls_files(self, session: requests.Session) -> None:
        session.verify = self._tls.ca_bundle or self._verify
        session.cert = self._tls.client_cert

    def _refresh_tls_files(self) -> bool:
        """Follow a rotated client certificate or CA bundle: connections made with
        the old ones are closed, so NSX sees the new ones from the next request on.
        True when new files are in use."""
        if not self._tls.refresh():
            return False
        for m in self._managers:
            self._use_tls_files(m.session)
            # Open connections keep the identity of their handshake.
            for adapter in m.session.adapters.values():
                adapter.close()
        return True

    def _silence_insecure_warnings(self) -> None:
        # urllib3 warns on every unverified request; the daemon warns once at start
        # instead. The filter names only these managers' hosts, so other users of
        # urllib3 in the process keep their warnings.
        for m in self._managers:
            host = urlsplit(m.url).hostname or ""
            warnings.filterwarnings(
                "ignore",
                message=rf"Unverified HTTPS request is being made to host '{re.escape(host)}'",
                category=urllib3.exceptions.InsecureRequestWarning,
            )

    @property
    def manager(self) -> str:
        """The manager URL requests go to first."""
        return self._managers[self._current].url

    @property
    def reachable(self) -> Optional[bool]:
        """Whether the last request got an answer from NSX; None before the first."""
        return self._reachable

    def set_password(self, password: Secret) -> None:
        """Use `password` from the next request on (callable from any thread); a new
        one ends the wait after an authentication failure."""
        with self._new_password_lock:
            self._new_password = password

    def close(self) -> None:
        """Log out of every manager session (best effort) and drop connections."""
        for m in self._managers:
            if m.logged_in:
                try:
                    timeout = min(self._cfg.timeout, _LOGOUT_TIMEOUT)
                    send = partial(self._send, m, timeout=(timeout, timeout))
                    self._auth.logout(m.session, send)
                except requests.RequestException as exc:
                    log.debug("logout from %s failed: %s", m.url, _short_cause(exc))
                m.logged_in = False
            m.session.close()
        self._tls.close()

    # --- answers ----------------------------------------------------------

    def json(self, resp: requests.Response) -> dict:
        try:
            body = json.loads(resp.content)
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise self.unusable(resp, "the answer is not a JSON object")
        return body

    def unusable(self, resp: requests.Response, detail: str) -> NsxResponseError:
        return NsxResponseError(
            resp.request.method or "",
            resp.url,
            resp.status_code,
            detail=detail,
            manager=self._managers[self._current].url,
            hint="litelb changed nothing; a proxy or a faulty NSX may be answering",
        )

    def error(
        self, resp: requests.Response, attempts: int = 1, retry_after: Optional[float] = None
    ) -> NsxError:
        """The exception for an answer; method and URL are those of the request that
        got it, which for a failed session login is the login itself."""
        code, detail = parse_error_body(resp.text, resp.reason or "")
        cls = error_class(resp.status_code, code, detail)
        manager = self._managers[self._current].url
        hint = {
            NsxAuthError: self._auth.hint,
            NsxConflictError: "the route changed since it was read; re-read and decide again",
            NsxNotFoundError: (
                f"check that the Tier-1 {self._cfg.tier1_path} exists ([nsx] tier1, project)"
            ),
            NsxUnavailableError: "NSX is overloaded or failing",
        }.get(cls, "")
        return cls(
            resp.request.method or "",
            resp.url,
            resp.status_code,
            code,
            detail,
            manager=manager,
            hint=hint,
            attempts=attempts,
            retry_after=retry_after,
        )

    def _send(self, m: _Manager, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP request, observed; `path` is relative to the manager."""
        kwargs.setdefault("timeout", self._timeout)
        start = time.monotonic()
        try:
            resp = m.session.request(
                method, m.url + path, allow_redirects=False, stream=True, **kwargs
            )
            _read_capped(resp)
        except requests.RequestException:
            self._observe(method, "error", time.monotonic() - start)
            raise
        self._observe(method, str(resp.status_code), time.monotonic() - start)
        return resp

    def _observe(self, method: str, code: str, seconds: float) -> None:
        if self._on_request is not None:
            self._on_request(method, code, seconds)

    def _exchange(
        self, m: _Manager, method: str, url_path: str, **kwargs: Any
    ) -> requests.Response:
        """The request on manager `m`; when NSX rejects the password and it has been
        changed since it was read, once more at once with the new one."""
        resp = self._exchange_once(m, method, url_path, **kwargs)
        if resp.status_code in (401, 403) and self._credentials_changed():
            log.info("NSX manager %s rejected the credentials; trying the new ones", m.url)
            resp = self._exchange_once(m, method, url_path, **kwargs)
        return resp

    def _credentials_changed(self) -> bool:
        """Read the password and the client certificate files again; True when
        either differs from what is in use. A principal identity's certificate may
        be replaced, and the old one revoked, between the check before a request
        and the request itself."""
        password = self._password_changed()
        return self._refresh_tls_files() or password

    def _password_changed(self) -> bool:
        """Read the password again; True when it differs from the one in use."""
        if self._reread_password is None:
            return False
        password = self._reread_password()
        return password is not None and self._use_password(password)

    def _use_password(self, password: Secret) -> bool:
        if not self._auth.use_password(password):
            return False
        # A session belongs to the password it was created with.
        for m in self._managers:
            m.logged_in = False
        return True

    def _exchange_once(
        self, m: _Manager, method: str, url_path: str, **kwargs: Any
    ) -> requests.Response:
        """The request on manager `m`, logging in first and once more if the session expired."""
        send = partial(self._send, m)
        if self._auth.needs_login and not m.logged_in:
            resp = self._auth.login(m.session, send)
            if resp.status_code != 200:
                return resp
            m.logged_in = True
        resp = send(method, url_path, **kwargs)
        if self._auth.needs_login and self._auth.expired(
            resp.status_code, parse_error_body(resp.text)[0]
        ):
            log.info("NSX session with %s expired; logging in again", m.url)
            m.logged_in = False
            login = self._auth.login(m.session, send)
            if login.status_code != 200:
                return login
            m.logged_in = True
            resp = send(method, url_path, **kwargs)
        return resp

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send with failover and up to `max_attempts` rounds; returns the first answer
        that is not 'try later'. Raises NsxAuthError, NsxUnavailableError (carrying
        NSX's Retry-After), NsxResponseError or NsxError (TLS).

        A round tries each manager that does not answer at all once, at once; a
        manager that answers 'later' (429, 502, 503, 504) ends the round, since
        asking its peers would only add load to a cluster under stress."""
        # New credentials are tried at once, even while an authentication wait runs.
        renewed = self._refresh_tls_files()
        with self._new_password_lock:
            new_password, self._new_password = self._new_password, None
        if (new_password is not None and self._use_password(new_password)) or renewed:
            self._auth_failure = None
        if self._auth_failure is not None:
            if self._clock() < self._auth_blocked_until:
                raise self._auth_failure.again()
            self._auth_failure = None
            # The operator may have replaced the password while litelb waited; a
            # login with the one NSX already refused would only count towards lockout.
            self._password_changed()
        url_path = API + path
        if method in ("PUT", "PATCH", "DELETE"):
            kwargs["headers"] = {**kwargs.get("headers", {}), **_WRITE_HEADERS}
        backoff = Backoff(self._backoff)
        warned = False
        last_error: Optional[NsxError] = None
        last_cause: Optional[BaseException] = None
        requests_sent = 0
        for attempt in range(1, self._max_attempts + 1):
            tls_failed = 0
            retry_hint: Optional[float] = None
            for _ in range(len(self._managers)):
                m = self._managers[self._current]
                requests_sent += 1
                try:
                    resp = self._exchange(m, method, url_path, **kwargs)
                except requests.exceptions.SSLError as exc:
                    # A certificate that does not verify is configuration, not weather:
                    # each manager gets one try, then the error stands.
                    tls_failed += 1
                    last_cause = exc
                    last_error = NsxError(
                        method,
                        m.url + url_path,
                        None,
                        detail=f"TLS failed: {_short_cause(exc)}",
                        manager=m.url,
                        hint="check ca_file, thumbprint and insecure in [nsx]",
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    last_cause = exc
                    last_error = NsxUnavailableError(
                        method,
                        m.url + url_path,
                        None,
                        detail=_short_cause(exc),
                        manager=m.url,
                        hint="check that the managers are up and reachable",
                        attempts=requests_sent,
                    )
                except BodyTooLarge as exc:
                    self._reachable = True
                    raise NsxResponseError(
                        method,
                        m.url + url_path,
                        exc.response.status_code if exc.response is not None else None,
                        detail=str(exc),
                        manager=m.url,
                        hint="litelb changed nothing; a proxy or a faulty NSX may be answering",
                    ) from None
                except requests.RequestException as exc:
                    self._reachable = False
                    raise NsxError(
                        method, m.url + url_path, None, detail=_short_cause(exc), manager=m.url
                    ) from exc
                else:
                    if resp.status_code not in RETRYABLE_STATUS:
                        self._reachable = True
                        if resp.status_code in (401, 403):
                            raise self._auth_failed(resp)
                        return resp
                    last_cause = None
                    retry_hint = retry_after(resp.headers.get("Retry-After"))
                    last_error = self.error(resp, attempts=requests_sent, retry_after=retry_hint)
                    break
                self._current = (self._current + 1) % len(self._managers)
                if tls_failed == len(self._managers):
                    break
                if _ + 1 < len(self._managers):
                    warned = self._note(warned, "%s; trying %s", last_error, self.manager)
            if tls_failed == len(self._managers):
                break
            if attempt < self._max_attempts:
                backoff = backoff.failed(0.0, self._random, hint=retry_hint)
                delay = backoff.wait(0.0)
                warned = self._note(warned, "%s; retrying in %.2fs", last_error, delay)
                self._sleep(delay)
        self._reachable = False
        assert last_error is not None
        raise last_error from last_cause

    @staticmethod
    def _note(warned: bool, fmt: str, *args: Any) -> bool:
        # One warning per call that needs retries; the rest only at debug level.
        log.log(logging.DEBUG if warned else logging.WARNING, fmt, *args)
        return True

    def _auth_failed(self, resp: requests.Response) -> NsxAuthError:
        err = self.error(resp)
        assert isinstance(err, NsxAuthError)
        # Every further login with bad credentials counts towards NSX's account
        # lockout, so nothing is sent until auth_retry_after has passed.
        self._auth_failure = err
        self._auth_blocked_until = self._clock() + self._auth_retry_after
        return err

"""What NSX's answers mean: the NSX adapter's exceptions, and the pure functions
that tell which one an answer is (status, NSX error code, Retry-After).

Each exception's str() is one line an operator can act on: what was asked of which
manager, what NSX answered, and what to check.
"""

from __future__ import annotations

import json
import re
from typing import Optional

from litelb.engine.store import RouteStoreAuthError, RouteStoreConflictError, RouteStoreError

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# 500012: "The path=[...] is invalid", NSX's answer for a child of a missing Tier-1.
PATH_INVALID_CODE = 500012
# 500045: the object is still being deleted; re-reading later sorts it out, like a conflict.
PENDING_DELETE_CODE = 500045
_STALE_WORDS = re.compile(r"modified|stale|revision", re.IGNORECASE)
# How much of an answer an error message quotes.
MAX_DETAIL = 300


class NsxError(RouteStoreError):
    """An NSX request that did not do what was asked; str() is one actionable line."""

    def __init__(
        self,
        method: str,
        url: str,
        status: Optional[int],
        error_code: Optional[int] = None,
        detail: str = "",
        *,
        manager: str = "",
        hint: str = "",
        attempts: int = 1,
        summary: str = "",
        retry_after: Optional[float] = None,
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.error_code = error_code
        self.detail = detail
        self.manager = manager
        self.hint = hint
        self.attempts = attempts
        self.summary = summary
        super().__init__(self._line(), retry_after=retry_after)

    @property
    def path(self) -> str:
        return self.url[len(self.manager) :] if self.url.startswith(self.manager) else self.url

    def _line(self) -> str:
        path = self.path
        if self.summary:
            line = self.summary
        elif self.status is None:
            line = f"NSX manager {self.manager} did not answer {self.method} {path}"
        else:
            line = f"NSX manager {self.manager} answered {self.status} for {self.method} {path}"
        if self.attempts > 1:
            line += f" (after {self.attempts} attempts)"
        if self.detail:
            line += f": {self.detail}"
        if self.error_code is not None:
            line += f" (error {self.error_code})"
        if self.hint:
            line += f": {self.hint}"
        return line

    def again(self) -> NsxError:
        """A fresh copy, to raise once more without growing the original's traceback."""
        return type(self)(
            self.method,
            self.url,
            self.status,
            self.error_code,
            self.detail,
            manager=self.manager,
            hint=self.hint,
            attempts=self.attempts,
            summary=self.summary,
            retry_after=self.retry_after,
        )


class NsxAuthError(NsxError, RouteStoreAuthError):
    """NSX rejected the credentials (401/403); litelb waits before it tries again."""


class NsxConflictError(NsxError, RouteStoreConflictError):
    """Someone else wrote the object since it was read: re-read and re-decide."""


class NsxNotFoundError(NsxError):
    """The Tier-1 gateway does not exist."""


class NsxUnavailableError(NsxError):
    """Every attempt ended in 429/502/503/504 or a connection failure."""


class NsxResponseError(NsxError):
    """NSX answered with something litelb cannot use: not JSON, the wrong shape, too big."""


def parse_error_body(text: str, reason: str = "") -> tuple[Optional[int], str]:
    """(error_code, detail) from an NSX error answer; detail joins error_message and
    the related errors. Bodies that are not NSX's JSON (a proxy's HTML) give a short
    excerpt instead."""
    try:
        body = json.loads(text)
    except ValueError:
        excerpt = " ".join(re.sub(r"<[^>]*>", " ", text).split())
        return None, (excerpt[:MAX_DETAIL] or reason)
    if not isinstance(body, dict):
        return None, reason
    code = body.get("error_code")
    messages = [body.get("error_message")]
    for related in body.get("related_errors") or ():
        if isinstance(related, dict):
            messages.append(related.get("error_message"))
    detail = "; ".join(m.strip() for m in messages if isinstance(m, str) and m.strip())
    return (code if isinstance(code, int) else None), (detail or reason)


def error_class(status: int, error_code: Optional[int], detail: str) -> type[NsxError]:
    """Which NsxError an answer is; a purely computational function."""
    if status in (401, 403):
        return NsxAuthError
    if status in (409, 412):
        return NsxConflictError
    if status == 400 and (error_code == PENDING_DELETE_CODE or _STALE_WORDS.search(detail)):
        return NsxConflictError
    if status == 404 or (status == 400 and error_code == PATH_INVALID_CODE):
        return NsxNotFoundError
    if status in RETRYABLE_STATUS:
        return NsxUnavailableError
    return NsxError


def retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a Retry-After header; None when absent or not a number of seconds."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None

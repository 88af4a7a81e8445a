"""How long to wait after a failure, for every retry in litelb: NSX, Kubernetes, the engine.

Many clusters often share one NSX manager and one NSX user, so an outage must be met
with less load, not more: the wait grows exponentially with full jitter (nodes that
failed together do not retry together), starting at `first` and capped at `cap`, and
only a success starts the sequence again. A server's own hint (Retry-After) lengthens
one wait but does not reset the sequence. Pure values: the caller supplies the clock
reading and the random source.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

# Repeated bad logins lock an NSX (or LDAP) account, so after an authentication
# failure nothing is sent for this long, whatever the backoff says.
AUTH_RETRY = 60.0


@dataclass(frozen=True)
class BackoffPolicy:
    """The shape of the waits: `first` after one failure, up to `cap` after many."""

    first: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError("backoff needs 0 < first <= cap")

    def delay(self, failures: int, random: Callable[[], float]) -> float:
        """The wait after the `failures`-th failure in a row (1-based).

        Full jitter between `first` and a ceiling that doubles with each failure:
        `random()` is uniform in [0, 1).
        """
        exponent = min(max(failures, 1), 64)
        ceiling = min(self.cap, self.first * 2.0**exponent)
        return self.first + random() * (ceiling - self.first)

    def hinted(self, delay: float, hint: Optional[float]) -> float:
        """`delay`, lengthened to a server's Retry-After `hint`, which is capped at `cap`
        so a hint of an hour does not silence litelb for an hour."""
        if hint is None or hint != hint:  # NaN
            return delay
        return max(delay, min(max(hint, 0.0), self.cap))


@dataclass(frozen=True)
class Backoff:
    """Failures in a row and when the next attempt is due (None: at once)."""

    policy: BackoffPolicy = BackoffPolicy()
    failures: int = 0
    retry_at: Optional[float] = None

    def failed(
        self,
        now: float,
        random: Callable[[], float],
        *,
        hint: Optional[float] = None,
        at_least: float = 0.0,
    ) -> Backoff:
        """After one more failure at `now`: a server `hint` or a floor such as
        AUTH_RETRY may lengthen this wait; the sequence goes on either way."""
        failures = self.failures + 1
        delay = max(self.policy.hinted(self.policy.delay(failures, random), hint), at_least)
        return replace(self, failures=failures, retry_at=now + delay)

    def succeeded(self) -> Backoff:
        """Only a success starts the sequence again."""
        return replace(self, failures=0, retry_at=None)

    def wait(self, now: float) -> float:
        """Seconds until the next attempt is due; 0 when it is."""
        return 0.0 if self.retry_at is None else max(self.retry_at - now, 0.0)

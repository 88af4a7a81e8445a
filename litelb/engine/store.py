"""What the engine needs from the place the route lives, and the failures it tells apart.

The NSX adapter implements RouteStore and raises these errors (its own are
subclasses), so the engine depends on nothing but this module.
"""

from __future__ import annotations

from typing import Optional, Protocol

from litelb.model import Route


class RouteStoreError(Exception):
    """The store did not do what was asked; str() is one line an operator can act on."""

    def __init__(self, message: str, *, retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds the store asked us to wait, if it said


class RouteStoreAuthError(RouteStoreError):
    """The store rejected our credentials: retrying soon would lock the account."""


class RouteStoreConflictError(RouteStoreError):
    """Someone else wrote the route since it was read: re-read and decide again."""


class RouteStore(Protocol):
    """The one route, read and written by compare-and-swap on its revision."""

    @property
    def manager(self) -> str: ...

    @property
    def reachable(self) -> Optional[bool]: ...

    def get_route(self) -> Optional[Route]:
        """The route as the store holds it (with its revision); None when missing."""

    def put_route(self, route: Route, revision: Optional[int]) -> Route:
        """Replace the route held at `revision` (None: create it); returns it as read back."""

    def realization_state(self) -> Optional[str]:
        """Whether the store has applied the last write (REALIZED, …); None when unknown."""

"""The NSX Policy API client: one static route on one Tier-1, written by compare-and-swap.

Only this module and its transport (litelb.adapters.nsx_transport) talk to NSX.
The client knows the API: which paths, which bodies, what each answer means for
the route; every answer it cannot use becomes one of the exceptions of
litelb.adapters.nsx_errors. Deciding what to write is the caller's job. One
thread uses a client at a time.
"""

from __future__ import annotations

from typing import Any, Optional

from litelb.adapters.nsx_body import (
    InvalidBody,
    Tier1Info,
    read_back_matches,
    route_from_body,
    route_to_body,
    tier1_from_body,
)
from litelb.adapters.nsx_errors import NsxConflictError, NsxError
from litelb.adapters.nsx_transport import API, NsxTransport
from litelb.config import NsxConfig, Secret
from litelb.model import Route


class NsxClient:
    """Reads and writes the route `cfg.route_path` on the Tier-1 `cfg.tier1_path`.

    By default each call makes one round over the managers and leaves waiting and
    trying again to its caller; the command-line tools ask the transport for a few
    rounds.
    """

    def __init__(self, cfg: NsxConfig, **transport: Any) -> None:
        """`transport`: the keyword arguments of NsxTransport (request observer,
        rounds and backoff, authentication wait, clock, password re-reading)."""
        if not cfg.route_id:
            raise ValueError("[nsx] route_id must be resolved before the client is built")
        self._cfg = cfg
        self._http = NsxTransport(cfg, **transport)

    def __repr__(self) -> str:
        return (
            f"NsxClient(manager={self.manager!r}, route={self._cfg.route_path!r}, "
            f"auth={self._cfg.auth!r})"
        )

    @property
    def manager(self) -> str:
        """The manager URL requests go to first."""
        return self._http.manager

    @property
    def reachable(self) -> Optional[bool]:
        """Whether the last request got an answer from NSX; None before the first."""
        return self._http.reachable

    def set_password(self, password: Secret) -> None:
        """Use `password` from the next request on (callable from any thread); a new
        one ends the wait after an authentication failure."""
        self._http.set_password(password)

    def close(self) -> None:
        """Log out of every manager session (best effort) and drop connections."""
        self._http.close()

    # --- operations -------------------------------------------------------

    def get_tier1(self) -> Tier1Info:
        path = self._cfg.tier1_path
        resp = self._http.call("GET", path)
        if resp.status_code != 200:
            raise self._http.error(resp)
        body = self._http.json(resp)
        try:
            return tier1_from_body(body, path)
        except InvalidBody as e:
            raise self._http.unusable(resp, f"the Tier-1 is not what NSX sends: {e}") from None

    def get_route(self) -> Optional[Route]:
        path = self._cfg.route_path
        resp = self._http.call("GET", path)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._http.error(resp)
        body = self._http.json(resp)
        if body.get("marked_for_delete") is True:
            return None
        try:
            return route_from_body(body)
        except InvalidBody as e:
            raise self._http.unusable(resp, f"the route is not what NSX sends: {e}") from None

    def put_route(self, route: Route, revision: Optional[int]) -> Route:
        """Compare-and-swap: replace the route NSX holds at `revision` (None: create).

        NsxConflictError when someone else wrote first; never retried here,
        the caller re-reads and re-decides. Returns the route as read back.
        """
        if not route.next_hops:
            raise ValueError("refusing to write a route without next hops")
        path = self._cfg.route_path
        body = route_to_body(route, self._cfg.route_id, revision)
        resp = self._http.call("PUT", path, json=body)
        if resp.status_code not in (200, 201, 204):
            raise self._http.error(resp)
        read = self.get_route()
        if read is None or not read_back_matches(read, route, self._cfg.route_id):
            m = self._http.manager
            found = "no route" if read is None else f"next hops {', '.join(read.next_hops)}"
            raise NsxError(
                "PUT",
                m + API + path,
                resp.status_code,
                detail=f"reading it back found {found}, not what was written",
                manager=m,
                hint="another writer or an NSX policy may be changing the route",
                summary=f"NSX manager {m} accepted PUT {API + path}",
            )
        return read

    def delete_route(self, revision: Optional[int] = None) -> None:
        """Delete the route; gone already is fine. With `revision`, refuse
        (NsxConflictError) if the route changed since it was read: NSX's DELETE
        takes no revision, so this narrows the race rather than closing it."""
        path = self._cfg.route_path
        if revision is not None:
            current = self.get_route()
            if current is None:
                return
            if current.revision != revision:
                m = self._http.manager
                raise NsxConflictError(
                    "DELETE",
                    m + API + path,
                    None,
                    detail=f"the route is at revision {current.revision}, not {revision}",
                    manager=m,
                    hint="re-read the route and decide again",
                    summary=f"litelb did not send DELETE {API + path} to NSX manager {m}",
                )
        resp = self._http.call("DELETE", path)
        if resp.status_code not in (200, 204, 404):
            raise self._http.error(resp)

    def realization_state(self) -> Optional[str]:
        """REALIZED, UNREALIZED, ERROR, …, summed over the route's realized entities;
        None when NSX does not know it (yet)."""
        path = f"{self._cfg.policy_prefix}/realized-state/realized-entities"
        resp = self._http.call("GET", path, params={"intent_path": self._cfg.route_path})
        if resp.status_code in (400, 404):
            return None
        if resp.status_code != 200:
            raise self._http.error(resp)
        results = self._http.json(resp).get("results")
        if not isinstance(results, list):
            return None
        states = [
            r["state"] for r in results if isinstance(r, dict) and isinstance(r.get("state"), str)
        ]
        if not states:
            return None
        if "ERROR" in states:
            return "ERROR"
        pending = [s for s in states if s != "REALIZED"]
        return pending[0] if pending else "REALIZED"

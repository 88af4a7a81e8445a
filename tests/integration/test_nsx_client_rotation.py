"""The NSX client with credentials replaced under it, against the simulator: a
password read again after NSX refuses the one in use, a password handed in by
`systemctl reload`, and how often a refused password is tried (the clock is
injected, so the minute between bad logins passes at once)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import pytest

from litelb.adapters.nsx import NsxClient
from litelb.adapters.nsx_errors import NsxAuthError
from litelb.backoff import AUTH_RETRY
from litelb.config import Secret
from tests.integration.test_nsx_client import DESIRED, PASSWORD, config, start_sim
from tests.nsxsim import NsxSimulator

NEW = "new-Pw-4711"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class PasswordFile:
    """Stands in for the password sources: what an operator wrote last."""

    def __init__(self) -> None:
        self.value: Optional[str] = PASSWORD
        self.reads = 0

    def read(self) -> Optional[Secret]:
        self.reads += 1
        return None if self.value is None else Secret(self.value)


@pytest.fixture
def sim() -> Iterator[NsxSimulator]:
    s = start_sim()
    yield s
    s.stop()


def client_for(sim: NsxSimulator, source: PasswordFile, clock: FakeClock, **cfg: str) -> NsxClient:
    return NsxClient(config(sim.url, **cfg), clock=clock, reread_password=source.read)


@pytest.mark.parametrize("auth", ["basic", "session"])
def test_a_password_changed_before_nsx_refuses_the_old_one_is_used_at_once(
    sim: NsxSimulator, auth: str
) -> None:
    source, clock = PasswordFile(), FakeClock()
    client = client_for(sim, source, clock, auth=auth)
    try:
        client.put_route(DESIRED, None)
        source.value = NEW
        sim.set_password(NEW)
        sim.expire_sessions()
        assert client.get_route() is not None
        assert len(sim.login_failures()) == 1
    finally:
        client.close()


def test_an_unchanged_password_waits_a_minute_then_the_new_one_is_read(
    sim: NsxSimulator,
) -> None:
    source, clock = PasswordFile(), FakeClock()
    client = client_for(sim, source, clock)
    try:
        sim.set_password(NEW)
        with pytest.raises(NsxAuthError):
            client.get_route()
        assert len(sim.login_failures()) == 1
        # The file changes, but the failure is recent: nothing goes to NSX.
        source.value = NEW
        clock.now += AUTH_RETRY / 2
        sent = len(sim.requests())
        with pytest.raises(NsxAuthError):
            client.get_route()
        assert len(sim.requests()) == sent
        # The minute is over: the password is read again before the next login.
        clock.now += AUTH_RETRY / 2
        client.put_route(DESIRED, None)
        assert len(sim.login_failures()) == 1
    finally:
        client.close()


def test_a_password_from_systemctl_reload_ends_the_wait(sim: NsxSimulator) -> None:
    source, clock = PasswordFile(), FakeClock()
    client = client_for(sim, source, clock, auth="session")
    try:
        client.put_route(DESIRED, None)
        sim.set_password(NEW)
        sim.expire_sessions()
        with pytest.raises(NsxAuthError):
            client.get_route()
        client.set_password(Secret(NEW))
        assert client.get_route() is not None
        assert len(sim.login_failures()) == 1
        logins = [r for r in sim.requests() if r.path == "/api/session/create"]
        assert [r.status for r in logins] == [200, 403, 200]
    finally:
        client.close()


def test_a_password_that_cannot_be_read_again_is_not_retried(sim: NsxSimulator) -> None:
    source, clock = PasswordFile(), FakeClock()
    client = client_for(sim, source, clock)
    try:
        sim.set_password(NEW)
        source.value = None
        with pytest.raises(NsxAuthError) as refused:
            client.get_route()
        assert source.reads == 1 and len(sim.login_failures()) == 1
        assert PASSWORD not in str(refused.value) and NEW not in str(refused.value)
    finally:
        client.close()

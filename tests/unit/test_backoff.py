"""The one backoff policy: exponential growth with full jitter, a cap, server hints."""

from __future__ import annotations

import random

import pytest

from litelb.backoff import AUTH_RETRY, Backoff, BackoffPolicy


def low() -> float:
    return 0.0


def high() -> float:
    return 0.999999


def failures(backoff: Backoff, n: int, rand=high, start: float = 0.0) -> Backoff:
    for _ in range(n):
        backoff = backoff.failed(start, rand)
    return backoff


def test_first_wait_is_at_least_half_a_second_and_jittered() -> None:
    b = Backoff()
    assert b.failed(0.0, low).retry_at == 0.5
    assert 0.99 < b.failed(0.0, high).retry_at <= 1.0


def test_ceiling_doubles_up_to_the_cap_of_at_least_30_s() -> None:
    ceilings = [failures(Backoff(), n).wait(0.0) for n in range(1, 10)]
    assert ceilings == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30, 30], rel=1e-5)
    assert all(failures(Backoff(), n, low).wait(0.0) == 0.5 for n in range(1, 10))


def test_a_long_outage_never_overflows() -> None:
    assert failures(Backoff(), 5000).wait(0.0) <= 30.0


def test_only_a_success_resets() -> None:
    b = failures(Backoff(), 6)
    assert b.failures == 6
    again = b.succeeded()
    assert again.failures == 0 and again.retry_at is None and again.wait(123.0) == 0.0
    assert again.failed(0.0, high).wait(0.0) == pytest.approx(1.0, rel=1e-5)


def test_retry_after_is_honoured_capped_and_does_not_restart_the_sequence() -> None:
    b = failures(Backoff(), 3)
    hinted = b.failed(100.0, low, hint=3600.0)
    assert hinted.wait(100.0) == 30.0  # capped
    assert hinted.failures == 4
    # The next wait goes on from the fifth failure, not from the first.
    assert hinted.failed(200.0, high).wait(200.0) == pytest.approx(16.0, rel=1e-5)
    assert b.failed(0.0, low, hint=7.0).wait(0.0) == 7.0
    # A hint shorter than the backoff does not shorten it.
    assert b.failed(0.0, high, hint=0.1).wait(0.0) == pytest.approx(8.0, rel=1e-5)
    assert b.failed(0.0, low, hint=float("nan")).wait(0.0) == 0.5
    assert b.failed(0.0, low, hint=-5.0).wait(0.0) == 0.5


def test_a_floor_lengthens_one_wait() -> None:
    b = Backoff().failed(10.0, low, at_least=AUTH_RETRY)
    assert b.wait(10.0) == AUTH_RETRY and AUTH_RETRY >= 60
    assert b.wait(10.0 + AUTH_RETRY) == 0.0


def test_average_rate_during_an_outage_is_below_one_per_second() -> None:
    rng = random.Random(7)
    for _ in range(200):
        b, now, attempts = Backoff(), 0.0, 0
        while now < 20.0:
            attempts += 1
            b = b.failed(now, rng.random)
            now = b.retry_at
        assert attempts <= 20


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(first=0.0)
    with pytest.raises(ValueError):
        BackoffPolicy(first=10.0, cap=1.0)

"""The model check of the leader protocol, CI-sized: 2,100 seeded runs over 3, 5 and 7
nodes (`make modelcheck` runs 20,000)."""

from __future__ import annotations

import pytest

from litelb.core import decide
from tests.model.protocol import check, run


def test_no_invariant_is_violated_in_2100_seeded_runs(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = check(2100)
    report = capsys.readouterr().out
    print(report)
    assert sum(o.writes for o in outcomes) > 2100, "the runs write, and lose races"
    assert sum(o.conflicts for o in outcomes) > 0
    assert not [o for o in outcomes if o.violation], report


def test_a_seed_replays_the_same_run() -> None:
    assert run(42, 5) == run(42, 5)


def test_the_check_finds_a_protocol_without_the_observers_hold_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hold-down started only by this node's own takeovers: seeds that found it flap."""
    # The model runs the engine's own timer code (core.decide.remember), so the
    # mutation goes where the daemon would take it from.
    monkeypatch.setattr(decide, "track_hold_down", lambda previous, **_: previous)
    outcomes = [run(seed, 5) for seed in (10, 19, 34, 58)]
    assert any("stable partition" in (o.violation or "") for o in outcomes)

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import pytest

import litelb.core.health
from litelb.core.health import (
    REMEMBERED_DEPARTURES,
    Health,
    healthy_addresses,
    passing_addresses,
    step,
    step_all,
)

OK, FAIL = True, False


def run(results: Sequence[bool], *, rise: int = 2, fall: int = 2) -> list[bool]:
    """The verdict after each result, starting from a new (healthy) endpoint."""
    verdicts = []
    state = Health()
    for ok in results:
        state = step(state, ok, rise=rise, fall=fall)
        verdicts.append(state.healthy)
    return verdicts


@pytest.mark.parametrize(
    ("results", "verdicts"),
    [
        ([OK, FAIL], [True, True]),
        ([FAIL, FAIL], [True, False]),
        ([FAIL, OK, FAIL, OK, FAIL, OK, FAIL], [True] * 7),
        ([FAIL, FAIL, OK], [True, False, False]),
        ([FAIL, FAIL, OK, OK], [True, False, False, True]),
        ([FAIL, FAIL, OK, FAIL, OK, FAIL, OK], [True, False, False, False, False, False, False]),
        ([FAIL, FAIL, OK, OK, FAIL, FAIL], [True, False, False, True, True, False]),
        ([FAIL, FAIL, FAIL, FAIL, OK, OK], [True, False, False, False, False, True]),
    ],
)
def test_rise_2_fall_2(results, verdicts):
    assert run(results) == verdicts


@pytest.mark.parametrize(
    ("rise", "fall", "results", "verdicts"),
    [
        (1, 1, [FAIL, OK, FAIL], [False, True, False]),
        (1, 3, [FAIL, FAIL, FAIL, OK], [True, True, False, True]),
        (3, 1, [FAIL, OK, OK, OK], [False, False, False, True]),
        (3, 1, [FAIL, OK, OK, FAIL, OK, OK, OK], [False] * 6 + [True]),
    ],
)
def test_other_thresholds(rise, fall, results, verdicts):
    assert run(results, rise=rise, fall=fall) == verdicts


def test_streak_counts_contrary_results_and_resets():
    assert step(Health(), FAIL, rise=2, fall=3) == Health(healthy=True, streak=1)
    assert step(Health(True, 1), FAIL, rise=2, fall=3) == Health(healthy=True, streak=2)
    assert step(Health(True, 2), OK, rise=2, fall=3) == Health(healthy=True, streak=0)
    assert step(Health(True, 2), FAIL, rise=2, fall=3) == Health(healthy=False, streak=0)
    assert step(Health(False, 1), OK, rise=2, fall=3) == Health(healthy=True, streak=0)


def test_step_does_not_mutate():
    before = Health(True, 1)
    step(before, FAIL, rise=2, fall=2)
    assert before == Health(True, 1)


@pytest.mark.parametrize(("rise", "fall"), [(0, 2), (2, 0), (-1, 1)])
def test_thresholds_below_one_are_rejected(rise, fall):
    with pytest.raises(ValueError, match="at least 1"):
        step(Health(), OK, rise=rise, fall=fall)


def test_step_all_new_addresses_start_healthy_then_step():
    states = step_all({}, {"10.0.0.1": OK, "10.0.0.2": FAIL}, rise=2, fall=2)
    assert states == {"10.0.0.1": Health(True, 0), "10.0.0.2": Health(True, 1)}

    states = step_all({}, {"10.0.0.2": FAIL}, rise=2, fall=1)
    assert states == {"10.0.0.2": Health(False, 0)}


def test_step_all_keeps_absent_addresses_withdrawn_and_steps_known_ones():
    current = {"10.0.0.1": Health(True, 1), "10.0.0.2": Health(True, 0)}
    states = step_all(current, {"10.0.0.1": FAIL, "10.0.0.3": OK}, rise=2, fall=2)
    assert states == {
        "10.0.0.1": Health(False, 0),
        "10.0.0.3": Health(True, 0),
        "10.0.0.2": Health(False, 0),
    }
    assert current == {"10.0.0.1": Health(True, 1), "10.0.0.2": Health(True, 0)}


def test_an_address_that_left_and_came_back_needs_rise_successes():
    states = step_all({"10.0.0.1": Health(True, 0)}, {}, rise=2, fall=2)
    assert states == {"10.0.0.1": Health(False, 0)}
    states = step_all(states, {"10.0.0.1": OK}, rise=2, fall=2)
    assert states == {"10.0.0.1": Health(False, 1)}
    assert step_all(states, {"10.0.0.1": OK}, rise=2, fall=2) == {"10.0.0.1": Health(True, 0)}


def test_departures_are_remembered_up_to_a_bound_newest_first():
    states: dict = {}
    for i in range(REMEMBERED_DEPARTURES + 10):
        states = step_all(states, {f"10.0.1.{i}": OK}, rise=2, fall=2)
    assert len(states) == REMEMBERED_DEPARTURES + 1
    assert "10.0.1.0" not in states and f"10.0.1.{REMEMBERED_DEPARTURES + 8}" in states


def test_a_conclusive_failure_withdraws_at_once_a_timeout_needs_fall():
    up = {"10.0.0.1": Health(), "10.0.0.2": Health()}
    states = step_all(
        up, {"10.0.0.1": FAIL, "10.0.0.2": FAIL}, rise=2, fall=3, at=5.0, conclusive={"10.0.0.1"}
    )
    assert states["10.0.0.1"] == Health(False, 0, failing_since=5.0)
    assert states["10.0.0.2"] == Health(True, 1, failing_since=5.0)
    # Coming back still takes `rise` successes.
    assert step(states["10.0.0.1"], OK, rise=2, fall=3).healthy is False


DOWN = Health(healthy=False)
UP = Health()


@pytest.mark.parametrize(
    ("states", "ready", "expected"),
    [
        ({"a": UP, "b": DOWN, "c": UP}, ["a", "b", "c"], ("a", "c")),
        ({"a": UP, "b": DOWN}, ["b", "a"], ("a",)),
        # not probed yet: healthy
        ({"a": DOWN}, ["a", "b"], ("b",)),
        # healthy but not ready: not a next hop
        ({"a": UP, "b": DOWN}, ["b"], ("b",)),
        # fail-static: nothing ready is healthy, keep every ready address
        ({"a": DOWN, "b": DOWN}, ["a", "b"], ("a", "b")),
        ({"a": DOWN, "b": DOWN, "c": UP}, ["a", "b"], ("a", "b")),
        ({"a": DOWN}, [], ()),
        ({}, ["a", "a", "b"], ("a", "b")),
    ],
)
def test_healthy_addresses(states, ready, expected):
    assert healthy_addresses(states, ready) == expected


def test_healthy_addresses_accepts_a_generator():
    assert healthy_addresses({"a": DOWN}, (x for x in ["a", "b"])) == ("b",)


def test_module_is_pure():
    tree = ast.parse(Path(litelb.core.health.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "typing"}


def test_failing_since_marks_the_start_of_the_current_run_of_failures() -> None:
    h = step(Health(), False, rise=2, fall=2, at=10.0)
    assert h.healthy and h.failing_since == 10.0
    h = step(h, False, rise=2, fall=2, at=11.0)
    assert not h.healthy and h.failing_since == 10.0
    h = step(h, True, rise=2, fall=2, at=12.0)
    assert h.failing_since is None and not h.healthy


def test_passing_addresses_has_no_fail_static():
    states = {"10.0.0.1": DOWN, "10.0.0.2": DOWN}
    assert passing_addresses(states, ["10.0.0.1", "10.0.0.2"]) == ()
    assert healthy_addresses(states, ["10.0.0.1", "10.0.0.2"]) == ("10.0.0.1", "10.0.0.2")
    assert passing_addresses({"10.0.0.1": DOWN}, ["10.0.0.2", "10.0.0.1", "10.0.0.2"]) == (
        "10.0.0.2",
    )

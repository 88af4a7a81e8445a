"""Property tests of the configuration loader: whatever the file holds, parsing
ends in a Config or a ConfigError, never in another exception (a traceback for
the operator, or a daemon that starts on a value it cannot use)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from litelb import config
from litelb.config import Config, ConfigError

# 4 × 2,500 cases: enough to matter, few enough for every CI run (about 30 s);
# LITELB_PROPERTY_CASES=100000 for a longer hunt.
CASES = int(os.environ.get("LITELB_PROPERTY_CASES", "2500"))
SETTINGS = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
KEYS = {
    section: [f.name for f in dataclasses.fields(cls)] for section, cls in config.SECTIONS.items()
}

# Every kind of value TOML can produce, with the edges that break naive code.
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, -1, 10**400, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, 1e-308, 5e-324, 0.1, 59.999]),
    st.text(),
    st.sampled_from(
        [
            "",
            "lo",
            "192.168.160.249",
            "::1",
            "2001:db8::1",
            "https://[::1",
            "https://[::1]:0",
            "https://nsx:99999",
            "https://u:p@nsx",
            "http://127.0.0.1:8080",
            "https://nsx.example.com",
            "https://é.example",
            "127.0.0.1:9651",
            "[::1]:9651",
            "[::1",
            "default/kubernetes",
            "/readyz",
            "certificate",
            "session",
            "a" * 300,
            "/nonexistent/x.pem",
            "x:y",
            "1²",
        ]
    ),
    st.sampled_from(
        [datetime.datetime(2026, 1, 1, 0, 0), datetime.date(2026, 1, 1), datetime.time(1, 2)]
    ),
)
values = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)


def section(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A few of the section's keys (the others keep their defaults), now and then
    an unknown one."""
    known = st.dictionaries(st.sampled_from(keys), values, max_size=3)
    return known | st.dictionaries(st.text(max_size=8), values, max_size=2)


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """The real sections with a few keys set to anything; now and then anything."""
    doc: dict[str, Any] = {
        "vip": {"address": "192.168.160.249"},
        "nsx": {"managers": ["https://nsx.example.com"], "tier1": "cluster-router"},
    }
    for name in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=3, unique=True)):
        doc.setdefault(name, {}).update(draw(section(KEYS[name])))
    if draw(st.integers(0, 19)) == 0:
        doc[draw(st.text(max_size=8))] = draw(values)
    return doc


def toml_value(value: Any) -> str:
    """A TOML literal of `value`, as a person could have written it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, str):
        escaped = "".join(
            c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}"
            for c in value
            if not 0xD800 <= ord(c) <= 0xDFFF
        )
        return f'"{escaped}"'
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return (
        "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    )


def assert_config_or_error(text: str) -> None:
    try:
        cfg = config.parse(text, "litelb.toml")
    except ConfigError as e:
        assert str(e).startswith("litelb.toml")
        return
    assert isinstance(cfg, Config)


@SETTINGS
@given(documents())
def test_any_document_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    try:
        cfg = config.validate(doc, "litelb.toml")
    except ConfigError as e:
        assert str(e).startswith("litelb.toml:")
        # --hypothesis-show-statistics: how deep the cases reach.
        section = e.key.split(".")[0]
        event(f"error in [{section}]" if section in config.SECTIONS else "unknown section")
        return
    event("a Config")
    assert isinstance(cfg, Config)
    # What the adapters rely on without checking again.
    assert (
        0 < cfg.health.interval <= 60
        and cfg.coordination.hold_down >= cfg.coordination.takeover_after
    )
    if cfg.metrics.enabled:
        assert 1 <= cfg.metrics.port <= 65535


@SETTINGS
@given(documents())
def test_any_document_written_as_toml_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    lines = []
    for section, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{toml_value(section)}]")
            lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in table.items()]
        else:
            lines.insert(0, f"{toml_value(section)} = {toml_value(table)}")
    assert_config_or_error("\n".join(lines) + "\n")


@SETTINGS
@given(st.text())
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    assert_config_or_error(text)


@SETTINGS
@given(st.text(), st.integers(min_value=0, max_value=2000))
def test_any_text_inserted_into_a_valid_file(fragment: str, at: int) -> None:
    base = config.__file__ and ""  # placeholder to keep a valid file below
    base = (
        '[vip]\naddress = "192.168.160.249"\n\n[nsx]\nmanagers = ["https://nsx.example.com"]\n'
        'tier1 = "cluster-router"\ntimeout = 10\n\n[metrics]\nlisten = "127.0.0.1:9651"\n'
    )
    at = min(at, len(base))
    text = base[:at] + fragment + base[at:]
    assert_config_or_error(text)
    with contextlib.suppress(ConfigError):
        config.parse_metrics(text, "litelb.toml")

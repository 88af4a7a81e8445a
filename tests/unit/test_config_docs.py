"""docs/configuration.md and the shipped etc/litelb.toml describe exactly the
keys the code knows, with the code's defaults and ranges."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from litelb import config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "configuration.md"
SHIPPED = ROOT / "etc" / "litelb.toml"
ROW = re.compile(r"^\| `(\w+)` \|([^|]+)\|([^|]+)\|([^|]*)\|(.+)\|$")


def schema() -> dict[str, dataclasses.Field]:
    return {
        f"{section}.{f.name}": f
        for section, cls in config.SECTIONS.items()
        for f in dataclasses.fields(cls)
    }


def reference_rows() -> dict[str, tuple[str, str, str]]:
    """ "section.key" -> (type, default, range) from the tables under each `## [section]`."""
    rows: dict[str, tuple[str, str, str]] = {}
    section = ""
    for line in REFERENCE.read_text().splitlines():
        heading = re.match(r"^## `\[(\w+)\]`$", line)
        if heading:
            section = heading.group(1)
            continue
        m = ROW.match(line)
        if m and section:
            key = f"{section}.{m.group(1)}"
            assert key not in rows, f"{key} documented twice"
            rows[key] = (m.group(2).strip(), m.group(3).strip(), m.group(4).strip())
    return rows


def default_of(f: dataclasses.Field) -> Any:
    return list(f.default) if isinstance(f.default, tuple) else f.default


def toml_value(text: str) -> Any:
    return tomllib.loads(f"v = {text}")["v"]


def test_reference_documents_every_key_and_no_other() -> None:
    assert set(reference_rows()) == set(schema())


@pytest.mark.parametrize("key", sorted(schema()))
def test_reference_default_is_the_code_default(key: str) -> None:
    _, default, _ = reference_rows()[key]
    f = schema()[key]
    if f.default is dataclasses.MISSING:
        assert default == "required"
    elif f.default is None:
        assert default == "not set"
    else:
        assert default.startswith("`") and default.endswith("`"), default
        assert toml_value(default.strip("`")) == default_of(f)


@pytest.mark.parametrize("key", sorted(schema()))
def test_reference_range_is_the_code_range(key: str) -> None:
    kind, _, shown = reference_rows()[key]
    if key in config.RANGES:
        low, high = config.RANGES[key]
        assert shown.startswith(f"{low:g} – {high:g}"), (key, shown)
        assert kind == ("integer" if isinstance(low, int) else "seconds")
    else:
        assert not re.match(r"^[\d.]+ – ", shown), (key, shown)


def shipped_keys() -> dict[str, tuple[Any, str]]:
    """ "section.key" -> (value, the comment lines just above it)."""
    doc = tomllib.loads(SHIPPED.read_text())
    comments: dict[str, tuple[Any, str]] = {}
    section, above = "", []
    for line in SHIPPED.read_text().splitlines():
        heading = re.match(r"^\[(\w+)\]$", line)
        assignment = re.match(r"^#? ?(\w+) = ", line)
        if heading:
            section, above = heading.group(1), []
        elif assignment and section:
            key = assignment.group(1)
            value = doc[section].get(key)
            comments[f"{section}.{key}"] = (value, " ".join(above))
            above = []
        elif line.startswith("#"):
            above.append(line.lstrip("# "))
        else:
            above = []
    return comments


def test_shipped_file_shows_every_key_with_its_default() -> None:
    shipped = shipped_keys()
    assert set(shipped) == set(schema())
    for key, f in schema().items():
        value, _ = shipped[key]
        if f.default is dataclasses.MISSING or f.default is None:
            continue  # example values for the required keys; the password commented out
        assert value == default_of(f), key


@pytest.mark.parametrize("key", sorted(config.RANGES))
def test_shipped_file_states_every_range(key: str) -> None:
    low, high = config.RANGES[key]
    _, comment = shipped_keys()[key]
    assert f"{low:g} to {high:g}" in comment, (key, comment)

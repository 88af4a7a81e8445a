"""A TOML file as text and document, and where in the text a key sits.

tomllib reports no positions, so an error about a key finds its line here by a
plain scan of the text. Nothing here knows litelb's keys.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Optional

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on RHEL 9 / Debian 12
    import tomli as tomllib

_DECODER_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")
_HEADER = re.compile(r'\s*\[\s*"?([A-Za-z0-9_-]+)"?\s*\]')


class TomlFileError(Exception):
    """The file cannot be read or is no TOML; `line` is 1-based, None where unknown."""

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        super().__init__(message, line)
        self.message = message
        self.line = line


def read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise TomlFileError("does not exist") from None
    except OSError as e:
        raise TomlFileError(f"cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TomlFileError(f"is not UTF-8 text (byte {e.start})") from None


def loads(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
    m = _DECODER_POSITION.search(message)
    if not m:
        raise TomlFileError(f"is not valid TOML: {message}")
    what = message[: m.start()]
    if m.group(1):
        raise TomlFileError(f"is not valid TOML: {what} (column {m.group(2)})", int(m.group(1)))
    raise TomlFileError(f"is not valid TOML: {what} (at the end)", text.count("\n") + 1)


def find_line(text: str, section: str, key: Optional[str] = None) -> Optional[int]:
    """The line of `key` in `[section]` (or of the section itself); None when
    the text does not set it."""
    current: Optional[str] = None
    name = re.escape(section)
    if key is None:
        own = re.compile(rf'\s*"?{name}"?\s*[=.]')
    else:
        k = re.escape(key)
        own = re.compile(rf'\s*"?{k}"?\s*=')
        dotted = re.compile(rf'\s*"?{name}"?\s*\.\s*"?{k}"?\s*=')
    for number, line in enumerate(text.split("\n"), 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(1)
            if key is None and current == section:
                return number
            continue
        if key is None:
            if current is None and own.match(line):
                return number
        elif (current == section and own.match(line)) or (current is None and dotted.match(line)):
            return number
    return None


def find_line_in_file(path: str, section: str, key: str) -> Optional[int]:
    """find_line in the file at `path`; None also when it cannot be read."""
    try:
        return find_line(read_text(path), section, key)
    except TomlFileError:
        return None

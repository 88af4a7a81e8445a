"""Log lines to stderr, one per event: journald adds time and unit, a terminal gets both."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from litelb.adapters.systemd import journal_stream_attached

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# syslog priorities: journald reads a "<N>" prefix on each stderr line as the priority.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 3)}>"
        return prefix + super().format(record).replace("\n", " | ")


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def setup(level: str, environ: Mapping[str, str] = os.environ) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if journal_stream_attached(environ):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(_TerminalFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    set_level(level)
    # The kubernetes client and urllib3 are chatty at info; litelb reports what matters.
    for noisy in ("urllib3", "kubernetes", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(LEVELS[level])

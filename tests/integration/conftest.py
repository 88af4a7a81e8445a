from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lab import Lab, can_make_namespaces


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Lab]:
    if not can_make_namespaces():
        pytest.skip("needs root and iproute2 for a network namespace")
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()

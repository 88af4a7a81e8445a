from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from litelb.config import MetricsConfig
from litelb.hostport import join_host_port, split_host_port
from litelb.status import status_url


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9651", ("127.0.0.1", 9651)),
        ("[::1]:1", ("::1", 1)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_split(value: str, expected: tuple[str, int]) -> None:
    assert split_host_port(value) == expected
    assert join_host_port(*expected) == value


@pytest.mark.parametrize("value", ["9651", ":1", "::1:9651", "[::1]9651", "h:0", "h:1²", "h: 1"])
def test_split_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(value)


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_join_then_split_is_the_identity(address: object, port: int) -> None:
    assert split_host_port(join_host_port(str(address), port)) == (str(address), port)


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:9651", "http://127.0.0.1:9651/status"),
        ("0.0.0.0:9651", "http://127.0.0.1:9651/status"),
        ("[::]:9651", "http://[::1]:9651/status"),
        ("[2001:db8::1]:80", "http://[2001:db8::1]:80/status"),
    ],
)
def test_status_asks_the_loopback_of_a_wildcard_listener(listen: str, url: str) -> None:
    assert status_url(MetricsConfig(listen=listen)) == url

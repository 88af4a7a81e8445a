"""VipManager against a real kernel, inside throwaway network namespaces."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from litelb.adapters.vip import VipError, VipManager, local_addresses

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="needs root and iproute2 to create network namespaces",
    ),
]

_counter = itertools.count()


def _ip(*args: str) -> str:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"litelb-test-{os.getpid()}-{next(_counter)}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "delete", name)


def _shown(netns: str, address: str) -> bool:
    """What iproute2 (not pyroute2) sees: an independent witness."""
    out = _ip("-n", netns, "-o", "addr", "show", "dev", "lo")
    return any(f" {address}/" in line for line in out.splitlines())


@pytest.mark.parametrize(("address", "prefix"), [("192.0.2.10", "/32"), ("2001:db8::10", "/128")])
def test_ensure_present_remove(netns: str, address: str, prefix: str) -> None:
    vip = VipManager(address, "lo", netns=netns)
    assert not vip.present()

    assert vip.ensure() is True
    assert vip.present()
    out = _ip("-n", netns, "-o", "addr", "show", "dev", "lo")
    assert f" {address}{prefix} " in out
    assert "tentative" not in out

    assert vip.ensure() is False, "second ensure must be a no-op"

    assert vip.remove() is True
    assert not vip.present()
    assert not _shown(netns, address)
    assert vip.remove() is False


def test_ensure_restores_after_someone_else_removed_it(netns: str) -> None:
    vip = VipManager("192.0.2.11", netns=netns)
    vip.ensure()
    _ip("-n", netns, "addr", "del", "192.0.2.11/32", "dev", "lo")
    assert not vip.present()

    assert vip.ensure() is True
    assert _shown(netns, "192.0.2.11")


def test_address_added_by_someone_else_counts_as_present(netns: str) -> None:
    _ip("-n", netns, "addr", "add", "192.0.2.12/24", "dev", "lo")
    vip = VipManager("192.0.2.12", netns=netns)
    assert vip.present()
    assert vip.ensure() is False
    assert vip.remove() is True
    assert not _shown(netns, "192.0.2.12")


def test_ipv6_written_in_another_form_is_recognised(netns: str) -> None:
    vip = VipManager("2001:0db8:0000::0013", netns=netns)
    assert vip.ensure() is True
    assert VipManager("2001:db8::13", netns=netns).present()
    assert vip.address == "2001:db8::13"


def test_missing_interface_is_a_clear_error(netns: str) -> None:
    vip = VipManager("192.0.2.14", "litelb-nope0", netns=netns)
    for call in (vip.ensure, vip.present, vip.remove):
        with pytest.raises(VipError, match=r"'litelb-nope0'.*does not exist.*vip\.interface"):
            call()


def test_missing_namespace_is_an_error_and_not_created() -> None:
    name = f"litelb-test-{os.getpid()}-missing"
    vip = VipManager("192.0.2.15", netns=name)
    with pytest.raises(VipError, match="does not exist"):
        vip.present()
    with pytest.raises(VipError, match="does not exist"):
        local_addresses(name)
    assert not os.path.exists(f"/var/run/netns/{name}")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_net_admin_the_error_says_so(netns: str) -> None:
    # Inside the test namespace, as root without CAP_NET_ADMIN: the situation of a
    # unit whose CapabilityBoundingSet lacks it. Staying uid 0 keeps the checkout
    # readable wherever it lives.
    code = (
        "from litelb.adapters.vip import VipError, VipManager\n"
        "try:\n"
        "    VipManager('192.0.2.18').ensure()\n"
        "except VipError as e:\n"
        "    print(e)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "setpriv",
            "--inh-caps=-net_admin",
            "--bounding-set=-net_admin",
            sys.executable,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=repo,
        check=False,
        env={**os.environ, "PYTHONPATH": repo},
    )
    assert "192.0.2.18/32" in done.stdout, done.stderr
    assert "needs CAP_NET_ADMIN" in done.stdout


def test_invalid_address_is_rejected() -> None:
    with pytest.raises(VipError, match="without a prefix length"):
        VipManager("192.0.2.16/32")


def test_local_addresses_sees_every_interface(netns: str) -> None:
    # A veth pair, not a dummy: the dummy module is missing on some test hosts.
    _ip("-n", netns, "link", "add", "litelb-v0", "type", "veth", "peer", "name", "litelb-v1")
    _ip("-n", netns, "addr", "add", "198.51.100.7/24", "dev", "litelb-v0")
    VipManager("192.0.2.17", netns=netns).ensure()
    VipManager("2001:db8::17", netns=netns).ensure()

    found = local_addresses(netns)
    assert {"127.0.0.1", "::1", "192.0.2.17", "2001:db8::17", "198.51.100.7"} <= found
    assert all("/" not in a for a in found)

"""NSX credentials replaced while the daemon runs: the password (after NSX refuses
the old one, and on `systemctl reload`) and a principal identity's client
certificate. Writes go on without a restart, and NSX never sees a burst of bad
logins that would lock the account."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.integration.lab import NODES, PASSWORD, Lab, Node
from tests.integration.test_daemon_nsx_faults import principal, use_tls_nsx_with_principals
from tests.pki import Pki, serial
from tests.wait import wait_for

pytestmark = pytest.mark.netns
A, B, C = NODES
NEW_PASSWORD = "rotated-Secret-2"


def write_password(box: Lab, password: str) -> None:
    box.password_file.write_text(password + "\n")
    box.password_file.chmod(0o600)


def reload(node: Node) -> None:
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)


def assert_no_secret(box: Lab, node: Node) -> None:
    for text in (node.log(), box.http_get(node, "/metrics")[1], str(box.status(node))):
        assert PASSWORD not in text and NEW_PASSWORD not in text


def test_a_new_password_is_read_when_nsx_refuses_the_old_one(box: Lab) -> None:
    node = box.start(A)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route written", node)
    # The operator writes the new password, then changes it in NSX.
    write_password(box, NEW_PASSWORD)
    box.nsx.set_password(NEW_PASSWORD)
    box.kube.set_endpoints([A, B])
    # One refused request, the file read again, the request repeated at once.
    wait_for(lambda: box.hops() == [A, B], 10, "route written with the new password", node)
    assert len(box.nsx.login_failures()) <= 1, box.nsx.login_failures()
    assert node.alive()
    assert_no_secret(box, node)


def test_systemctl_reload_ends_the_wait_after_a_refused_login(box: Lab) -> None:
    node = box.start(A, nsx={"auth": "session"})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route written", node)
    # NSX's password changes first: the next login is refused and litelb waits.
    box.nsx.set_password(NEW_PASSWORD)
    box.nsx.expire_sessions()
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.nsx.login_failures(), 10, "a refused login", node)
    time.sleep(2)
    assert len(box.nsx.login_failures()) == 1, "litelb retried a refused password at once"
    write_password(box, NEW_PASSWORD)
    reload(node)
    wait_for(lambda: box.hops() == [A, B], 10, "route written after systemctl reload", node)
    assert len(box.nsx.login_failures()) == 1
    # A password file that is no longer private is refused; the password in use stays.
    box.password_file.chmod(0o644)
    reload(node)
    wait_for(lambda: "readable by others" in node.log(), 5, "the refusal logged", node)
    box.nsx.expire_sessions()
    box.kube.set_endpoints([A, C])
    wait_for(lambda: box.hops() == [A, C], 10, "route written with the password kept", node)
    assert len(box.nsx.login_failures()) == 1
    assert node.alive()
    assert_no_secret(box, node)


def test_a_rotated_principal_certificate_is_used_without_restart(box: Lab) -> None:
    use_tls_nsx_with_principals(box)
    nsx = principal(box, "litelb-node-a")
    node = box.start(A, nsx=nsx)
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route written", node)
    cert, key = nsx["client_cert"], nsx["client_key"]
    old = serial(cert)
    # The same principal identity gets a new certificate; NSX forgets the old one.
    box.pki.client_cert("litelb-node-a")
    assert serial(cert) != old
    box.nsx.revoke_certificate(old)
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 10, "route written with the new certificate", node)
    refused = [w for w in box.nsx.writes() if w.status == 403]
    assert refused == [], refused
    # A key that does not match the certificate is refused; the pair in use stays.
    _, other_key = box.pki.client_cert("someone-else")
    seen = len(node.log())
    Path(key).write_bytes(other_key.read_bytes())
    wait_for(lambda: "is not the key of" in node.log()[seen:], 10, "the mismatch logged", node)
    box.kube.set_endpoints([A, C])
    wait_for(lambda: box.hops() == [A, C], 10, "route written with the pair kept", node)
    assert node.alive()


def test_a_replaced_nsx_ca_bundle_is_used_without_restart(box: Lab, tmp_path: Path) -> None:
    use_tls_nsx_with_principals(box)
    ca_file = tmp_path / "nsx-ca.pem"
    ca_file.write_bytes(box.pki.ca_cert.read_bytes())
    node = box.start(A, nsx={"ca_file": str(ca_file), "managers": [box.nsx.url]})
    wait_for(lambda: box.hops() == sorted(NODES), 10, "route written", node)
    # A bundle that does not load is refused; new connections still verify NSX.
    seen = len(node.log())
    ca_file.write_text("not a certificate\n")
    wait_for(lambda: "not a PEM CA bundle" in node.log()[seen:], 10, "the refusal logged", node)
    box.nsx.use_certificate(str(box.pki.server_cert), str(box.pki.server_key))
    box.kube.set_endpoints([A, B])
    wait_for(lambda: box.hops() == [A, B], 10, "route written with the bundle kept", node)
    # The managers get certificates from a new CA, and the bundle names it.
    renewed = Pki(tmp_path / "pki-renewed", server_ips=("127.0.0.1",))
    ca_file.write_bytes(renewed.ca_cert.read_bytes())
    wait_for(lambda: "now using" in node.log()[seen:], 10, "the new bundle loaded", node)
    box.nsx.use_certificate(str(renewed.server_cert), str(renewed.server_key))
    box.kube.set_endpoints([A, C])
    wait_for(lambda: box.hops() == [A, C], 10, "route written to the renewed NSX", node)
    assert node.alive()

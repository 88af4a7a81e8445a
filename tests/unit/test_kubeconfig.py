"""KubeCredentials: the kubeconfig's files are followed on disk, without a restart."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from litelb.adapters.kubeconfig import (
    KubeConfigError,
    KubeCredentials,
    wait_for_credentials,
)
from tests.pki import Pki, serial

USER = "system:node:node-1"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def rotating(pki: Pki, tmp_path: Path) -> tuple[Path, Path]:
    path = pki.kubeconfig(tmp_path / "kubelet.conf", "https://127.0.0.1:6443", rotating=True)
    return path, tmp_path / "kubelet.conf.pki" / "kubelet-client-current.pem"


def test_a_swapped_certificate_link_is_picked_up(pki: Pki, tmp_path: Path) -> None:
    path, current = rotating(pki, tmp_path)
    credentials = KubeCredentials(str(path))
    assert credentials.refresh() == 0
    _, new = pki.rotate_client(current, USER)
    assert credentials.refresh() == 1
    _, cert, key = credentials.tls_files()
    assert cert == key == str(current) and serial(Path(cert)) == new
    assert credentials.refresh() == 1  # nothing changed since


def test_a_half_written_certificate_keeps_the_previous_credentials(
    pki: Pki, tmp_path: Path
) -> None:
    path, current = rotating(pki, tmp_path)
    credentials = KubeCredentials(str(path))

    def build(ca: object, cert: object, key: object) -> object:
        return object()  # stands for the probes' TLS context

    before = credentials.derived(build)
    target = current.resolve()
    target.write_bytes(target.read_bytes()[:100])
    assert credentials.refresh() == 0
    assert credentials.derived(build) is before


def test_a_401_reloads_and_says_so_when_nothing_changed(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, current = rotating(pki, tmp_path)
    credentials = KubeCredentials(str(path))
    assert credentials.rejected("the API server 10.0.0.1:6443") == 0
    assert "10.0.0.1:6443 rejected the client credentials" in caplog.text
    assert "unchanged" in caplog.text
    pki.rotate_client(current, USER)
    assert credentials.rejected("the API server 10.0.0.1:6443") == 1


def test_waits_for_the_kubeconfig_and_reports_what_it_waits_for(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "late.conf"
    stop = threading.Event()
    seen: list = []
    found: list = []
    thread = threading.Thread(
        target=lambda: found.append(
            wait_for_credentials(str(path), stop, waiting=seen.append, poll=0.05)
        )
    )
    thread.start()
    try:
        threading.Event().wait(0.3)
        assert seen == [f"waiting for {path}"]
        path.write_text("not: a kubeconfig\n")
        threading.Event().wait(0.3)
        assert seen[-1].startswith("waiting for a usable kubeconfig:")
        pki.kubeconfig(path, "https://127.0.0.1:6443")
        thread.join(5)
    finally:
        stop.set()
        thread.join(5)
    assert seen[-1] is None
    assert isinstance(found[0], KubeCredentials) and found[0].path == str(path)


def test_an_unusable_kubeconfig_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    with pytest.raises(KubeConfigError, match=r"broken\.conf"):
        KubeCredentials(str(broken))

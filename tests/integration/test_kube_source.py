"""The Kubernetes adapter against the fake API server (tests/kubeapi.py), loopback only."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import pytest

from litelb.adapters.kube_client import (
    RBAC_FIX,
    KubeClient,
    KubeForbiddenError,
    KubeUnavailableError,
)
from litelb.adapters.kube_watch import EndpointWatcher
from litelb.adapters.kubeconfig import KubeConfigError, KubeCredentials, find_kubeconfig
from litelb.backoff import BackoffPolicy
from litelb.check import kube_checks
from litelb.config import KubernetesConfig
from litelb.model import EndpointSnapshot
from tests.kubeapi import FakeKubeApiServer
from tests.pki import Pki
from tests.wait import wait_for

# Generous against a loaded CI box; the assertions on timing are separate and explicit.
WAIT = 8.0
NODE_USER = "system:node:node-1"
SLICES_PATH = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


class Recorder:
    """The watcher's on_snapshot: keeps every snapshot, lets a test wait for a state."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.snapshots: list[EndpointSnapshot] = []

    def __call__(self, snapshot: EndpointSnapshot) -> None:
        with self._cond:
            self.snapshots.append(snapshot)
            self._cond.notify_all()

    def count(self) -> int:
        with self._cond:
            return len(self.snapshots)

    def wait_ready(self, addresses: Sequence[str], timeout: float = WAIT) -> EndpointSnapshot:
        wanted = tuple(addresses)
        with self._cond:
            ok = self._cond.wait_for(
                lambda: bool(self.snapshots) and self.snapshots[-1].ready_addresses == wanted,
                timeout,
            )
            last = self.snapshots[-1].ready_addresses if self.snapshots else None
            assert ok, f"never saw ready {wanted}; last {last}"
            return self.snapshots[-1]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def make_fake(pki: Pki) -> Iterator[Callable[..., FakeKubeApiServer]]:
    servers: list[FakeKubeApiServer] = []

    def make(addresses: Sequence[str] = ("127.0.0.1",), **kwargs: object) -> FakeKubeApiServer:
        server = FakeKubeApiServer(pki, addresses=addresses, **kwargs).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_client(pki: Pki, tmp_path: Path) -> Iterator[Callable[..., KubeClient]]:
    clients: list[KubeClient] = []

    def make(
        server: str,
        *,
        api_servers: Sequence[str] = (),
        read_timeout: float = 10.0,
        inline: bool = False,
    ) -> KubeClient:
        path = pki.kubeconfig(tmp_path / f"kubeconfig-{len(clients)}", server, inline=inline)
        cfg = KubernetesConfig(kubeconfig=str(path), api_servers=tuple(api_servers))
        client = KubeClient(cfg, KubeCredentials(str(path)), read_timeout=read_timeout)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@contextmanager
def watching(
    client: KubeClient, *, watch_timeout: int = 6, retry_max: float = 0.5, family: int = 4
) -> Iterator[tuple[EndpointWatcher, Recorder]]:
    recorder = Recorder()
    stop = threading.Event()
    watcher = EndpointWatcher(
        client,
        family=family,
        on_snapshot=recorder,
        stop=stop,
        watch_timeout=watch_timeout,
        backoff=BackoffPolicy(first=min(0.05, retry_max), cap=retry_max),
    )
    thread = threading.Thread(target=watcher.run, name="test-watcher", daemon=True)
    thread.start()
    try:
        yield watcher, recorder
    finally:
        stop.set()
        # Stopping must not wait for the quiet watch to end by itself.
        thread.join(2.0)
        assert not thread.is_alive(), "the watcher did not stop within 2 s"


def list_requests(fake: FakeKubeApiServer) -> int:
    return sum(1 for r in fake.requests() if r.path == SLICES_PATH and "watch" not in r.query)


# -- find_kubeconfig -------------------------------------------------------------------


def test_find_kubeconfig_picks_the_first_that_exists(tmp_path: Path) -> None:
    candidates = tuple((str(tmp_path / name), name) for name in ("kubeadm", "TKGI", "RKE2"))
    (tmp_path / "TKGI").write_text("x")
    (tmp_path / "RKE2").write_text("x")
    path, why = find_kubeconfig("", candidates)
    assert path == str(tmp_path / "TKGI")
    assert "TKGI" in why


def test_find_kubeconfig_lists_what_it_tried(tmp_path: Path) -> None:
    candidates = tuple((str(tmp_path / name), name) for name in ("kubeadm", "k3s"))
    with pytest.raises(KubeConfigError) as e:
        find_kubeconfig("", candidates)
    for path, _ in candidates:
        assert path in str(e.value)
    assert "[kubernetes] kubeconfig" in str(e.value)


def test_find_kubeconfig_configured(tmp_path: Path) -> None:
    configured = tmp_path / "mine.conf"
    with pytest.raises(KubeConfigError, match=r"mine\.conf"):
        find_kubeconfig(str(configured), ())
    configured.write_text("x")
    assert find_kubeconfig(str(configured), ()) == (
        str(configured),
        "configured in [kubernetes] kubeconfig",
    )


def test_unusable_kubeconfig(tmp_path: Path) -> None:
    broken = tmp_path / "broken.conf"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    with pytest.raises(KubeConfigError, match=r"broken\.conf"):
        KubeCredentials(str(broken))


# -- KubeClient ------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [False, True])
def test_client_reads_slices_reviews_access_and_the_certificate(
    make_fake: Callable[..., FakeKubeApiServer],
    make_client: Callable[..., KubeClient],
    inline: bool,
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1", ("127.0.0.2", False)])
    client = make_client(fake.url(), inline=inline)
    snapshot = client.list_slices(4)
    assert snapshot.ready_addresses == ("127.0.0.1",)
    assert [(e.address, e.port, e.ready) for e in snapshot.endpoints] == [
        ("127.0.0.1", fake.port, True),
        ("127.0.0.2", fake.port, False),
    ]
    assert client.access_review("watch", "discovery.k8s.io", "endpointslices", "default")
    assert "127.0.0.1" in client.server_certificate_sans()
    assert "kubernetes" in client.server_certificate_sans()
    assert client.server == fake.url()


def test_forbidden_names_the_permission_and_the_fix(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    fake.set_rules(set())
    client = make_client(fake.url())
    assert not client.access_review("list", "discovery.k8s.io", "endpointslices", "default")
    with pytest.raises(KubeForbiddenError) as e:
        client.list_slices(4)
    text = str(e.value)
    for part in ("list", "discovery.k8s.io/endpointslices", "'default'", NODE_USER, RBAC_FIX):
        assert part in text


def test_failover_verifies_a_server_whose_certificate_lacks_its_ip(tmp_path: Path) -> None:
    # Like an API server certificate that names the control-plane endpoint but not
    # the node address litelb learned from the EndpointSlice.
    pki = Pki(tmp_path / "pki", server_ips=("127.0.0.1",), server_dns=("kubernetes",))
    with FakeKubeApiServer(pki, addresses=("127.0.0.1", "127.0.0.2")) as fake:
        fake.set_endpoints(["127.0.0.2"])
        fake.refuse("127.0.0.1")
        path = pki.kubeconfig(tmp_path / "kubeconfig", fake.url("127.0.0.1"))
        cfg = KubernetesConfig(kubeconfig=str(path), api_servers=(fake.url("127.0.0.2"),))
        client = KubeClient(cfg, KubeCredentials(str(path)))
        try:
            assert client.list_slices(4).ready_addresses == ("127.0.0.2",)
            assert client.server == fake.url("127.0.0.2")
            assert client.server_certificate_sans() == ("127.0.0.1", "kubernetes")
        finally:
            client.close()


def test_a_server_of_another_ca_is_never_trusted(
    make_fake: Callable[..., FakeKubeApiServer],
    make_client: Callable[..., KubeClient],
    tmp_path: Path,
) -> None:
    fake = make_fake(addresses=("127.0.0.2",))
    fake.set_endpoints(["127.0.0.2"])
    fake.refuse("127.0.0.2")
    with FakeKubeApiServer(Pki(tmp_path / "other-ca"), addresses=("127.0.0.3",)) as impostor:
        impostor.set_endpoints(["127.0.0.3"])
        client = make_client(fake.url("127.0.0.2"), api_servers=[impostor.url("127.0.0.3")])
        with pytest.raises(KubeUnavailableError, match="certificate verify failed"):
            client.list_slices(4)
        assert impostor.requests() == []


def test_nothing_listening_is_told_apart_from_a_failing_server(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    # Refused everywhere (before kubeadm init): asked again soon. A server that
    # accepts and then fails is not "nothing listening".
    fake = make_fake(addresses=("127.0.0.2", "127.0.0.3"))
    fake.refuse("127.0.0.2")
    fake.refuse("127.0.0.3")
    client = make_client(fake.url("127.0.0.2"), api_servers=[fake.url("127.0.0.3")])
    with pytest.raises(KubeUnavailableError) as refused:
        client.list_slices(4)
    assert refused.value.nothing_listening
    fake.hang("127.0.0.3")  # accepts, then says nothing: a server that is there
    with pytest.raises(KubeUnavailableError) as hung:
        make_client(
            fake.url("127.0.0.2"), api_servers=[fake.url("127.0.0.3")], read_timeout=0.5
        ).list_slices(4)
    assert not hung.value.nothing_listening


# -- EndpointWatcher -------------------------------------------------------------------


def test_initial_list_then_changes_within_a_second(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1", "127.0.0.2"])
    with watching(make_client(fake.url())) as (watcher, recorder):
        assert watcher.synced.wait(WAIT)
        first = recorder.wait_ready(["127.0.0.1", "127.0.0.2"])
        assert first.resource_version == fake.resource_version
        assert watcher.last_error is None

        for endpoints, ready in (
            (["127.0.0.1", ("127.0.0.2", False)], ["127.0.0.1"]),
            ([("127.0.0.1", True, True), "127.0.0.3"], ["127.0.0.3"]),
            (["127.0.0.3", "127.0.0.10", "127.0.0.9"], ["127.0.0.3", "127.0.0.9", "127.0.0.10"]),
        ):
            started = time.monotonic()
            fake.set_endpoints(endpoints)
            recorder.wait_ready(ready)
            assert time.monotonic() - started < 1.0
        assert list_requests(fake) == 1  # every change came through the watch


def test_slices_are_merged_and_a_deleted_slice_drops_out(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    fake.set_endpoints(["127.0.0.2"], slice_name="kubernetes-extra")
    # Another service's slice in the same namespace is none of our business.
    fake.set_endpoints(["127.0.0.7"], slice_name="other", service="other")
    with watching(make_client(fake.url())) as (_, recorder):
        recorder.wait_ready(["127.0.0.1", "127.0.0.2"])
        fake.set_endpoints(["127.0.0.3"], slice_name="kubernetes-more")
        recorder.wait_ready(["127.0.0.1", "127.0.0.2", "127.0.0.3"])
        fake.delete_slice("kubernetes-extra")
        recorder.wait_ready(["127.0.0.1", "127.0.0.3"])


def test_expired_watch_relists_and_misses_nothing(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    # No bookmarks: they would move the watcher past the compaction.
    fake = make_fake(bookmark_interval=3600.0)
    fake.set_endpoints(["127.0.0.1"])
    with watching(make_client(fake.url()), watch_timeout=1) as (watcher, recorder):
        recorder.wait_ready(["127.0.0.1"])
        fake.set_endpoints(["127.0.0.1", "127.0.0.2"])
        recorder.wait_ready(["127.0.0.1", "127.0.0.2"])
        # An event the watcher never sees moves the store on; compaction then leaves
        # the watcher's resourceVersion behind, so its next watch gets ERROR 410.
        fake.set_endpoints(["127.0.0.8"], slice_name="other", service="other")
        fake.compact()
        wait_for(lambda: list_requests(fake) == 2, WAIT, "a second list after the 410")
        fake.set_endpoints(["127.0.0.2", "127.0.0.3"])
        recorder.wait_ready(["127.0.0.2", "127.0.0.3"])
        assert watcher.last_error is None


def test_dropped_watch_recovers(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    with watching(make_client(fake.url())) as (watcher, recorder):
        recorder.wait_ready(["127.0.0.1"])
        for round_ in range(3):
            fake.drop_watches()
            fake.set_endpoints(["127.0.0.1", f"127.0.0.{round_ + 2}"])
            recorder.wait_ready(["127.0.0.1", f"127.0.0.{round_ + 2}"])
        wait_for(lambda: watcher.last_error is None, WAIT, "the watch to recover")


def test_bookmarks_advance_progress_and_the_resource_version(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake(bookmark_interval=0.2)
    fake.set_endpoints(["127.0.0.1"])
    with watching(make_client(fake.url()), watch_timeout=2) as (watcher, recorder):
        recorder.wait_ready(["127.0.0.1"])
        snapshots = recorder.count()
        listed_at = recorder.snapshots[-1].resource_version
        fake.set_endpoints(["127.0.0.8"], slice_name="other", service="other")
        moved_to = fake.resource_version
        before = watcher.last_progress
        time.sleep(0.8)
        assert watcher.last_progress > before
        assert recorder.count() == snapshots  # a bookmark is no new state
        # The next watch resumes from the bookmark, not from the list.
        wait_for(
            lambda: any(
                r.query.get("resourceVersion") == moved_to
                for r in fake.requests()
                if "watch" in r.query
            ),
            4.0,
            "a watch from the bookmark's resourceVersion",
        )
        assert moved_to != listed_at


def test_hung_server_fails_over_and_keeps_delivering(
    make_fake: Callable[..., FakeKubeApiServer],
    make_client: Callable[..., KubeClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="litelb.kube")
    nodes = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    fake = make_fake(addresses=nodes)
    fake.set_endpoints(nodes)
    client = make_client(fake.url("127.0.0.2"), read_timeout=4.0)
    with watching(client, watch_timeout=2) as (watcher, recorder):
        recorder.wait_ready(nodes)
        fake.hang("127.0.0.2")
        started = time.monotonic()
        fake.set_endpoints(["127.0.0.3", "127.0.0.4"])
        recorder.wait_ready(["127.0.0.3", "127.0.0.4"], timeout=12.0)
        assert time.monotonic() - started < 10.0
        assert client.server != fake.url("127.0.0.2")
        fake.set_endpoints(["127.0.0.4"])
        recorder.wait_ready(["127.0.0.4"], timeout=2.0)
        assert watcher.last_error is None
    assert any("kubernetes API server in use" in r.getMessage() for r in caplog.records)


def test_refused_kubeconfig_server_falls_back_to_api_servers(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake(addresses=("127.0.0.2", "127.0.0.3"))
    fake.refuse("127.0.0.2")
    fake.set_endpoints(["127.0.0.3"])
    client = make_client(fake.url("127.0.0.2"), api_servers=[fake.url("127.0.0.3")])
    with watching(client) as (watcher, recorder):
        assert watcher.synced.wait(WAIT)
        recorder.wait_ready(["127.0.0.3"])
        assert client.server == fake.url("127.0.0.3")
        fake.set_endpoints(["127.0.0.3", "127.0.0.4"])
        recorder.wait_ready(["127.0.0.3", "127.0.0.4"])


def test_forbidden_watcher_reports_once_and_keeps_trying(
    make_fake: Callable[..., FakeKubeApiServer],
    make_client: Callable[..., KubeClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="litelb.kube")
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    fake.set_rules(set())  # not even the Endpoints fallback
    with watching(make_client(fake.url()), retry_max=0.2) as (watcher, recorder):
        wait_for(lambda: list_requests(fake) >= 4, WAIT, "four list attempts")
        assert time.monotonic() - watcher.last_attempt < 2.0  # alive, retrying
        error = watcher.last_error or ""
        for part in ("list", "discovery.k8s.io/endpointslices", NODE_USER, RBAC_FIX):
            assert part in error
        assert not watcher.synced.is_set()
        assert recorder.count() == 0
        reported = [
            r
            for r in caplog.records
            if r.levelno >= logging.WARNING and "forbidden" in r.getMessage()
        ]
        assert len(reported) == 1

        fake.set_rules(None)  # the operator applied `litelb rbac`
        recorder.wait_ready(["127.0.0.1"])
        assert watcher.synced.is_set()
        wait_for(lambda: watcher.last_error is None, WAIT, "the watch to recover")


def test_forbidden_falls_back_to_polling_core_endpoints(
    make_fake: Callable[..., FakeKubeApiServer],
    make_client: Callable[..., KubeClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1", ("127.0.0.2", False)])
    # What the Node authorizer grants every kubelet (NodeRules: get endpoints).
    fake.set_rules({("get", "", "endpoints", "*")})
    with watching(make_client(fake.url())) as (watcher, recorder):
        assert watcher.synced.wait(WAIT)
        recorder.wait_ready(["127.0.0.1"])
        fake.set_endpoints(["127.0.0.1", "127.0.0.2"])
        recorder.wait_ready(["127.0.0.1", "127.0.0.2"], timeout=5.0)
        assert "endpointslices" in (watcher.last_error or "")
    assert sum("FALLBACK" in r.getMessage() for r in caplog.records) == 1


def test_a_failing_receiver_does_not_stop_the_watch(
    make_fake: Callable[..., FakeKubeApiServer], make_client: Callable[..., KubeClient]
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    seen: list[EndpointSnapshot] = []

    def flaky(snapshot: EndpointSnapshot) -> None:
        seen.append(snapshot)
        if len(seen) == 1:
            raise RuntimeError("receiver bug")

    stop = threading.Event()
    watcher = EndpointWatcher(
        make_client(fake.url()),
        family=4,
        on_snapshot=flaky,
        stop=stop,
        backoff=BackoffPolicy(first=0.05, cap=0.2),
    )
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        fake.set_endpoints(["127.0.0.2"])
        wait_for(
            lambda: bool(seen) and seen[-1].ready_addresses == ("127.0.0.2",),
            WAIT,
            "a snapshot with 127.0.0.2 ready",
        )
    finally:
        stop.set()
        thread.join(2.0)
    assert not thread.is_alive()


# -- litelb check ----------------------------------------------------------------------


def _checks(
    pki: Pki,
    tmp_path: Path,
    server: str,
    vip: Optional[str] = None,
    local: frozenset[str] = frozenset({"127.0.0.1", "10.0.0.7"}),
) -> list[str]:
    path = pki.kubeconfig(tmp_path / "check.conf", server)
    cfg = KubernetesConfig(kubeconfig=str(path))
    return [str(r) for r in kube_checks(cfg, family=4, vip=vip, local_addresses=local)]


def test_checks_good(make_fake: Callable[..., FakeKubeApiServer], pki: Pki, tmp_path: Path) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1", ("127.0.0.2", False)])
    lines = _checks(pki, tmp_path, fake.url(), vip="127.0.0.4")
    assert all(line.startswith("ok") for line in lines), lines
    text = "\n".join(lines)
    assert "VIP 127.0.0.4 is in the certificate" in text
    assert "check.conf" in text
    assert fake.url() in text and "CN=kube-apiserver" in text and "127.0.0.1" in text
    assert "RBAC" in text
    assert "1 ready IPv4 endpoints: 127.0.0.1" in text
    assert "this node is 127.0.0.1: its API server is listed and ready" in text

    stranger = _checks(pki, tmp_path, fake.url(), local=frozenset({"10.0.0.7"}))
    assert any(
        line.startswith("FAIL") and "kubernetes.node_address" in line for line in stranger
    ), stranger
    not_ready = _checks(pki, tmp_path, fake.url(), local=frozenset({"127.0.0.2"}))
    assert any(line.startswith("warn") and "not ready" in line for line in not_ready), not_ready

    missing = _checks(pki, tmp_path, fake.url(), vip="127.0.0.9")
    assert any(line.startswith("warn") and "127.0.0.9" in line for line in missing), missing


def test_checks_forbidden(
    make_fake: Callable[..., FakeKubeApiServer], pki: Pki, tmp_path: Path
) -> None:
    fake = make_fake()
    fake.set_endpoints(["127.0.0.1"])
    fake.set_rules(set())
    lines = _checks(pki, tmp_path, fake.url())
    failed = [line for line in lines if line.startswith("FAIL")]
    assert any("RBAC" in line and RBAC_FIX in line for line in failed), lines
    assert any("EndpointSlices" in line for line in failed), lines

    fake.set_rules({("get", "", "endpoints", "*")})
    lines = _checks(pki, tmp_path, fake.url())
    assert any(line.startswith("warn") and "core Endpoints" in line for line in lines), lines


def test_checks_unreachable(pki: Pki, tmp_path: Path) -> None:
    # Nothing listens on 127.0.0.5:9: connection refused, on loopback.
    lines = _checks(pki, tmp_path, "https://127.0.0.5:9")
    assert lines[0].startswith("ok")
    assert lines[-1].startswith("FAIL") and "127.0.0.5" in lines[-1], lines


def test_checks_without_kubeconfig(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    results = kube_checks(KubernetesConfig(kubeconfig=str(missing)), family=4)
    assert [r.level for r in results] == ["FAIL"]
    assert "nope.conf" in results[0].text

"""The official kubernetes client, unmodified, against the fake API server (tests/kubeapi.py).

Runs with whatever client the interpreter has: 37.x in .venv, 22.6.0 (Debian 12) in
.venv-compat.  Where the two clients differ, the test asserts what each really does.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.kubeapi import FakeKubeApiServer
from tests.pki import Pki

SELECTOR = "kubernetes.io/service-name=kubernetes"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def server(pki: Pki) -> Iterator[FakeKubeApiServer]:
    with FakeKubeApiServer(pki, bookmark_interval=0.3) as srv:
        srv.set_endpoints(["127.0.0.1"])
        yield srv


def make_api(
    pki: Pki, tmp_path: Path, url: str, *, retries: int | None = None, **kubeconfig: object
) -> client.ApiClient:
    path = pki.kubeconfig(tmp_path / "kubeconfig", url, **kubeconfig)  # type: ignore[arg-type]
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=cfg)
    if retries is not None:
        cfg.retries = retries
    return client.ApiClient(cfg)


@pytest.fixture
def api(pki: Pki, tmp_path: Path, server: FakeKubeApiServer) -> Iterator[client.ApiClient]:
    api_client = make_api(pki, tmp_path, server.url())
    yield api_client
    api_client.close()


def addresses(raw: dict) -> list[str]:
    return [a for e in raw["endpoints"] for a in e["addresses"]]


def raw_get(
    url: str,
    path: str,
    *,
    cafile: Path,
    cert: tuple[Path, Path] | None = None,
    method: str = "GET",
) -> tuple[int, bytes]:
    """A plain HTTPS request, anonymous unless ``cert`` (certificate, key) is given."""
    host, port = url[len("https://") :].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=5)
    try:
        conn.request(method, path, body=b"{}" if method == "POST" else None)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_list_get_and_core_endpoints(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    server.set_endpoints(["127.0.0.1", ("127.0.0.2", False), ("127.0.0.3", False, True)])
    server.set_endpoints(["127.0.0.9"], slice_name="other", service="other")
    discovery = client.DiscoveryV1Api(api)

    listed = discovery.list_namespaced_endpoint_slice("default", label_selector=SELECTOR)
    assert listed.metadata.resource_version == server.resource_version
    assert [s.metadata.name for s in listed.items] == ["kubernetes"]
    (es,) = listed.items
    assert es.address_type == "IPv4"
    assert [(e.addresses, e.conditions.ready, e.conditions.terminating) for e in es.endpoints] == [
        (["127.0.0.1"], True, None),
        (["127.0.0.2"], False, None),
        (["127.0.0.3"], False, True),
    ]
    assert [(p.name, p.port, p.protocol) for p in es.ports] == [("https", server.port, "TCP")]
    everything = discovery.list_namespaced_endpoint_slice("default")
    assert sorted(s.metadata.name for s in everything.items) == ["kubernetes", "other"]

    one = discovery.read_namespaced_endpoint_slice("kubernetes", "default")
    assert one.metadata.uid == es.metadata.uid
    with pytest.raises(ApiException) as missing:
        discovery.read_namespaced_endpoint_slice("nope", "default")
    assert missing.value.status == 404

    endpoints = client.CoreV1Api(api).read_namespaced_endpoints("kubernetes", "default")
    (subset,) = endpoints.subsets
    assert [a.ip for a in subset.addresses] == ["127.0.0.1"]
    assert [a.ip for a in subset.not_ready_addresses] == ["127.0.0.2", "127.0.0.3"]

    users = {r.user for r in server.requests() if r.path.startswith("/api")}
    assert users == {"system:node:node-1"}


def test_ipv6_slice_and_no_op_update(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    server.set_endpoints(["::1"], slice_name="v6")
    before = server.resource_version
    server.set_endpoints(["::1"], slice_name="v6")
    assert server.resource_version == before  # nothing changed: no write, no event
    es = client.DiscoveryV1Api(api).read_namespaced_endpoint_slice("v6", "default")
    assert es.address_type == "IPv6"
    with pytest.raises(ValueError):
        server.set_endpoints(["127.0.0.1", "::1"])


def test_watch_replays_then_follows_changes(
    server: FakeKubeApiServer, api: client.ApiClient
) -> None:
    discovery = client.DiscoveryV1Api(api)
    rv = discovery.list_namespaced_endpoint_slice(
        "default", label_selector=SELECTOR
    ).metadata.resource_version
    server.set_endpoints(["127.0.0.1", "127.0.0.2"])  # before the watch: replayed from history
    seen = []
    w = watch.Watch()
    for event in w.stream(
        discovery.list_namespaced_endpoint_slice,
        "default",
        label_selector=SELECTOR,
        resource_version=rv,
        timeout_seconds=10,
    ):
        raw = event["raw_object"]
        seen.append((event["type"], addresses(raw), raw["metadata"]["resourceVersion"]))
        if len(seen) == 1:
            server.set_endpoints(["127.0.0.2"], slice_name="other", service="other")  # filtered
            server.set_endpoints(["127.0.0.2", "127.0.0.3"])
        elif len(seen) == 2:
            server.set_endpoints([])
        elif len(seen) == 3:
            w.stop()
    assert [(t, a) for t, a, _ in seen] == [
        ("MODIFIED", ["127.0.0.1", "127.0.0.2"]),
        ("MODIFIED", ["127.0.0.2", "127.0.0.3"]),
        ("DELETED", ["127.0.0.2", "127.0.0.3"]),
    ]
    versions = [int(v) for _, _, v in seen]
    assert versions == sorted(versions) and str(versions[-1]) == server.resource_version
    assert isinstance(seen and event["object"], client.V1EndpointSlice)


def test_watch_without_resource_version_starts_with_current_state(
    server: FakeKubeApiServer, api: client.ApiClient
) -> None:
    events = list(
        watch.Watch().stream(
            client.DiscoveryV1Api(api).list_namespaced_endpoint_slice,
            "default",
            label_selector=SELECTOR,
            timeout_seconds=1,
        )
    )
    assert [(e["type"], addresses(e["raw_object"])) for e in events] == [("ADDED", ["127.0.0.1"])]


@pytest.mark.parametrize("with_timeout", [True, False])
def test_watch_from_compacted_version_is_410(
    server: FakeKubeApiServer, api: client.ApiClient, with_timeout: bool
) -> None:
    discovery = client.DiscoveryV1Api(api)
    rv = discovery.list_namespaced_endpoint_slice("default").metadata.resource_version
    server.set_endpoints(["127.0.0.2"])
    server.compact()
    kwargs = {"timeout_seconds": 5} if with_timeout else {}
    started = time.monotonic()
    # Both clients turn the ERROR event into ApiException(410); without timeout_seconds
    # they first retry once from the same resourceVersion, which expires again.
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice, "default", resource_version=rv, **kwargs
        ):
            pytest.fail("no event expected")
    assert err.value.status == 410
    assert err.value.reason.startswith("Expired: too old resource version")
    assert time.monotonic() - started < 3
    # 37.x sends watch=true, 22.6.0 watch=True.
    watches = [r for r in server.requests() if r.query.get("watch", "").lower() == "true"]
    assert len(watches) == (1 if with_timeout else 2)


def test_expired_watch_on_the_wire(pki: Pki, server: FakeKubeApiServer) -> None:
    rv = server.resource_version
    server.set_endpoints(["127.0.0.2"])
    server.compact()
    cert = pki.client_cert("system:node:node-1", ("system:nodes",))
    path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    path += f"?watch=1&resourceVersion={rv}"
    status, body = raw_get(server.url(), path, cafile=pki.ca_cert, cert=cert)
    # As the watch cache: 200, then one ERROR event with a 410 "Expired" Status.
    assert status == 200
    (line,) = body.splitlines()
    event = json.loads(line)
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert event["object"]["message"] == f"too old resource version: {rv} ({int(rv) + 1})"


def test_history_limit_expires_old_versions(pki: Pki, tmp_path: Path) -> None:
    with FakeKubeApiServer(pki, history=2) as srv:
        srv.set_endpoints(["127.0.0.1"])
        api_client = make_api(pki, tmp_path, srv.url())
        discovery = client.DiscoveryV1Api(api_client)
        rv = discovery.list_namespaced_endpoint_slice("default").metadata.resource_version
        for last in range(2, 5):
            srv.set_endpoints([f"127.0.0.{last}"])
        with pytest.raises(ApiException) as err:
            list(
                watch.Watch().stream(
                    discovery.list_namespaced_endpoint_slice,
                    "default",
                    resource_version=rv,
                    timeout_seconds=2,
                )
            )
        assert err.value.status == 410
        recent = str(int(srv.resource_version) - 2)
        events = list(
            watch.Watch().stream(
                discovery.list_namespaced_endpoint_slice,
                "default",
                resource_version=recent,
                timeout_seconds=1,
            )
        )
        assert [addresses(e["raw_object"]) for e in events] == [["127.0.0.3"], ["127.0.0.4"]]
        api_client.close()


def test_bookmarks_only_when_requested(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    discovery = client.DiscoveryV1Api(api)
    w = watch.Watch()
    bookmarks = []
    for event in w.stream(
        discovery.list_namespaced_endpoint_slice,
        "default",
        label_selector=SELECTOR,
        allow_watch_bookmarks=True,
        timeout_seconds=10,
    ):
        if event["type"] == "BOOKMARK":
            bookmarks.append(event["raw_object"])
            if len(bookmarks) == 2:
                w.stop()
    assert bookmarks[-1] == {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"resourceVersion": server.resource_version},
    }
    plain = list(
        watch.Watch().stream(discovery.list_namespaced_endpoint_slice, "default", timeout_seconds=1)
    )
    assert [e["type"] for e in plain] == ["ADDED"]


def test_timeout_seconds_ends_the_stream(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    discovery = client.DiscoveryV1Api(api)
    rv = server.resource_version
    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice,
            "default",
            resource_version=rv,
            timeout_seconds=1,
        )
    )
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 <= elapsed < 3
    # The connection is reusable afterwards (the stream ended with its last chunk).
    assert discovery.list_namespaced_endpoint_slice("default").items


def test_drop_watches_cuts_the_stream(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    discovery = client.DiscoveryV1Api(api)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice, "default", timeout_seconds=10
        ):
            assert event["type"] == "ADDED"
            server.drop_watches()
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("variant", ["inline", "combined"])
def test_kubeconfig_variants(
    pki: Pki, tmp_path: Path, server: FakeKubeApiServer, variant: str
) -> None:
    api_client = make_api(pki, tmp_path, server.url(), **{variant: True})
    text = (tmp_path / "kubeconfig").read_text()
    assert ("client-certificate-data:" in text) == (variant == "inline")
    assert client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice("default").items
    api_client.close()


def test_client_certificate_required(pki: Pki, tmp_path: Path, server: FakeKubeApiServer) -> None:
    url = server.url()
    status, body = raw_get(url, "/apis/discovery.k8s.io/v1/endpointslices", cafile=pki.ca_cert)
    assert status == 401
    assert json.loads(body)["reason"] == "Unauthorized"
    assert raw_get(url, "/readyz", cafile=pki.ca_cert) == (200, b"ok")
    assert raw_get(url, "/livez", cafile=pki.ca_cert) == (200, b"ok")
    status, body = raw_get(url, "/version", cafile=pki.ca_cert)
    assert status == 200 and json.loads(body)["major"] == "1"

    foreign = Pki(tmp_path / "foreign")
    foreign_kubeconfig = foreign.kubeconfig(tmp_path / "foreign.conf", url)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(foreign_kubeconfig), client_configuration=cfg)
    cfg.ssl_ca_cert = str(pki.ca_cert)  # trust the server, present a certificate it does not
    cfg.retries = 0
    api_client = client.ApiClient(cfg)
    with pytest.raises(urllib3.exceptions.HTTPError):
        client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice("default")
    api_client.close()


def test_unknown_path_is_404_status(pki: Pki, server: FakeKubeApiServer) -> None:
    cert = pki.client_cert("system:node:node-1", ("system:nodes",))
    status, body = raw_get(server.url(), "/apis/nope/v1/things", cafile=pki.ca_cert, cert=cert)
    assert status == 404
    assert json.loads(body)["kind"] == "Status"
    assert server.requests()[-1].user == "system:node:node-1"


def test_self_subject_review_shows_identity(pki: Pki, server: FakeKubeApiServer) -> None:
    cert = pki.client_cert("system:node:node-2", ("system:nodes",))
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    status, body = raw_get(server.url(), path, cafile=pki.ca_cert, cert=cert, method="POST")
    assert status == 201
    assert json.loads(body)["status"]["userInfo"] == {
        "username": "system:node:node-2",
        "groups": ["system:nodes", "system:authenticated"],
    }


def test_self_subject_access_review(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    authz = client.AuthorizationV1Api(api)

    def allowed(verb: str) -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace="default",
                    verb=verb,
                    group="discovery.k8s.io",
                    resource="endpointslices",
                )
            )
        )
        return authz.create_self_subject_access_review(review).status.allowed

    assert allowed("list") and allowed("watch") and allowed("delete")
    server.set_rules({("list", "discovery.k8s.io", "endpointslices", "default")})
    assert allowed("list")
    assert not allowed("watch")
    server.set_rules({("*", "discovery.k8s.io", "*", "*")})
    assert allowed("watch")


def test_forbidden_list_and_watch(server: FakeKubeApiServer, api: client.ApiClient) -> None:
    discovery = client.DiscoveryV1Api(api)
    server.set_rules({("get", "", "endpoints", "default")})
    with pytest.raises(ApiException) as err:
        discovery.list_namespaced_endpoint_slice("default", label_selector=SELECTOR)
    assert err.value.status == 403
    body = json.loads(err.value.body)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'endpointslices.discovery.k8s.io is forbidden: User "system:node:node-1" cannot list '
        'resource "endpointslices" in API group "discovery.k8s.io" in the namespace "default"'
    )
    with pytest.raises(ApiException) as err:
        list(
            watch.Watch().stream(
                discovery.list_namespaced_endpoint_slice, "default", timeout_seconds=1
            )
        )
    assert err.value.status == 403
    assert client.CoreV1Api(api).read_namespaced_endpoints("kubernetes", "default").subsets


def test_hang_times_out_streams_and_new_requests(
    pki: Pki, tmp_path: Path, server: FakeKubeApiServer
) -> None:
    api_client = make_api(pki, tmp_path, server.url(), retries=0)
    discovery = client.DiscoveryV1Api(api_client)
    started = None
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        for _ in watch.Watch().stream(
            discovery.list_namespaced_endpoint_slice,
            "default",
            timeout_seconds=30,
            _request_timeout=(2, 2),
        ):
            server.hang("127.0.0.1")
            server.set_endpoints(["127.0.0.2"])  # must not reach the client
            started = time.monotonic()
    assert started is not None and time.monotonic() - started < 5

    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        discovery.list_namespaced_endpoint_slice("default", _request_timeout=(2, 2))
    assert time.monotonic() - started < 5

    # Anonymous probes hang just the same, also at the TLS handshake.
    with pytest.raises(socket.timeout):
        host, port = server.url()[len("https://") :].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=1)
        try:
            ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
            ctx.wrap_socket(sock, server_hostname="kubernetes")
        finally:
            sock.close()

    server.serve("127.0.0.1")
    items = discovery.list_namespaced_endpoint_slice("default", _request_timeout=(2, 2)).items
    assert addresses(api_client.sanitize_for_serialization(items[0])) == ["127.0.0.2"]
    api_client.close()


def test_refuse_and_serve_again(pki: Pki, tmp_path: Path, server: FakeKubeApiServer) -> None:
    api_client = make_api(pki, tmp_path, server.url(), retries=0)
    discovery = client.DiscoveryV1Api(api_client)
    assert discovery.list_namespaced_endpoint_slice("default").items
    server.refuse("127.0.0.1")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    with pytest.raises(urllib3.exceptions.HTTPError):
        discovery.list_namespaced_endpoint_slice("default", _request_timeout=(2, 2))
    server.serve("127.0.0.1")
    assert discovery.list_namespaced_endpoint_slice("default").items
    api_client.close()


def test_three_listeners_share_state(pki: Pki, tmp_path: Path) -> None:
    nodes = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with FakeKubeApiServer(pki, addresses=nodes) as srv:
        assert {srv.url(a) for a in nodes} == {f"https://{a}:{srv.port}" for a in nodes}
        srv.set_endpoints(nodes)
        for a in nodes:
            (tmp_path / a).mkdir()
        clients = [make_api(pki, tmp_path / a, srv.url(a)) for a in nodes]
        lists = [
            client.DiscoveryV1Api(c).list_namespaced_endpoint_slice("default") for c in clients
        ]
        assert {lst.metadata.resource_version for lst in lists} == {srv.resource_version}
        (es,) = lists[0].items
        assert [e.addresses[0] for e in es.endpoints] == nodes
        assert es.ports[0].port == srv.port
        assert {r.address for r in srv.requests()} == set(nodes)

        srv.set_ready("127.0.0.3", False)
        assert raw_get(srv.url("127.0.0.2"), "/readyz", cafile=pki.ca_cert) == (200, b"ok")
        status, _ = raw_get(srv.url("127.0.0.3"), "/readyz", cafile=pki.ca_cert)
        assert status == 500

        srv.refuse("127.0.0.4")
        srv.set_endpoints(nodes[:2])
        lst = client.DiscoveryV1Api(clients[1]).list_namespaced_endpoint_slice("default")
        assert [e.addresses[0] for e in lst.items[0].endpoints] == nodes[:2]
        for c in clients:
            c.close()


def test_stop_is_idempotent_and_ends_streams(pki: Pki, tmp_path: Path) -> None:
    srv = FakeKubeApiServer(pki).start()
    srv.set_endpoints(["127.0.0.1"])
    api_client = make_api(pki, tmp_path, srv.url(), retries=0)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in watch.Watch().stream(
            client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice,
            "default",
            timeout_seconds=30,
        ):
            srv.stop()
    srv.stop()
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    api_client.close()


def test_pki_reuses_its_ca(pki: Pki, tmp_path: Path) -> None:
    again = Pki(pki.directory)
    assert again.ca_cert.read_bytes() == pki.ca_cert.read_bytes()
    with FakeKubeApiServer(again) as srv:
        srv.set_endpoints(["127.0.0.1"])
        # A kubeconfig issued before the restart still works, as for a restarted API server.
        api_client = make_api(pki, tmp_path, srv.url())
        assert client.DiscoveryV1Api(api_client).list_namespaced_endpoint_slice("default").items
        api_client.close()


def test_subprocess_mode(tmp_path: Path) -> None:
    endpoints_file = tmp_path / "endpoints"
    endpoints_file.write_text("127.0.0.1\n127.0.0.2 not-ready\n")
    kubeconfig = tmp_path / "kubelet.conf"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.kubeapi",
            "--pki-dir",
            str(tmp_path / "pki"),
            "--listen",
            "127.0.0.1",
            "--endpoints-file",
            str(endpoints_file),
            "--kubeconfig-out",
            str(kubeconfig),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("kubeapi listening on https://127.0.0.1:")
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        api_client = client.ApiClient(cfg)
        discovery = client.DiscoveryV1Api(api_client)

        def ready() -> list[tuple[str, bool]]:
            (es,) = discovery.list_namespaced_endpoint_slice("default").items
            return [(e.addresses[0], e.conditions.ready) for e in es.endpoints]

        assert ready() == [("127.0.0.1", True), ("127.0.0.2", False)]
        endpoints_file.write_text("# edited\n127.0.0.2\n")
        deadline = time.monotonic() + 5
        while ready() != [("127.0.0.2", True)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready() == [("127.0.0.2", True)]
        api_client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

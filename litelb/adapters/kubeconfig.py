"""Which kubeconfig litelb uses and how it becomes a client Configuration.

litelb borrows the kubelet's identity: every control-plane node already has a
kubelet kubeconfig whose client certificate the kubelet keeps rotated, so there
is no credential of litelb's own to provision or renew.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from typing import Any, Callable, Optional, TypeVar

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

log = logging.getLogger("litelb.kube")

# How often the kubeconfig's appearance is checked while litelb waits for it, so
# it proceeds well within a second of `kubeadm init` writing it.
KUBECONFIG_POLL = 0.5
# A 401 makes the files be read again even if they look unchanged, but not more
# often than this: every probe of every API server may be rejected at once.
FORCED_RELOAD_SPACING = 1.0

_T = TypeVar("_T")

# In the documented order (kubeadm, TKGI, RKE2, k3s); a node normally has exactly one.
KUBELET_KUBECONFIGS: tuple[tuple[str, str], ...] = (
    ("/etc/kubernetes/kubelet.conf", "kubeadm"),
    ("/var/vcap/jobs/kubelet/config/kubeconfig", "TKGI"),
    ("/var/lib/rancher/rke2/agent/kubelet.kubeconfig", "RKE2"),
    ("/var/lib/rancher/k3s/agent/kubelet.kubeconfig", "k3s"),
)


class KubeError(Exception):
    """Kubernetes could not be asked or did not answer what litelb needs."""


class KubeConfigError(KubeError):
    """The kubeconfig is missing, unreadable or unusable."""


def find_kubeconfig(
    configured: str, candidates: tuple[tuple[str, str], ...] = KUBELET_KUBECONFIGS
) -> tuple[str, str]:
    """(path, why it was picked); KubeConfigError names every path that was tried."""
    if configured:
        if not os.path.isfile(configured):
            raise KubeConfigError(
                f"[kubernetes] kubeconfig = {configured!r}: no such file "
                '(set it to "" to use the kubelet\'s kubeconfig)'
            )
        if not os.access(configured, os.R_OK):
            raise KubeConfigError(
                f"[kubernetes] kubeconfig = {configured!r}: not readable by this user "
                "(litelb runs as root)"
            )
        return configured, "configured in [kubernetes] kubeconfig"
    for path, distribution in candidates:
        if os.path.isfile(path):
            return path, f"{distribution} kubelet kubeconfig ([kubernetes] kubeconfig is empty)"
    tried = ", ".join(f"{path} ({distribution})" for path, distribution in candidates)
    raise KubeConfigError(
        f"no kubelet kubeconfig found (tried {tried}); "
        "set [kubernetes] kubeconfig to this node's kubelet kubeconfig"
    )


def kubeconfig_wanted(configured: str) -> str:
    """What litelb waits for while no kubeconfig exists, for STATUS= and the log."""
    if configured:
        return configured
    return "a kubelet kubeconfig (" + ", ".join(path for path, _ in KUBELET_KUBECONFIGS) + ")"


def load_configuration(path: str, server: Optional[str] = None) -> k8s_client.Configuration:
    """A fresh client Configuration from the kubeconfig, optionally aimed at another server.

    Never the library's global default: the daemon holds one client per server and
    `litelb check` builds its own. Reading the file again for each server also
    picks up a client certificate the kubelet has rotated meanwhile.
    """
    configuration = k8s_client.Configuration()
    try:
        k8s_config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    # The loader raises whatever its YAML parser, base64 decoder or file access raise;
    # every one of them means the same thing to the operator.
    except Exception as e:
        raise KubeConfigError(f"{path}: cannot load the kubeconfig: {e}") from e
    if not configuration.verify_ssl:
        raise KubeConfigError(
            f"{path}: insecure-skip-tls-verify is set; litelb only talks to an API server "
            "whose certificate it can verify (give the cluster's certificate-authority)"
        )
    if server is not None:
        configuration.host = server
    # A failed attempt must surface at once so the next API server is tried;
    # urllib3's default would repeat a read timeout three times.
    configuration.retries = False
    return configuration


_Signature = tuple[Optional[tuple[int, int, int, int]], ...]


def _stat(path: Optional[str]) -> Optional[tuple[int, int, int, int]]:
    if not path:
        return None
    try:
        # stat follows symlinks: the kubelet swaps kubelet-client-current.pem, a
        # link, to a new file, which changes the inode seen here.
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _check_loads(configuration: k8s_client.Configuration) -> None:
    """Raise KubeConfigError unless the CA, certificate and key load (and match)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if configuration.ssl_ca_cert:
            context.load_verify_locations(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise KubeConfigError(
            f"{configuration.cert_file or configuration.ssl_ca_cert}: the client certificate, "
            f"key or CA does not load: {e}"
        ) from e


class KubeCredentials:
    """The kubeconfig and the CA, certificate and key files it names, kept current.

    The kubelet rotates its client certificate in place and an operator may replace
    the CA bundle: every use compares the files' identity (inode, mtime, size) with
    what was loaded and loads them again when one changed; `rejected` (a 401) loads
    them again at once. A half-written file is not used: the previous credentials
    stay in force until the new ones load. Thread-safe.
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._forced_at = float("-inf")
        self._reported: Optional[str] = None
        self.generation = 0
        self._configuration, self._signature = self._load()
        self._derived: dict[Callable[..., Any], tuple[int, Any]] = {}

    def _files(self, configuration: k8s_client.Configuration) -> tuple[Optional[str], ...]:
        return (
            self.path,
            configuration.ssl_ca_cert,
            configuration.cert_file,
            configuration.key_file,
        )

    def _load(self) -> tuple[k8s_client.Configuration, _Signature]:
        configuration = load_configuration(self.path)
        # Taken before the files are checked: a change after this is seen next time.
        signature = tuple(_stat(f) for f in self._files(configuration))
        _check_loads(configuration)
        return configuration, signature

    def refresh(self, *, force: bool = False) -> int:
        """Load the files again if they changed on disk (or `force`); the generation,
        which grows with every load that took effect."""
        with self._lock:
            configuration = self._configuration
            now = self._clock()
            if force and now - self._forced_at < FORCED_RELOAD_SPACING:
                force = False
            if not force and tuple(_stat(f) for f in self._files(configuration)) == self._signature:
                return self.generation
            if force:
                self._forced_at = now
            try:
                loaded, signature = self._load()
            except KubeConfigError as e:
                if str(e) != self._reported:
                    log.warning("%s; still using the credentials loaded before", e)
                    self._reported = str(e)
                return self.generation
            self._reported = None
            if signature == self._signature and not self._changed(configuration, loaded):
                return self.generation
            self._configuration, self._signature = loaded, signature
            self.generation += 1
            log.info("kubeconfig %s: credentials changed on disk; using the new ones", self.path)
            return self.generation

    @staticmethod
    def _changed(old: k8s_client.Configuration, new: k8s_client.Configuration) -> bool:
        def content(c: k8s_client.Configuration) -> tuple[bytes, ...]:
            data = []
            for f in (c.ssl_ca_cert, c.cert_file, c.key_file):
                try:
                    with open(f or "", "rb") as fh:
                        data.append(fh.read())
                except OSError:
                    data.append(b"")
            return tuple(data)

        return content(old) != content(new)

    def rejected(self, where: str) -> int:
        """An API server answered 401 to these credentials: read them again now."""
        generation = self.generation
        after = self.refresh(force=True)
        if after == generation:
            text = (
                f"{where} rejected the client credentials of {self.path} (401 Unauthorized); "
                "the files on disk are unchanged (expired or revoked client certificate? "
                "the kubelet renews it)"
            )
            with self._lock:
                if text != self._reported:
                    log.warning("%s", text)
                    self._reported = text
        return after

    def configuration(self, server: Optional[str] = None) -> k8s_client.Configuration:
        """A fresh client Configuration with the current credentials, aimed at `server`."""
        self.refresh()
        return load_configuration(self.path, server)

    @property
    def server(self) -> str:
        with self._lock:
            return str(self._configuration.host).rstrip("/")

    def tls_files(self) -> tuple[Optional[str], Optional[str], Optional[str]]:
        """(CA, client certificate, client key) in use."""
        self.refresh()
        with self._lock:
            c = self._configuration
            return c.ssl_ca_cert, c.cert_file, c.key_file

    def derived(self, build: Callable[[Optional[str], Optional[str], Optional[str]], _T]) -> _T:
        """`build(CA, certificate, key)` for the current credentials, built once per
        generation (the probes' TLS context)."""
        generation = self.refresh()
        with self._lock:
            cached = self._derived.get(build)
            if cached is None or cached[0] != generation:
                c = self._configuration
                cached = (generation, build(c.ssl_ca_cert, c.cert_file, c.key_file))
                self._derived[build] = cached
            return cached[1]


def wait_for_credentials(
    configured: str,
    stop: threading.Event,
    *,
    waiting: Callable[[Optional[str]], None],
    poll: float = KUBECONFIG_POLL,
) -> Optional[KubeCredentials]:
    """Block until a kubeconfig exists and loads; None if `stop` is set first.

    Before `kubeadm init` there is no kubeconfig yet: that is a state to wait in,
    reported through `waiting` ("waiting for …", or None once found), never an error.
    """
    reported: Optional[str] = None
    while not stop.is_set():
        path = ""
        try:
            path, why = find_kubeconfig(configured)
            credentials = KubeCredentials(path)
        except KubeConfigError as e:
            if not path and not (configured and os.path.exists(configured)):
                text = f"waiting for {kubeconfig_wanted(configured)}"
            else:
                text = f"waiting for a usable kubeconfig: {e}"
            if text != reported:
                log.warning("%s", text)
                reported = text
                waiting(text)
            stop.wait(poll)
            continue
        log.info("using kubeconfig %s (%s)", path, why)
        waiting(None)
        return credentials
    return None

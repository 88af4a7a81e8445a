"""Which kubeconfig litelb uses and how it becomes a client Configuration.

litelb borrows the kubelet's identity: every control-plane node already has a
kubelet kubeconfig whose client certificate the kubelet keeps rotated, so there
is no credential of litelb's own to provision or renew.
"""

from __future__ import annotations

import os
from typing import Optional

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

# In the order of SPEC §2; a node normally has exactly one of them.
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

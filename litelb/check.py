"""`litelb check`: preflight of everything the daemon needs, one line per check."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Optional

from litelb.adapters.kube_client import (
    DISCOVERY_GROUP,
    RBAC_FIX,
    KubeClient,
    KubeForbiddenError,
)
from litelb.adapters.kube_slices import ADDRESS_TYPES
from litelb.adapters.kubeconfig import (
    KubeConfigError,
    KubeCredentials,
    KubeError,
    find_kubeconfig,
)
from litelb.adapters.local import LocalAddressError, connected_networks
from litelb.adapters.nsx import NsxClient
from litelb.adapters.nsx_body import Tier1Info
from litelb.adapters.nsx_errors import NsxError, NsxNotFoundError
from litelb.adapters.vip import VipError, VipManager, local_addresses
from litelb.config import Config, KubernetesConfig
from litelb.core.decide import own_identity
from litelb.identity import identity_error
from litelb.model import CheckResult, EndpointSnapshot
from litelb.status import fetch_status, status_url


def run_checks(cfg: Config) -> list[CheckResult]:
    results = [CheckResult("ok", f"configuration {cfg.path}")]
    if cfg.nsx.insecure:
        results.append(
            CheckResult("warn", "nsx.insecure = true: NSX certificates are not verified")
        )
    results.append(identity_check(cfg))
    results.extend(nsx_checks(cfg))
    try:
        addresses = local_addresses()
    except VipError as e:
        results.append(CheckResult("FAIL", str(e)))
    else:
        results.extend(
            kube_checks(
                cfg.kubernetes,
                family=cfg.vip.family,
                vip=cfg.vip.address,
                local_addresses=addresses,
            )
        )
    results.append(vip_check(cfg))
    results.append(segment_check(cfg))
    return results


def identity_check(cfg: Config) -> CheckResult:
    address = cfg.kubernetes.node_address
    if not address:
        return CheckResult("ok", "kubernetes.node_address is found in the EndpointSlice")
    try:
        error = identity_error(cfg)
    except LocalAddressError as e:
        return CheckResult("warn", f"kubernetes.node_address {address}: {e}")
    if error is not None:
        return CheckResult("FAIL", f"kubernetes.node_address: {error.message}")
    return CheckResult("ok", f"kubernetes.node_address {address} is an address of this host")


def nsx_checks(cfg: Config) -> list[CheckResult]:
    """TLS, credentials and the Tier-1 on every manager; the route through the first
    manager that has the Tier-1."""
    results: list[CheckResult] = []
    working: Optional[tuple[NsxClient, Tier1Info]] = None
    for manager in cfg.nsx.managers:
        # One attempt per manager: check reports, it does not wait out an outage.
        client = NsxClient(replace(cfg.nsx, managers=(manager,)), max_attempts=1)
        try:
            tier1 = client.get_tier1()
        except NsxNotFoundError as e:
            results.append(CheckResult("ok", f"NSX manager {manager}: TLS and credentials ok"))
            results.append(CheckResult("FAIL", f"Tier-1 {cfg.nsx.tier1!r} not found: {e}"))
            client.close()
            continue
        except NsxError as e:
            results.append(CheckResult("FAIL", str(e)))
            client.close()
            continue
        results.append(CheckResult("ok", f"NSX manager {manager}: TLS and credentials ok"))
        if working is None:
            working = (client, tier1)
        else:
            client.close()
    if working is None:
        return results
    client, tier1 = working
    try:
        results.extend(_tier1_checks(tier1))
        results.extend(_route_checks(cfg, client))
    finally:
        client.close()
    return results


def _tier1_checks(tier1: Tier1Info) -> list[CheckResult]:
    results = []
    if tier1.advertises_static_routes:
        results.append(CheckResult("ok", f"Tier-1 {tier1.path} advertises TIER1_STATIC_ROUTES"))
    else:
        results.append(
            CheckResult(
                "FAIL",
                f"Tier-1 {tier1.path} does not advertise TIER1_STATIC_ROUTES, so the VIP "
                "route never reaches the Tier-0: add it under Route Advertisement "
                "(route_advertisement_types)",
            )
        )
    if tier1.tier0_path:
        results.append(CheckResult("ok", f"Tier-1 is connected to {tier1.tier0_path}"))
    else:
        results.append(
            CheckResult("warn", "Tier-1 has no tier0_path: the route is advertised nowhere")
        )
    return results


def _route_checks(cfg: Config, client: NsxClient) -> list[CheckResult]:
    path = cfg.nsx.route_path
    try:
        route = client.get_route()
    except NsxError as e:
        return [CheckResult("FAIL", f"route {path}: {e}")]
    if route is None:
        return [CheckResult("ok", f"route {path} does not exist yet; the leader will create it")]
    if not route.managed:
        return [
            CheckResult(
                "FAIL",
                f"route {path} exists without the tag litelb/managed-by=litelb: litelb will "
                "not touch it; delete it in NSX or choose another nsx.route_id",
            )
        ]
    results = [
        CheckResult(
            "ok",
            f"route {path} is litelb's: leader {route.leader or '(none)'}, "
            f"next hops {', '.join(route.next_hops)}",
        )
    ]
    if route.leader is not None and _names_this_host(cfg, route.leader):
        results.append(_writer_check(cfg, route.leader))
    return results


def _names_this_host(cfg: Config, leader: str) -> bool:
    if leader == cfg.kubernetes.node_address:
        return True
    try:
        return leader in local_addresses()
    except VipError:
        return False


def _writer_check(cfg: Config, leader: str) -> CheckResult:
    """Two nodes with one identity would both write as the leader. The route names this
    host: its own daemon must be running and know itself as that leader."""
    if not cfg.metrics.enabled:
        return CheckResult(
            "warn",
            f"the route names this node ({leader}) as its leader; with metrics.listen empty "
            "this check cannot ask the daemon here whether it is the one writing",
        )
    try:
        status = fetch_status(cfg.metrics)
    except OSError:
        return CheckResult(
            "FAIL",
            f"the route names this node ({leader}) as its leader, but no litelb daemon answers "
            f"here ({status_url(cfg.metrics)}): another node uses the same identity "
            "(kubernetes.node_address), or this daemon stopped without handing over",
        )
    if status.get("node") == leader and status.get("leader") is True:
        return CheckResult("ok", f"this node ({leader}) leads the route, and its daemon knows it")
    return CheckResult(
        "FAIL",
        f"the route names this node ({leader}) as its leader, but the litelb daemon here is "
        f"{status.get('node')!r} and not the leader: another node uses the same identity "
        "(kubernetes.node_address)",
    )


def vip_check(cfg: Config) -> CheckResult:
    where = f"VIP {cfg.vip.address} on {cfg.vip.interface}"
    try:
        present = VipManager(cfg.vip.address, cfg.vip.interface).present()
    except VipError as e:
        return CheckResult("FAIL", str(e))
    if present:
        return CheckResult("ok", f"{where} is present")
    if cfg.vip.manage:
        return CheckResult("warn", f"{where} is absent; `litelb run` adds it")
    return CheckResult(
        "FAIL",
        f"{where} is absent and vip.manage = false: the API server will drop packets "
        "for the VIP; add it yourself or set vip.manage = true",
    )


# -- Kubernetes -------------------------------------------------------------------


def kube_checks(
    cfg: KubernetesConfig,
    *,
    family: int,
    vip: Optional[str] = None,
    local_addresses: frozenset[str] = frozenset(),
) -> list[CheckResult]:
    """The Kubernetes lines of `litelb check`; with `vip`, also whether certificates name it;
    `local_addresses` find this node's own entry in the EndpointSlices."""
    results: list[CheckResult] = []
    try:
        path, why = find_kubeconfig(cfg.kubeconfig)
    except KubeConfigError as e:
        return [CheckResult("FAIL", f"kubeconfig: {e}")]
    results.append(CheckResult("ok", f"kubeconfig {path}: {why}"))
    try:
        client = KubeClient(cfg, KubeCredentials(path), read_timeout=5.0)
    except KubeConfigError as e:
        results.append(CheckResult("FAIL", f"kubeconfig: {e}"))
        return results
    try:
        results.extend(_client_checks(client, cfg, family, vip, local_addresses))
    finally:
        client.close()
    return results


def _client_checks(
    client: KubeClient,
    cfg: KubernetesConfig,
    family: int,
    vip: Optional[str],
    local_addresses: frozenset[str],
) -> list[CheckResult]:
    results: list[CheckResult] = []
    missing = []
    try:
        for verb in ("list", "watch"):
            if not client.access_review(verb, DISCOVERY_GROUP, "endpointslices", cfg.namespace):
                missing.append(verb)
    except KubeError as e:
        return [CheckResult("FAIL", f"kubernetes API: {e}")]
    try:
        subject, sans = client.server_certificate()
        results.append(
            CheckResult(
                "ok",
                f"kubernetes API server {client.server}: certificate {subject}, "
                f"SANs {', '.join(sans) or '(none)'}",
            )
        )
        if vip is not None:
            results.append(_vip_san_check(client.server, sans, vip))
    except KubeError as e:
        results.append(CheckResult("warn", f"kubernetes API server {client.server}: {e}"))
    if missing:
        results.append(
            CheckResult(
                "FAIL",
                f"RBAC: may not {' or '.join(missing)} {DISCOVERY_GROUP}/endpointslices in "
                f"namespace {cfg.namespace!r}; fix: {RBAC_FIX}",
            )
        )
    else:
        results.append(
            CheckResult(
                "ok",
                f"RBAC: may list and watch {DISCOVERY_GROUP}/endpointslices in "
                f"namespace {cfg.namespace!r}",
            )
        )
    results.extend(_endpoints_checks(client, cfg, family, local_addresses))
    return results


def _vip_san_check(server: str, sans: tuple[str, ...], vip: str) -> CheckResult:
    address = ipaddress.ip_address(vip).compressed
    if address in sans:
        return CheckResult("ok", f"VIP {address} is in the certificate of {server}")
    # Only a warning: clients may reach the VIP through a DNS name that is listed.
    return CheckResult(
        "warn",
        f"VIP {address} is not in the certificate of {server}: clients connecting to "
        f"https://{_bracketed(address)} by address fail TLS verification "
        "(add it to the API server certificate's SANs, e.g. kubeadm apiServer.certSANs, "
        "unless clients use a DNS name from the list above)",
    )


def _endpoints_checks(
    client: KubeClient, cfg: KubernetesConfig, family: int, local: frozenset[str]
) -> list[CheckResult]:
    kind = ADDRESS_TYPES[family]
    try:
        snapshot = client.list_slices(family)
    except KubeForbiddenError:
        try:
            fallback = client.get_endpoints(family)
        except KubeError as e:
            return [CheckResult("FAIL", f"EndpointSlices of {cfg.service}: forbidden; {e}")]
        return [
            CheckResult(
                "warn",
                f"EndpointSlices of {cfg.service}: forbidden; the daemon would poll the core "
                f"Endpoints instead ({len(fallback.ready_addresses)} ready {kind}: "
                f"{', '.join(fallback.ready_addresses) or 'none'}); fix: {RBAC_FIX}",
            ),
            _identity_check(cfg, fallback, local),
        ]
    except KubeError as e:
        return [CheckResult("FAIL", f"EndpointSlices of {cfg.service}: {e}")]
    ready = snapshot.ready_addresses
    text = (
        f"EndpointSlices of {cfg.service} list {len(ready)} ready {kind} endpoints"
        f"{': ' + ', '.join(ready) if ready else ''}"
    )
    return [CheckResult("ok" if ready else "FAIL", text), _identity_check(cfg, snapshot, local)]


def _identity_check(
    cfg: KubernetesConfig, snapshot: EndpointSnapshot, local: frozenset[str]
) -> CheckResult:
    listed = [e.address for e in snapshot.endpoints]
    node = own_identity(cfg.node_address, local, listed)
    if node is None:
        return CheckResult(
            "FAIL",
            f"none of this node's addresses is listed in the EndpointSlices of {cfg.service}: "
            "it would follow but never lead; set kubernetes.node_address to the address its "
            "API server advertises",
        )
    if node not in snapshot.ready_addresses:
        return CheckResult("warn", f"this node is {node}, but its API server is not ready")
    return CheckResult("ok", f"this node is {node}: its API server is listed and ready")


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# -- the VIP and the node's segment -------------------------------------------------


def _arp_sysctl(interface: str, name: str) -> int:
    """The value the kernel applies on `interface`: the larger of `all` and the interface's."""
    values = []
    for scope in ("all", interface):
        try:
            with open(f"/proc/sys/net/ipv4/conf/{scope}/{name}", encoding="ascii") as f:
                values.append(int(f.read().strip()))
        except (OSError, ValueError):
            values.append(0)
    return max(values)


def segment_check(cfg: Config) -> CheckResult:
    """A VIP inside a subnet this node is connected to is answered by ARP from every node."""
    vip = cfg.vip.address
    try:
        inside = connected_networks(vip, cfg.vip.interface)
    except LocalAddressError as e:
        return CheckResult("warn", f"cannot list this node's subnets to place VIP {vip}: {e}")
    if not inside:
        return CheckResult("ok", f"VIP {vip} lies outside every subnet this node is connected to")
    interface, network = inside[0]
    if ipaddress.ip_address(vip).version == 4 and (
        _arp_sysctl(interface, "arp_ignore") >= 1 and _arp_sysctl(interface, "arp_announce") >= 2
    ):
        return CheckResult(
            "ok",
            f"VIP {vip} lies in {network} on {interface}; arp_ignore/arp_announce keep this "
            "node from answering ARP for it",
        )
    fix = (
        "sysctl net.ipv4.conf.all.arp_ignore=1 and net.ipv4.conf.all.arp_announce=2"
        if ipaddress.ip_address(vip).version == 4
        else "a VIP outside the segment (Neighbor Discovery answers for any local address)"
    )
    return CheckResult(
        "warn",
        f"VIP {vip} lies in {network}, the subnet of {interface}: hosts on that segment "
        "resolve it by ARP and every node with the VIP on lo answers, bypassing the route; "
        f"use a VIP outside the segment, or set {fix}",
    )

"""`litelb check`: preflight of everything the daemon needs, one line per check."""

from __future__ import annotations

import ipaddress
from contextlib import closing
from dataclasses import replace

from pyroute2 import IPRoute, NetlinkError

from litelb.adapters.kube import kube_checks
from litelb.adapters.nsx import NsxClient, NsxError, NsxNotFoundError, Tier1Info
from litelb.adapters.vip import VipError, VipManager, local_addresses
from litelb.config import Config
from litelb.model import CheckResult


def run_checks(cfg: Config) -> list[CheckResult]:
    results = [CheckResult("ok", f"configuration {cfg.path}")]
    if cfg.nsx.insecure:
        results.append(
            CheckResult("warn", "nsx.insecure = true: NSX certificates are not verified")
        )
    results.extend(nsx_checks(cfg))
    results.extend(
        kube_checks(
            cfg.kubernetes,
            family=cfg.vip.family,
            vip=cfg.vip.address,
            local_addresses=local_addresses(),
        )
    )
    results.append(vip_check(cfg))
    results.append(segment_check(cfg))
    return results


def nsx_checks(cfg: Config) -> list[CheckResult]:
    results: list[CheckResult] = []
    working = None
    for manager in cfg.nsx.managers:
        # One attempt per manager: check reports, it does not wait out an outage.
        client = NsxClient(replace(cfg.nsx, managers=(manager,)), max_attempts=1)
        try:
            tier1 = client.get_tier1()
        except NsxNotFoundError as e:
            results.append(CheckResult("ok", f"NSX manager {manager}: TLS and credentials ok"))
            results.append(CheckResult("FAIL", f"Tier-1 {cfg.nsx.tier1!r} not found: {e}"))
            client.close()
            return results
        except NsxError as e:
            results.append(CheckResult("FAIL", str(e)))
            client.close()
            continue
        results.append(CheckResult("ok", f"NSX manager {manager}: TLS and credentials ok"))
        if working is None:
            working, found = client, tier1
        else:
            client.close()
    if working is None:
        return results
    try:
        results.extend(_tier1_checks(found))
        results.append(_route_check(cfg, working))
    finally:
        working.close()
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


def _route_check(cfg: Config, client: NsxClient) -> CheckResult:
    path = cfg.nsx.route_path
    try:
        route = client.get_route()
    except NsxError as e:
        return CheckResult("FAIL", f"route {path}: {e}")
    if route is None:
        return CheckResult("ok", f"route {path} does not exist yet; the leader will create it")
    if not route.managed:
        return CheckResult(
            "FAIL",
            f"route {path} exists without the tag litelb/managed-by=litelb: litelb will not "
            "touch it; delete it in NSX or choose another nsx.route_id",
        )
    return CheckResult(
        "ok",
        f"route {path} is litelb's: leader {route.leader or '(none)'}, "
        f"next hops {', '.join(route.next_hops)}",
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


def connected_networks(vip: str, vip_interface: str) -> list[tuple[str, str]]:
    """(interface, network) of every connected subnet, other than the VIP's interface and
    lo, that contains the VIP."""
    address = ipaddress.ip_address(vip)
    found = []
    with closing(IPRoute()) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        for msg in ipr.get_addr():
            name = names.get(msg["index"], "")
            raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if not raw or name in ("lo", vip_interface):
                continue
            network = ipaddress.ip_network(f"{raw}/{msg['prefixlen']}", strict=False)
            if network.num_addresses > 1 and address in network:
                found.append((name, str(network)))
    return found


def segment_check(cfg: Config) -> CheckResult:
    """A VIP inside a subnet this node is connected to is answered by ARP from every node."""
    vip = cfg.vip.address
    try:
        inside = connected_networks(vip, cfg.vip.interface)
    except (OSError, NetlinkError) as e:
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

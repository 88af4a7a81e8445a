"""The `litelb` command: parses arguments, maps outcomes to exit codes.

Each command imports what only it needs when it runs, so `litelb status` and
`litelb version` stay small and `litelb run` carries nothing of check or cleanup.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from litelb import __version__
from litelb.config import (
    DEFAULT_PATH,
    EX_CONFIG,
    ConfigError,
    load,
    load_metrics,
)

EX_OK, EX_FAIL = 0, 1


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"litelb {__version__}")
        return EX_OK
    if args.command == "rbac":
        sys.stdout.write(rbac_yaml())
        return EX_OK
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"litelb: {e}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return EX_FAIL


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litelb", description="Kubernetes control-plane VIP on a VMware NSX-T Tier-1."
    )
    parser.add_argument("--version", action="version", version=f"litelb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default = os.environ.get("LITELB_CONFIG") or DEFAULT_PATH

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "-c", "--config", default=default, help=f"configuration file (default {default})"
        )
        return p

    command("run", "run the daemon (systemd's ExecStart)")
    command("check", "preflight: configuration, Kubernetes, RBAC, NSX, VIP")
    status = command("status", "the running daemon's view, from its /status")
    status.add_argument("--json", action="store_true", help="print /status as JSON")
    cleanup = command("cleanup", "remove the VIP and/or delete the route (only if litelb owns it)")
    cleanup.add_argument("--vip", action="store_true", help="remove the VIP from the interface")
    cleanup.add_argument("--route", action="store_true", help="delete the route in NSX")
    sub.add_parser("rbac", help="print the RBAC objects litelb needs")
    sub.add_parser("version", help="print the version")
    return parser


def rbac_yaml() -> str:
    from importlib import resources

    return resources.files("litelb").joinpath("rbac.yaml").read_text(encoding="utf-8")


def cmd_run(args: argparse.Namespace) -> int:
    from litelb.adapters.local import LocalAddressError
    from litelb.identity import identity_error

    config = load(args.config)
    try:
        error = identity_error(config)
    except LocalAddressError as e:
        # Not a mistake in the file: the daemon finds out soon enough on its own.
        print(f"litelb: warning: {e}", file=sys.stderr)
        error = None
    if error is not None:
        raise error
    # Only now: a configuration error is reported without loading the daemon's libraries.
    from litelb.daemon import run

    return run(config)


def cmd_check(args: argparse.Namespace) -> int:
    from litelb.check import run_checks

    results = run_checks(load(args.config))
    for result in results:
        print(result)
    return EX_FAIL if any(r.level == "FAIL" for r in results) else EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    from litelb.status import fetch_status

    try:
        status = fetch_status(load_metrics(args.config))
    except OSError as e:
        print(f"litelb: {e}", file=sys.stderr)
        return EX_FAIL
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return EX_OK


def format_status(s: dict) -> str:
    vip, route, nsx, kube = s["vip"], s["route"], s["nsx"], s.get("kubernetes", {})
    role = "leader" if s["leader"] else f"follower of {s['leader_identity'] or '(none)'}"
    present = {True: "present", False: "ABSENT", None: "unknown"}[vip["present"]]
    sync = "in sync" if route["in_sync"] else f"NOT in sync ({s.get('reason', '?')})"
    lines = [
        f"node        {s['node'] or '(unknown)'} ({role})",
        f"vip         {vip['address']} on {vip['interface']}: {present}"
        + ("" if vip["managed"] else " (not managed)"),
        f"route       {route['path']}: {sync}, last sync {route['last_sync'] or 'never'}",
        f"next hops   {' '.join(route['next_hops']) or '(none)'}",
        f"nsx         {nsx['manager']} "
        + {True: "reachable", False: "UNREACHABLE", None: "not contacted yet"}[nsx["reachable"]],
        f"kubernetes  {kube.get('server') or '?'}"
        + (" (synced)" if kube.get("synced") else " (waiting for the first list)"),
        "endpoints   ADDRESS          READY  HEALTHY",
    ]
    for e in s["endpoints"]:
        lines.append(f"            {e['address']:<16} {_yes(e['ready']):<6} {_yes(e['healthy'])}")
    for source, error in (("route", route["last_error"]), ("kubernetes", kube.get("last_error"))):
        if error:
            lines.append(f"error       {source}: {error}")
    return "\n".join(lines)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def cmd_cleanup(args: argparse.Namespace) -> int:
    from litelb.cleanup import cleanup

    both = not args.vip and not args.route
    return cleanup(load(args.config), vip=args.vip or both, route=args.route or both)


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "status": cmd_status,
    "cleanup": cmd_cleanup,
}

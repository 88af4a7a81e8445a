"""/etc/litelb.toml -> one frozen Config. Errors name FILE:KEY (and the line where known)."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Optional, TypeVar
from urllib.parse import urlsplit

from litelb.hostport import split_host_port
from litelb.model import default_route_id
from litelb.secrets import (
    FileCheckError,
    PasswordSource,
    Secret,
    find_password,
    require_ca_bundle,
    require_file,
    require_key_pair,
    require_private,
)
from litelb.tomlfile import TomlFileError, find_line, loads, read_text

_T = TypeVar("_T")
DEFAULT_PATH = "/etc/litelb.toml"
EX_CONFIG = 78


class ConfigError(Exception):
    """What is wrong with the configuration, as `<file>[:<line>]:<key>: <message>`.

    `key` is "section.key" ("" for errors of the file as a whole, such as a
    TOML syntax error); `line` is 1-based, None where unknown. The message never
    contains a secret.
    """

    def __init__(self, path: str, key: str, message: str, line: Optional[int] = None) -> None:
        super().__init__(path, key, message, line)
        self.path = path
        self.key = key
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f":{self.key}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class VipConfig:
    address: str
    interface: str = "lo"
    manage: bool = True

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class KubernetesConfig:
    kubeconfig: str = ""
    service: str = "default/kubernetes"
    api_servers: tuple[str, ...] = ()
    node_address: str = ""

    @property
    def namespace(self) -> str:
        return self.service.split("/", 1)[0]

    @property
    def service_name(self) -> str:
        return self.service.split("/", 1)[1]


@dataclass(frozen=True)
class CoordinationConfig:
    takeover_after: float = 1.0
    stale_after: float = 10.0
    hold_down: float = 30.0


@dataclass(frozen=True)
class HealthConfig:
    enabled: bool = True
    path: str = "/readyz"
    interval: float = 1.0
    timeout: float = 1.0
    fall: int = 2
    rise: int = 2


@dataclass(frozen=True)
class NsxConfig:
    managers: tuple[str, ...]
    tier1: str
    project: str = ""
    route_id: str = ""
    auth: str = "basic"
    username: str = "admin"
    password: Optional[Secret] = field(default=None, repr=False)
    password_file: str = "/etc/litelb/nsx-password"
    client_cert: str = ""
    client_key: str = ""
    ca_file: str = ""
    thumbprint: str = ""
    insecure: bool = False
    timeout: float = 10.0
    resync_interval: float = 60.0

    @property
    def policy_prefix(self) -> str:
        """Where this cluster's Tier-1 lives in the policy tree."""
        if self.project:
            return f"/orgs/default/projects/{self.project}/infra"
        return "/infra"

    @property
    def tier1_path(self) -> str:
        return f"{self.policy_prefix}/tier-1s/{self.tier1}"

    @property
    def route_path(self) -> str:
        return f"{self.tier1_path}/static-routes/{self.route_id}"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9651"

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def host(self) -> str:
        """The address to bind, without the brackets of an IPv6 address."""
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    vip: VipConfig
    nsx: NsxConfig
    kubernetes: KubernetesConfig = KubernetesConfig()
    coordination: CoordinationConfig = CoordinationConfig()
    health: HealthConfig = HealthConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    path: str = DEFAULT_PATH


def resolved_route_id(route_id: str, vip: str) -> str:
    return route_id or default_route_id(vip)


def load(path: str, *, environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate the configuration file at `path`, check the files it
    names and find the NSX password: everything `litelb run` needs."""
    text = _read(path)
    return resolve(parse(text, path), text, environ=environ)


def load_metrics(path: str) -> MetricsConfig:
    """Only `[metrics]` of the file at `path`: what `litelb status` needs. The
    other sections are not validated and no secret is read, so any user who may
    read the file may ask a running daemon, whose configuration may differ."""
    return parse_metrics(_read(path), path)


def parse_metrics(text: str, path: str) -> MetricsConfig:
    """`[metrics]` of the TOML `text`; pure, like `parse`."""
    doc = _toml(text, path)
    section = doc.get("metrics", {})
    if not isinstance(section, dict):
        raise ConfigError(
            path,
            "metrics",
            f"must be a table ([metrics]), not {_type_name(section)}",
            find_line(text, "metrics"),
        )
    table = _Table(path, text, "metrics", MetricsConfig, section)
    table.reject_unknown()
    return _metrics(table)


def _read(path: str) -> str:
    try:
        return read_text(path)
    except TomlFileError as e:
        raise ConfigError(path, "", e.message) from None


def _toml(text: str, path: str) -> dict[str, Any]:
    try:
        return loads(text)
    except TomlFileError as e:
        raise ConfigError(path, "", e.message, e.line) from None


def parse(text: str, path: str) -> Config:
    """Validate the TOML `text` of the file `path` into a Config.

    Pure: no file, environment or network is consulted (`path` only names the
    file in errors). The NSX password is there only when the text holds it;
    `resolve` checks the files the configuration names and finds the password.
    """
    return validate(_toml(text, path), path, text)


def validate(doc: Mapping[str, Any], path: str, text: str = "") -> Config:
    """The Config of the TOML document `doc` read from `text` (used only to find
    the line of an error); pure."""
    for name, value in doc.items():
        if name not in SECTIONS:
            raise ConfigError(path, name, _unknown(name, list(SECTIONS), ""), find_line(text, name))
        if not isinstance(value, dict):
            raise ConfigError(
                path,
                name,
                f"must be a table ([{name}]), not {_type_name(value)}",
                find_line(text, name),
            )
    tables = {
        name: _Table(path, text, name, cls, doc.get(name, {})) for name, cls in SECTIONS.items()
    }
    for t in tables.values():
        t.reject_unknown()
    # In the order of the shipped file, so the first error reported is the topmost.
    vip = _vip(tables["vip"])
    kubernetes = _kubernetes(tables["kubernetes"], vip)
    coordination = _coordination(tables["coordination"])
    health = _health(tables["health"])
    nsx = _nsx(tables["nsx"], vip)
    return Config(
        vip=vip,
        nsx=nsx,
        kubernetes=kubernetes,
        coordination=coordination,
        health=health,
        metrics=_metrics(tables["metrics"]),
        log=LogConfig(level=tables["log"].choice("level", _LOG_LEVELS)),
        path=path,
    )


def resolve(cfg: Config, text: str, *, environ: Mapping[str, str] = os.environ) -> Config:
    """`cfg` (parsed from `text`) with the NSX password found, after checking that
    every file it names exists and that every file holding a secret is private."""
    nsx = cfg.nsx

    def check(key: str, fn: Callable[..., _T], *args: Any) -> _T:
        try:
            return fn(*args)
        except FileCheckError as e:
            line = find_line(text, "nsx", key)
            raise ConfigError(cfg.path, f"nsx.{key}", str(e), line) from None

    for key in ("client_cert", "client_key", "ca_file"):
        if getattr(nsx, key):
            check(key, require_file, getattr(nsx, key))
    if nsx.ca_file:
        check("ca_file", require_ca_bundle, nsx.ca_file)
    if nsx.password is not None:
        # Even when auth does not use it, a secret must not sit in a readable file.
        check("password", require_private, cfg.path)
    if nsx.auth == "certificate":
        check("client_key", require_private, nsx.client_key)
        check("client_key", require_key_pair, nsx.client_cert, nsx.client_key)
        return cfg
    if nsx.password is not None:
        return cfg
    source = PasswordSource.from_environ(nsx.password_file, environ)
    password = check("password_file", find_password, source)
    return dataclasses.replace(cfg, nsx=dataclasses.replace(nsx, password=password))


SECTIONS: Mapping[str, type] = MappingProxyType(
    {
        "vip": VipConfig,
        "kubernetes": KubernetesConfig,
        "coordination": CoordinationConfig,
        "health": HealthConfig,
        "nsx": NsxConfig,
        "metrics": MetricsConfig,
        "log": LogConfig,
    }
)
# The range of every number, inclusive; docs/configuration.md says why each bound is there.
RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "coordination.takeover_after": (0.2, 3600.0),
        "coordination.stale_after": (1.0, 3600.0),
        "coordination.hold_down": (1.0, 86400.0),
        "health.interval": (0.1, 60.0),
        "health.timeout": (0.1, 60.0),
        "health.fall": (1, 100),
        "health.rise": (1, 100),
        "nsx.timeout": (1.0, 300.0),
        "nsx.resync_interval": (5.0, 3600.0),
    }
)
_AUTH_MODES = ("basic", "session", "certificate")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_NSX_ID = re.compile(r"[A-Za-z0-9_.-]{1,255}")
# DNS-1123 label for the namespace, DNS-1035 label for the Service name.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SERVICE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
# A DNS name as resolvers accept it (underscores occur in the wild); IPs are checked apart.
_HOST = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class _Table:
    """One section of the document, read against the defaults of its dataclass."""

    path: str
    text: str
    section: str
    cls: type
    values: Mapping[str, Any]

    def error(self, key: str, message: str, *, locate: bool = True) -> ConfigError:
        line = find_line(self.text, self.section, key) if locate else None
        return ConfigError(self.path, f"{self.section}.{key}", message, line)

    def reject_unknown(self) -> None:
        known = [f.name for f in dataclasses.fields(self.cls)]
        for key in self.values:
            if key not in known:
                raise self.error(key, _unknown(key, known, self.section))

    def has(self, key: str) -> bool:
        return key in self.values

    def _get(self, key: str, types: tuple[type, ...], what: str) -> Any:
        if key not in self.values:
            default = {f.name: f.default for f in dataclasses.fields(self.cls)}[key]
            if default is dataclasses.MISSING:
                raise self.error(key, "is required", locate=False)
            return default
        value = self.values[key]
        # TOML booleans are Python ints; `timeout = true` must not read as 1.
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise self.error(key, f"must be {what}, not {_type_name(value)}")
        return value

    def string(self, key: str) -> str:
        return self._get(key, (str,), "a string")

    def boolean(self, key: str) -> bool:
        return self._get(key, (bool,), "true or false")

    def integer(self, key: str) -> int:
        value = self._get(key, (int,), "an integer")
        low, high = RANGES[f"{self.section}.{key}"]
        if not low <= value <= high:
            raise self.error(key, f"must be from {low:g} to {high:g}, not {_number(value)}")
        return value

    def seconds(self, key: str) -> float:
        value = self._get(key, (int, float), "a number of seconds")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(key, f"must be a finite number of seconds, not {value}")
        low, high = RANGES[f"{self.section}.{key}"]
        # Compared before any conversion: an integer of 400 digits is no float.
        if not low <= value <= high:
            raise self.error(key, f"must be from {low:g} to {high:g} seconds, not {_number(value)}")
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, (list, tuple), "an array of strings")
        for item in value:
            if not isinstance(item, str):
                raise self.error(key, f"must be an array of strings, not of {_type_name(item)}")
        return tuple(value)

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.string(key)
        if value not in choices:
            hint = _did_you_mean(value, choices)
            raise self.error(key, f"'{value}' is not one of {' | '.join(choices)}{hint}")
        return value

    def nsx_id(self, key: str, *, optional: bool) -> str:
        value = self.string(key)
        if optional and not value:
            return value
        if not _NSX_ID.fullmatch(value) or not value.strip("."):
            raise self.error(
                key,
                f"'{value}' is not an NSX id (1 to 255 letters, digits, '-', '_', '.')",
            )
        return value


def _vip(t: _Table) -> VipConfig:
    address = t.string("address")
    if "/" in address:
        bare = address.split("/", 1)[0]
        raise t.error(
            "address",
            f"'{address}' has a prefix length; write '{bare}' (litelb routes it as a host route)",
        )
    if "%" in address:
        raise t.error("address", f"'{address}' has a zone index; a VIP cannot be link-local")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise t.error("address", f"'{address}' is not an IPv4 or IPv6 address") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise t.error("address", f"'{address}' cannot be routed to as a VIP")
    interface = t.string("interface")
    # The kernel's own rule (dev_valid_name): at most 15 bytes, no '/', ':' or space.
    if (
        not 0 < len(interface.encode()) <= 15
        or interface in (".", "..")
        or any(c in "/:" or c.isspace() for c in interface)
    ):
        raise t.error("interface", f"'{interface}' is not a network interface name")
    return VipConfig(address=str(ip), interface=interface, manage=t.boolean("manage"))


def _kubernetes(t: _Table, vip: VipConfig) -> KubernetesConfig:
    service = t.string("service")
    namespace, slash, name = service.partition("/")
    if not slash or not _NAMESPACE.fullmatch(namespace) or not _SERVICE_NAME.fullmatch(name):
        raise t.error("service", f"'{service}' is not 'namespace/name' (e.g. 'default/kubernetes')")
    api_servers = tuple(
        _url(t, "api_servers", url, allow_loopback_http=False) for url in t.strings("api_servers")
    )
    node_address = t.string("node_address")
    if node_address:
        try:
            ip = ipaddress.ip_address(node_address)
        except ValueError:
            raise t.error("node_address", f"'{node_address}' is not an IP address") from None
        if "%" in node_address or ip.is_unspecified or ip.is_multicast:
            # A next hop of the route: NSX needs a plain unicast address.
            raise t.error("node_address", f"'{node_address}' cannot be a node's address")
        if ip == ipaddress.ip_address(vip.address):
            raise t.error("node_address", "is the VIP; set this node's own API server address")
        if ip.version != vip.family:
            raise t.error(
                "node_address",
                f"'{node_address}' is IPv{ip.version} but the VIP is IPv{vip.family}",
            )
        node_address = str(ip)
    kubeconfig = t.string("kubeconfig")
    if ":" in kubeconfig:
        # The kubernetes client reads a kubeconfig path as a ':'-separated list.
        raise t.error("kubeconfig", f"'{kubeconfig}' contains ':'; rename or link the file")
    return KubernetesConfig(
        kubeconfig=kubeconfig,
        service=service,
        api_servers=api_servers,
        node_address=node_address,
    )


def _coordination(t: _Table) -> CoordinationConfig:
    takeover_after = t.seconds("takeover_after")
    hold_down = t.seconds("hold_down")
    if hold_down < takeover_after:
        # A shorter hold-down would let two nodes that cannot see each other trade
        # the route at every takeover_after: the guard would guard nothing.
        raise t.error(
            "hold_down",
            f"must be at least takeover_after ({takeover_after:g} s), not {hold_down:g}",
        )
    return CoordinationConfig(
        takeover_after=takeover_after, stale_after=t.seconds("stale_after"), hold_down=hold_down
    )


def _health(t: _Table) -> HealthConfig:
    path = t.string("path")
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise t.error("path", f"'{path}' must be a URL path starting with '/', e.g. '/readyz'")
    return HealthConfig(
        enabled=t.boolean("enabled"),
        path=path,
        interval=t.seconds("interval"),
        timeout=t.seconds("timeout"),
        fall=t.integer("fall"),
        rise=t.integer("rise"),
    )


def _nsx(t: _Table, vip: VipConfig) -> NsxConfig:
    urls = t.strings("managers")
    if not urls:
        raise t.error("managers", "needs at least one manager, e.g. ['https://nsx.example.com']")
    managers = tuple(_url(t, "managers", url, allow_loopback_http=True) for url in urls)
    if len(set(managers)) != len(managers):
        raise t.error("managers", "lists the same manager twice")
    tier1 = t.nsx_id("tier1", optional=False)
    project = t.nsx_id("project", optional=True)
    route_id = resolved_route_id(t.nsx_id("route_id", optional=True), vip.address)
    auth = t.choice("auth", _AUTH_MODES)
    username = t.string("username")
    password_file = t.string("password_file")
    client_cert = t.string("client_cert")
    client_key = t.string("client_key")
    ca_file = t.string("ca_file")
    thumbprint = t.string("thumbprint")
    if thumbprint and not _HEX64.fullmatch(thumbprint.replace(":", "")):
        raise t.error("thumbprint", f"'{thumbprint}' is not a SHA-256 fingerprint (64 hex digits)")
    insecure = t.boolean("insecure")
    if insecure and thumbprint:
        raise t.error(
            "insecure", "contradicts thumbprint (which pins the certificate): set only one"
        )
    timeout = t.seconds("timeout")
    resync_interval = t.seconds("resync_interval")
    password: Optional[Secret] = None
    if t.has("password"):
        inline = t.string("password")
        if not inline:
            raise t.error("password", "is empty; remove it to use password_file instead")
        password = Secret(inline)
    if auth == "certificate":
        for key, value in (("client_cert", client_cert), ("client_key", client_key)):
            if not value:
                raise t.error(key, "is required with auth = 'certificate'")
    elif not username:
        raise t.error("username", f"is required with auth = '{auth}'")
    return NsxConfig(
        managers=managers,
        tier1=tier1,
        project=project,
        route_id=route_id,
        auth=auth,
        username=username,
        password=password,
        password_file=password_file,
        client_cert=client_cert,
        client_key=client_key,
        ca_file=ca_file,
        # Normalised so the adapter can compare it with a computed digest as is.
        thumbprint=thumbprint.replace(":", "").lower(),
        insecure=insecure,
        timeout=timeout,
        resync_interval=resync_interval,
    )


def _metrics(t: _Table) -> MetricsConfig:
    listen = t.string("listen")
    if listen:
        try:
            split_host_port(listen)
        except ValueError as e:
            raise t.error("listen", f"'{listen}' {e}") from None
    return MetricsConfig(listen=listen)


def _url(t: _Table, key: str, url: str, *, allow_loopback_http: bool) -> str:
    # Checked first and without quoting the URL: it would carry a password.
    if "@" in re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]:
        where = "nsx.username and nsx.password_file" if key == "managers" else "the kubeconfig"
        raise t.error(key, f"a URL must not carry credentials; put them in {where}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as e:
        # urllib's own words: "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise t.error(key, f"'{url}' is not a valid URL: {e}") from None
    # Python 3.9's urllib accepts any text in brackets; later versions refuse it.
    if "[" in parts.netloc and not _is_ipv6(host):
        raise t.error(key, f"'{url}' is not a valid URL: brackets must hold an IPv6 address")
    scheme = parts.scheme.lower()
    loopback_http = allow_loopback_http and scheme == "http" and _is_loopback(host)
    if scheme != "https" and not loopback_http:
        hint = " (plain http only for a manager on the loopback)" if allow_loopback_http else ""
        raise t.error(key, f"'{url}' is not an https:// URL{hint}")
    if not host:
        raise t.error(key, f"'{url}' has no host")
    if not _HOST.fullmatch(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise t.error(key, f"'{url}' has no valid host name or address") from None
    if port == 0:
        raise t.error(key, f"'{url}' has an invalid port")
    if parts.query or parts.fragment:
        raise t.error(key, f"'{url}' must not have a query or fragment")
    return url.rstrip("/")


def _is_ipv6(host: Optional[str]) -> bool:
    try:
        ipaddress.IPv6Address(host or "")
    except ValueError:
        return False
    return True


def _is_loopback(host: Optional[str]) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unknown(key: str, known: list[str], section: str) -> str:
    """ "unknown key" with the likeliest intended key, also from other sections."""
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"unknown {'key' if section else 'section'}; did you mean '{prefix}{close[0]}'?"
    for other, cls in SECTIONS.items():
        if other != section and key in {f.name for f in dataclasses.fields(cls)}:
            return f"unknown key; did you mean '{other}.{key}' (in [{other}])?"
    return f"unknown {'key' if section else 'section'}; known: {', '.join(known)}"


def _did_you_mean(value: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _number(value: float) -> str:
    """A number as an error message shows it: 1e+308, 0.05, or the first digits
    of an integer too long to print."""
    if isinstance(value, int) and abs(value) >= 10**15:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[:3]}… ({len(digits)} digits)"
    return f"{value:g}"


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), f"a {type(value).__name__}")

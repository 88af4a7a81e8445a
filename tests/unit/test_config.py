from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import traceback
from pathlib import Path
from typing import Optional

import pytest

from litelb import config, secrets
from litelb.config import (
    Config,
    ConfigError,
    CoordinationConfig,
    HealthConfig,
    KubernetesConfig,
    LogConfig,
    MetricsConfig,
    NsxConfig,
    Secret,
    VipConfig,
)
from tests.pki import Pki

if sys.version_info >= (3, 11):
    pass
else:
    pass

SHIPPED = Path(__file__).resolve().parents[2] / "etc" / "litelb.toml"
ENV = {"LITELB_NSX_PASSWORD": "env-password"}
SECRET = "hunter2-do-not-print"

# Raw TOML values by section; each error case overrides some of them.
BASE: dict[str, dict[str, str]] = {
    "vip": {"address": '"192.168.160.249"'},
    "nsx": {
        "managers": '["https://nsx.example.com"]',
        "tier1": '"cluster-router"',
        "password_file": '""',
    },
}


def render(overrides: dict[str, Optional[str]]) -> str:
    """BASE with "section.key" set to a raw TOML value, or removed when None."""
    sections = {name: dict(keys) for name, keys in BASE.items()}
    for dotted, raw in overrides.items():
        section, key = dotted.split(".")
        if raw is None:
            sections[section].pop(key, None)
        else:
            sections.setdefault(section, {})[key] = raw
    return "".join(
        f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
        for name, keys in sections.items()
    )


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def resolved(text: str, path: str, *, environ: dict[str, str]) -> Config:
    """What `load` makes of a file at `path` holding `text`: parsed, files checked,
    password found."""
    return config.resolve(config.parse(text, path), text, environ=environ)


def parse_error(text: str, environ: Optional[dict[str, str]] = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        resolved(text, "litelb.toml", environ=ENV if environ is None else environ)
    return info.value


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def test_full_config(tmp_path: Path, pki: Pki) -> None:
    ca = pki.ca_cert
    password_file = write(tmp_path / "nsx-password", SECRET + "\n")
    text = f"""
[vip]
address = "10.0.0.10"
interface = "dummy0"
manage = false

[kubernetes]
kubeconfig = "/etc/kubernetes/kubelet.conf"
service = "kube-system/apiserver"
api_servers = ["https://10.0.0.2:6443", "https://cp.example.com:6443/"]
node_address = "10.0.0.2"

[coordination]
takeover_after = 0.5
stale_after = 20
hold_down = 5

[health]
enabled = false
path = "/livez?verbose"
interval = 0.5
timeout = 0.25
fall = 3
rise = 5

[nsx]
managers = ["https://nsx-1.example.com/", "https://[2001:db8::5]:8443"]
tier1 = "t1_cluster.a"
project = "tenant-1"
route_id = "cp-vip"
auth = "session"
username = "litelb"
password_file = "{password_file}"
ca_file = "{ca}"
thumbprint = "{"AB:" * 31}AB"
timeout = 30
resync_interval = 5

[metrics]
listen = "[::1]:9000"

[log]
level = "debug"
"""
    cfg = resolved(text, "/etc/litelb.toml", environ={})
    assert cfg == Config(
        vip=VipConfig(address="10.0.0.10", interface="dummy0", manage=False),
        kubernetes=KubernetesConfig(
            kubeconfig="/etc/kubernetes/kubelet.conf",
            service="kube-system/apiserver",
            api_servers=("https://10.0.0.2:6443", "https://cp.example.com:6443"),
            node_address="10.0.0.2",
        ),
        coordination=CoordinationConfig(takeover_after=0.5, stale_after=20.0, hold_down=5.0),
        health=HealthConfig(
            enabled=False, path="/livez?verbose", interval=0.5, timeout=0.25, fall=3, rise=5
        ),
        nsx=NsxConfig(
            managers=("https://nsx-1.example.com", "https://[2001:db8::5]:8443"),
            tier1="t1_cluster.a",
            project="tenant-1",
            route_id="cp-vip",
            auth="session",
            username="litelb",
            password=Secret(SECRET),
            password_file=str(password_file),
            ca_file=str(ca),
            thumbprint="ab" * 32,
            timeout=30.0,
            resync_interval=5.0,
        ),
        metrics=MetricsConfig(listen="[::1]:9000"),
        log=LogConfig(level="debug"),
        path="/etc/litelb.toml",
    )
    assert cfg.kubernetes.namespace == "kube-system"
    assert cfg.kubernetes.service_name == "apiserver"
    assert cfg.nsx.route_path == (
        "/orgs/default/projects/tenant-1/infra/tier-1s/t1_cluster.a/static-routes/cp-vip"
    )
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9000)


def test_minimal_config_gets_the_defaults() -> None:
    cfg = resolved(render({}), "litelb.toml", environ=ENV)
    assert cfg == Config(
        vip=VipConfig(address="192.168.160.249", interface="lo", manage=True),
        kubernetes=KubernetesConfig(
            kubeconfig="", service="default/kubernetes", api_servers=(), node_address=""
        ),
        coordination=CoordinationConfig(takeover_after=1.0, stale_after=10.0, hold_down=30.0),
        health=HealthConfig(
            enabled=True, path="/readyz", interval=1.0, timeout=1.0, fall=2, rise=2
        ),
        nsx=NsxConfig(
            managers=("https://nsx.example.com",),
            tier1="cluster-router",
            project="",
            route_id="litelb-192-168-160-249",
            auth="basic",
            username="admin",
            password=Secret("env-password"),
            password_file="",
            client_cert="",
            client_key="",
            ca_file="",
            thumbprint="",
            insecure=False,
            timeout=10.0,
            resync_interval=60.0,
        ),
        metrics=MetricsConfig(listen="127.0.0.1:9651"),
        log=LogConfig(level="info"),
        path="litelb.toml",
    )
    assert (
        cfg.nsx.route_path == "/infra/tier-1s/cluster-router/static-routes/litelb-192-168-160-249"
    )
    assert (cfg.metrics.host, cfg.metrics.port, cfg.metrics.enabled) == ("127.0.0.1", 9651, True)


@pytest.mark.skipif(
    os.path.exists("/etc/litelb/nsx-password"), reason="an installed password file would be read"
)
def test_shipped_file_parses_to_the_defaults(tmp_path: Path) -> None:
    copy = tmp_path / "litelb.toml"
    shutil.copy(SHIPPED, copy)
    copy.chmod(0o600)
    cfg = config.load(str(copy), environ=ENV)
    assert cfg == resolved(
        render({"nsx.password_file": '"/etc/litelb/nsx-password"'}), str(copy), environ=ENV
    )


def test_ipv6_vip() -> None:
    cfg = resolved(
        render(
            {
                "vip.address": '"2001:DB8::10"',
                "kubernetes.node_address": '"2001:db8:0::2"',
                "metrics.listen": '"[::]:9651"',
            }
        ),
        "litelb.toml",
        environ=ENV,
    )
    assert cfg.vip.address == "2001:db8::10"
    assert cfg.vip.family == 6
    assert cfg.kubernetes.node_address == "2001:db8::2"
    assert cfg.nsx.route_id == "litelb-2001-db8--10"
    assert (cfg.metrics.host, cfg.metrics.port) == ("::", 9651)


@pytest.mark.parametrize(
    "manager", ["http://127.0.0.1:8080", "http://127.3.0.1", "http://localhost:1", "http://[::1]:2"]
)
def test_plain_http_manager_on_the_loopback(manager: str) -> None:
    cfg = resolved(render({"nsx.managers": f'["{manager}"]'}), "litelb.toml", environ=ENV)
    assert cfg.nsx.managers == (manager,)


def test_cluster_things_need_not_exist_yet() -> None:
    # litelb starts before `kubeadm init`: only the syntax is checked here.
    cfg = resolved(
        render(
            {
                "kubernetes.kubeconfig": '"/nonexistent/kubelet.conf"',
                "kubernetes.api_servers": '["https://cp.example.invalid:6443"]',
            }
        ),
        "litelb.toml",
        environ=ENV,
    )
    assert cfg.kubernetes.kubeconfig == "/nonexistent/kubelet.conf"
    assert cfg.kubernetes.api_servers == ("https://cp.example.invalid:6443",)


def test_metrics_can_be_disabled() -> None:
    cfg = resolved(render({"metrics.listen": '""'}), "litelb.toml", environ=ENV)
    assert not cfg.metrics.enabled


def certificate_auth(cert: Path, key: Path) -> str:
    return render(
        {"nsx.auth": '"certificate"', "nsx.client_cert": f'"{cert}"', "nsx.client_key": f'"{key}"'}
    )


def test_certificate_auth_needs_no_password(pki: Pki) -> None:
    cert, key = pki.client_cert("litelb-node-1")
    cfg = resolved(certificate_auth(cert, key), "litelb.toml", environ={})
    assert cfg.nsx.password is None
    assert (cfg.nsx.client_cert, cfg.nsx.client_key) == (str(cert), str(key))


def test_client_key_of_another_certificate_is_rejected(pki: Pki) -> None:
    cert, _ = pki.client_cert("litelb-node-1")
    _, other_key = pki.client_cert("litelb-node-2")
    error = parse_error(certificate_auth(cert, other_key))
    assert error.key == "nsx.client_key"
    assert error.message == f"{other_key} is not the key of the certificate {cert}"


def test_client_certificate_that_is_not_pem_is_rejected(pki: Pki, tmp_path: Path) -> None:
    _, key = pki.client_cert("litelb-node-1")
    cert = write(tmp_path / "c.pem", "not a certificate")
    error = parse_error(certificate_auth(cert, key))
    assert error.key == "nsx.client_key"
    assert "are not a PEM certificate and its key" in error.message


def test_encrypted_client_key_is_rejected_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert, key = pki.client_cert("litelb-node-1")
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    locked = tmp_path / "locked.key"
    locked.write_bytes(encrypted)
    locked.chmod(0o600)
    error = parse_error(certificate_auth(cert, locked))
    assert (error.key, error.message) == (
        "nsx.client_key",
        f"{locked} is encrypted; litelb needs it without a passphrase",
    )


LONG = "a" * 256
ERRORS = [
    ({"vip.address": None}, "vip.address", "is required"),
    ({"vip.address": '"192.168.160.249/32"'}, "vip.address", "write '192.168.160.249'"),
    ({"vip.address": '"vip.example.com"'}, "vip.address", "not an IPv4 or IPv6 address"),
    ({"vip.address": '"fe80::1%eth0"'}, "vip.address", "zone index"),
    ({"vip.address": '"127.0.0.53"'}, "vip.address", "cannot be routed to as a VIP"),
    ({"vip.address": '"::"'}, "vip.address", "cannot be routed to as a VIP"),
    ({"vip.address": "42"}, "vip.address", "must be a string, not an integer"),
    ({"vip.interface": '"eth0/1"'}, "vip.interface", "not a network interface name"),
    ({"vip.interface": '"sixteen-chars-xx"'}, "vip.interface", "not a network interface name"),
    ({"vip.manage": '"yes"'}, "vip.manage", "must be true or false, not a string"),
    ({"vip.manage": "1"}, "vip.manage", "must be true or false, not an integer"),
    ({"kubernetes.service": '"kubernetes"'}, "kubernetes.service", "not 'namespace/name'"),
    ({"kubernetes.kubeconfig": '"/etc/a:b.conf"'}, "kubernetes.kubeconfig", "contains ':'"),
    ({"kubernetes.service": '"default/Kube"'}, "kubernetes.service", "not 'namespace/name'"),
    ({"kubernetes.api_servers": '"https://a"'}, "kubernetes.api_servers", "an array of strings"),
    ({"kubernetes.api_servers": "[1]"}, "kubernetes.api_servers", "not of an integer"),
    (
        {"kubernetes.api_servers": '["http://10.0.0.2:6443"]'},
        "kubernetes.api_servers",
        "'http://10.0.0.2:6443' is not an https:// URL",
    ),
    (
        {"kubernetes.api_servers": '["http://127.0.0.1:6443"]'},
        "kubernetes.api_servers",
        "is not an https:// URL",
    ),
    ({"kubernetes.node_address": '"node-1"'}, "kubernetes.node_address", "not an IP address"),
    ({"kubernetes.node_address": '"0.0.0.0"'}, "kubernetes.node_address", "cannot be a node's"),
    ({"kubernetes.node_address": '"224.0.0.1"'}, "kubernetes.node_address", "cannot be a node's"),
    (
        {"kubernetes.node_address": '"2001:db8::2"'},
        "kubernetes.node_address",
        "is IPv6 but the VIP is IPv4",
    ),
    ({"coordination.takeover_after": "-1"}, "coordination.takeover_after", "from 0.2 to 3600"),
    ({"coordination.takeover_after": "0"}, "coordination.takeover_after", "from 0.2 to 3600"),
    ({"coordination.hold_down": "0"}, "coordination.hold_down", "from 1 to 86400 seconds"),
    (
        {"coordination.hold_down": "2", "coordination.takeover_after": "3"},
        "coordination.hold_down",
        "must be at least takeover_after (3 s), not 2",
    ),
    ({"coordination.stale_after": "0.5"}, "coordination.stale_after", "from 1 to 3600"),
    ({"coordination.hold_down": "true"}, "coordination.hold_down", "not a boolean"),
    ({"coordination.stale_after": '"10s"'}, "coordination.stale_after", "not a string"),
    ({"coordination.stale_after": "inf"}, "coordination.stale_after", "finite"),
    ({"coordination.stale_after": "nan"}, "coordination.stale_after", "finite"),
    ({"health.enabled": '"true"'}, "health.enabled", "must be true or false"),
    ({"health.path": '"readyz"'}, "health.path", "starting with '/'"),
    ({"health.interval": "0"}, "health.interval", "from 0.1 to 60 seconds, not 0"),
    ({"health.interval": "1e308"}, "health.interval", "from 0.1 to 60 seconds, not 1e+308"),
    ({"health.timeout": "-0.5"}, "health.timeout", "from 0.1 to 60 seconds"),
    ({"health.timeout": "61"}, "health.timeout", "from 0.1 to 60 seconds"),
    ({"health.fall": "0"}, "health.fall", "must be from 1 to 100, not 0"),
    ({"health.rise": "101"}, "health.rise", "must be from 1 to 100, not 101"),
    ({"health.rise": "-9223372036854775808"}, "health.rise", "not -922… (19 digits)"),
    # Found by the property tests: an OverflowError before.
    (
        {"coordination.takeover_after": "1" + "0" * 400},
        "coordination.takeover_after",
        "(401 digits)",
    ),
    ({"health.rise": "1.5"}, "health.rise", "must be an integer, not a float"),
    ({"health.rise": "true"}, "health.rise", "must be an integer, not a boolean"),
    ({"nsx.managers": None}, "nsx.managers", "is required"),
    ({"nsx.managers": "[]"}, "nsx.managers", "at least one manager"),
    ({"nsx.managers": '"https://nsx"'}, "nsx.managers", "an array of strings"),
    (
        {"nsx.managers": '["http://nsx.example.com"]'},
        "nsx.managers",
        "plain http only for a manager on the loopback",
    ),
    ({"nsx.managers": '["nsx.example.com"]'}, "nsx.managers", "not an https:// URL"),
    ({"nsx.managers": '["https://"]'}, "nsx.managers", "has no host"),
    ({"nsx.managers": '["https://nsx:0"]'}, "nsx.managers", "invalid port"),
    ({"nsx.managers": '["https://nsx:http"]'}, "nsx.managers", "is not a valid URL"),
    ({"nsx.managers": '["https://nsx:65536"]'}, "nsx.managers", "is not a valid URL"),
    ({"nsx.managers": '["https://[::1"]'}, "nsx.managers", "'https://[::1' is not a valid URL"),
    ({"nsx.managers": '["https://[nsx]"]'}, "nsx.managers", "is not a valid URL"),
    ({"nsx.managers": '["https://ns x"]'}, "nsx.managers", "no valid host name or address"),
    (
        {"kubernetes.api_servers": '["https://[::1:6443"]'},
        "kubernetes.api_servers",
        "is not a valid URL",
    ),
    ({"nsx.managers": '["https://nsx/?a=b"]'}, "nsx.managers", "query or fragment"),
    ({"nsx.managers": '["https://a", "https://a/"]'}, "nsx.managers", "same manager twice"),
    ({"nsx.tier1": None}, "nsx.tier1", "is required"),
    ({"nsx.tier1": '""'}, "nsx.tier1", "is not an NSX id"),
    ({"nsx.tier1": '"cluster router"'}, "nsx.tier1", "is not an NSX id"),
    ({"nsx.tier1": f'"{LONG}"'}, "nsx.tier1", "is not an NSX id"),
    ({"nsx.project": '"a/b"'}, "nsx.project", "is not an NSX id"),
    ({"nsx.route_id": '".."'}, "nsx.route_id", "is not an NSX id"),
    ({"nsx.auth": '"token"'}, "nsx.auth", "not one of basic | session | certificate"),
    ({"nsx.auth": '"sesion"'}, "nsx.auth", "did you mean 'session'?"),
    ({"nsx.auth": '"certificate"'}, "nsx.client_cert", "required with auth = 'certificate'"),
    ({"nsx.username": '""'}, "nsx.username", "required with auth = 'basic'"),
    ({"nsx.password_file": "[]"}, "nsx.password_file", "must be a string, not an array"),
    ({"nsx.ca_file": '"/nonexistent/ca.pem"'}, "nsx.ca_file", "/nonexistent/ca.pem does not exist"),
    ({"nsx.client_cert": '"/nonexistent/c.pem"'}, "nsx.client_cert", "does not exist"),
    ({"nsx.client_key": '"/nonexistent/k.pem"'}, "nsx.client_key", "does not exist"),
    ({"nsx.thumbprint": '"abc"'}, "nsx.thumbprint", "64 hex digits"),
    ({"nsx.thumbprint": f'"{"g" * 64}"'}, "nsx.thumbprint", "64 hex digits"),
    (
        {"nsx.thumbprint": f'"{"a" * 64}"', "nsx.insecure": "true"},
        "nsx.insecure",
        "contradicts thumbprint",
    ),
    ({"nsx.insecure": '"no"'}, "nsx.insecure", "must be true or false"),
    ({"nsx.timeout": "0"}, "nsx.timeout", "from 1 to 300 seconds, not 0"),
    ({"nsx.timeout": "301"}, "nsx.timeout", "from 1 to 300 seconds, not 301"),
    ({"nsx.resync_interval": "4.9"}, "nsx.resync_interval", "from 5 to 3600 seconds, not 4.9"),
    ({"nsx.resync_interval": "1e9"}, "nsx.resync_interval", "from 5 to 3600 seconds"),
    ({"metrics.listen": '"9651"'}, "metrics.listen", "must be 'host:port'"),
    ({"metrics.listen": '":9651"'}, "metrics.listen", "needs a host"),
    ({"metrics.listen": '"::1:9651"'}, "metrics.listen", "needs brackets: '[::1]:9651'"),
    ({"metrics.listen": '"[::1]9651"'}, "metrics.listen", "must be '[address]:port'"),
    ({"metrics.listen": '"[1.2.3.4]:1"'}, "metrics.listen", "not an IPv6 address"),
    ({"metrics.listen": '"127.0.0.1:0"'}, "metrics.listen", "not a number from 1 to 65535"),
    ({"metrics.listen": '"127.0.0.1:65536"'}, "metrics.listen", "not a number from 1 to 65535"),
    ({"metrics.listen": "9651"}, "metrics.listen", "must be a string, not an integer"),
    ({"log.level": '"warn"'}, "log.level", "did you mean 'warning'?"),
    ({"log.level": '"verbose"'}, "log.level", "not one of debug | info | warning | error"),
    ({"vip.adress": '"1.2.3.4"'}, "vip.adress", "unknown key; did you mean 'vip.address'?"),
    ({"nsx.level": '"debug"'}, "nsx.level", "did you mean 'log.level' (in [log])?"),
    ({"log.colour": "true"}, "log.colour", "unknown key; known: level"),
    ({"helth.enabled": "true"}, "helth", "unknown section; did you mean 'health'?"),
]


@pytest.mark.parametrize(("overrides", "key", "message"), ERRORS)
def test_errors(overrides: dict[str, Optional[str]], key: str, message: str) -> None:
    error = parse_error(render(overrides))
    assert error.key == key
    assert message in error.message
    assert error.path == "litelb.toml"
    assert str(error).startswith("litelb.toml:")
    assert str(error).endswith(f"{key}: {error.message}")


def test_error_carries_the_line() -> None:
    text = '# litelb\n\n[vip]\ninterface = "lo"\naddress = "1.2.3.4/32"\n'
    error = parse_error(text)
    assert (error.key, error.line) == ("vip.address", 5)
    assert str(error) == (
        "litelb.toml:5:vip.address: '1.2.3.4/32' has a prefix length;"
        " write '1.2.3.4' (litelb routes it as a host route)"
    )


def test_line_of_a_key_is_looked_up_in_its_own_section() -> None:
    text = render({"health.timeout": "1"}) + "\n"
    text = text.replace("[nsx]\n", "[nsx]\n# slow lab\ntimeout = 0\n")
    error = parse_error(text)
    assert error.key == "nsx.timeout"
    assert text.split("\n")[error.line - 1] == "timeout = 0"


def test_line_of_a_dotted_key_and_of_a_section() -> None:
    assert parse_error('vip.address = "x"\n').line == 1
    error = parse_error("\n\nvip = 3\n")
    assert (error.key, error.line) == ("vip", 3)
    assert error.message == "must be a table ([vip]), not an integer"
    assert parse_error(render({}) + "\n[loggging]\nlevel = 'info'\n").line == 8


def test_missing_key_has_no_line() -> None:
    error = parse_error(render({"nsx.tier1": None}))
    assert error.line is None
    assert str(error) == "litelb.toml:nsx.tier1: is required"


def test_toml_syntax_error_carries_the_line() -> None:
    error = parse_error('[vip]\naddress = "1.2.3.4"\n[nsx\n')
    assert (error.key, error.line) == ("", 3)
    assert str(error).startswith("litelb.toml:3: is not valid TOML: ")
    assert "column" in error.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path / "absent.toml"), environ=ENV)
    assert str(info.value) == f"{tmp_path / 'absent.toml'}: does not exist"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path), environ=ENV)
    assert info.value.path == str(tmp_path)
    assert info.value.message.startswith("cannot be read: ")


def test_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "litelb.toml"
    path.write_bytes(b"[vip]\naddress = '\xff'\n")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        config.load(str(path), environ=ENV)


def test_config_error_format_and_pickle() -> None:
    assert str(ConfigError("f", "vip.address", "bad")) == "f:vip.address: bad"
    assert str(ConfigError("f", "vip.address", "bad", 7)) == "f:7:vip.address: bad"
    assert str(ConfigError("f", "", "does not exist")) == "f: does not exist"
    copy = pickle.loads(pickle.dumps(ConfigError("f", "k", "m", 3)))
    assert (copy.path, copy.key, copy.message, copy.line) == ("f", "k", "m", 3)


# --- the password ----------------------------------------------------------------


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Path]:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    return {
        "file": tmp_path / "nsx-password",
        "credentials": credentials,
        "config": tmp_path / "litelb.toml",
    }


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"inline", "file", "credential", "env"}, "from-inline"),
        ({"file", "credential", "env"}, "from-file"),
        ({"credential", "env"}, "from-credential"),
        ({"env"}, "from-env"),
    ],
)
def test_password_order(sources: dict[str, Path], present: set[str], expected: str) -> None:
    overrides = {"nsx.password_file": f'"{sources["file"]}"'}
    if "inline" in present:
        overrides["nsx.password"] = '"from-inline"'
    if "file" in present:
        write(sources["file"], "from-file\n")
    if "credential" in present:
        write(sources["credentials"] / "nsx-password", "from-credential\n", 0o400)
    environ = {"CREDENTIALS_DIRECTORY": str(sources["credentials"])}
    if "env" in present:
        environ["LITELB_NSX_PASSWORD"] = "from-env"
    write(sources["config"], render(overrides))
    cfg = config.load(str(sources["config"]), environ=environ)
    assert cfg.nsx.password == Secret(expected)


def test_no_password_anywhere(sources: dict[str, Path]) -> None:
    text = render({"nsx.password_file": f'"{sources["file"]}"'})
    error = parse_error(text, environ={"CREDENTIALS_DIRECTORY": str(sources["credentials"])})
    assert error.key == "nsx.password_file"
    assert error.line == 6
    assert f"no NSX password: {sources['file']} does not exist" in error.message
    assert "LITELB_NSX_PASSWORD" in error.message


@pytest.mark.parametrize(
    ("content", "password"), [("pw \n\n", "pw \n"), ("pw\r\n", "pw"), ("p\rw", "p\rw")]
)
def test_password_file_loses_one_newline(
    sources: dict[str, Path], content: str, password: str
) -> None:
    sources["file"].write_bytes(content.encode())
    sources["file"].chmod(0o600)
    cfg = resolved(render({"nsx.password_file": f'"{sources["file"]}"'}), "litelb.toml", environ={})
    assert cfg.nsx.password == Secret(password)


def test_readable_password_file_is_rejected(sources: dict[str, Path]) -> None:
    write(sources["file"], SECRET, 0o644)
    error = parse_error(render({"nsx.password_file": f'"{sources["file"]}"'}))
    assert error.key == "nsx.password_file"
    assert f"(mode 0644): chmod 600 {sources['file']}" in error.message
    assert SECRET not in str(error)


def test_empty_password_file_is_rejected(sources: dict[str, Path]) -> None:
    write(sources["file"], "\n")
    error = parse_error(render({"nsx.password_file": f'"{sources["file"]}"'}))
    assert (error.key, error.message) == ("nsx.password_file", f"{sources['file']} is empty")


@pytest.mark.parametrize("auth", ["basic", "certificate"])
def test_password_in_a_readable_config_is_rejected(
    sources: dict[str, Path], tmp_path: Path, auth: str
) -> None:
    cert = write(tmp_path / "c.pem", "cert")
    overrides = {
        "nsx.password": f'"{SECRET}"',
        "nsx.auth": f'"{auth}"',
        "nsx.client_cert": f'"{cert}"',
        "nsx.client_key": f'"{cert}"',
    }
    path = write(sources["config"], render(overrides), 0o640)
    with pytest.raises(ConfigError) as info:
        config.load(str(path), environ=ENV)
    assert info.value.key == "nsx.password"
    assert info.value.message.endswith(f"(mode 0640): chmod 600 {path}")
    assert SECRET not in str(info.value) + repr(info.value)


def test_readable_client_key_is_rejected(tmp_path: Path) -> None:
    cert = write(tmp_path / "c.pem", "cert")
    key = write(tmp_path / "k.pem", "key", 0o644)
    text = render(
        {"nsx.auth": '"certificate"', "nsx.client_cert": f'"{cert}"', "nsx.client_key": f'"{key}"'}
    )
    error = parse_error(text)
    assert (error.key, error.message.endswith(f"chmod 600 {key}")) == ("nsx.client_key", True)


def test_password_of_the_wrong_type_is_not_shown(sources: dict[str, Path]) -> None:
    write(sources["config"], render({"nsx.password": "123456789"}))
    with pytest.raises(ConfigError) as info:
        config.load(str(sources["config"]), environ={})
    assert info.value.message == "must be a string, not an integer"


def test_secret_never_shown(sources: dict[str, Path]) -> None:
    write(sources["config"], render({"nsx.password": f'"{SECRET}"'}))
    cfg = config.load(str(sources["config"]), environ={})
    assert cfg.nsx.password is not None and cfg.nsx.password.reveal() == SECRET
    for shown in (repr(cfg), str(cfg), repr(cfg.nsx), str(cfg.nsx.password), f"{cfg}"):
        assert SECRET not in shown

    leaky = [
        render({"nsx.managers": f'["https://admin:{SECRET}@nsx.example.com"]'}),
        render({"nsx.password": f'"{SECRET}"', "vip.address": '"bad"'}),
        render({"nsx.password": f'"{SECRET}"', "nsx.pasword": '"x"'}),
        render({"nsx.password": f'"{SECRET}"'}) + f'password = "{SECRET}"\n',
    ]
    for text in leaky:
        error = parse_error(text)
        shown = (
            str(error)
            + repr(error)
            + "".join(traceback.format_exception(type(error), error, error.__traceback__))
        )
        assert SECRET not in shown, text


def test_config_is_frozen() -> None:
    cfg = resolved(render({}), "litelb.toml", environ=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.vip = VipConfig(address="10.0.0.1")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.nsx.tier1 = "other"  # type: ignore[misc]
    assert isinstance(cfg.nsx.managers, tuple)
    assert isinstance(cfg.kubernetes.api_servers, tuple)


def test_node_address_with_a_zone_index_is_rejected() -> None:
    text = render({"vip.address": '"2001:db8::10"', "kubernetes.node_address": '"fe80::1%eth0"'})
    error = parse_error(text)
    assert (error.key, error.message) == (
        "kubernetes.node_address",
        "'fe80::1%eth0' cannot be a node's address",
    )


def test_node_address_cannot_be_the_vip() -> None:
    error = parse_error(render({"kubernetes.node_address": '"192.168.160.249"'}))
    assert (error.key, error.message) == (
        "kubernetes.node_address",
        "is the VIP; set this node's own API server address",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_password_file_of_another_user_is_rejected(sources: dict[str, Path]) -> None:
    write(sources["file"], SECRET)
    os.chown(sources["file"], 65534, 65534)
    error = parse_error(render({"nsx.password_file": f'"{sources["file"]}"'}))
    assert error.key == "nsx.password_file"
    assert "neither root nor the user litelb runs as (root)" in error.message
    assert error.message.endswith(f": chown root {sources['file']}")
    assert SECRET not in str(error)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file away")
def test_password_file_of_the_running_user_is_accepted(sources: dict[str, Path]) -> None:
    write(sources["file"], SECRET)
    os.chown(sources["file"], 65534, 65534)
    secrets.require_private(str(sources["file"]), uid=65534)
    with pytest.raises(secrets.FileCheckError, match="neither root nor the user"):
        secrets.require_private(str(sources["file"]), uid=65533)


def test_parse_reads_no_file_and_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_io(*args: object, **kwargs: object) -> None:
        raise AssertionError("parse touched the system")

    monkeypatch.setattr("builtins.open", no_io)
    monkeypatch.setattr(os, "stat", no_io)
    monkeypatch.setattr(os.path, "exists", no_io)
    monkeypatch.setattr(os, "environ", {})
    text = render(
        {
            "nsx.auth": '"certificate"',
            "nsx.client_cert": '"/nonexistent/c.pem"',
            "nsx.client_key": '"/nonexistent/k.pem"',
            "nsx.ca_file": '"/nonexistent/ca.pem"',
        }
    )
    cfg = config.parse(text, "litelb.toml")
    assert (cfg.nsx.client_key, cfg.nsx.password) == ("/nonexistent/k.pem", None)
    assert config.parse(render({}), "litelb.toml").nsx.password is None


def test_load_metrics_reads_only_that_section(tmp_path: Path) -> None:
    path = write(tmp_path / "litelb.toml", '[nsx]\nmanagers = ["https://[::1"]\n', 0o644)
    assert config.load_metrics(str(path)) == MetricsConfig()
    path.write_text('[nsx]\nbogus = 1\n\n[metrics]\nlisten = "[::1]:9000"\n')
    metrics = config.load_metrics(str(path))
    assert (metrics.host, metrics.port) == ("::1", 9000)
    path.write_text("[metrics]\nlisten = 9000\n")
    with pytest.raises(ConfigError) as info:
        config.load_metrics(str(path))
    assert (info.value.key, info.value.line) == ("metrics.listen", 2)
    path.write_text("metrics = 1\n")
    with pytest.raises(ConfigError, match="must be a table"):
        config.load_metrics(str(path))


def test_ca_file_that_is_no_ca_bundle_is_rejected(tmp_path: Path) -> None:
    ca = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n", 0o644)
    error = parse_error(render({"nsx.ca_file": f'"{ca}"'}))
    assert error.key == "nsx.ca_file"
    assert error.message.startswith(f"{ca} is not a PEM CA bundle (")

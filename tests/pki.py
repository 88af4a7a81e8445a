"""A throw-away PKI for tests: a CA, an API server certificate and client certificates.

Only the standard library and ``cryptography`` are used, so the helpers also run on a
bare Debian 12 ``python3`` with ``python3-cryptography`` (cryptography 38).

Keys are EC P-256 and certificates are valid for one day (back-dated one hour to
tolerate clock skew).  Certificates carry the extensions that strict X.509
verification (Python 3.13's ``VERIFY_X509_STRICT``) insists on: critical basic
constraints and key usage, subject and authority key identifiers.

Kubernetes authenticates an X.509 client as user = subject CN and groups = subject
O values; :meth:`Pki.client_cert` builds exactly that.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)
_BACKDATE = datetime.timedelta(hours=1)

_PrivateKey = ec.EllipticCurvePrivateKey


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start, like kubeadm's keys, so no window with wider access.
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: _PrivateKey) -> bytes:
    # "EC PRIVATE KEY" (SEC 1) is what kubeadm and the kubelet write for EC keys.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _san(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _yaml_str(value: str) -> str:
    # A JSON string literal is a valid YAML double-quoted scalar.
    return json.dumps(value)


class Pki:
    """A CA with one server certificate, written below ``directory``.

    An existing ``ca.crt``/``ca.key`` pair in ``directory`` is reused, so a restarted
    fake API server stays trusted by clients holding the old kubeconfig; the server
    certificate is always re-issued (its SANs may have changed).
    """

    def __init__(
        self,
        directory: Path,
        *,
        server_ips: Sequence[str] = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"),
        server_dns: Sequence[str] = (
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "localhost",
        ),
        extra_sans: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.directory / "ca.crt"
        self.ca_key = self.directory / "ca.key"
        if self.ca_cert.exists() and self.ca_key.exists():
            self._ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{self.ca_key}: not an EC key")
            self._ca_private = key
        else:
            self._ca_private = ec.generate_private_key(ec.SECP256R1())
            self._ca = self._issue_ca()
            _write_private(self.ca_key, _key_pem(self._ca_private))
            self.ca_cert.write_bytes(_cert_pem(self._ca))

        sans = [_san(v) for v in (*server_ips, *server_dns, *extra_sans)]
        self.server_cert = self.directory / "server.crt"
        self.server_key = self.directory / "server.key"
        self._issue_leaf(
            self.server_cert,
            self.server_key,
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]),
            ExtendedKeyUsageOID.SERVER_AUTH,
            sans,
        )

    def _issue_ca(self) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
        public = self._ca_private.public_key()
        return (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - _BACKDATE)
            .not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._ca_private, hashes.SHA256())
        )

    def _issue_leaf(
        self,
        cert_path: Path,
        key_path: Path,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        sans: Iterable[x509.GeneralName] = (),
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self._ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - _BACKDATE)
            .not_valid_after(_now() + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        san_list = list(sans)
        if san_list:
            builder = builder.add_extension(x509.SubjectAlternativeName(san_list), critical=False)
        cert = builder.sign(self._ca_private, hashes.SHA256())
        _write_private(key_path, _key_pem(key))
        cert_path.write_bytes(_cert_pem(cert))

    def client_cert(self, cn: str, orgs: Sequence[str] = ()) -> tuple[Path, Path]:
        """Issue a client certificate (user ``cn``, groups ``orgs``); returns (cert, key)."""
        stem = "client-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", cn)
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        cert_path = self.directory / f"{stem}.crt"
        key_path = self.directory / f"{stem}.key"
        self._issue_leaf(cert_path, key_path, x509.Name(attrs), ExtendedKeyUsageOID.CLIENT_AUTH)
        return cert_path, key_path

    def rotate_client(self, current: Path, cn: str, orgs: Sequence[str] = ()) -> tuple[int, int]:
        """Do what the kubelet does when it renews its client certificate: write a new
        ``kubelet-client-<n>.pem`` (certificate and key) next to the symlink ``current``
        and swap the link to it atomically. Returns (old serial, new serial)."""
        current = Path(current)
        old = serial(current)
        cert, key = self.client_cert(cn, orgs)
        pem = current.parent / f"kubelet-client-{x509.random_serial_number()}.pem"
        _write_private(pem, cert.read_bytes() + key.read_bytes())
        link = current.with_name(current.name + ".tmp")
        link.unlink(missing_ok=True)
        link.symlink_to(pem.name)
        os.replace(link, current)
        return old, serial(current)

    def kubeconfig(
        self,
        path: Path,
        server: str,
        *,
        user_cn: str = "system:node:node-1",
        orgs: Sequence[str] = ("system:nodes",),
        inline: bool = False,
        combined: bool = False,
        rotating: bool = False,
    ) -> Path:
        """Write a kubeconfig shaped like kubeadm's ``/etc/kubernetes/kubelet.conf``.

        ``inline``: certificates as base64 ``*-data`` (kubelet.conf before rotation).
        ``combined``: cert and key in one PEM file named by both ``client-certificate``
        and ``client-key`` (kubelet.conf after rotation: ``kubelet-client-current.pem``).
        ``rotating``: that file is a symlink, ``<path>.pki/kubelet-client-current.pem``,
        as the kubelet keeps it; :meth:`rotate_client` renews it.
        """
        path = Path(path)
        cert, key = self.client_cert(user_cn, orgs)
        if rotating:
            pki_dir = path.with_name(path.name + ".pki")
            pki_dir.mkdir(exist_ok=True)
            pem = pki_dir / "kubelet-client-1.pem"
            _write_private(pem, cert.read_bytes() + key.read_bytes())
            current = pki_dir / "kubelet-client-current.pem"
            current.unlink(missing_ok=True)
            current.symlink_to(pem.name)
            cert = key = current
        elif combined:
            pem = self.directory / f"{cert.stem}-current.pem"
            _write_private(pem, cert.read_bytes() + key.read_bytes())
            cert = key = pem
        user = user_cn
        context = f"{user}@kubernetes"

        def entry(name: str, file: Path) -> str:
            if inline:
                data = base64.b64encode(file.read_bytes()).decode("ascii")
                return f"{name}-data: {data}"
            # The link itself, as kubelet.conf names it, so a swapped link takes effect.
            return f"{name}: {_yaml_str(str(file.absolute()))}"

        text = "\n".join(
            [
                "apiVersion: v1",
                "kind: Config",
                "clusters:",
                "- cluster:",
                f"    {entry('certificate-authority', self.ca_cert)}",
                f"    server: {_yaml_str(server)}",
                "  name: kubernetes",
                "contexts:",
                "- context:",
                "    cluster: kubernetes",
                f"    user: {_yaml_str(user)}",
                f"  name: {_yaml_str(context)}",
                f"current-context: {_yaml_str(context)}",
                "preferences: {}",
                "users:",
                f"- name: {_yaml_str(user)}",
                "  user:",
                f"    {entry('client-certificate', cert)}",
                f"    {entry('client-key', key)}",
                "",
            ]
        )
        _write_private(path, text.encode("utf-8"))
        return path


def serial(pem: Path) -> int:
    """The serial number of the (first) certificate in ``pem``."""
    return x509.load_pem_x509_certificate(Path(pem).read_bytes()).serial_number

"""Reading NSX credentials again while litelb runs: the password sources through
PasswordReloader, and the client certificate, key and CA bundle through TlsFiles.
What cannot be read is logged once and what is in use stays."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from litelb.adapters.nsx_tls import TlsFiles
from litelb.config import Secret
from litelb.daemon import PasswordReloader
from tests.pki import Pki

CONFIG = """\
[vip]
address = "192.168.160.249"
[nsx]
managers = ["https://127.0.0.1:1"]
tier1 = "t1"
password_file = "{password_file}"
"""


def write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


def test_password_reloader_reads_the_new_password_and_logs_a_bad_file_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password_file = tmp_path / "nsx-password"
    write_private(password_file, "first\n")
    config = tmp_path / "litelb.toml"
    write_private(config, CONFIG.format(password_file=password_file))
    reloader = PasswordReloader(str(config))
    assert reloader.read() == Secret("first")
    password_file.chmod(0o644)
    with caplog.at_level(logging.ERROR, logger="litelb"):
        assert reloader.read() is None
        assert reloader.read() is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "chmod 600" in errors[0], errors
    assert "first" not in errors[0]
    write_private(password_file, "second\n")
    assert reloader.read() == Secret("second")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def content(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_tls_files_follow_a_rotated_pair_and_ca_bundle(pki: Pki) -> None:
    cert, key = pki.client_cert("litelb")
    files = TlsFiles(str(cert), str(key), str(pki.ca_cert))
    try:
        assert files.refresh() is False
        pair = files.client_cert
        assert isinstance(pair, tuple) and content(pair[0]) == cert.read_bytes()
        first_cert = cert.read_bytes()
        pki.client_cert("litelb")
        assert cert.read_bytes() != first_cert
        assert files.refresh() is True
        pair = files.client_cert
        assert isinstance(pair, tuple)
        assert content(pair[0]) == cert.read_bytes() and content(pair[1]) == key.read_bytes()
        ca = files.ca_bundle
        assert ca is not None and content(ca) == pki.ca_cert.read_bytes()
    finally:
        files.close()


def test_tls_files_keep_the_pair_in_use_when_the_new_one_does_not_load(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = pki.client_cert("litelb")
    _, other_key = pki.client_cert("other")
    files = TlsFiles(str(cert), str(key))
    try:
        in_use = files.client_cert
        assert isinstance(in_use, tuple)
        good_key = content(in_use[1])
        key.write_bytes(other_key.read_bytes())
        with caplog.at_level(logging.ERROR, logger="litelb.nsx"):
            assert files.refresh() is False
            assert files.refresh() is False
        assert files.client_cert == in_use and content(in_use[1]) == good_key
        errors = [r.getMessage() for r in caplog.records]
        assert len(errors) == 1 and f"{key} is not the key of the certificate {cert}" in errors[0]
        assert "/proc/self/fd" not in errors[0]
        os.unlink(key)
        assert files.refresh() is False and files.client_cert == in_use
    finally:
        files.close()


def test_tls_files_refuse_to_start_with_a_pair_that_does_not_load(pki: Pki) -> None:
    cert, _ = pki.client_cert("litelb")
    _, other_key = pki.client_cert("other")
    with pytest.raises(ValueError, match="is not the key of"):
        TlsFiles(str(cert), str(other_key))

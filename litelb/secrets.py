"""Secrets and the files the configuration names: where the NSX password comes
from, and the checks that the files holding secrets are private and usable.

Every check raises FileCheckError with a message an operator can act on and that
never contains a secret; the configuration loader adds the file and key it
concerns.
"""

from __future__ import annotations

import os
import pwd
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

CREDENTIAL = "nsx-password"
ENV_PASSWORD = "LITELB_NSX_PASSWORD"


class FileCheckError(Exception):
    """A file named by the configuration is missing, unreadable, not private or unusable."""


class Secret:
    """A password that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class PasswordSource:
    """Where the NSX password may come from besides the configuration file itself."""

    password_file: str
    credentials_directory: str = ""
    environment_password: str = ""

    @classmethod
    def from_environ(cls, password_file: str, environ: Mapping[str, str]) -> PasswordSource:
        return cls(
            password_file=password_file,
            credentials_directory=environ.get("CREDENTIALS_DIRECTORY", ""),
            environment_password=environ.get(ENV_PASSWORD, ""),
        )


class NoPasswordError(FileCheckError):
    """No source holds a password."""


def find_password(source: PasswordSource) -> Secret:
    """The NSX password from `password_file`, else the systemd credential, else
    the environment; NoPasswordError names every place that was tried."""
    if source.password_file and os.path.exists(source.password_file):
        require_private(source.password_file)
        return Secret(read_secret(source.password_file))
    if source.credentials_directory:
        credential = os.path.join(source.credentials_directory, CREDENTIAL)
        # systemd itself makes credentials private to the service; no mode check.
        if os.path.exists(credential):
            return Secret(read_secret(credential))
    if source.environment_password:
        return Secret(source.environment_password)
    where = (
        f"{source.password_file} does not exist"
        if source.password_file
        else "password_file is empty"
    )
    raise NoPasswordError(
        f"no NSX password: {where}, and neither the systemd credential '{CREDENTIAL}'"
        f" nor ${ENV_PASSWORD} is set; write it to a file with mode 0600"
    )


def read_secret(path: str) -> str:
    """The secret in `path`, without the one newline `echo secret > file` adds."""
    try:
        # newline="": the secret's bytes as they are, "\r" included.
        with open(path, encoding="utf-8", newline="") as f:
            value = f.read()
    except (OSError, UnicodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        # `from None`: a chained decode error would carry the secret's bytes.
        raise FileCheckError(f"cannot read {path}: {why}") from None
    for newline in ("\r\n", "\n"):
        if value.endswith(newline):
            value = value[: -len(newline)]
            break
    if not value:
        raise FileCheckError(f"{path} is empty")
    return value


def require_private(path: str, *, uid: Optional[int] = None) -> None:
    """`path` holds a secret: owned by root or by the user litelb runs as (`uid`,
    default this process's), and neither group nor others may touch it."""
    me = os.geteuid() if uid is None else uid
    try:
        st = os.stat(path)
    except OSError as e:
        raise FileCheckError(f"cannot check the mode of {path}: {e.strerror}") from None
    if st.st_uid not in (0, me):
        # Its owner could replace the secret, or read it whatever the mode says.
        raise FileCheckError(
            f"{path} holds a secret but is owned by {_user(st.st_uid)}, neither root nor "
            f"the user litelb runs as ({_user(me)}): chown {_user(me)} {path}"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise FileCheckError(
            f"{path} holds a secret but is readable by others (mode {mode:04o}): chmod 600 {path}"
        )


def require_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileCheckError(f"{path} does not exist or is not a file")


def require_key_pair(cert: str, key: Optional[str]) -> None:
    """The certificate and key load as TLS would load them, and belong together."""

    def no_passphrase() -> bytes:
        # An encrypted key would otherwise make OpenSSL prompt on the terminal.
        raise ValueError("encrypted")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except (ssl.SSLError, ValueError, OSError) as e:
        reason = getattr(e, "reason", None) or str(e)
        if reason == "KEY_VALUES_MISMATCH":
            why = f"{key} is not the key of the certificate {cert}"
        elif isinstance(e, ValueError) or "encrypted" in reason.lower():
            why = f"{key} is encrypted; litelb needs it without a passphrase"
        else:
            why = f"{cert} and {key} are not a PEM certificate and its key ({reason})"
        raise FileCheckError(why) from None


def require_ca_bundle(path: str) -> None:
    """`path` holds at least one PEM certificate that TLS can verify against."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
        raise FileCheckError(f"{path} is not a PEM CA bundle ({reason})") from None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"

"""The NSX client certificate, its key and the CA bundle, followed on disk.

An operator rotates a principal identity's certificate or the managers' CA bundle
in place. Before each request the files' identity (device, inode, mtime, size) is
compared with what was loaded; when it changed, the files are read once, checked
(the key belongs to the certificate, the bundle holds certificates) and only then
used. A set that does not load is logged once and the one in use stays: litelb
never trades a working identity for a broken one, nor half of a pair for half of
another.

What was loaded is kept in anonymous memory files (memfd), so the pair in use stays
intact whatever happens to the originals, and no copy of the key is left on disk.
requests and urllib3 take file names, so they get `/proc/self/fd/N`.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Union

from litelb.secrets import FileCheckError, require_ca_bundle, require_key_pair

log = logging.getLogger("litelb.nsx")

_Signature = tuple[Optional[tuple[int, int, int, int]], ...]


def _identity(path: str) -> Optional[tuple[int, int, int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class _Loaded:
    """The contents of some files, held in memory files that outlive the originals."""

    def __init__(self, contents: dict[str, bytes]) -> None:
        self._fds: dict[str, int] = {}
        try:
            for name, data in contents.items():
                fd = os.memfd_create(f"litelb-nsx-{name}", os.MFD_CLOEXEC)
                self._fds[name] = fd
                os.write(fd, data)
        except BaseException:
            self.close()
            raise

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self._fds[name]}"

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class TlsFiles:
    """The client certificate and key (`cert`, `key`; "" for none) and the CA
    bundle (`ca`; "" for none) the NSX client uses."""

    def __init__(self, cert: str = "", key: str = "", ca: str = "") -> None:
        named = (("cert", cert), ("key", key), ("ca", ca))
        self._files = {name: path for name, path in named if path}
        self._signature: _Signature = ()
        self._loaded: Optional[_Loaded] = None
        error = self._load()
        if error:
            raise ValueError(error)

    @property
    def client_cert(self) -> Union[str, tuple[str, str], None]:
        """For requests' `Session.cert`: the loaded pair, or None."""
        if self._loaded is None or "cert" not in self._files:
            return None
        if "key" in self._files:
            return (self._loaded.path("cert"), self._loaded.path("key"))
        return self._loaded.path("cert")

    @property
    def ca_bundle(self) -> Optional[str]:
        """For requests' `Session.verify`: the loaded bundle, or None."""
        if self._loaded is None or "ca" not in self._files:
            return None
        return self._loaded.path("ca")

    def refresh(self) -> bool:
        """Load the files again if they changed on disk; True when a new set is in use."""
        if not self._files or self._read_signature() == self._signature:
            return False
        before = self._loaded
        error = self._load()
        if error:
            log.error("not using the changed NSX TLS files, keeping those in use: %s", error)
            return False
        if before is not None:
            before.close()
        names = ", ".join(self._files.values())
        log.info("NSX TLS files changed on disk; now using %s", names)
        return True

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None

    def _read_signature(self) -> _Signature:
        return tuple(_identity(path) for path in self._files.values())

    def _load(self) -> str:
        """Read, check and adopt the files; the reason when they cannot be used."""
        # Taken before reading: a change while reading is seen at the next refresh.
        self._signature = self._read_signature()
        try:
            contents = {}
            for name, path in self._files.items():
                with open(path, "rb") as f:
                    contents[name] = f.read()
        except OSError as e:
            return f"cannot read {e.filename}: {e.strerror}"
        loaded = _Loaded(contents)
        try:
            if "cert" in self._files:
                key = loaded.path("key") if "key" in self._files else None
                require_key_pair(loaded.path("cert"), key)
            if "ca" in self._files:
                require_ca_bundle(loaded.path("ca"))
        except FileCheckError as e:
            message = str(e)
            # The copies' names mean nothing to an operator; longest first, as
            # /proc/self/fd/1 is the start of /proc/self/fd/12.
            for name in sorted(self._files, key=lambda n: -len(loaded.path(n))):
                message = message.replace(loaded.path(name), self._files[name])
            loaded.close()
            return message
        self._loaded = loaded
        return ""

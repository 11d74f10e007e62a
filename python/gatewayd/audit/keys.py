"""Checkpoint signing keys: Ed25519, in the text forms of the C2SP signed-note ecosystem.

* A key's **id** is the first four bytes of SHA-256(name || 0x0A || 0x01 || public key)
  (0x01: Ed25519), so a signature line names the exact key that made it.
* A **signing key file** holds one line, ``PRIVATE+KEY+<name>+<id hex>+<base64(0x01 || seed)>``.
  It must be a regular file owned by this user and closed to group and others; the seed is
  never printed or logged.
* A **verifier key** is ``<name>+<id hex>+<base64(0x01 || public key)>``; a **keyring** is
  a file of them, one per line (``#`` comments). Rotating the signing key appends the new
  verifier key, and the old ones stay, so older checkpoints remain verifiable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from gatewayd.errors import BadInputError

ED25519 = b"\x01"
PRIVATE_PREFIX = "PRIVATE+KEY+"


class AuditKeyError(BadInputError):
    """A key or keyring problem, as one line naming the file."""


def key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public).digest()[:4]


def check_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise AuditKeyError(f"key name {name!r}: must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True)
class Verifier:
    """A public key that checks checkpoint signatures."""

    name: str
    id: bytes
    public: bytes

    @classmethod
    def parse(cls, text: str, where: str) -> Verifier:
        try:
            name, id_hex, encoded = text.strip().split("+", 2)  # base64 may hold "+"
            blob = base64.b64decode(encoded, validate=True)
            kid = bytes.fromhex(id_hex)
        except (ValueError, binascii.Error):
            raise AuditKeyError(f"{where}: not a verifier key (<name>+<id hex>+<base64 key>)") from None
        if len(blob) != 33 or blob[:1] != ED25519:
            raise AuditKeyError(f"{where}: not an Ed25519 verifier key")
        verifier = cls(check_name(name), kid, blob[1:])
        if key_id(name, verifier.public) != kid:
            raise AuditKeyError(f"{where}: key id {id_hex} does not match the key")
        return verifier

    def text(self) -> str:
        return f"{self.name}+{self.id.hex()}+{base64.b64encode(ED25519 + self.public).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            nacl.signing.VerifyKey(self.public).verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


class Signer:
    """A signing key, and the origin of the logs (one per replica) whose checkpoints it signs."""

    def __init__(self, name: str, key: nacl.signing.SigningKey, origin: str = "gatewayd"):
        public = bytes(key.verify_key)
        self.verifier = Verifier(check_name(name), key_id(name, public), public)
        self.origin = origin
        self._key = key

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, nacl.signing.SigningKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str], origin: str = "gatewayd") -> Signer:
        """Reads a signing key file, refusing one that others could read or replace."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise AuditKeyError(f"{path}: cannot open the signing key: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise AuditKeyError(f"{path}: the signing key is not a regular file")
            if st.st_uid != os.geteuid():
                raise AuditKeyError(f"{path}: the signing key is owned by another user (uid {st.st_uid})")
            if st.st_mode & 0o077:
                mode = f"{stat.S_IMODE(st.st_mode):04o}"
                raise AuditKeyError(f"{path}: the signing key is open to group or others (mode {mode}); chmod 600 it")
            text = f.read().decode("ascii", errors="replace").strip()
        parts = text.split("+", 4) if text.startswith(PRIVATE_PREFIX) else []
        try:
            _, _, name, id_hex, encoded = parts
            blob = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise AuditKeyError(f"{path}: not a signing key file (PRIVATE+KEY+<name>+<id>+<key>)") from None
        if len(blob) != 33 or blob[:1] != ED25519:
            raise AuditKeyError(f"{path}: not an Ed25519 signing key")
        signer = cls(name, nacl.signing.SigningKey(blob[1:]), origin)
        if signer.verifier.id.hex() != id_hex:
            raise AuditKeyError(f"{path}: key id {id_hex} does not match the key")
        return signer

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the key file with mode 0600; never replaces an existing file."""
        seed = base64.b64encode(ED25519 + bytes(self._key)).decode()
        line = f"{PRIVATE_PREFIX}{self.name}+{self.verifier.id.hex()}+{seed}\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise AuditKeyError(f"{path}: cannot create the signing key: {exc.strerror}") from None
        with os.fdopen(fd, "w") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature

    def __repr__(self) -> str:
        return f"Signer({self.verifier.name}+{self.verifier.id.hex()})"


def load_keyring(path: str | os.PathLike[str]) -> list[Verifier]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the keyring: {exc.strerror}") from None
    keys = [
        Verifier.parse(line, f"{path}:{n}")
        for n, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not keys:
        raise AuditKeyError(f"{path}: the keyring holds no verifier keys")
    return keys


def add_to_keyring(path: str | os.PathLike[str], verifier: Verifier) -> bool:
    """Appends a verifier key unless it is there already; returns whether it was added."""
    path = Path(path)
    if path.exists() and verifier in load_keyring(path):
        return False
    with open(path, "a") as f:
        f.write(verifier.text() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True

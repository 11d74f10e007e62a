"""C2SP signed notes: a text ending in a newline, a blank line, then signature lines
``— <key name> <base64(4-byte key id || signature)>``. The signature covers the text,
final newline included. Checkpoints are signed notes whose text is a tree head."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from gatewayd.audit.keys import Signer, Verifier
from gatewayd.errors import BadInputError

DASH = "\u2014 "


class NoteError(BadInputError):
    """A note that is malformed or not signed by a trusted key."""


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes

    def label(self) -> str:
        return f"{self.name}+{self.key_id.hex()}"


def sign(text: str, signer: Signer) -> str:
    """The signed note of `text` (which must end in a newline)."""
    signature = signer.sign(text.encode())
    blob = base64.b64encode(signer.verifier.id + signature).decode()
    return f"{text}\n{DASH}{signer.name} {blob}\n"


def split(note: str) -> tuple[str, list[Signature]]:
    """The signed text and the signatures of a note."""
    at = note.rfind("\n\n")
    if at < 0 or not note.endswith("\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    signatures = []
    for line in note[at + 2 :].splitlines():
        if not line.startswith(DASH):
            raise NoteError(f"signature line {line[:40]!r} does not start with an em dash")
        try:
            name, encoded = line[len(DASH) :].split(" ")
            blob = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            raise NoteError(f"malformed signature line {line[:40]!r}") from None
        if len(blob) < 5:
            raise NoteError(f"signature by {name} is too short")
        signatures.append(Signature(name, blob[:4], blob[4:]))
    if not signatures:
        raise NoteError("not a signed note: no signature lines")
    return note[: at + 1], signatures


def verify(note: str, keyring: list[Verifier]) -> Verifier:
    """The trusted key that signed `note`. Signatures by unknown keys are ignored; one by a
    known key that does not verify rejects the note, as the signed-note spec says."""
    text, signatures = split(note)
    known = {(v.name, v.id): v for v in keyring}
    trusted = None
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), sig.signature):
            raise NoteError(f"signature by {sig.label()} does not verify")
        trusted = trusted or verifier
    if trusted is None:
        names = ", ".join(sig.label() for sig in signatures)
        raise NoteError(f"signed by no key of the keyring (signatures by {names})")
    return trusted

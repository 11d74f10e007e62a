"""Audit chains for tests: built with the real engine and signer, picked apart byte by
byte to tamper with them, and checked with the real CLI and the third-party script."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from gatewayd import _core
from gatewayd.audit import Signer, checkpoint

from .third_party_verify import crc32c

CHAIN = "replica-1"
SCRIPT = Path(__file__).with_name("third_party_verify.py")


def new_signer(folder: Path, name: str = "gatewayd.test/audit") -> tuple[Path, Signer]:
    """A fresh signing key saved in `folder`, and its signer."""
    signer = Signer.generate(name)
    path = folder / f"{name.replace('/', '_')}-{signer.verifier.id.hex()}.key"
    signer.save(path)
    return path, Signer.load(path, "gatewayd.test")


def build_chain(
    root: Path,
    records: int,
    signer: Signer | None = None,
    checkpoint_every: int = 0,
    segment_bytes: int = 64 << 20,
    chain: str = CHAIN,
) -> None:
    """`records` request-like records, a checkpoint every `checkpoint_every` of them and one
    at the end (when a signer is given)."""
    engine = _core.Engine(16, 1 << 20, str(root), chain, segment_bytes)
    for n in range(records):
        event = {"kind": "request", "request_id": f"req-{n}", "tenant": "acme", "policy_version": 1 + n // 50}
        engine.event(json.dumps(event).encode())
        if signer and checkpoint_every and (n + 1) % checkpoint_every == 0:
            checkpoint(engine, signer)
    if signer:
        checkpoint(engine, signer)


def segment(root: Path, number: int, chain: str = CHAIN) -> Path:
    return root / chain / f"{number:08}.seg"


def record_frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record frame of a segment, its header frame left out."""
    frames, at = [], 10
    while at + 8 <= len(data) and data[at : at + 8] != bytes(8):  # zeros: a live writer's reserve
        (length,) = struct.unpack_from("<I", data, at)
        frames.append((at, at + 8 + length))
        at += 8 + length
    return frames[1:]


def frame(payload: bytes) -> bytes:
    """A frame a forger would write: right length, right CRC."""
    return struct.pack("<II", len(payload), crc32c(payload)) + payload


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def third_party(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)

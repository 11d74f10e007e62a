"""Every kind of tampering is caught by `gatewayd audit verify`, which names the place."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd import _core
from gatewayd.audit import note
from support.audit import CHAIN, build_chain, cli, frame, new_signer, record_frames, segment, third_party

SEGMENT_BYTES = 2048  # about ten records a segment


@pytest.fixture
def trail(tmp_path):
    """A signed chain of 200 records over many segments: (audit dir, keyring file, signer)."""
    root = tmp_path / "audit"
    _, signer = new_signer(tmp_path)
    keyring = tmp_path / "keyring"
    keyring.write_text(signer.verifier.text() + "\n")
    build_chain(root, 200, signer, checkpoint_every=40, segment_bytes=SEGMENT_BYTES)
    return root, keyring, signer


def verify(root, keyring):
    return cli("audit", "verify", "--dir", str(root), "--keyring", str(keyring))


def problems(root, keyring) -> list[str]:
    """Every problem line verify prints; it must exit 1 and never call the trail intact."""
    done = verify(root, keyring)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "intact" not in done.stdout.replace("NOT INTACT", ""), done.stdout
    assert done.stdout.splitlines()[-1].startswith("NOT INTACT: "), done.stdout
    return [line for line in done.stdout.splitlines() if line.startswith(("BROKEN: ", "MISSING: "))]


def broken(root, keyring) -> str:
    """The one problem a single tampering causes."""
    lines = problems(root, keyring)
    assert len(lines) == 1 and lines[0].startswith(f"BROKEN: chain {CHAIN}: "), lines
    return lines[0]


def edit_segment(root, number, edit) -> None:
    path = segment(root, number)
    data = bytearray(path.read_bytes())
    edit(data, record_frames(bytes(data)))
    path.write_bytes(bytes(data))


def payload(data, span) -> bytes:
    return bytes(data[span[0] + 8 : span[1]])


def notes(root) -> list:
    """The chain's checkpoint notes, by size."""
    return sorted((root / CHAIN / "checkpoints").glob("*.note"), key=lambda p: int(p.stem))


def truncate_from(root, seq: int) -> None:
    """Cuts the chain just before record `seq`, as an attacker hiding its end would."""
    needle = f'"seq":{seq},'.encode()
    for path in sorted((root / CHAIN).glob("*.seg")):
        data = path.read_bytes()
        starts = [start for start, end in record_frames(data) if needle in data[start:end]]
        if starts:
            path.write_bytes(data[: starts[0]])
            for later in sorted((root / CHAIN).glob("*.seg")):
                if later.name > path.name:
                    later.unlink()
            return
    raise AssertionError(f"no record {seq}")


def test_an_intact_trail_verifies(trail):
    root, keyring, _ = trail
    done = verify(root, keyring)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact: 1 chain(s)" in done.stdout
    assert "6 checkpoint signature(s) verified" in done.stdout, done.stdout


def test_an_edited_record_is_named(trail):
    root, keyring, _ = trail

    def edit(data, frames):  # a forger who recomputes the CRC: only the next link shows it
        edited = payload(data, frames[3]).replace(b'"tenant":"acme"', b'"tenant":"evil"')
        data[frames[3][0] : frames[3][1]] = frame(edited)

    edit_segment(root, 3, edit)
    line = broken(root, keyring)
    assert "00000003.seg" in line and "prev hash mismatch" in line, line


def test_a_flipped_byte_is_named(trail):
    root, keyring, _ = trail
    edit_segment(root, 4, lambda data, frames: data.__setitem__(frames[2][1] - 5, data[frames[2][1] - 5] ^ 1))
    line = broken(root, keyring)
    assert "00000004.seg" in line and "CRC-32C mismatch" in line, line


def test_a_removed_record_is_named(trail):
    root, keyring, _ = trail
    edit_segment(root, 5, lambda data, frames: data.__delitem__(slice(*frames[1])))
    line = broken(root, keyring)
    assert "00000005.seg" in line and "seq gap or reorder" in line, line


def test_an_inserted_record_is_named(trail):
    root, keyring, _ = trail

    def edit(data, frames):  # a forged twin of a record, correctly linked
        twin = payload(data, frames[2]).replace(b'"tenant":"acme"', b'"tenant":"twin"')
        data[frames[2][0] : frames[2][0]] = frame(twin)

    edit_segment(root, 5, edit)
    line = broken(root, keyring)
    assert "00000005.seg" in line and "seq gap or reorder" in line, line


def test_reordered_records_are_named(trail):
    root, keyring, _ = trail

    def edit(data, frames):
        first, second = bytes(data[slice(*frames[1])]), bytes(data[slice(*frames[2])])
        data[frames[1][0] : frames[2][1]] = second + first

    edit_segment(root, 6, edit)
    line = broken(root, keyring)
    assert "00000006.seg" in line and "seq gap or reorder" in line, line


def test_records_truncated_from_the_end_are_caught_by_the_last_checkpoint(trail):
    root, keyring, _ = trail
    last = int(notes(root)[-1].stem)
    truncate_from(root, last - 10)
    line = broken(root, keyring)
    assert f"the chain ends at seq {last - 11}: records were removed from the end" in line, line


def test_a_segment_removed_from_the_middle_is_named(trail):
    root, keyring, _ = trail
    segment(root, 7).unlink()
    line = broken(root, keyring)
    assert "00000007.seg (seq " in line and line.endswith("): missing segment"), line


def test_early_segments_removed_without_retention_are_named(trail):
    root, keyring, _ = trail
    segment(root, 1).unlink()
    segment(root, 2).unlink()
    line = broken(root, keyring)
    assert "00000002.seg" in line and "no retention record removed them" in line, line


def test_a_checkpoint_that_does_not_match_is_named(trail):
    root, keyring, signer = trail
    second, third = notes(root)[1:3]
    lines = second.read_text().split("\n\n")[0].splitlines()
    lines[2] = third.read_text().splitlines()[2]  # a validly signed note with another size's root
    second.write_text(note.sign("\n".join(lines) + "\n", signer))
    found = problems(root, keyring)
    assert len(found) == 2, found  # the note's root is not the chain's, nor the record's
    assert second.name in found[0] and f"checkpoint root at size {second.stem}" in found[0], found
    assert f"checkpoint record names checkpoints/{second.name}, which is missing or differs" in found[1], found


def test_a_bad_signature_is_named(trail):
    root, keyring, _ = trail
    path = notes(root)[0]
    text = path.read_text()
    body, sig = text.split("\n\n")
    name, blob = sig.removeprefix("\u2014 ").split()
    tampered = blob[:10] + ("A" if blob[10] != "A" else "B") + blob[11:]
    path.write_text(f"{body}\n\n\u2014 {name} {tampered}\n")
    line = broken(root, keyring)
    assert path.name in line and "does not verify" in line, line


def test_a_checkpoint_by_an_unknown_key_is_named(trail, tmp_path):
    root, keyring, _ = trail
    (tmp_path / "stranger").mkdir()
    _, stranger = new_signer(tmp_path / "stranger", "someone.else/key")
    path = notes(root)[2]
    path.write_text(note.sign(path.read_text().split("\n\n")[0] + "\n", stranger))
    line = broken(root, keyring)
    assert path.name in line and "signed by no key of the keyring (signatures by someone.else/key+" in line, line


def test_a_deleted_checkpoint_note_is_named(trail):
    root, keyring, _ = trail
    path = notes(root)[2]
    path.unlink()
    line = broken(root, keyring)
    assert path.name in line and "missing" in line, line


def test_the_third_party_script_agrees(trail):
    root, _, signer = trail
    done = third_party("chain", str(root), CHAIN, signer.verifier.text())
    assert done.returncode == 0 and "6 checkpoint(s) match" in done.stdout, done.stdout + done.stderr

    def edit(data, frames):
        record = json.loads(payload(data, frames[3]))
        record["tenant"] = "evil"
        data[frames[3][0] : frames[3][1]] = frame(json.dumps(record, separators=(",", ":")).encode())

    edit_segment(root, 3, edit)
    done = third_party("chain", str(root), CHAIN, signer.verifier.text())
    assert done.returncode == 1 and "00000003.seg" in done.stdout, done.stdout


def test_the_third_party_script_catches_a_truncated_end(trail):
    root, _, signer = trail
    truncate_from(root, int(notes(root)[-1].stem) - 10)
    done = third_party("chain", str(root), CHAIN, signer.verifier.text())
    assert done.returncode == 1 and "records that are gone" in done.stdout, done.stdout


def test_the_reference_verifier_in_format_md_agrees(tmp_path):
    """FORMAT.md's stdlib-only verifier is part of the spec: it must keep working."""
    text = (Path(__file__).parents[1] / "rust/core/src/audit/FORMAT.md").read_text()
    script = tmp_path / "reference.py"
    script.write_text(re.search(r"```python\n(.*?)```", text, re.S).group(1))
    build_chain(tmp_path / "audit", 150, segment_bytes=SEGMENT_BYTES)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "audit"), CHAIN], capture_output=True, text=True)
    report = _core.verify_chain(str(tmp_path / "audit"), CHAIN)
    root = base64.b64decode(report["root"]).hex()
    assert done.stdout.split() == [str(report["head_seq"]), report["head_hash"], root], done.stderr

"""Shipping records from the chains to a JSON-lines sink (docs/ROLLBACK.md R14).

The canonical store is always the local chain: every record is written there first, and
nothing on the request path depends on a sink. A sink is fed from the chain, starting
after the last record it holds, so shipping is idempotent and never leaves a window:

* a new sink starts at the first record (a full backfill);
* switching back to an earlier sink resumes it where it stopped, backfilling every record
  written while the other sink was in use;
* a crash between writing to the sink and saving the state ships nothing twice, because
  the sink's own last line, not the state file, says where it ends.

The state file keeps, per sink, the last seq acknowledged per chain; a sink found behind
its acknowledgement (restored from an old backup, say) is backfilled and reported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from gatewayd import _core

TAIL_CHUNK = 1 << 16


class _Seq(msgspec.Struct):
    seq: int


_seq_of = msgspec.json.Decoder(_Seq).decode


@dataclass
class Shipped:
    chain: str
    records: int
    through: int  # last seq now in the sink
    behind: int | None = None  # the sink held less than it had acknowledged
    gap: tuple[int, int] | None = None  # seqs retention removed before they were shipped


def ship(root: str, sink_dir: Path, state_path: Path) -> list[Shipped]:
    sink_dir.mkdir(parents=True, exist_ok=True)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    acked = state.setdefault(str(sink_dir.resolve()), {})
    results = []
    for chain in _core.list_chains(root):
        sink = sink_dir / f"{chain}.jsonl"
        last = _last_seq(sink)
        result = Shipped(chain, 0, last)
        if acked.get(chain, 0) > last:
            result.behind = acked[chain]
        with open(sink, "ab") as out:
            for payload in _core.AuditReader(root, chain, last + 1):
                seq = _seq_of(payload).seq
                if seq > result.through + 1 and result.gap is None:
                    result.gap = (result.through + 1, seq - 1)
                out.write(payload + b"\n")
                result.records += 1
                result.through = seq
            out.flush()
            os.fsync(out.fileno())
        acked[chain] = result.through
        results.append(result)
    _save(state_path, state)
    return results


def _last_seq(sink: Path) -> int:
    """Seq of the sink's last complete line; a torn last line (a crash mid-write) is cut."""
    if not sink.exists():
        return 0
    with open(sink, "r+b") as f:
        end = f.seek(0, os.SEEK_END)
        tail = b""
        at = end
        while at > 0 and tail.count(b"\n") < 2:
            at = max(0, at - TAIL_CHUNK)
            f.seek(at)
            tail = f.read(end - at)
        complete = tail[: tail.rfind(b"\n") + 1]
        if len(complete) < len(tail):
            f.truncate(end - (len(tail) - len(complete)))
        lines = complete.splitlines()
        return _seq_of(lines[-1]).seq if lines else 0


def _save(path: Path, state: dict) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(temp, path)

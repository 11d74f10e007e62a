"""Fuzzing a real gateway (issue 9, "Keep it hardened"): mutated chat, messages and
embeddings bodies and raw HTTP framings, written on raw sockets to `gatewayd serve` with
the mock as its provider. The cases and the invariants are in support/fuzz.py: no 5xx for
a client's mistake, every error in the API's shape, no worker restart, and for every
accepted body the provider's view equals the policy's (first- and last-wins parsers read
it the same, and nothing blocked or redacted reached it).

Known server gap (issue 9, open: "granian's own framing rejections have empty bodies"):
granian rejects some broken framings itself, before our ASGI app sees them, with an empty
or plain-text body (400, 414, 431, or `500 Internal server error` for a malformed or
cut-short body). Such a response (a non-JSON body with one of those statuses, or 501/505)
is not held to the error-shape and no-5xx rules; it is counted and printed as `known
server gaps: N (family: n, ...)`. Every JSON response, and every other invariant, is
enforced. A client that half-closes is gone (commit 03f777d): no answer is owed to it.

Short by default (`make test`, seed 9). The long mode, `make fuzz`, takes
GATEWAYD_FUZZ_CASES (in all; a random seed unless GATEWAYD_FUZZ_SEED names one). A
failure prints the seed and every failing case.
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from support.fuzz import BODY_FAMILIES, FRAMING_FAMILIES, Fuzzer, cases, worker_pids
from support.gateway import KEYS

SEED = int(os.environ.get("GATEWAYD_FUZZ_SEED", "9"))
TOTAL = int(os.environ.get("GATEWAYD_FUZZ_CASES", "900"))
MAX_BODY = 65536  # support.gateway's server.max_body_bytes
# Half the cases are bodies (split over the three APIs), half framings (over the families).
PER_BODY_FAMILY = max(1, TOTAL // 2 // len(BODY_FAMILIES))
PER_FRAMING_FAMILY = max(1, TOTAL // 2 // len(FRAMING_FAMILIES))
HEADERS = {
    "Authorization": f"Bearer {KEYS['acme']}",
    "Content-Type": "application/json",
    "x-gatewayd-cache": "bypass",  # every accepted body must reach the provider's journal
}


def _readyz(url: str) -> dict:
    with urllib.request.urlopen(url + "/readyz", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def fuzzer(gateway, mock_port):
    fuzzer = Fuzzer(gateway.port, gateway.proc.pid, mock_port)
    fuzzer.replica = _readyz(gateway.url)["replica"]
    assert fuzzer.workers, "the gateway has no worker processes"
    return fuzzer


@pytest.mark.parametrize("family", BODY_FAMILIES + FRAMING_FAMILIES)
def test_fuzz(fuzzer, family):
    count = PER_BODY_FAMILY if family.startswith("body/") else PER_FRAMING_FAMILY
    before = len(fuzzer.tally.failures)
    for case in cases(SEED, family, count, MAX_BODY, HEADERS):
        fuzzer.run(case)
    failures = fuzzer.tally.failures[before:]
    assert not failures, (
        f"{len(failures)} of {count} {family} cases broke an invariant "
        f"(seed {SEED}; rerun with GATEWAYD_FUZZ_SEED={SEED}):\n" + "\n".join(failures[:30])
    )


def test_no_worker_restarted_across_the_run(fuzzer, gateway, capsys):
    """Runs last: the same worker processes and replica as at the start, and the server log
    shows no worker spawned after the first."""
    with capsys.disabled():
        print(f"\n{fuzzer.tally.report(SEED, limit=0)}")
    assert gateway.proc.poll() is None, "the gateway exited"
    assert worker_pids(gateway.proc.pid) == fuzzer.workers
    assert _readyz(gateway.url)["replica"] == fuzzer.replica
    size = os.fstat(gateway.proc.log.fileno()).st_size
    log = os.pread(gateway.proc.log.fileno(), size, 0).decode(errors="replace")  # leaves the server's offset alone
    assert log.count("Spawning worker") == 1, log[-3000:]
    assert fuzzer.tally.tried >= len(BODY_FAMILIES + FRAMING_FAMILIES)

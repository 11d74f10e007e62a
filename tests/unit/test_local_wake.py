"""The embedded store's change hints: a flip wakes each subscription through its FIFO, with
no periodic reads of the store in between (gatewayd.control.local_wake)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from gatewayd.control.local_store import LocalStore
from gatewayd.control.local_wake import WAKE_DIR
from gatewayd.control.model import ChangeItem, StoreDump, StoreIdentity

EPOCH = "e-wake"
PYTHON_SRC = str(Path(__file__).resolve().parents[2] / "python")
# Another process flips the policy pointer to version N (argv: store dir, N, previous N).
FLIP = f"""
import sys
from gatewayd.control.local_store import LocalStore
from gatewayd.control.model import ChangeItem
new, prev = int(sys.argv[2]), (int(sys.argv[3]) if sys.argv[3] != "-" else None)
LocalStore(sys.argv[1]).flip([ChangeItem("policy", "default", prev, new)], "bob", "wake", "activate", epoch="{EPOCH}")
"""


def seeded(path: Path) -> LocalStore:
    store = LocalStore(path)
    store.seed(StoreDump(StoreIdentity(EPOCH, time.time()), [], {}, [], []))
    return store


def flip_in_another_process(path: Path, new: int, prev: int | None) -> None:
    argv = [sys.executable, "-c", FLIP, str(path), str(new), "-" if prev is None else str(prev)]
    subprocess.run(argv, check=True, env={**os.environ, "PYTHONPATH": PYTHON_SRC}, timeout=60)


def test_a_flip_in_another_process_wakes_a_subscription_that_never_reads_in_between(tmp_path):
    store = seeded(tmp_path)
    sub = store.subscribe(check_interval_s=3600)  # a fallback read would come after the wait's end
    try:
        assert sub.wait(5) is True  # the first answer: read the pointers once
        assert [p.name for p in (tmp_path / WAKE_DIR).iterdir()] != []
        for new, prev in ((1, None), (2, 1)):
            threading.Timer(0.2, flip_in_another_process, (tmp_path, new, prev)).start()
            assert sub.wait(60) is True  # only a wake-up ends this wait before 60 s with True
            assert store.last_change_id() == new
        assert sub.wait(0.1) is False
    finally:
        sub.close()
        store.close()
    assert list((tmp_path / WAKE_DIR).iterdir()) == []  # closing removes its pipe


def test_a_pipe_left_by_a_dead_subscriber_is_removed_by_the_next_flip(tmp_path):
    store = seeded(tmp_path)
    live = store.subscribe()
    orphan = tmp_path / WAKE_DIR / "12345-deadbeef"
    os.mkfifo(orphan)  # no reader: what a killed worker leaves behind
    try:
        assert live.wait(1) is True
        store.flip([ChangeItem("policy", "default", None, 1)], "alice", "r", "activate", epoch=EPOCH)
        assert not orphan.exists()
        assert live.wait(60) is True
    finally:
        live.close()
        store.close()


def test_without_fifos_a_subscription_reads_the_store_and_flips_still_succeed(tmp_path):
    store = seeded(tmp_path)
    (tmp_path / WAKE_DIR).write_text("not a directory")  # no FIFO can be made here
    sub = store.subscribe(check_interval_s=0.01)
    try:
        assert sub.wait(1) is True
        threading.Timer(0.2, flip_in_another_process, (tmp_path, 1, None)).start()
        assert sub.wait(60) is True
        assert store.last_change_id() == 1
    finally:
        sub.close()
        store.close()

"""The run lock: exclusive, released, and taken over only when its owner is gone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bnexp import lock as lock_module
from bnexp.lock import RunBusy, RunLock


def test_second_taker_is_refused_while_held_and_admitted_after(tmp_path):
    with RunLock(tmp_path) as held:
        with pytest.raises(RunBusy, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
        before = (tmp_path / ".lock").stat().st_mtime
        os.utime(tmp_path / ".lock", (before - 100, before - 100))
        held.heartbeat()
        assert (tmp_path / ".lock").stat().st_mtime > before - 100
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):
        pass


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead)}))
    with RunLock(tmp_path) as taken:
        assert json.loads((tmp_path / ".lock").read_text())["token"] == taken.token
    assert list(tmp_path.iterdir()) == []


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path, monkeypatch):
    (tmp_path / ".lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(RunBusy, match="elsewhere"):
        RunLock(tmp_path).__enter__()
    old = time.time() - lock_module.STALE_AFTER_SECONDS - 5
    os.utime(tmp_path / ".lock", (old, old))
    with RunLock(tmp_path):
        pass


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    held = RunLock(tmp_path).__enter__()
    (tmp_path / ".lock").write_text(json.dumps({"host": "x", "pid": 1, "token": "theirs"}))
    held.release()
    assert (tmp_path / ".lock").exists()

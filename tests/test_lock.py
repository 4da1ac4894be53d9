"""The run lock: exclusive, kept alive by a thread, released, and taken over only when its
owner is gone; a holder that lost it finds out before it writes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from bnexp import lock as lock_module
from bnexp.interrupts import LockLost
from bnexp.lock import RunBusy, RunLock, process_start


def write_lock(folder, age_seconds: float = 0, **owner) -> None:
    path = folder / ".lock"
    path.write_text(json.dumps(owner))
    then = time.time() - age_seconds
    os.utime(path, (then, then))


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def test_second_taker_is_refused_while_held_and_admitted_after(tmp_path):
    with RunLock(tmp_path) as held:
        with pytest.raises(RunBusy, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
        owner = json.loads((tmp_path / ".lock").read_text())
        assert owner["pid_start"] == process_start(os.getpid()) is not None
        assert held._beater.is_alive()
    assert not held._beater.is_alive()  # the heartbeat thread ends with the lock
    assert not (tmp_path / ".lock").exists()
    with RunLock(tmp_path):
        pass


def test_heartbeat_refreshes_the_lock_while_it_is_ours(tmp_path):
    with RunLock(tmp_path) as held:
        old = time.time() - 1000
        os.utime(tmp_path / ".lock", (old, old))
        assert held.beat()
        assert (tmp_path / ".lock").stat().st_mtime > old + 900


def test_a_live_owner_on_this_host_is_never_stale_however_silent(tmp_path):
    # a suspended or slow process: alive, its heartbeat far older than the threshold
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                               stdin=subprocess.PIPE)
    try:
        write_lock(tmp_path, lock_module.STALE_AFTER_SECONDS * 4, host=socket.gethostname(),
                   pid=sleeper.pid, pid_start=process_start(sleeper.pid), token="t")
        with pytest.raises(RunBusy, match=str(sleeper.pid)):
            RunLock(tmp_path).__enter__()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    write_lock(tmp_path, host=socket.gethostname(), pid=dead_pid(), token="gone")
    with RunLock(tmp_path) as taken:
        assert json.loads((tmp_path / ".lock").read_text())["token"] == taken.token
    assert list(tmp_path.iterdir()) == []


def test_a_reused_pid_does_not_keep_a_dead_owners_lock(tmp_path):
    # the recorded pid is alive (it is ours) but started at another time: another process
    write_lock(tmp_path, host=socket.gethostname(), pid=os.getpid(),
               pid_start=process_start(os.getpid()) - 1, token="old")
    with RunLock(tmp_path) as taken:
        assert taken.owned()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    write_lock(tmp_path, host="elsewhere", pid=1, token="a")
    with pytest.raises(RunBusy, match="elsewhere"):
        RunLock(tmp_path).__enter__()
    write_lock(tmp_path, lock_module.STALE_AFTER_SECONDS + 5, host="elsewhere", pid=1, token="a")
    with RunLock(tmp_path):
        pass


def test_a_requeued_slurm_job_takes_over_its_earlier_start(tmp_path, monkeypatch):
    write_lock(tmp_path, host="node-7", pid=1, token="a", slurm_job="42", slurm_restart=0)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with RunLock(tmp_path) as taken:
        assert json.loads((tmp_path / ".lock").read_text())["slurm_restart"] == 1
        assert taken.owned()
    write_lock(tmp_path, host="node-7", pid=1, token="b", slurm_job="43", slurm_restart=0)
    with pytest.raises(RunBusy):  # another job's lock, heartbeat fresh
        RunLock(tmp_path).__enter__()


def test_takeover_leaves_a_lock_that_changed_since_it_was_judged(tmp_path):
    judged = {"host": "elsewhere", "pid": 1, "token": "stale"}
    write_lock(tmp_path, host="elsewhere", pid=2, token="fresh")  # a new owner got in
    RunLock(tmp_path)._take_over(judged)
    assert json.loads((tmp_path / ".lock").read_text())["token"] == "fresh"
    assert not (tmp_path / lock_module.TAKEOVER_NAME).exists()


def test_takeover_waits_for_another_taker_and_clears_a_dead_takers_mutex(tmp_path):
    judged = {"host": "elsewhere", "pid": 1, "token": "stale"}
    write_lock(tmp_path, **judged)
    mutex = tmp_path / lock_module.TAKEOVER_NAME
    mutex.write_text("")
    RunLock(tmp_path)._take_over(judged)
    assert (tmp_path / ".lock").exists()  # another taker holds the mutex: hands off
    old = time.time() - lock_module.TAKEOVER_STALE_SECONDS - 5
    os.utime(mutex, (old, old))
    RunLock(tmp_path)._take_over(judged)  # a killed taker's mutex is cleared ...
    assert not mutex.exists()
    RunLock(tmp_path)._take_over(judged)  # ... and the next try takes the lock
    assert not (tmp_path / ".lock").exists()


def test_a_holder_that_lost_its_lock_stops_before_writing(tmp_path):
    held = RunLock(tmp_path).__enter__()
    held.ensure_owned()
    write_lock(tmp_path, host="x", pid=1, token="theirs")
    with pytest.raises(LockLost, match="another launcher took over"):
        held.ensure_owned()
    old = time.time() - 1000
    os.utime(tmp_path / ".lock", (old, old))
    assert not held.beat()  # never refreshes someone else's lock
    assert (tmp_path / ".lock").stat().st_mtime < old + 1
    held.release()
    assert json.loads((tmp_path / ".lock").read_text())["token"] == "theirs"

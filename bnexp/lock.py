"""One process per run folder: an O_EXCL lock file with stale-lock detection.

`open(O_CREAT | O_EXCL)` is atomic on local filesystems and on NFSv3+, so two launchers that
reach the same run at once cannot both get it. The lock file holds the owner's host, pid, the
pid's start time, its SLURM job (if any) and a token.

When is a lock stale (its owner gone)?
- owner on this host: exactly when its process is gone (the pid is free, or now belongs to a
  process that started later). A live owner is never stale, however long it has been silent:
  a long download, a slow `torch.compile`, a suspended process (Ctrl-Z, `scontrol suspend`);
- owner is an earlier start of this same SLURM job (a requeue): SLURM restarts a job only
  after it ended;
- owner on another host: when its heartbeat, the lock file's modification time, is older than
  `STALE_AFTER_SECONDS`. A background thread refreshes it every `HEARTBEAT_SECONDS` while the
  lock is held, independent of training progress.

Taking a stale lock over is serialised by a second O_EXCL file (`.lock.takeover`): the taker
re-reads the lock under it and removes it only if it is still the owner it judged stale, so two
takers never both win and a fresh lock is never removed. A holder checks that it still owns the
lock before every write to the record (`ensure_owned`), so a holder that was judged stale (a
host that was suspended for longer than the threshold) stops without writing.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from bnexp.interrupts import LockLost

LOCK_NAME = ".lock"
TAKEOVER_NAME = ".lock.takeover"
STALE_AFTER_SECONDS = 15 * 60  # owner on another host: no heartbeat for this long
HEARTBEAT_SECONDS = 30.0  # the holder's thread touches the lock this often
TAKEOVER_STALE_SECONDS = 60  # a takeover mutex older than this was left by a killed taker


class RunBusy(RuntimeError):
    """Another live process holds the run."""


class RunLock:
    """Context manager: `with RunLock(folder) as lock: ... lock.ensure_owned()`."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._beater: Optional[threading.Thread] = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self.held = True
                self._beater = threading.Thread(target=self._beat, daemon=True,
                                                name=f"heartbeat {self.path}")
                self._beater.start()
                return self
            owner = read_owner(self.path)
            if owner is None:
                continue  # released in the meantime
            if not is_stale(self.path, owner):
                raise RunBusy(f"{self.path.parent} is being run by pid {owner.get('pid')} on "
                              f"{owner.get('host')}")
            self._take_over(owner)
        raise RunBusy(f"{self.path.parent}: another launcher took the stale lock first")

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _try_create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as stream:
            json.dump(owner_record(self.token), stream)
        return True

    def _take_over(self, judged_stale: dict) -> None:
        """Remove the lock if it is still the one judged stale, under the takeover mutex."""
        mutex = self.path.with_name(TAKEOVER_NAME)
        try:
            os.close(os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            if _age(mutex) > TAKEOVER_STALE_SECONDS:
                mutex.unlink(missing_ok=True)
            return  # another taker is at work; the caller retries
        try:
            if read_owner(self.path) == judged_stale:
                self.path.unlink(missing_ok=True)
        finally:
            mutex.unlink(missing_ok=True)

    def owned(self) -> bool:
        owner = read_owner(self.path)
        return self.held and owner is not None and owner.get("token") == self.token

    def ensure_owned(self) -> None:
        """Raise `LockLost` when another launcher has taken the run over."""
        if self.held and not self.owned():
            raise LockLost(f"interrupted: another launcher took over {self.path.parent}")

    def beat(self) -> bool:
        """Refresh the heartbeat if the lock is still ours; False once it is not."""
        if not self.owned():
            return False
        try:
            os.utime(self.path)
        except OSError:
            pass  # a transient error; the next beat tries again
        return True

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS) and self.beat():
            pass

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        if self.owned():
            self.path.unlink(missing_ok=True)
        self.held = False


def owner_record(token: str) -> dict:
    """Who holds a lock: enough to tell, later and from elsewhere, whether it is still alive."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
            "pid_start": process_start(os.getpid()), "since": time.time(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}


def read_owner(path: Path) -> Optional[dict]:
    """The lock's owner record; {} when it is being written, None when there is no lock."""
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def is_stale(path: Path, owner: dict) -> bool:
    """Whether the lock's owner is gone (see the module docstring)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and owner.get("slurm_job") == job and \
            owner.get("slurm_restart", 0) < int(os.environ.get("SLURM_RESTART_COUNT") or 0):
        return True  # an earlier start of this requeued job
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        if not _pid_alive(owner["pid"]):
            return True
        recorded, current = owner.get("pid_start"), process_start(owner["pid"])
        return recorded is not None and current is not None and current != recorded
    return _age(path) > STALE_AFTER_SECONDS


def process_start(pid: int) -> Optional[int]:
    """The process's start time in clock ticks after boot (Linux), None where unknown: with
    the pid it names one process, even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counting from the pid


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True

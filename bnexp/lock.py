"""One process per run folder: an O_EXCL lock file with stale-lock detection.

`open(O_CREAT | O_EXCL)` is atomic on local filesystems and on NFSv3+, so two launchers that
reach the same run at once cannot both get it. The lock file holds the owner's host, pid and
a token; its modification time is a heartbeat the owner refreshes while it trains. A lock is
stale when its owner is on this host and its pid is gone, or when its heartbeat is older than
`STALE_AFTER_SECONDS` (the only test possible across hosts). A stale lock is moved aside
(rename is atomic, so only one taker wins) and the take-over is retried once.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"
STALE_AFTER_SECONDS = 15 * 60  # heartbeats come at every log row and evaluation


class RunBusy(RuntimeError):
    """Another live process holds the run."""


class RunLock:
    """Context manager: `with RunLock(folder) as lock: ... lock.heartbeat()`."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK_NAME
        self.token = uuid.uuid4().hex
        self.held = False

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            if self._try_create():
                self.held = True
                return self
            owner = read_owner(self.path)
            if owner is not None and not is_stale(self.path, owner):
                raise RunBusy(f"{self.path.parent} is being run by pid {owner.get('pid')} on "
                              f"{owner.get('host')}")
            self._move_aside()
        raise RunBusy(f"{self.path.parent}: another launcher took the stale lock first")

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _try_create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                 "since": time.time()}
        with os.fdopen(descriptor, "w") as stream:
            json.dump(owner, stream)
        return True

    def _move_aside(self) -> None:
        try:
            os.replace(self.path, self.path.with_name(f"{LOCK_NAME}.stale-{self.token}"))
        except FileNotFoundError:
            return  # another taker moved it first; the retry decides
        for stale in self.path.parent.glob(f"{LOCK_NAME}.stale-*"):
            stale.unlink(missing_ok=True)

    def heartbeat(self) -> None:
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            owner = read_owner(self.path)
            if owner is not None and owner.get("token") == self.token:
                self.path.unlink(missing_ok=True)
            self.held = False


def read_owner(path: Path) -> Optional[dict]:
    """The lock's owner record; {} when it is being written, None when there is no lock."""
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def is_stale(path: Path, owner: dict) -> bool:
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"]) or age > STALE_AFTER_SECONDS
    return age > STALE_AFTER_SECONDS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True

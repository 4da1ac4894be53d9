"""Interruptions: a run stopped from outside, which its next launch resumes.

A run can end in three ways. It finishes (`completed`, or `diverged`: data). It fails through
its own fault (a bug, a value that only breaks at run time): `failed`, recorded with the
traceback, not retried unless `rerun=failed`. Or something outside it stops it: Ctrl-C,
SIGTERM, submitit's requeue exit on a SLURM time limit or preemption, a full disk, a lost
run lock. Those are interruptions: the run writes no terminal record, its last checkpoint
stays, and the next launch with the default `rerun=missing` resumes it from there.

Every interruption travels as a `BaseException`, so that neither bnexp's per-job failure
isolation nor Hydra's launchers (which catch `Exception`) mistake it for a failed run; the
sweep stops at once and `bnexp.cli` prints the closing table and one line.
"""
from __future__ import annotations

import contextlib
import errno
import signal
import threading
from typing import Iterator, Optional

STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}  # the disk (or the user's quota) is full


class Interrupted(BaseException):
    """The run was stopped from outside; `reason` is one line for the log and the table."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Terminated(Interrupted):
    """SIGTERM (a plain `kill`, a scheduler's stop) outside SLURM."""


class StorageFull(Interrupted):
    """Writing the run record hit a full disk or quota."""


class LockLost(Interrupted):
    """Another launcher took over the run's lock; this process must not write any more."""


def is_storage_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in STORAGE_ERRNOS


def interruption(error: BaseException) -> Optional[str]:
    """One line saying why the run was interrupted, or None when `error` is the run's own
    failure.

    SystemExit counts as an interruption: training code never exits, but submitit's SIGUSR2
    handler requeues the job and then calls `sys.exit`, and its `UncompletedJobError` says
    the time limit was hit once too often; both leave a run that a later launch can finish.
    """
    if isinstance(error, Interrupted):
        return error.reason
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(error, SystemExit):
        return f"interrupted (exit {error.code}: SLURM requeue or time limit)"
    if is_storage_full(error):
        where = f" writing {error.filename}" if getattr(error, "filename", None) else ""
        return f"disk full{where} ({error.strerror})"
    if type(error).__name__ == "UncompletedJobError":  # submitit: not requeued again
        return f"interrupted by SLURM ({error})"
    return None


def escalated(error: BaseException) -> BaseException:
    """What to raise for an interruption: a full disk becomes `StorageFull`, so that it stops
    the sweep instead of being caught as one job's failure; every other interruption is
    raised as it came (submitit and Python rely on their own SystemExit and KeyboardInterrupt),
    and so is any other error, so `raise escalated(error)` serves every except block.
    """
    if is_storage_full(error) and not isinstance(error, Interrupted):
        full = StorageFull(interruption(error) or "disk full")
        full.__cause__ = error
        return full
    return error


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread (instead of killing
    the process on the spot), so the run releases its lock and the sweep prints its table.
    A handler someone else installed (submitit's, a test's) is left alone."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated("interrupted (SIGTERM)")

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

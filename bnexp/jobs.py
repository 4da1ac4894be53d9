"""What one launched job does with its run folder: skip, resume, run, or fail alone.

Every launcher (local, joblib, SLURM) calls `execute` for each job. Under the run's lock it
reads the folder's record and decides by `rerun`:

    record                 rerun=missing     rerun=failed      rerun=all
    none                   run               run               run
    checkpoint only        resume            resume            resume
    completed              skip              skip              run again
    diverged               skip              skip              run again
    failed                 skip              run again         run again
    summary damaged        resume            resume            resume
    summary unreadable     report, no touch  report, no touch  report, no touch

"checkpoint only" is also what an interrupted run leaves (see bnexp.interrupts). A record that
is run again, and a damaged summary.json (not JSON, no status), is first moved to
`history/<time>/`; resuming a finished run from its final checkpoint rebuilds its summary
without training a step. A summary that exists but cannot be read now (permissions, a
network filesystem) is reported as `unreadable` and left alone: nothing finished is retrained
because of a transient error. Nothing of a record is ever deleted.

A job never lets a failure escape into a sweep: it records it and reports `failed`. An
interruption is reported and re-raised, so Ctrl-C, SIGTERM, a full disk or a SLURM requeue
stop the sweep (or the SLURM task) at once.
"""
from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from bnexp import checkpoint, records
from bnexp.config import Rerun
from bnexp.interrupts import escalated, interruption
from bnexp.lock import RunBusy, RunLock
from bnexp.run import run
from bnexp.schema import ERROR, RECORDED, SUMMARY, Status

log = logging.getLogger(__name__)
LAUNCH_LOG_ENV = "BNEXP_LAUNCH_LOG"  # set by the sweep callback: where jobs report outcomes
RERUN_WHEN = {Rerun.missing: set(), Rerun.failed: {Status.failed}, Rerun.all: set(RECORDED)}


@dataclass
class Outcome:
    status: Status  # one of schema.LAUNCH_OUTCOMES
    folder: str
    detail: str = ""
    final_test_accuracy: Optional[float] = None


def record_files(folder: Path) -> list[str]:
    """The files that make up the folder's run record (what a rerun archives)."""
    tables = [path.name for path in folder.glob("*.csv")]  # metrics and probe tables
    return [SUMMARY, ERROR, checkpoint.CHECKPOINT, *tables]


def execute(cfg: DictConfig, folder: Path, raise_errors: bool, threads: Optional[int] = None
            ) -> Outcome:
    """Run, resume or skip the run in `folder` with `threads` CPU threads; `raise_errors`
    re-raises a failure (single runs), otherwise it is recorded and reported (sweeps go on).
    Interruptions are reported and always re-raised."""
    try:
        with RunLock(folder) as lock:
            leftovers = records.remove_leftovers(folder)
            if leftovers:
                log.info("removed temporary files of an interrupted write: %s",
                         ", ".join(leftovers))
            try:
                status = prepare(cfg, folder)
            except records.SummaryUnreadable as error:
                return report(Outcome(Status.unreadable, str(folder),
                                       f"{error}: fix access and launch again"))
            if status is not None:
                return report(Outcome(Status.skipped, str(folder), f"already {status}"))
            log.info("training starts in %s%s", folder,
                     " (resuming from its checkpoint)" if (folder / checkpoint.CHECKPOINT).exists()
                     else "")
            try:
                summary = run(cfg, folder, guard=lock.ensure_owned, threads=threads)
            except BaseException as error:  # SystemExit from training code included
                reason = interruption(error)
                if reason is not None:
                    log.warning("%s: %s; the next launch resumes it from its last checkpoint",
                                folder, reason)
                    report(Outcome(Status.interrupted, str(folder), reason))
                    raise escalated(error)
                log.error("run failed: %s\n%s", folder, traceback.format_exc())
                if raise_errors:
                    raise
                return report(Outcome(Status.failed, str(folder),
                                       f"{type(error).__name__}: {error}"))
    except RunBusy as busy:
        return report(Outcome(Status.busy, str(folder), str(busy)))
    return report(Outcome(summary["status"], str(folder),
                           final_test_accuracy=summary.get("final_test_accuracy")))


def prepare(cfg: DictConfig, folder: Path) -> Optional[str]:
    """Read the record and make way for a (re)run: the recorded status when the run is to
    be skipped, None when it is to run or resume (an earlier record archived as needed)."""
    try:
        summary = records.read_summary(folder)
        if summary is not None and summary["status"] not in RECORDED:
            raise records.SummaryDamaged(f"{folder / SUMMARY} holds the unknown "
                                         f"status {summary['status']!r}")
    except records.SummaryDamaged as damaged:
        kept = records.archive(folder, [SUMMARY])
        log.warning("%s; moved to %s, the run resumes from its checkpoint (if it has one)",
                    damaged, kept)
        return None
    if summary is None:
        return None
    status = summary["status"]
    if status not in RERUN_WHEN[cfg.rerun]:
        return status
    log.info("rerun=%s: earlier record moved to %s", cfg.rerun.value,
             records.archive(folder, record_files(folder)))
    return None


def report(outcome: Outcome) -> Outcome:
    """Append the outcome to the sweep's launch log (one JSON line, one write)."""
    _append_to_launch_log(asdict(outcome))
    return outcome


def report_event(event: str, **fields: Any) -> None:
    """A line for the sweep's progress (a pack started or ended), not an outcome."""
    _append_to_launch_log({"event": event, **fields})


def _append_to_launch_log(entry: dict) -> None:
    path = os.environ.get(LAUNCH_LOG_ENV)
    if path:
        line = (json.dumps(entry) + "\n").encode()
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)


def threads_for(cfg: DictConfig, launcher: Any) -> Optional[int]:
    """CPU threads for this job: `train.threads` if set; else the SLURM allocation; else, under
    joblib, the cores divided among its parallel jobs; else None (torch's default)."""
    if cfg.train.threads is not None:
        return cfg.train.threads
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return int(os.environ["SLURM_CPUS_PER_TASK"])
    if "Joblib" in str(launcher.get("_target_", "")):
        cores = len(os.sched_getaffinity(0))
        n_jobs = launcher.get("n_jobs") or 1
        parallel = cores if n_jobs < 0 else n_jobs  # joblib: -1 means one job per core
        return max(1, cores // max(1, parallel))
    return None

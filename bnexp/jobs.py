"""What one launched job does with its run folder: skip, resume, run, or fail alone.

Every launcher (local, joblib, SLURM) calls `execute` for each job. Under the run's lock it
reads the folder's record and decides by `rerun`:

    record            rerun=missing     rerun=failed      rerun=all
    none              run               run               run
    checkpoint only   resume            resume            resume
    completed         skip              skip              run again
    diverged          skip              skip              run again
    failed            skip              run again         run again

A record that is run again is first moved to `history/<time>/`; nothing finished is deleted.
A job never lets an exception escape into a sweep: it records it and reports `failed`
(KeyboardInterrupt is recorded and re-raised, so Ctrl-C still stops a sweep).
"""
from __future__ import annotations

import json
import logging
import os
import traceback
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from bnexp import checkpoint, records
from bnexp.config import Rerun
from bnexp.lock import RunBusy, RunLock
from bnexp.run import run

log = logging.getLogger(__name__)
LAUNCH_LOG_ENV = "BNEXP_LAUNCH_LOG"  # set by the sweep callback: where jobs report outcomes
FINISHED = {"completed", "diverged"}
RERUN_WHEN = {Rerun.missing: set(), Rerun.failed: {"failed"},
              Rerun.all: {"completed", "diverged", "failed"}}


@dataclass
class Outcome:
    status: str  # completed | diverged | failed | skipped | busy
    folder: str
    detail: str = ""
    final_test_accuracy: Optional[float] = None


def recorded_status(folder: Path) -> Optional[str]:
    """The status in the folder's summary.json; None when there is none."""
    try:
        return json.loads((folder / records.SUMMARY).read_text()).get("status", "unreadable")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "unreadable"


def archive(folder: Path) -> Path:
    """Move the folder's record into history/<UTC time>/ so that a rerun starts clean."""
    target = folder / "history" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target.mkdir(parents=True)
    tables = [path.name for path in folder.glob("*.csv")]  # metrics and probe tables
    for name in (records.SUMMARY, records.ERROR, checkpoint.CHECKPOINT, *tables):
        if (folder / name).exists():
            os.replace(folder / name, target / name)
    return target


def execute(cfg: DictConfig, folder: Path, raise_errors: bool, threads: Optional[int] = None
            ) -> Outcome:
    """Run, resume or skip the run in `folder` with `threads` CPU threads; `raise_errors`
    re-raises a failure (single runs), otherwise it is recorded and reported (sweeps go on)."""
    try:
        with RunLock(folder) as lock:
            status = recorded_status(folder)
            if status in FINISHED | {"failed"} and status not in RERUN_WHEN[cfg.rerun]:
                return _report(Outcome("skipped", str(folder), f"already {status}"))
            if status is not None:
                log.info("rerun=%s: earlier record moved to %s", cfg.rerun.value, archive(folder))
            log.info("training starts in %s%s", folder,
                     " (resuming from its checkpoint)" if (folder / checkpoint.CHECKPOINT).exists()
                     else "")
            try:
                summary = run(cfg, folder, heartbeat=lock.heartbeat, threads=threads)
            except KeyboardInterrupt:
                _report(Outcome("failed", str(folder), "interrupted"))
                raise
            except BaseException as error:  # SystemExit from training code included
                log.error("run failed: %s\n%s", folder, traceback.format_exc())
                if raise_errors:
                    raise
                return _report(Outcome("failed", str(folder), f"{type(error).__name__}: {error}"))
    except RunBusy as busy:
        return _report(Outcome("busy", str(folder), str(busy)))
    return _report(Outcome(summary["status"], str(folder),
                           final_test_accuracy=summary.get("final_test_accuracy")))


def _report(outcome: Outcome) -> Outcome:
    """Append the outcome to the sweep's launch log (one JSON line, one write)."""
    path = os.environ.get(LAUNCH_LOG_ENV)
    if path:
        line = (json.dumps(asdict(outcome)) + "\n").encode()
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
    return outcome


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

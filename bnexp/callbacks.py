"""Hydra callbacks: checks that must pass before Hydra creates any run folder, and the
sweep's closing table (also when the sweep is interrupted: see `close_sweep`)."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bnexp import sweep
from bnexp.identity import study_dir
from bnexp.jobs import LAUNCH_LOG_ENV
from bnexp.progress import SweepProgress
from bnexp.records import recorded_status
from bnexp.session import check_device, load_splits
from bnexp.validation import validate

log = logging.getLogger(__name__)


class Rejected(BaseException):
    """Carries a user-fixable error out of a callback.

    Hydra's callback runner turns every `Exception` into a warning and carries on (it would
    then create the run folder), so the rejection travels as a BaseException, which it lets
    through; `bnexp.cli.main` unwraps it into one line and a non-zero exit.
    """

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class SweepFailed(BaseException):
    """At least one run of the sweep failed (the table names them); exit non-zero."""


class ResultsNotWritable(OSError):
    pass


class ValidateBeforeRun(Callback):
    """Reject a bad value, a missing dataset or an unwritable results folder while nothing
    is on disk yet: Hydra calls these hooks after composing and before creating folders.
    For a sweep, every job's config is composed and checked before the first job starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        def check_run() -> None:
            check_runnable(config)
            check_writable(study_dir(config, config.hydra.runtime.cwd))
        _rejecting(check_run)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_sweep

        def check_sweep() -> OpenSweep:
            jobs = []
            for overrides in sweep.expand_jobs(config):
                job = sweep.compose_job(config, overrides)
                try:
                    check_runnable(job)
                except (ValueError, OSError) as error:  # name the job, keep the type
                    error.args = (f"{error} (in sweep job {' '.join(overrides)})",)
                    raise
                jobs.append(job)
            launch_dir = config.hydra.runtime.cwd
            for study in dict.fromkeys(study_dir(job, launch_dir) for job in jobs):
                check_writable(study)  # only once every job is known to be valid
            folders = sweep.job_folders(config, jobs)
            finished = sum(recorded_status(folder) is not None for folder in folders)
            study = study_dir(config, launch_dir)
            log.info("sweep of %d runs into %s (%d have a record already)", len(jobs), study,
                     finished)
            launch_log = sweep.open_launch_log(study)
            return OpenSweep(launch_log, folders, SweepProgress(launch_log, len(jobs)).start())

        _open_sweep = None
        _open_sweep = _rejecting(check_sweep)
        os.environ[LAUNCH_LOG_ENV] = str(_open_sweep.launch_log)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The table, the report if asked for, and SweepFailed when a run failed. Anything
        unexpected here also ends in SweepFailed: Hydra would turn an Exception from a
        callback into a warning and exit 0."""
        try:
            failed = close_sweep()
            if config.report:
                write_report(study_dir(config, config.hydra.runtime.cwd))
        except Exception as error:
            print(f"bnexp: the sweep's closing step failed ({type(error).__name__}: {error}); "
                  "every run's record is in its folder", file=sys.stderr, flush=True)
            raise SweepFailed("closing step failed") from error
        if failed:
            raise SweepFailed("some runs failed")


@dataclass
class OpenSweep:
    launch_log: Path  # where this launch's jobs report their outcomes
    folders: list[Path]  # every job's run folder
    progress: SweepProgress  # the sweep's line on a terminal


_open_sweep: Optional[OpenSweep] = None  # the sweep of this process, between start and end


def close_sweep() -> bool:
    """Print the closing table of the open sweep, if any; True when a run failed. Called at
    the sweep's end and by the command line when a sweep is interrupted."""
    global _open_sweep
    if _open_sweep is None:
        return False
    opened, _open_sweep = _open_sweep, None
    opened.progress.close()
    os.environ.pop(LAUNCH_LOG_ENV, None)
    table, failed = sweep.closing_table(opened.launch_log, opened.folders)
    print(table, flush=True)
    return failed


def write_report(study: Path) -> None:
    """The study's report, also when some runs failed; a report error never hides the
    sweep's own outcome."""
    from bnexp.report.build import build_report

    try:
        report = build_report(study)
    except Exception as error:  # the runs are safe on disk; say why the report is missing
        print(f"report: not written ({type(error).__name__}: {error}); run bnexp-report {study}")
        return
    print(f"report: {report.out / 'report.html'}", flush=True)


def _rejecting(check, *args: Any) -> Any:
    """`check(*args)`, its user-fixable errors carried out as `Rejected`."""
    try:
        return check(*args)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise Rejected(error) from error


def check_runnable(config: DictConfig) -> None:
    """Everything about one job that can refuse it, checked while nothing is on disk: the
    config's values, the device, and the dataset (present, or downloaded now when
    data.download=true; intact; large enough for the subset and the batch). The results
    folder is checked (`check_writable`) once every job has passed."""
    validate(config)
    check_device(config.train)
    load_splits(config.data, config.train.batch_size)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ResultsNotWritable(
            f"results folder {folder} is not writable ({error.strerror or error}): set "
            "results_dir=/a/writable/path, or fix the folder's permissions") from error

"""Hydra callbacks: checks that must pass before Hydra creates any run folder, and the
sweep's closing table."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bnexp import datasets, sweep
from bnexp.config import validate
from bnexp.identity import study_dir
from bnexp.jobs import LAUNCH_LOG_ENV, recorded_status

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

    def __init__(self) -> None:
        self.launch_log: Optional[Path] = None
        self.expected = 0

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _rejecting(check_runnable, config, config.hydra.runtime.cwd)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        def check_sweep() -> None:
            jobs = []
            for overrides in sweep.expand_jobs(config):
                job = sweep.compose_job(config, overrides)
                try:
                    check_runnable(job, config.hydra.runtime.cwd)
                except (ValueError, FileNotFoundError, OSError) as error:
                    raise type(error)(f"{error} (in sweep job {' '.join(overrides)})") from error
                jobs.append(job)
            self.expected = len(jobs)
            finished = sum(recorded_status(folder) is not None
                           for folder in sweep.job_folders(config, jobs))
            study = study_dir(config, config.hydra.runtime.cwd)
            self.launch_log = sweep.open_launch_log(study)
            os.environ[LAUNCH_LOG_ENV] = str(self.launch_log)
            log.info("sweep of %d runs into %s (%d have a record already)", len(jobs), study,
                     finished)
        _rejecting(check_sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.launch_log is None:
            return
        outcomes = sweep.read_launch_log(self.launch_log)
        print(sweep.outcome_table(outcomes, self.expected), flush=True)
        os.environ.pop(LAUNCH_LOG_ENV, None)
        if config.report:
            write_report(study_dir(config, config.hydra.runtime.cwd))
        if any(outcome["status"] == "failed" for outcome in outcomes):
            raise SweepFailed("some runs failed")


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


def _rejecting(check, *args: Any) -> None:
    try:
        check(*args)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise Rejected(error) from error


def check_runnable(config: DictConfig, launch_dir: str) -> None:
    """The config's values are valid, its dataset is present (unless it may download), and
    its results folder can be written."""
    validate(config)
    data = config.data
    if not data.download:
        info = datasets.DATASETS[data.name.value]
        found, tried = datasets.locate(info, data.root)
        if found is None:
            raise datasets.DatasetNotFound(datasets.not_found_message(info, tried, False, None))
    check_writable(study_dir(config, launch_dir))


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ResultsNotWritable(
            f"results folder {folder} is not writable ({error.strerror or error}): set "
            "results_dir=/a/writable/path, or fix the folder's permissions") from error

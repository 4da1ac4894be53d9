"""What one launched pack does: each member skipped, resumed or run as `bnexp.jobs.execute`
would, the runs that train trained together (bnexp.packed_fit), each recorded in its own
folder under its own lock."""
from __future__ import annotations

import contextlib
import json
import logging
import traceback
from pathlib import Path
from typing import Iterator, Optional

import torch
from omegaconf import OmegaConf

from bnexp import checkpoint, records
from bnexp.config import flatten
from bnexp.engine import FitResult
from bnexp.interrupts import escalated, interruption
from bnexp import jobs
from bnexp.jobs import Outcome
from bnexp.lock import RunBusy, RunLock
from bnexp.packed_fit import Member, PackedFitter
from bnexp.packing import PackedJob
from bnexp.run import (OpenRun, bar_update, begin_run, build_run, close_run, finish_run,
                       progress_bar, record_failure)
from bnexp.schema import Status

log = logging.getLogger(__name__)


def execute_pack(members: list[PackedJob], threads: Optional[int] = None) -> list[Outcome]:
    """Run, resume or skip each member of a pack as `execute` would, training those that
    run together (bnexp.packed_fit). Each member holds its own lock; members whose
    checkpoints stand at different steps train as separate packs, one after another. A
    failure inside a pack is recorded for each member it stopped; an interruption is
    reported for each and re-raised."""
    outcomes: list[Outcome] = []
    for job in members:
        job.folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as locks, _member_logs([job.folder for job in members]):
        runnable: list[OpenRun] = []
        for job in members:
            try:
                lock = locks.enter_context(RunLock(job.folder))
            except RunBusy as busy:
                outcomes.append(jobs.report(Outcome(Status.busy, str(job.folder), str(busy))))
                continue
            records.remove_leftovers(job.folder)
            try:
                status = jobs.prepare(job.config, job.folder)
            except records.SummaryUnreadable as error:
                outcomes.append(jobs.report(Outcome(Status.unreadable, str(job.folder),
                                                f"{error}: fix access and launch again")))
                continue
            if status is not None:
                outcomes.append(jobs.report(Outcome(Status.skipped, str(job.folder),
                                                f"already {status}")))
                continue
            _write_job_files(job)
            log.info("training starts in %s%s", job.folder,
                     " (resuming from its checkpoint)"
                     if (job.folder / checkpoint.CHECKPOINT).exists() else "")
            try:
                runnable.append(begin_run(job.config, job.folder, lock.ensure_owned))
            except BaseException as error:
                outcomes.append(_failed(job.folder, error))
        by_step: dict[int, list[OpenRun]] = {}
        for opened in runnable:
            step = opened.resume["fit"]["progress"]["step"] if opened.resume else 0
            by_step.setdefault(step, []).append(opened)
        for group in by_step.values():
            outcomes += _train_pack(group, threads)
    return outcomes


def _failed(folder: Path, error: BaseException) -> Outcome:
    reason = interruption(error)
    if reason is not None:
        log.warning("%s: %s; the next launch resumes it from its last checkpoint", folder,
                    reason)
        jobs.report(Outcome(Status.interrupted, str(folder), reason))
        raise escalated(error)
    log.error("run failed: %s\n%s", folder, traceback.format_exc())
    return jobs.report(Outcome(Status.failed, str(folder), f"{type(error).__name__}: {error}"))


def _train_pack(group: list[OpenRun], threads: Optional[int]) -> list[Outcome]:
    """Build every member (sharing the placed data), train them as one pack, record each.
    A member that fails to build fails alone; a failure of the pack's training fails every
    member it stopped."""
    outcomes: list[Outcome] = []
    finished: set[int] = set()
    try:
        built = _build_members(group, threads, outcomes, finished)
        names = [opened.folder.name for opened, _ in built]
        members = [_member(opened, states, names, finished, outcomes)
                   for opened, states in built]
        members.sort(key=lambda m: (m.session.norms.cfg.momentum, m.session.norms.cfg.eps))
        if members:
            log.info("training %d run(s) as one pack: %s", len(members), ", ".join(names))
            fitter = PackedFitter(members)
            jobs.report_event("pack started", runs=len(members))
            try:
                with progress_bar(fitter.plan.total_steps, fitter.step_count) as bar:
                    fitter.fit(bar_update(bar))
            finally:
                jobs.report_event("pack ended", runs=len(members))
    except BaseException as error:  # the members it stopped: as `execute` treats a run's
        stopped = [opened for opened in group if id(opened) not in finished]
        for opened in stopped:
            record_failure(opened, error)  # nothing for an interruption: checkpoints stay
        reason = interruption(error)
        if reason is not None:
            for opened in stopped:
                log.warning("%s: %s; the next launch resumes it from its last checkpoint",
                            opened.folder, reason)
                jobs.report(Outcome(Status.interrupted, str(opened.folder), reason))
            raise escalated(error)
        log.error("pack failed: %s\n%s", ", ".join(o.folder.name for o in stopped),
                  traceback.format_exc())
        outcomes += [jobs.report(Outcome(Status.failed, str(opened.folder),
                                         f"{type(error).__name__}: {error}"))
                     for opened in stopped]
    finally:
        for opened in group:
            close_run(opened)
    return outcomes


def _build_members(group: list[OpenRun], threads: Optional[int], outcomes: list[Outcome],
                   finished: set[int]) -> list[tuple[OpenRun, dict]]:
    """The members that build, each with its RNG states as its build left them (seeded, or
    resumed: the stream its dropout draws from); one whose build raises is recorded failed
    (and counted as finished), as a single run that fails while it builds."""
    built, placed = [], {}
    for opened in group:
        key = json.dumps(flatten(opened.cfg.data), sort_keys=True)
        try:
            build_run(opened, threads, placed.get(key))
        except Exception as error:
            if interruption(error) is not None:
                raise
            record_failure(opened, error)
            finished.add(id(opened))
            outcomes.append(_failed(opened.folder, error))
            continue
        placed.setdefault(key, opened.session.data)
        built.append((opened, checkpoint.rng_state()))
    return built


def _member(opened: OpenRun, states: dict, names: list[str], finished: set[int],
            outcomes: list[Outcome]) -> Member:
    """The pack's view of one built run: its RNG stream (from `states`, the global RNG
    states its build left) and its record's callbacks."""
    device = opened.session.device
    generator = torch.Generator(device=device)
    generator.set_state(states["torch"] if device.type == "cpu"
                        else states["cuda"][device.index or 0])
    others = [name for name in names if name != opened.folder.name]

    def rng() -> dict:
        if device.type == "cpu":
            return {**states, "torch": generator.get_state()}
        cuda = list(states["cuda"])
        cuda[device.index or 0] = generator.get_state()
        return {**states, "cuda": cuda}

    def finish(result: FitResult) -> None:
        summary = finish_run(opened, result, {"packed_with": others})
        finished.add(id(opened))
        outcomes.append(jobs.report(Outcome(summary["status"], str(opened.folder),
                                        final_test_accuracy=summary.get("final_test_accuracy"))))

    return Member(opened.session, generator, opened.write_rows,
                  lambda fitter: opened.save_checkpoint(fitter, rng()), finish)


def _write_job_files(job: PackedJob) -> None:
    """The `.hydra/` snapshot a single job's folder gets from Hydra (config, overrides)."""
    folder = job.folder / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(job.config, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(job.overrides), folder / "overrides.yaml")


LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


class _OtherMembersFilter(logging.Filter):
    """Drops a line about another member of the pack (it names that member's folder), so a
    member's bnexp.log holds its own lines and the pack's, as a single run's holds its own."""

    def __init__(self, others: list[str]):
        super().__init__()
        self.others = others

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(other in message for other in self.others)


@contextlib.contextmanager
def _member_logs(folders: list[Path]) -> Iterator[None]:
    """Each member's log lines (INFO and above) and the pack's in its own bnexp.log; Hydra
    opens only the first member's (none in a worker process), which is filtered too."""
    root = logging.getLogger()
    opened = {getattr(h, "baseFilename", None): h for h in root.handlers}
    formatter = next((h.formatter for h in root.handlers if h.formatter),
                     logging.Formatter(LOG_FORMAT))
    added, filtered = [], []
    for folder in folders:
        path = str((folder / "bnexp.log").resolve())
        handler = opened.get(path)
        if handler is None:
            handler = logging.FileHandler(path)
            handler.setFormatter(formatter)
            root.addHandler(handler)
            added.append(handler)
        member_filter = _OtherMembersFilter([str(f) for f in folders if f != folder])
        handler.addFilter(member_filter)
        filtered.append((handler, member_filter))
    level = root.level
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler, member_filter in filtered:
            handler.removeFilter(member_filter)
        for handler in added:
            root.removeHandler(handler)
            handler.close()

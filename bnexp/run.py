"""run(cfg, folder): build -> fit -> record. The only code that sees the whole config;
everything it calls takes its own slice."""
from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig
from tqdm import tqdm

from bnexp import checkpoint, records
from bnexp.config import flatten
from bnexp.engine import FitResult, Fitter
from bnexp.evaluation import split_name
from bnexp.identity import accepted_hashes
from bnexp.interrupts import escalated, interruption
from bnexp.session import Session, build_session
from bnexp.schema import SUMMARY, TABLES, Status, summary_key
from bnexp.validation import validate

log = logging.getLogger(__name__)


@dataclass
class OpenRun:
    """One run between `begin_run` and `close_run`: its folder, what it resumes from and,
    once built, its session and open tables. Single runs and packed members alike."""

    cfg: DictConfig
    folder: Path
    guard: Callable[[], None]
    started: datetime
    identity: str
    resume: Optional[dict]
    base: dict[str, Any]
    session: Optional[Session] = None
    tables: dict[str, records.TableLog] = field(default_factory=dict)

    def write_rows(self, name: str, rows: list[dict]) -> None:
        self.guard()
        self.tables[name].write(rows)

    def save_checkpoint(self, fitter: Fitter, rng: Optional[dict] = None) -> None:
        """At an epoch end, every `train.checkpoint_every` epochs and after the last step."""
        every = self.cfg.train.checkpoint_every
        if every and (fitter.epoch % every == 0
                      or fitter.step_count == self.session.plan.total_steps):
            self.guard()
            checkpoint.save(self.folder, fitter.state_dict(),
                            {name: table.rows for name, table in self.tables.items()},
                            self.identity, rng)


def run(cfg: DictConfig, folder: Path, guard: Callable[[], None] = lambda: None,
        threads: Optional[int] = None) -> dict[str, Any]:
    """Train one run into `folder`, resuming from its checkpoint when it has one; returns
    the summary also written to summary.json. `guard` is called before every write to the
    record (it raises `interrupts.LockLost` once another launcher owns the folder);
    `threads` (CPU threads) defaults to `train.threads`.

    The run's own exceptions are recorded (status failed, error.txt) and re-raised. An
    interruption (Ctrl-C, SIGTERM, a SLURM requeue, a full disk; see bnexp.interrupts)
    writes no terminal record: the checkpoint stays and the next launch resumes from it.
    """
    opened = begin_run(cfg, folder, guard)
    try:
        build_run(opened, threads)
        return finish_run(opened, _fit(opened))
    except BaseException as error:
        record_failure(opened, error)
        raise escalated(error)
    finally:
        close_run(opened)


def begin_run(cfg: DictConfig, folder: Path, guard: Callable[[], None]) -> OpenRun:
    """Validate, refuse a finished folder, and read what the run resumes from."""
    validate(cfg)
    if (folder / SUMMARY).exists():
        raise FileExistsError(f"{folder} already holds a finished run record; choose another "
                              "output folder (hydra.run.dir=...) instead of overwriting it")
    folder.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    hashes = accepted_hashes(cfg)
    resume = _resume_state(folder, hashes)
    base = {"config": flatten(cfg), "config_hash": hashes[0], "run_id": folder.name,
            "started_at": started.isoformat(timespec="seconds"),
            "resumed_from_step": resume["fit"]["progress"]["step"] if resume else None}
    return OpenRun(cfg, folder, guard, started, hashes[0], resume, base)


def build_run(opened: OpenRun, threads: Optional[int], data: Optional[dict] = None) -> None:
    """Build the session (sharing `data` when given), open its tables, load its checkpoint."""
    opened.session = build_session(opened.cfg, threads, data)
    opened.tables = _open_tables(opened.folder, opened.session, opened.resume)
    if opened.resume:
        opened.session.fitter.load_state_dict(opened.resume["fit"])
        checkpoint.restore_rng(opened.resume["rng"])


def finish_run(opened: OpenRun, result: FitResult, extra: Optional[dict] = None
               ) -> dict[str, Any]:
    """The norm_affine table and summary.json of a fit that ended (completed or diverged)."""
    session = opened.session
    affine = session.norms.affine_rows(session.model)
    if affine:
        opened.guard()
        opened.tables["norm_affine"] = records.TableLog(opened.folder, TABLES["norm_affine"],
                                                        affine)
    summary = {**opened.base, **_summarize(session, result, opened.tables["metrics"].rows,
                                           opened.cfg), **(extra or {})}
    summary["wall_seconds"] = _since(opened.started)
    opened.guard()
    records.write_summary(opened.folder, summary)
    return summary


def record_failure(opened: OpenRun, error: BaseException) -> None:
    """A failure (not an interruption) as status failed with the traceback."""
    if interruption(error) is None:
        _record_failure(opened.folder, opened.base, error, opened.started, opened.guard)


def close_run(opened: OpenRun) -> None:
    for table in opened.tables.values():
        table.close()


def _record_failure(folder: Path, base: dict, error: BaseException, started: datetime,
                    guard: Callable[[], None]) -> None:
    """status failed with the traceback; a failure that cannot be recorded (full disk)
    becomes an interruption, so the next launch runs it again rather than losing it."""
    try:
        guard()
        records.write_error(folder, traceback.format_exc())
        records.write_summary(folder, {**base, "status": Status.failed,
                                       "error": f"{type(error).__name__}: {error}",
                                       "wall_seconds": _since(started)})
    except OSError as write_error:
        if interruption(write_error) is None:
            raise
        raise escalated(write_error)


def _resume_state(folder: Path, hashes: list[str]) -> Optional[dict]:
    """The checkpoint to resume from; a damaged one is moved to history/ with a warning and
    the run starts from step 0 (it would otherwise fail at every launch)."""
    try:
        return checkpoint.load(folder, hashes)
    except checkpoint.CheckpointDamaged as damaged:
        kept = records.archive(folder, [checkpoint.CHECKPOINT])
        log.warning("%s; moved to %s, the run starts again from step 0", damaged, kept)
        return None


def _since(started: datetime) -> float:
    return round((datetime.now(timezone.utc) - started).total_seconds(), 3)


def _open_tables(folder: Path, session: Session, resume: Optional[dict]
                 ) -> dict[str, records.TableLog]:
    names = ["metrics", *(probe.table for probe in session.fitter.probes)]  # probes: when on
    saved = resume["tables"] if resume else {}
    return {name: records.TableLog(folder, TABLES[name], saved.get(name))
            for name in names}


def _fit(opened: OpenRun) -> FitResult:
    fitter, plan = opened.session.fitter, opened.session.plan
    with progress_bar(plan.total_steps, fitter.step_count) as bar:
        return fitter.fit(plan, opened.session.evaluate, opened.write_rows, bar_update(bar),
                          opened.save_checkpoint)


def _summarize(session: Session, result: FitResult, rows: list[dict], cfg: DictConfig
               ) -> dict[str, Any]:
    data = session.data
    summary = {"status": result.status, "steps": result.steps, "examples": result.examples,
               "train_seconds": round(result.train_seconds, 3), "diverged_at": result.diverged_at,
               "initial_train_loss": result.initial_loss,
               "steps_per_epoch": session.batches.steps_per_epoch,
               "total_steps": session.plan.total_steps, "effective_lr": session.lr,
               "train_examples": len(data["train"]), "test_examples": len(data["test"]),
               "parameters": sum(p.numel() for p in session.model.parameters()),
               "trainable_parameters": session.trainable_parameters,
               "data_folder": data["folder"], "data_checksum": data["checksum"],
               "data_mean": data["normalize"].mean, "data_std": data["normalize"].std,
               "memory_format": str(session.batches.memory_format).removeprefix("torch."),
               "packed_with": None,
               **session.norms.describe(), **records.provenance(session.device)}
    for mode in cfg.eval.modes:
        tests = [row for row in rows if row["split"] == split_name(mode.value)]
        summary.update(_test_summary(tests, mode.value))
    if result.status == Status.completed:  # the training examples, in every eval mode
        scored = session.evaluate_train()
        for mode in cfg.eval.modes:
            loss, accuracy = scored[split_name(mode.value)]
            summary.update({summary_key("final_train_loss", mode.value): loss,
                            summary_key("final_train_accuracy", mode.value): accuracy})
        summary["final_train_examples"] = len(data["train_eval"])
    return summary


def _test_summary(tests: list[dict], mode: str) -> dict[str, Any]:
    if not tests:
        return {}
    values = {"final_test_loss": tests[-1]["loss"], "final_test_accuracy": tests[-1]["accuracy"],
              "best_test_loss": min(row["loss"] for row in tests),
              "best_test_accuracy": max(row["accuracy"] for row in tests)}
    return {summary_key(key, mode): value for key, value in values.items()}


def progress_bar(total_steps: int, done: int) -> tqdm:
    """A bar on a terminal; silent when stdout is a file or a pipe."""
    return tqdm(total=total_steps, initial=done, unit="step", disable=not sys.stdout.isatty(),
                dynamic_ncols=True, leave=False)


def bar_update(bar: tqdm):
    def update(step: int, loss: float, accuracy: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
    return update


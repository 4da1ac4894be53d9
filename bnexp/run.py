"""run(cfg, folder): build -> fit -> record. The only code that sees the whole config;
everything it calls takes its own slice."""
from __future__ import annotations

import logging
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig
from tqdm import tqdm

from bnexp import checkpoint, records
from bnexp.config import flatten
from bnexp.engine import FitResult, Fitter
from bnexp.evaluation import evaluate, split_name
from bnexp.identity import accepted_hashes
from bnexp.interrupts import escalated, interruption
from bnexp.session import Session, build_session
from bnexp.schema import SUMMARY, TABLES, Status, summary_key
from bnexp.validation import validate

log = logging.getLogger(__name__)


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
    validate(cfg)
    if (folder / SUMMARY).exists():
        raise FileExistsError(f"{folder} already holds a finished run record; choose another "
                              "output folder (hydra.run.dir=...) instead of overwriting it")
    folder.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    hashes = accepted_hashes(cfg)
    identity = hashes[0]
    resume = _resume_state(folder, hashes)
    base = {"config": flatten(cfg), "config_hash": identity, "run_id": folder.name,
            "started_at": started.isoformat(timespec="seconds"),
            "resumed_from_step": resume["fit"]["progress"]["step"] if resume else None}
    tables: dict[str, records.TableLog] = {}
    try:
        session = build_session(cfg, threads)
        tables = _open_tables(folder, session, resume)
        result = _fit(cfg, folder, session, tables, resume, guard, identity)
        affine = session.norms.affine_rows(session.model)
        if affine:
            guard()
            tables["norm_affine"] = records.TableLog(folder, TABLES["norm_affine"], affine)
        summary = {**base, **_summarize(session, result, tables["metrics"].rows, cfg)}
        summary["wall_seconds"] = _since(started)
        guard()
        records.write_summary(folder, summary)
    except BaseException as error:
        if interruption(error) is None:
            _record_failure(folder, base, error, started, guard)
        raise escalated(error)
    finally:
        for table in tables.values():
            table.close()
    return summary


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


def _fit(cfg: DictConfig, folder: Path, session: Session, tables: dict[str, records.TableLog],
         resume: Optional[dict], guard: Callable[[], None], identity: str) -> FitResult:
    fitter, plan = session.fitter, session.plan
    if resume:
        fitter.load_state_dict(resume["fit"])
        checkpoint.restore_rng(resume["rng"])

    def write_rows(name: str, rows: list[dict]) -> None:
        guard()
        tables[name].write(rows)

    def save_checkpoint(state: Fitter) -> None:
        every = cfg.train.checkpoint_every
        if every and (state.epoch % every == 0 or state.step_count == plan.total_steps):
            guard()
            checkpoint.save(folder, state.state_dict(),
                            {name: table.rows for name, table in tables.items()}, identity)

    with _progress(plan.total_steps, fitter.step_count) as bar:
        return fitter.fit(plan, session.evaluate, write_rows, _bar_update(bar), save_checkpoint)


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
               "trainable_parameters": sum(p.numel() for p in session.model.parameters()
                                           if p.requires_grad),
               "data_folder": data["folder"], "data_checksum": data["checksum"],
               "data_mean": data["normalize"].mean, "data_std": data["normalize"].std,
               "memory_format": str(session.batches.memory_format).removeprefix("torch."),
               **session.norms.describe(), **records.provenance(session.device)}
    for mode in cfg.eval.modes:
        tests = [row for row in rows if row["split"] == split_name(mode.value)]
        summary.update(_test_summary(tests, mode.value))
    if result.status == Status.completed:
        loss, accuracy = evaluate(session.model, data["train_eval"], data["normalize"],
                                  session.autocast)
        summary.update(final_train_loss=loss, final_train_accuracy=accuracy,
                       final_train_examples=len(data["train_eval"]))
    return summary


def _test_summary(tests: list[dict], mode: str) -> dict[str, Any]:
    if not tests:
        return {}
    values = {"final_test_loss": tests[-1]["loss"], "final_test_accuracy": tests[-1]["accuracy"],
              "best_test_loss": min(row["loss"] for row in tests),
              "best_test_accuracy": max(row["accuracy"] for row in tests)}
    return {summary_key(key, mode): value for key, value in values.items()}


def _progress(total_steps: int, done: int) -> tqdm:
    """A bar on a terminal; silent when stdout is a file or a pipe."""
    return tqdm(total=total_steps, initial=done, unit="step", disable=not sys.stdout.isatty(),
                dynamic_ncols=True, leave=False)


def _bar_update(bar: tqdm):
    def update(step: int, loss: float, accuracy: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
    return update


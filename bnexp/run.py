"""run(cfg, folder): seed -> data -> model -> fit -> record. The only code that sees the
whole config; everything it calls takes its own slice."""
from __future__ import annotations

import random
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from bnexp import checkpoint, datasets, records
from bnexp.config import ConfigError, DataConfig, Device, flatten, validate
from bnexp.identity import config_hash, run_id
from bnexp.engine import Fitter, autocast_for, evaluate
from bnexp.loader import Normalizer, TrainBatches, balanced_subset, to_device
from bnexp.models import build_model
from bnexp.optim import build_optimizer, build_schedule

TRAIN_EVAL_EXAMPLES = 10_000  # training examples re-scored in eval mode for the final train accuracy


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(choice: Device) -> torch.device:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "cpu": True}
    if choice == Device.auto:
        return torch.device(next(name for name, ok in available.items() if ok))
    if not available[choice.value]:
        raise ConfigError(f"train.device={choice.value} is not available on this machine: "
                          "use train.device=auto or cpu")
    return torch.device(choice.value)


def place_data(cfg: DataConfig, device: torch.device) -> dict[str, Any]:
    """Decode the dataset, pick the training subset, and move both splits to `device`."""
    splits = datasets.load(cfg.name.value, cfg.root, cfg.download)
    available = splits.train_labels.shape[0]
    subset = None
    if cfg.train_subset is not None:
        if cfg.train_subset > available:
            raise ConfigError(f"data.train_subset={cfg.train_subset} exceeds the {available} "
                              f"training examples of {cfg.name.value}: lower it or use null")
        subset = balanced_subset(splits.train_labels, cfg.train_subset, cfg.subset_seed)
    train = to_device(splits.train_images, splits.train_labels, device, subset)
    test = to_device(splits.test_images, splits.test_labels, device)
    rescored = train if len(train) <= TRAIN_EVAL_EXAMPLES else to_device(
        train.images, train.labels, device,
        balanced_subset(train.labels, TRAIN_EVAL_EXAMPLES, cfg.subset_seed).to(device))
    return {"train": train, "test": test, "train_eval": rescored,
            "normalize": Normalizer(train.images), "folder": str(splits.folder),
            "checksum": splits.checksum}


def run(cfg: DictConfig, folder: Path, heartbeat: Callable[[], None] = lambda: None,
        threads: Optional[int] = None) -> dict[str, Any]:
    """Train one run into `folder`, resuming from its checkpoint when it has one; returns
    the summary also written to summary.json. `heartbeat` is called at every log row;
    `threads` (CPU threads) defaults to `train.threads`.

    Any exception is recorded (status failed, error.txt) and re-raised.
    """
    validate(cfg)
    if (folder / records.SUMMARY).exists():
        raise FileExistsError(f"{folder} already holds a finished run record; choose another "
                              "output folder (hydra.run.dir=...) instead of overwriting it")
    folder.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    resume = checkpoint.load(folder, config_hash(cfg))
    base = {"config": flatten(cfg), "config_hash": config_hash(cfg), "run_id": run_id(cfg),
            "started_at": started.isoformat(timespec="seconds"),
            "resumed_from_step": resume["fit"]["progress"]["step"] if resume else None}
    metrics = records.MetricsLog(folder / records.METRICS, resume["rows"] if resume else None)
    try:
        summary = {**base, **_train(cfg, folder, metrics, resume, heartbeat, threads)}
    except BaseException as error:
        records.write_error(folder, traceback.format_exc())
        records.write_summary(folder, {**base, "status": "failed",
                                       "error": f"{type(error).__name__}: {error}",
                                       "wall_seconds": _since(started)})
        raise
    finally:
        metrics.close()
    summary["wall_seconds"] = _since(started)
    records.write_summary(folder, summary)
    return summary


def _since(started: datetime) -> float:
    return round((datetime.now(timezone.utc) - started).total_seconds(), 3)


def _train(cfg: DictConfig, folder: Path, metrics: records.MetricsLog, resume: Optional[dict],
           heartbeat: Callable[[], None], threads: Optional[int]) -> dict[str, Any]:
    device = resolve_device(cfg.train.device)
    if cfg.train.amp and device.type != "cuda":
        raise ConfigError(f"train.amp=true needs CUDA but this run uses {device}: "
                          "set train.amp=false")
    threads = threads if threads is not None else cfg.train.threads
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    data = place_data(cfg.data, device)
    model, norms = build_model(cfg.model, cfg.norm, tuple(data["train"].images.shape[1:]),
                               datasets.DATASETS[cfg.data.name.value].num_classes)
    model.to(device)
    batches = TrainBatches(data["train"], data["normalize"], cfg.train.batch_size,
                           cfg.data.augment, cfg.seed)
    total_steps = cfg.train.steps or cfg.train.epochs * batches.steps_per_epoch
    optimizer = build_optimizer(model, cfg.optim)
    autocast = autocast_for(device, cfg.train.amp)
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, total_steps),
                    batches, autocast)
    if resume:
        fitter.load_state_dict(resume["fit"])
        checkpoint.restore_rng(resume["rng"])

    def write_row(row: dict) -> None:
        metrics.write(row)
        heartbeat()

    def save_checkpoint(state: Fitter) -> None:
        every = cfg.train.checkpoint_every
        if every and (state.epoch % every == 0 or state.step_count == total_steps):
            checkpoint.save(folder, state.state_dict(), metrics.rows, config_hash(cfg))

    with _progress(total_steps, fitter.step_count) as bar:
        result = fitter.run(total_steps, cfg.train.log_every, cfg.train.eval_every,
                            lambda: evaluate(model, data["test"], data["normalize"], autocast),
                            write_row, _bar_update(bar), save_checkpoint)
    summary = {"status": result.status, "steps": result.steps, "examples": result.examples,
               "train_seconds": round(result.train_seconds, 3), "diverged_at": result.diverged_at,
               "steps_per_epoch": batches.steps_per_epoch, "total_steps": total_steps,
               "train_examples": len(data["train"]), "test_examples": len(data["test"]),
               "parameters": sum(p.numel() for p in model.parameters()),
               "data_folder": data["folder"], "data_checksum": data["checksum"],
               "data_mean": data["normalize"].mean, "data_std": data["normalize"].std,
               **norms.describe(), **records.provenance(device)}
    summary.update(_test_summary([row for row in metrics.rows if row["split"] == "test"]))
    if result.status == "completed":
        loss, accuracy = evaluate(model, data["train_eval"], data["normalize"], autocast)
        summary.update(final_train_loss=loss, final_train_accuracy=accuracy,
                       final_train_examples=len(data["train_eval"]))
    return summary


def _test_summary(tests: list[dict]) -> dict[str, Any]:
    if not tests:
        return {}
    return {"final_test_loss": tests[-1]["loss"], "final_test_accuracy": tests[-1]["accuracy"],
            "best_test_loss": min(row["loss"] for row in tests),
            "best_test_accuracy": max(row["accuracy"] for row in tests)}


def _progress(total_steps: int, done: int) -> tqdm:
    """A bar on a terminal; silent when stdout is a file or a pipe."""
    return tqdm(total=total_steps, initial=done, unit="step", disable=not sys.stdout.isatty(),
                dynamic_ncols=True, leave=False)


def _bar_update(bar: tqdm):
    def update(step: int, loss: float, accuracy: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}", refresh=False)
    return update


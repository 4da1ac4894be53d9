"""Outcomes the report derives from a run's record: whether a completed run trained at all,
and when its test accuracy first reached a target.

A run *failed to train* when it completed yet its final test accuracy is within
`CHANCE_MARGIN` of chance (1 / classes), or its final train loss is not below its initial loss:
the first step's batch loss, or ln(classes), the loss of a uniform guess, where that batch held
fewer examples than there are classes (one example's loss at batch 1 ranged from 0.28 to 12.7
over the seeds of online_resnet: no estimate of where training started) or the record (of an
older bnexp) lacks it. Such a run is counted beside `diverged`, never averaged as a working run.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bnexp.datasets import DATASETS
from bnexp.schema import Status

CHANCE_MARGIN = 0.02  # within 2 points of chance accuracy counts as not trained


def classes(data_name: object) -> int:
    info = DATASETS.get(str(data_name))
    return info.num_classes if info is not None else 10


def chance_accuracy(runs: pd.DataFrame) -> float:
    """Chance accuracy of the runs' dataset (the most classes among them, 1/10 if unknown)."""
    names = runs["data.name"].dropna().unique() if "data.name" in runs else []
    return 1.0 / max([classes(name) for name in names] or [10])


def mark_failed_to_train(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with status `failed to train` (and the reason as its problem) where it applies."""
    runs = runs.copy()
    for index, run in runs[runs["status"] == Status.completed].iterrows():
        count = classes(run.get("data.name"))
        accuracy = pd.to_numeric(run.get("final_test_accuracy"), errors="coerce")
        initial = pd.to_numeric(run.get("initial_train_loss"), errors="coerce")
        batch = pd.to_numeric(run.get("train.batch_size"), errors="coerce")
        if pd.isna(initial) or (not pd.isna(batch) and batch < count):
            initial = math.log(count)
        final_loss = pd.to_numeric(run.get("final_train_loss"), errors="coerce")
        if not pd.isna(accuracy) and abs(accuracy - 1 / count) <= CHANCE_MARGIN:
            reason = f"test accuracy {accuracy:.3f} is within 2 points of chance ({1 / count:.2f})"
        elif not pd.isna(final_loss) and final_loss >= initial:
            reason = f"final train loss {final_loss:.3f} is not below the initial {initial:.3f}"
        else:
            continue
        runs.loc[index, ["status", "problem"]] = [Status.failed_to_train, reason]
    return runs


def to_target(curves: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per run: the examples and steps at its first test evaluation (running statistics) with
    accuracy >= target; NaN, with reached_target False, when it never got there."""
    tests = curves[curves["split"] == "test"].sort_values(["run", "step"])
    reached = tests[tests["accuracy"] >= target].groupby("run")[["examples", "step"]].first()
    result = pd.DataFrame({"run": curves["run"].unique()}).set_index("run")
    result["examples_to_target"] = reached["examples"].astype(float)
    result["steps_to_target"] = reached["step"].astype(float)
    result["reached_target"] = np.isfinite(result["examples_to_target"])
    return result.reset_index()

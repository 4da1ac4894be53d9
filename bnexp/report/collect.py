"""Collect run folders into tidy tables: one row per run, one row per metrics event.

A run folder is any folder under the results root that holds a `summary.json`, a
`metrics.csv` or a Hydra `.hydra/config.yaml`; folder names are never parsed. The config comes
from the summary (flattened, as the run saw it) or, when the summary is missing, from the
Hydra snapshot. A run whose summary is missing or unreadable, or whose CSV is truncated, is
kept with status `incomplete` and a reason, never silently dropped or half-read.
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bnexp.config import flatten_tree
from bnexp.schema import METRICS, SUMMARY, SUMMARY_KEYS, TABLES, Status, Table
from bnexp.identity import scale_subfolders, unread_keys
from bnexp.report.outcomes import mark_failed_to_train

NOT_APPLICABLE = "n/a"  # a key the run's config does not read (bnexp.identity.unread_keys)
NOT_IN_RUNS = {"config", "status", "data_mean", "data_std"}  # summary keys runs.csv leaves out
SKIPPED_FOLDERS = {".hydra", "history", ".submitit", ".launches", "report"}


@dataclass
class Collection:
    """What a results folder holds: runs, their curves, and any extra per-run tables."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    config_keys: list[str] = field(default_factory=list)


def find_run_folders(root: Path) -> list[Path]:
    """Run folders under `root`, at any depth, but not in a report or bookkeeping folder,
    nor in another scale's folder of the study (`<study>/full/`: its own report)."""
    skipped = SKIPPED_FOLDERS | scale_subfolders()
    found = set()
    for marker in (SUMMARY, METRICS.file, ".hydra/config.yaml"):
        for path in root.rglob(marker):
            folder = path.parent.parent if marker.startswith(".hydra") else path.parent
            if not skipped & set(folder.relative_to(root).parts):
                found.add(folder)
    return sorted(found)


def read_table(path: Path, table: Optional[Table] = None) -> pd.DataFrame:
    """A CSV whose every row is complete; raises ValueError on a truncated file or one that
    lacks a column the table requires. Written by another bnexp version, it may lack optional
    columns (added, empty) or hold extra ones (kept): the declared columns come first."""
    text = path.read_text()
    if text and not text.endswith("\n"):
        raise ValueError(f"{path.name} ends inside a row (truncated)")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise ValueError(f"{path.name} has no header")
    if any(len(row) != len(rows[0]) for row in rows[1:]):
        raise ValueError(f"{path.name} has rows with a wrong number of fields")
    frame = pd.read_csv(io.StringIO(text))
    if table is None:
        return frame
    missing = [column for column in table.required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path.name} lacks the columns {missing}")
    for column in table.columns:
        if column not in frame.columns:
            frame[column] = float("nan")
    extra = [column for column in frame.columns if column not in table.columns]
    return frame[[*table.columns, *extra]]


def read_run(folder: Path, root: Path) -> tuple[dict[str, Any], list[str],
                                                 Optional[pd.DataFrame], dict[str, pd.DataFrame]]:
    """(row of runs.csv, its config keys, its metrics rows or None, its extra tables)."""
    row: dict[str, Any] = {"run": str(folder.relative_to(root))}
    problems = []
    summary: dict[str, Any] = {}
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except FileNotFoundError:
        problems.append("no summary.json" + (" (still running?)" if (folder / ".lock").exists()
                                             else ""))
    except (OSError, ValueError) as error:
        problems.append(f"unreadable summary.json ({error})")
    config = summary.get("config") or _hydra_config(folder)
    unread = unread_keys(config)  # shown as n/a: they did not shape this run
    # lists as text, so rows can be grouped; keys sorted, since a summary and Hydra's saved
    # config (a run still training) order a comparison's keys differently
    row.update({key: NOT_APPLICABLE if key in unread else
                json.dumps(value, sort_keys=True) if isinstance(value, list) else value
                for key, value in config.items()})
    # every declared key, empty when this run lacks it (failed runs have no accuracies), then
    # whatever else scalar it recorded (per eval mode keys, a newer bnexp's keys)
    row.update({key: summary.get(key) for key in SUMMARY_KEYS if key not in NOT_IN_RUNS})
    row.update({key: value for key, value in summary.items()
                if key not in NOT_IN_RUNS and not isinstance(value, (dict, list))})
    curves = None
    try:
        curves = read_table(folder / METRICS.file, METRICS)
    except FileNotFoundError:
        if summary.get("status") != Status.failed:  # a run can fail before its first row
            problems.append("no metrics.csv")
    except ValueError as error:
        problems.append(str(error))
    extras = {}
    for path in sorted(folder.glob("*.csv")):
        if path.name != METRICS.file:
            try:
                extras[path.stem] = read_table(path, TABLES.get(path.stem))
            except ValueError as error:
                problems.append(str(error))
    row["status"] = Status.incomplete if problems else summary.get("status", Status.incomplete)
    row["problem"] = "; ".join(problems)
    if row["status"] == Status.failed:
        row["problem"] = (summary.get("error") or "see error.txt").splitlines()[0]
    if problems:
        return row, list(config), None, {}
    return row, list(config), curves, extras


def _hydra_config(folder: Path) -> dict[str, Any]:
    """The config Hydra saved for a run without a summary (still running, or killed), with its
    interpolations resolved as the run resolved them (`${scale}` in a study's command), so
    that it agrees with the finished runs' recorded configs; left as written where one
    cannot be resolved outside the run (a `${hydra:...}` resolver)."""
    try:
        tree = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    try:
        tree = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    except OmegaConfBaseException:
        pass
    return flatten_tree(tree)


def collect(root: Path) -> Collection:
    """Read every run under `root`; warn once per incomplete run."""
    rows, curves, extras, config_keys = [], [], {}, set()
    for folder in find_run_folders(root):
        row, keys, run_curves, run_extras = read_run(folder, root)
        rows.append(row)
        config_keys.update(keys)
        if row["status"] == Status.incomplete:
            warnings.warn(f"incomplete run {folder}: {row['problem']}", stacklevel=2)
        if run_curves is not None:
            curves.append(run_curves.assign(run=row["run"]))
        for name, table in run_extras.items():
            extras.setdefault(name, []).append(table.assign(run=row["run"]))
    runs = pd.DataFrame(rows)
    if not runs.empty:
        runs["generalization_gap"] = runs["final_train_accuracy"] - runs["final_test_accuracy"]
        runs = mark_failed_to_train(runs)
    curve_table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=[*METRICS.columns, "run"])
    return Collection(runs, curve_table,
                      {name: pd.concat(tables, ignore_index=True) for name, tables in extras.items()},
                      sorted(config_keys))

"""Factors, variants and seed statistics.

The factors are the config keys whose value differs between runs; `seed` is the replicate.
A variant is one combination of factor values. Per variant, over its seeds: counts by status
and, over the completed runs, n, mean, std (n - 1 in the denominator) and a 95% confidence
interval from Student's t with n - 1 degrees of freedom (scipy), which for 3-5 seeds is
2-4 times wider than the 1.96 normal approximation, as it must be. Diverged and failed runs are
counted, never averaged in as zeros.
"""
from __future__ import annotations

import functools
import math
from dataclasses import fields
from typing import Iterable, Optional

import pandas as pd
from scipy import stats as scipy_stats

from bnexp.config import Config
from bnexp.identity import NOT_SEMANTIC
from bnexp.report.collect import NOT_APPLICABLE
from bnexp.schema import REPORTED, Status

REPLICATE = "seed"
METRICS = ["final_test_accuracy", "final_test_loss", "best_test_accuracy",
           "final_train_accuracy", "generalization_gap", "train_seconds"]
CONFIDENCE = 0.95
SECTIONS = [item.name for item in fields(Config)]  # the config's top-level keys, schema order


def detect_factors(runs: pd.DataFrame, config_keys: Iterable[str],
                   prefer: Iterable[str] = ()) -> list[str]:
    """Config keys with more than one value among the runs, except the replicate, keys
    that only say where or how a run executed, and aliases: a key that follows another
    factor (`_follows_one_of`: `eval.batch_size: ${train.batch_size}`, the depth and LR a study's
    network choice sets together, or the ghost arm's `norm.virtual_batch_size:
    ${train.batch_size}`, n/a on the other arms) is that factor under another name, so it
    neither splits a cell nor gets a figure axis. Of a set of aliases the key named in
    `prefer` (the keys the study's comparisons contrast, or a figure option) stays, else one
    that every run reads, else the one the schema declares first (data, model, norm, optim,
    train, probe, eval; then by name)."""
    preferred = set(prefer)
    candidates = [key for key in config_keys
                  if key in runs and key != REPLICATE and key not in NOT_SEMANTIC]
    varying = sorted((key for key in candidates if len(_applicable_values(runs[key])) > 1),
                     key=lambda key: (key not in preferred, not read_by_every_run(runs[key]),
                                      _schema_rank(key)))
    kept: list[str] = []
    for key in varying:
        if not _follows_one_of(runs, key, kept):
            kept.append(key)
    return sorted(kept)


def aliases(runs: pd.DataFrame, factors: list[str]) -> dict[str, list[str]]:
    """{factor: the config keys (columns `<section>.<key>` of the schema's sections) that vary
    with it one to one and are not factors themselves}, for the page to name them."""
    found: dict[str, list[str]] = {}
    for key in sorted(runs.columns, key=_schema_rank):
        if key in factors or "." not in key or key.split(".", 1)[0] not in SECTIONS \
                or key in NOT_SEMANTIC or len(_applicable_values(runs[key])) < 2:
            continue
        owner = _follows_one_of(runs, key, factors)
        if owner is not None:
            found.setdefault(owner, []).append(key)
    return found


def _schema_rank(key: str) -> tuple[int, str]:
    section = key.split(".", 1)[0]
    return (SECTIONS.index(section) if section in SECTIONS else len(SECTIONS), key)


def _follows_one_of(runs: pd.DataFrame, key: str, factors: list[str]) -> Optional[str]:
    """The factor `key` is another name for, or None: the key adds no cell to `factors` (its
    value, n/a included, is one per cell of theirs, so whether a run reads it is decided by
    them, e.g. by norm.kind) and, among the runs that read it, its values and the factor's
    relabel each other one to one. For a key every run reads this is plain one-to-one."""
    if not factors:
        return None
    cells = texts(runs[factors])
    if (texts(runs[key]).groupby([cells[f] for f in factors]).nunique() > 1).any():
        return None
    read = runs[_is_read(runs[key])]
    return next((factor for factor in factors if _relabels(read, key, factor)), None)


def _is_read(column: pd.Series) -> pd.Series:
    """Per run, whether its config reads this key (it is not n/a)."""
    return column.astype(str) != NOT_APPLICABLE


def read_by_every_run(column: pd.Series) -> bool:
    """Whether no run leaves this config key unread (n/a)."""
    return bool(_is_read(column).all())


def _relabels(runs: pd.DataFrame, key: str, other: str) -> bool:
    """Whether each value of `key` (as text, n/a included) goes with exactly one value of
    `other` among the runs, and the other way round."""
    pairs = texts(runs[[key, other]]).drop_duplicates()
    return pairs[key].is_unique and pairs[other].is_unique


def held_fixed(runs: pd.DataFrame, config_keys: Iterable[str]) -> dict[str, object]:
    """Config keys with one value across the runs it applies to (what a title may say was
    held fixed)."""
    fixed = {}
    for key in config_keys:
        if key in runs and key not in NOT_SEMANTIC:
            values = _applicable_values(runs[key])
            if len(values) == 1:
                fixed[key] = values[0]
    return fixed


def _applicable_values(column: pd.Series) -> list:
    """Distinct values, compared as text, leaving out n/a (a key the run does not read)."""
    column = column[_is_read(column)]
    return list(dict(zip(texts(column), column)).values())


def sort_key(value: object) -> tuple:
    """Numbers by value, before words; words alphabetically (8 < 64 < 512; lr 1 < 3 < 10)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
    return (1, 0.0, str(value)) if math.isnan(number) else (0, number, "")


NULL = "null"  # a null config value (NaN in a table), as a command line spells it


def text(value: object) -> str:
    """A factor value as comparisons match on, factor checks compare and figures name it:
    exact, in the shortest spelling (0.1 -> '0.1', 64.0 -> '64', 1e-05 -> '1e-05'), NULL
    for a null config value (pandas' astype(str) keeps NaN, which groupby, nunique and
    dict keys then drop or split)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NULL
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def texts(values: pd.Series | pd.DataFrame) -> pd.Series | pd.DataFrame:
    """`text` of every value of a column (or of each column of a frame), computed once per
    distinct value (a column of curves has a row per logged step)."""
    if isinstance(values, pd.DataFrame):
        return values.apply(texts)
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return pd.Series([text(value) for value in uniques], dtype=object).iloc[codes].set_axis(
        values.index)


def label(values: dict[str, object]) -> str:
    """`kind=batch, placement=after`: short key names, in factor order; a short name two keys
    share is spelled in full (`train.batch_size=32, eval.batch_size=32`); values as `text`."""
    short = [key.rsplit(".", 1)[-1] for key in values]
    names = [name if short.count(name) == 1 else key for name, key in zip(short, values)]
    return ", ".join(f"{name}={text(value)}" for name, value in zip(names, values.values())) \
        or "all runs"


def t_interval(values: pd.Series) -> tuple[int, float, float, float, float]:
    """(n, mean, std, low, high) of a 95% Student-t interval; NaN where n is too small."""
    values = values.dropna()
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return n, mean, std, math.nan, math.nan
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return n, mean, std, mean - half, mean + half


@functools.lru_cache(maxsize=None)
def t_quantile(dof: int) -> float:
    """The two-sided CONFIDENCE quantile of Student's t with `dof` degrees of freedom."""
    return float(scipy_stats.t.ppf((1 + CONFIDENCE) / 2, dof))


def summarize(runs: pd.DataFrame, factors: list[str],
              metrics: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per variant: factor values, status counts, and per metric n/mean/std/CI."""
    metrics = metrics or METRICS
    rows = []
    groups = runs.groupby(factors, dropna=False, sort=False) if factors else [((), runs)]
    ordered = sorted(groups, key=lambda item: [sort_key(v) for v in (
        item[0] if isinstance(item[0], tuple) else (item[0],))])
    for key, group in ordered:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, object] = dict(zip(factors, key))
        row["variant"] = label(dict(zip(factors, key)))
        row.update({str(status): int((group["status"] == status).sum()) for status in REPORTED})
        completed = group[group["status"] == Status.completed]
        for metric in metrics:
            series = completed[metric] if metric in completed else pd.Series(dtype=float)
            n, mean, std, low, high = t_interval(pd.to_numeric(series, errors="coerce"))
            row.update({f"{metric}_n": n, f"{metric}_mean": mean, f"{metric}_std": std,
                        f"{metric}_ci_low": low, f"{metric}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


def summary_cells(summary: pd.DataFrame, factors: list[str], metric: str
                  ) -> tuple[list[str], list[list[str]]]:
    """The summary as (header, rows) of text cells: factors, counts, mean, std, 95% CI."""
    never = metric.endswith("_to_target")  # completed runs that never reached the target
    header = [*factors, *map(str, REPORTED), *(["never reached"] if never else []),
              f"{metric} mean", "std", "95% CI"]
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row[f]) for f in factors]
        cells += [str(row[str(s)]) for s in REPORTED]
        if never:
            cells.append(str(row[str(Status.completed)] - row[f"{metric}_n"]))
        cells += [_number(row[f"{metric}_mean"]), _number(row[f"{metric}_std"]),
                  "–" if math.isnan(row[f"{metric}_ci_low"]) else
                  f"[{_number(row[f'{metric}_ci_low'])}, {_number(row[f'{metric}_ci_high'])}]"]
        rows.append(cells)
    return header, rows


def _number(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"  # fractions vs counts

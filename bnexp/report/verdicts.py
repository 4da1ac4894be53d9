"""Paired, seed-matched comparisons and the verdicts worded from them.

A comparison contrasts each other value of one factor with a reference value, within every
combination of the other factors (a *cell*). Runs with the same seed share their data order
and, for same-shaped models, their initial weights, so the difference is taken per seed: only
seeds with a completed run on both sides pair; a seed whose run diverged, failed to train, never
reached the target or is missing on one side is left out and named. Over the n differences:
mean, sample std and a 95% Student-t interval with n − 1 degrees of freedom.

A reference run whose config does not read a factor (`n/a`, e.g. norm=none's placement) serves
every value of that factor: BN before and BN after are each compared with the same no-norm runs.

The wording never says more than the interval: resolved (the interval excludes 0), no difference
larger than the interval's far end detectable, or unresolved (the interval is wider than the
metric's whole range, as with 2 seeds and t = 12.7).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields, replace
from typing import Optional

import pandas as pd

from bnexp.report.collect import NOT_APPLICABLE
from bnexp.report.metrics import Metric, metric_info
from bnexp.report.stats import NULL, REPLICATE, label, sort_key, t_interval, text
from bnexp.schema import Status


@dataclass(frozen=True)
class Comparison:
    factor: str  # the contrasted config key
    reference: str  # its reference value, as text
    contrast: Optional[str] = None  # the one value contrasted; None: every other value
    tune: Optional[str] = None  # a factor each side takes at its best value, per cell
    label: Optional[str] = None  # the comparison's role, e.g. "A/A control"
    metric: Optional[str] = None  # its own metric; None: the study's primary metric

    @property
    def name(self) -> str:
        """`kind=batch − kind=none (each at its best lr)`, prefixed by the label."""
        short = self.factor.rsplit(".", 1)[-1]
        name = f"{short}={self.contrast or 'each'} − {short}={self.reference}"
        if self.tune:
            name += f" (each at its best {self.tune.rsplit('.', 1)[-1]})"
        if self.metric:
            name += f", on {self.metric}"
        return f"{self.label}: {name}" if self.label else name

    @classmethod
    def parse(cls, text: str) -> "Comparison":
        """`norm.kind=none` (the --baseline flag)."""
        factor, sep, reference = text.partition("=")
        if not sep or not factor or not reference:
            raise ValueError(f"--baseline {text!r} is not KEY=VALUE, e.g. norm.kind=none")
        return cls(factor.strip(), reference.strip())


@dataclass
class Paired:
    n: int
    mean: float
    std: float
    low: float
    high: float


def paired_differences(reference: pd.Series, contrast: pd.Series) -> pd.Series:
    """contrast − reference for the seeds (the index) present and finite on both sides."""
    both = pd.concat([reference.rename("reference"), contrast.rename("contrast")], axis=1,
                     join="inner").dropna()
    return (both["contrast"] - both["reference"]).sort_index()


def paired_interval(differences: pd.Series) -> Paired:
    return Paired(*t_interval(differences))


def _matches(runs: pd.DataFrame, key: str, value: str, wildcard: bool) -> pd.Series:
    column = runs[key].map(text)
    return (column == value) | (column == NOT_APPLICABLE) if wildcard else column == value


def _side(runs: pd.DataFrame, metric: str) -> tuple[pd.Series, dict[object, str]]:
    """Per seed: the metric of its completed run, and why other seeds give no value."""
    values, why = {}, {}
    for seed, group in runs.groupby(REPLICATE):
        run = group.iloc[0]
        value = pd.to_numeric(pd.Series([run.get(metric)]), errors="coerce").iloc[0]
        if run["status"] != Status.completed:
            why[seed] = str(run["status"])
        elif pd.isna(value):
            why[seed] = "never reached the target" if metric.endswith("_to_target") else "no value"
        else:
            values[seed] = float(value)
    return pd.Series(values, dtype=float), why


def _unmeasured(runs: pd.DataFrame, metric: str) -> bool:
    """Whether the metric does not exist for these runs: some completed, none has a value
    (e.g. the effective step of a network without norm layers). Never for the targets,
    where no value means the run did not reach it."""
    if metric.endswith("_to_target") or metric not in runs:
        return False
    completed = runs[runs["status"] == Status.completed]
    values = pd.to_numeric(completed[metric], errors="coerce")
    return len(completed) > 0 and values.isna().all()


def compare(runs: pd.DataFrame, factors: list[str], comparison: Comparison,
            metric: str) -> pd.DataFrame:
    """One row per (contrast value, cell): the paired statistics and the verdict. A cell
    where either side does not measure the metric at all (`_unmeasured`) has no row."""
    if comparison.factor not in runs:
        raise ValueError(f"comparison factor {comparison.factor} is not a config key of these runs")
    metric = comparison.metric or metric
    info = metric_info(metric)
    others = [f for f in factors if f not in (comparison.factor, comparison.tune)]
    reference = runs[_matches(runs, comparison.factor, comparison.reference, False)]
    if reference.empty:
        raise ValueError(f"no run has {comparison.factor}={comparison.reference} (values: "
                         f"{', '.join(sorted(runs[comparison.factor].map(text).unique()))})")
    contrast_values = [v for v in _sorted_values(runs[comparison.factor])
                       if v not in (comparison.reference, NOT_APPLICABLE)
                       and comparison.contrast in (None, v)]
    rows = []
    for value in contrast_values:
        contrast = runs[_matches(runs, comparison.factor, value, False)]
        cells = contrast.groupby(others, dropna=False, sort=False) if others else [((), contrast)]
        for key, cell in cells:
            where = dict(zip(others, key if isinstance(key, tuple) else (key,)))
            matched = reference
            for other, other_value in where.items():
                matched = matched[_matches(matched, other, text(other_value), True)]
            if matched.empty or _unmeasured(matched, metric) or _unmeasured(cell, metric):
                continue
            rows.append(_row(comparison, value, where, matched, cell, metric, info))
    table = pd.DataFrame(rows)
    return _numeric_sort(table, others) if not table.empty else table


def best_setting(runs: pd.DataFrame, key: str, metric: str, info: Metric
                 ) -> tuple[pd.DataFrame, str]:
    """The runs at the value of `key` that serves the metric best, and that value: the value
    with the most seeds that give a number (a diverged run, one that failed to train or never
    reached the target counts against it), then the best mean. Picked on the same seeds it is
    then compared on, for both sides alike, so each side's best is a little optimistic."""
    def score(group: pd.DataFrame) -> tuple[int, float]:
        values, _ = _side(group, metric)
        mean = values.mean() if len(values) else -math.inf
        return len(values), mean if info.higher_is_better or not len(values) else -mean

    values = {text(value): group for value, group in runs.groupby(runs[key].map(text))}
    best = max(sorted(values, key=sort_key), key=lambda value: score(values[value]))
    return values[best], best


def _row(comparison: Comparison, value: str, where: dict, reference: pd.DataFrame,
         contrast: pd.DataFrame, metric: str, info: Metric) -> dict:
    tuned = {}
    if comparison.tune:
        reference, tuned["reference_best"] = best_setting(reference, comparison.tune, metric, info)
        contrast, tuned["contrast_best"] = best_setting(contrast, comparison.tune, metric, info)
    ref_values, ref_why = _side(reference, metric)
    con_values, con_why = _side(contrast, metric)
    differences = paired_differences(ref_values, con_values)
    stats = paired_interval(differences)
    left_out = sorted(set(ref_why) | set(con_why) | (set(ref_values.index) ^ set(con_values.index)))
    notes = []
    for seed in left_out:
        reasons = [f"{side} {why[seed]}" for side, why in (("reference", ref_why),
                                                           ("contrast", con_why)) if seed in why]
        notes.append(f"seed {seed}: " + (", ".join(reasons) or "no partner"))
    within = label({k: text(v) for k, v in where.items()}) if where else "all runs"
    if tuned:
        within += (f"; best {comparison.tune}: {tuned['reference_best']} (reference), "
                   f"{tuned['contrast_best']} (contrast)")
    name = replace(comparison, contrast=value).name
    row = {"comparison": name, "label": comparison.label or "", "tune": comparison.tune or "",
           **tuned, "factor": comparison.factor, "reference": comparison.reference,
           "contrast": value, "within": within,
           **{k: v for k, v in where.items()}, "metric": metric,
           "n": stats.n, "mean": stats.mean, "std": stats.std, "ci_low": stats.low,
           "ci_high": stats.high, "seeds": " ".join(map(str, differences.index)),
           "differences": " ".join(f"{d:.6g}" for d in differences),
           "contrast_not_completed": sum(w != "no value" for w in con_why.values()),
           "reference_not_completed": sum(w != "no value" for w in ref_why.values()),
           "left_out": "; ".join(notes)}
    row["verdict"] = verdict(stats, info)
    return row


def _fmt(value: float, info: Metric, sign: bool = True) -> str:
    scaled = value * info.scale
    if info.decades:  # an effective step of 1e-4 or 0.3
        return f"{scaled:{'+' if sign else ''}.3g}"
    digits = 1 if info.unit == "points" else 3 if info.unit == "nats" else 0 if \
        info.unit in ("examples", "steps") else 2
    return f"{scaled:{'+' if sign else ''},.{digits}f}"


def verdict(stats: Paired, info: Metric) -> str:
    """Wording bounded by the interval (the report's verdict column)."""
    unit = info.unit
    if stats.n == 0:
        return "not testable: no seed has a completed run on both sides"
    if stats.n == 1:
        return f"{_fmt(stats.mean, info)} {unit} from a single pair: no interval, not testable"
    interval = f"{_fmt(stats.mean, info)} [{_fmt(stats.low, info)}, {_fmt(stats.high, info)}] {unit}"
    if stats.high - stats.low > info.span:
        return (f"unresolved at n = {stats.n}: {interval} is wider than the metric's whole "
                "range")
    if stats.low > 0 or stats.high < 0:
        if info.higher_is_better is None:  # a measure: its direction, not a judgement
            return f"{interval}, resolved at n = {stats.n}: contrast " \
                   f"{'higher' if stats.low > 0 else 'lower'}"
        better = (stats.low > 0) == info.higher_is_better
        return f"{interval}, resolved at n = {stats.n}: contrast {'better' if better else 'worse'}"
    bound = max(abs(stats.low), abs(stats.high))
    return (f"{interval}: no difference larger than {_fmt(bound, info, sign=False)} {unit} is "
            f"detectable at n = {stats.n}")


def _sorted_values(column: pd.Series) -> list[str]:
    values = list(dict.fromkeys(column.map(text)))
    return sorted(values, key=sort_key)


def _numeric_sort(table: pd.DataFrame, others: list[str]) -> pd.DataFrame:
    keys = ["contrast", *[o for o in others if o in table]]
    order = sorted(table.index, key=lambda i: [sort_key(table.at[i, k]) for k in keys])
    return table.loc[order].reset_index(drop=True)


def comparisons_from_config(values: object) -> list[Comparison]:
    """The question.comparisons of a run's config (a list of {factor, reference})."""
    if isinstance(values, str):
        values = json.loads(values)
    keys = [field.name for field in fields(Comparison)]  # the keys ComparisonConfig declares
    return [Comparison(**{key: _null_word(text(item[key])) for key in keys
                          if item.get(key) is not None}) for item in values or []]


def _null_word(value: str) -> str:
    """A comparison value naming a null config value: `null` (as runs.csv writes it); `None`
    is read the same (Python's spelling, which YAML keeps as text)."""
    return NULL if value == "None" else value


def signed(value: Optional[float], info: Metric) -> str:
    """A difference in the metric's unit with its sign (`+3.5`), or – when undefined."""
    return "–" if value is None or pd.isna(value) else _fmt(value, info)

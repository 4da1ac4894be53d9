"""The question a report answers: the claim, its source and reproduce command, the primary
metric, the target of examples-to-target and the comparisons, read from the runs' own
records (`question.*`, from the study's experiment file) and overridden by bnexp-report's
flags (`--metric`, `--target`, `--baseline`), so an ad hoc folder reports too."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import pandas as pd

from bnexp.report.metrics import METRIC_INFO
from bnexp.report.stats import text
from bnexp.report.verdicts import Comparison, comparisons_from_config

DEFAULT_METRIC = "final_test_accuracy"


@dataclass
class Question:
    claim: Optional[str] = None
    source: Optional[str] = None
    command: Optional[str] = None
    metric: str = DEFAULT_METRIC
    target: Optional[float] = None
    comparisons: list[Comparison] = field(default_factory=list)
    declared: bool = False  # comparisons came from the study or a flag, not a default
    skipped: list[str] = field(default_factory=list)  # declared ones these runs cannot test


def _recorded(runs: pd.DataFrame, key: str) -> Optional[object]:
    """The value the most recently started run recorded for a question key: the study's
    file as it was last run (a study may gain arms and comparisons after some of its runs
    were recorded); a warning when runs disagree."""
    if key not in runs:
        return None
    values = runs[key].where(runs[key].astype(str) != "n/a")
    if "started_at" in runs:  # unknown start times count as the oldest
        started = pd.to_datetime(runs["started_at"], errors="coerce", utc=True)
        values = values.loc[started.sort_values(na_position="first", kind="stable").index]
    values = values.dropna()
    if values.empty:
        return None
    if values.astype(str).nunique() > 1:
        warnings.warn(f"runs disagree on {key}; the report uses the latest run's value",
                      stacklevel=3)
    return values.iloc[-1]


def asked_comparisons(runs: pd.DataFrame, baselines: Optional[list[str]] = None
                      ) -> list[Comparison]:
    """The comparisons asked for: bnexp-report's --baseline flags, else the study's record
    (read once per report: they choose among aliases, `named_keys`, and `resolve` checks them)."""
    if baselines:
        return [Comparison.parse(text) for text in baselines]
    recorded = _recorded(runs, "question.comparisons")
    return [] if recorded in (None, "[]") else comparisons_from_config(recorded)


def named_keys(comparisons: list[Comparison]) -> list[str]:
    """The config keys these comparisons contrast or tune: where keys relabel each other
    one to one, these name the factor (`stats.detect_factors`), so the comparison can pair."""
    return [key for comparison in comparisons
            for key in (comparison.factor, comparison.tune) if key]


def resolve(runs: pd.DataFrame, factors: list[str], asked: list[Comparison],
            metric: Optional[str] = None, target: Optional[float] = None,
            baselines: Optional[list[str]] = None) -> Question:
    """The question, with `asked` (`asked_comparisons`) left to the ones these runs can test;
    one that `baselines` (the command line) asked for and they cannot is an error."""
    recorded = {key: _recorded(runs, f"question.{key}") for key in
                ("claim", "source", "command", "metric", "target")}
    question = Question(claim=recorded["claim"], source=recorded["source"],
                        command=recorded["command"],
                        metric=metric or recorded["metric"] or DEFAULT_METRIC,
                        target=target if target is not None else (
                            None if recorded["target"] is None else float(recorded["target"])))
    if asked:
        question.comparisons, question.declared = asked, True
    elif "norm.kind" in factors and "none" in runs["norm.kind"].astype(str).values:
        question.comparisons = [Comparison("norm.kind", "none")]  # what bnexp asks by default
    if question.metric.endswith("_to_target") and question.target is None:
        raise ValueError(f"metric {question.metric} needs a target accuracy: pass --target "
                         "or set question.target in the study")
    if question.metric not in METRIC_INFO and question.metric not in runs:
        raise ValueError(f"metric {question.metric} is not recorded by these runs; known: "
                         f"{', '.join(METRIC_INFO)}")
    usable = []
    for comparison in question.comparisons:
        problem = _untestable(comparison, runs, factors)
        if problem is None:
            usable.append(comparison)
        elif baselines:  # asked for on the command line: an error
            raise ValueError(problem)
        else:  # declared by the study, but this folder cannot test it (a narrowed sweep)
            warnings.warn(f"{problem}; left out of the verdict", stacklevel=3)
            question.skipped.append(problem)
    question.comparisons = usable
    return question


def _untestable(comparison: Comparison, runs: pd.DataFrame, factors: list[str]) -> Optional[str]:
    """Why these runs cannot test `comparison`, or None."""
    name = f"comparison {comparison.factor}={comparison.reference}"
    if comparison.factor not in factors:
        return (f"{name}: {comparison.factor} does not vary among these runs (factors: "
                f"{', '.join(factors) or 'none'})")
    values = set(runs[comparison.factor].map(text))
    for value in filter(None, (comparison.reference, comparison.contrast)):
        if value not in values:
            return (f"{name}: no run has {comparison.factor}={value} (values: "
                    f"{', '.join(sorted(values))})")
    if comparison.metric and comparison.metric not in METRIC_INFO and comparison.metric not in runs:
        return f"{name}: its metric {comparison.metric} is not recorded by these runs"
    if comparison.tune and comparison.tune not in factors:
        return f"{name}: the tuned key {comparison.tune} does not vary among these runs"
    return None

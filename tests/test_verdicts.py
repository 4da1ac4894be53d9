"""Paired comparisons against scipy, the wording of verdicts, the outcomes the report derives
(failed to train, examples to a target), and a report that opens with its question."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from bnexp.report.build import Options, build_report
from bnexp.report.metrics import metric_info
from bnexp.report.stats import label
from bnexp.report.outcomes import mark_failed_to_train, to_target
from bnexp.report.verdicts import (Comparison, Paired, compare, comparisons_from_config,
                                   paired_differences, paired_interval, verdict)
from test_report import write_run

ACCURACY = metric_info("final_test_accuracy")


def test_paired_interval_equals_scipys_related_t_test():
    rng = np.random.default_rng(3)
    reference = pd.Series(rng.normal(0.8, 0.02, 6), index=[5, 1, 2, 3, 4, 0])
    contrast = pd.Series(rng.normal(0.82, 0.02, 7), index=range(7))  # seed 6 has no partner
    differences = paired_differences(reference, contrast)
    assert list(differences.index) == [0, 1, 2, 3, 4, 5]
    seeds = differences.index
    test = scipy_stats.ttest_rel(contrast[seeds].to_numpy(), reference[seeds].to_numpy())
    low, high = test.confidence_interval(0.95)
    paired = paired_interval(differences)
    assert paired.n == 6
    assert paired.mean == pytest.approx(float(np.mean(contrast[seeds] - reference[seeds])))
    assert (paired.low, paired.high) == (pytest.approx(low), pytest.approx(high))


@pytest.mark.parametrize("stats, expected", [
    (Paired(5, 0.035, 0.01, 0.015, 0.055), "+3.5 [+1.5, +5.5] points, resolved at n = 5: "
                                            "contrast better"),
    (Paired(5, -0.02, 0.01, -0.03, -0.01), "resolved at n = 5: contrast worse"),
    (Paired(5, 0.002, 0.02, -0.021, 0.025), "no difference larger than 2.5 points is "
                                             "detectable at n = 5"),
    (Paired(2, 0.4, 0.2, -1.06, 1.89), "unresolved at n = 2"),
    (Paired(1, 0.01, math.nan, math.nan, math.nan), "single pair: no interval"),
    (Paired(0, math.nan, math.nan, math.nan, math.nan), "not testable"),
])
def test_verdict_wording_never_exceeds_the_interval(stats, expected):
    assert expected in verdict(stats, ACCURACY)


def test_verdict_direction_follows_the_metric():
    loss = metric_info("final_test_loss")
    assert "contrast better" in verdict(Paired(4, -0.1, 0.01, -0.12, -0.08), loss)
    assert "nats" in verdict(Paired(4, -0.1, 0.01, -0.12, -0.08), loss)


def _runs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run", "seed", "norm.kind", "norm.placement", "status",
                                       "final_test_accuracy"])


def test_compare_pairs_by_seed_within_cells_and_names_what_it_left_out():
    runs = _runs([
        *[(f"none{s}", s, "none", "n/a", "completed", 0.70 + s / 100) for s in range(4)],
        *[(f"b{s}", s, "batch", "before", "completed", 0.80 + s / 50) for s in range(4)],
        *[(f"a{s}", s, "batch", "after", "completed", 0.75) for s in (0, 1, 2)],
        ("a3", 3, "batch", "after", "diverged", math.nan),
    ])
    table = compare(runs, ["norm.kind", "norm.placement"], Comparison("norm.kind", "none"),
                    "final_test_accuracy")
    assert list(table["within"]) == ["placement=after", "placement=before"]
    after, before = table.iloc[0], table.iloc[1]
    # before: differences 0.10 + s/100 for s = 0..3, by hand
    differences = [0.10 + s / 100 for s in range(4)]
    assert before["n"] == 4 and before["mean"] == pytest.approx(np.mean(differences))
    half = scipy_stats.t.ppf(0.975, 3) * np.std(differences, ddof=1) / 2
    assert before["ci_low"] == pytest.approx(np.mean(differences) - half)
    assert after["n"] == 3 and after["seeds"] == "0 1 2"
    assert after["left_out"] == "seed 3: contrast diverged"
    assert after["contrast_not_completed"] == 1
    with pytest.raises(ValueError, match="no run has norm.kind=group"):
        compare(runs, ["norm.kind"], Comparison("norm.kind", "group"), "final_test_accuracy")


def test_a_null_setting_is_a_reference_named_null():
    """train.freeze_norm_stats_at=null reads back as NaN; a comparison names it `null` (or
    `None`, as a YAML string keeps Python's spelling) and pairs against it by seed."""
    runs = pd.DataFrame({"seed": [0, 1, 0, 1], "status": ["completed"] * 4,
                         "train.freeze_norm_stats_at": [math.nan, math.nan, 0.8, 0.8],
                         "final_test_accuracy": [0.80, 0.82, 0.83, 0.86]})
    for reference in ("null", "None"):
        (comparison,) = comparisons_from_config([{"factor": "train.freeze_norm_stats_at",
                                                  "reference": reference}])
        table = compare(runs, ["train.freeze_norm_stats_at"], comparison, "final_test_accuracy")
        assert comparison.reference == "null" and list(table["contrast"]) == ["0.8"]
        assert table.iloc[0]["n"] == 2 and table.iloc[0]["mean"] == pytest.approx(0.035)


def test_each_side_at_its_best_setting_pairs_best_against_best():
    """Best vs best by hand: none is best at lr 0.1 (lr 1 has a higher mean but two of its four
    seeds diverged), batch at lr 1; group is left out by `contrast`."""
    rows = []
    for s in range(4):
        rows += [(f"n01-{s}", s, "none", 0.01, "completed", 0.70 + s / 100),
                 (f"n1-{s}", s, "none", 0.1, "completed", 0.75 + s / 100),
                 (f"n10-{s}", s, "none", 1.0, *(("completed", 0.90) if s < 2 else
                                                ("diverged", math.nan))),
                 (f"b01-{s}", s, "batch", 0.01, "completed", 0.72),
                 (f"b1-{s}", s, "batch", 0.1, "completed", 0.80),
                 (f"b10-{s}", s, "batch", 1.0, "completed", 0.85 + s / 200),
                 (f"g1-{s}", s, "group", 0.1, "completed", 0.99)]
    runs = pd.DataFrame(rows, columns=["run", "seed", "norm.kind", "optim.lr", "status",
                                       "final_test_accuracy"])
    tuned = Comparison("norm.kind", "none", contrast="batch", tune="optim.lr", label="fair")
    table = compare(runs, ["norm.kind", "optim.lr"], tuned, "final_test_accuracy")
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["reference_best"], row["contrast_best"]) == ("0.1", "1")
    differences = [0.10 - s / 200 for s in range(4)]
    assert row["n"] == 4 and row["mean"] == pytest.approx(np.mean(differences))
    assert row["comparison"] == "fair: kind=batch − kind=none (each at its best lr)"
    assert "best optim.lr: 0.1 (reference), 1 (contrast)" in row["within"]
    runs["final_test_loss"] = 1 - runs["final_test_accuracy"]
    own_metric = compare(runs, ["norm.kind", "optim.lr"],
                         Comparison("norm.kind", "none", "batch", "optim.lr", metric="final_test_loss"),
                         "final_test_accuracy").iloc[0]
    assert own_metric["metric"] == "final_test_loss" and own_metric["contrast_best"] == "1"
    assert own_metric["mean"] == pytest.approx(-np.mean(differences))  # lower loss is better
    assert own_metric["comparison"].endswith(", on final_test_loss")
    per_lr = compare(runs, ["norm.kind", "optim.lr"], Comparison("norm.kind", "none", "batch"),
                     "final_test_accuracy")
    assert list(per_lr["within"]) == ["lr=0.01", "lr=0.1", "lr=1"]
    assert per_lr.iloc[2]["n"] == 2  # seeds 2 and 3 of none diverged at lr 1


def test_a_run_at_chance_or_whose_loss_never_fell_failed_to_train():
    """The initial loss is the first batch's, or ln(10) where that batch held fewer examples
    than classes (batch 1: one example's loss says nothing of where training started)."""
    runs = pd.DataFrame({
        "run": ["good", "chance", "flat", "old", "diverged", "online", "online_flat"],
        "data.name": ["fashion_mnist"] * 7,
        "train.batch_size": [64, 64, 64, 64, 64, 1, 1],
        "status": ["completed", "completed", "completed", "completed", "diverged",
                   "completed", "completed"],
        "final_test_accuracy": [0.80, 0.115, 0.60, 0.55, math.nan, 0.69, 0.40],
        "initial_train_loss": [2.4, 2.4, 1.5, math.nan, 2.4, 0.28, 0.28],
        "final_train_loss": [0.5, 2.30, 1.6, 2.31, math.nan, 0.84, 2.35],
    })
    marked = mark_failed_to_train(runs).set_index("run")
    assert list(marked["status"]) == ["completed", "failed to train", "failed to train",
                                      "failed to train", "diverged", "completed",
                                      "failed to train"]
    assert f"not below the initial {math.log(10):.3f}" in marked.loc["online_flat", "problem"]
    assert "within 2 points of chance" in marked.loc["chance", "problem"]
    assert "not below the initial 1.500" in marked.loc["flat", "problem"]
    assert f"not below the initial {math.log(10):.3f}" in marked.loc["old", "problem"]


def test_examples_to_target_is_the_first_evaluation_at_or_above_it():
    curves = pd.DataFrame({
        "run": ["a"] * 4 + ["b"] * 3 + ["a"],
        "split": ["test"] * 7 + ["train"],
        "step": [0, 10, 20, 30, 0, 10, 20, 5],
        "examples": [0, 640, 1280, 1920, 0, 640, 1280, 320],
        "accuracy": [0.1, 0.6, 0.75, 0.7, 0.1, 0.5, 0.69, 0.99],
    })
    result = to_target(curves, 0.7).set_index("run")
    assert result.loc["a", "examples_to_target"] == 1280 and result.loc["a", "steps_to_target"] == 20
    assert math.isnan(result.loc["b", "examples_to_target"]) and not result.loc["b", "reached_target"]


def test_report_opens_with_the_claim_and_a_verdict(tmp_path):
    root = tmp_path / "study"
    question = {"question.claim": "BN helps.", "question.source": "Ioffe & Szegedy 2015",
                "question.command": "bnexp -m experiment=x/quick",
                "question.metric": "final_test_accuracy",
                "question.comparisons": [{"factor": "norm.kind", "reference": "none"}]}
    for seed in range(3):
        for kind, accuracy in (("batch", 0.85 + seed / 100), ("none", 0.80)):
            write_run(root / f"{kind}{seed}", {"seed": seed, "norm.kind": kind, **question},
                      accuracy=accuracy)
    report = build_report(root, tmp_path / "out")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert markdown.index("BN helps.") < markdown.index("## Verdict") < markdown.index("## Summary")
    assert "+6.0 [+3.5, +8.5] points, resolved at n = 3" in markdown
    comparisons = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert comparisons.loc[0, "n"] == 3 and comparisons.loc[0, "seeds"] == "0 1 2"
    assert report.question.claim == "BN helps."
    override = build_report(root, tmp_path / "flag", Options(baselines=["norm.kind=batch"],
                                                             metric="final_test_loss"))
    assert override.comparisons.loc[0, "comparison"] == "kind=none − kind=batch"
    assert "nats" in override.comparisons.loc[0, "verdict"]


def test_a_declared_comparison_a_narrowed_sweep_cannot_test_is_left_out(tmp_path):
    """`bnexp -m experiment=<study> norm=batch` still reports: the study's norm.kind
    comparison is named as not tested; the same comparison asked for by flag is an error."""
    root = tmp_path / "narrow"
    question = {"question.comparisons": [{"factor": "norm.kind", "reference": "none"},
                                         {"factor": "train.batch_size", "reference": "64"}]}
    for seed in range(2):
        for batch in (8, 64):
            write_run(root / f"b{batch}s{seed}", {"seed": seed, "norm.kind": "batch",
                                                  "train.batch_size": batch, **question})
    with pytest.warns(UserWarning, match="norm.kind does not vary"):
        report = build_report(root, tmp_path / "out")
    assert list(report.comparisons["factor"].unique()) == ["train.batch_size"]
    assert "Not tested here: comparison norm.kind=none" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ValueError, match="does not vary"):
        build_report(root, tmp_path / "flag", Options(baselines=["norm.kind=none"]))


def test_recorded_comparisons_keep_every_declared_key():
    """A study's comparisons, as a run records them (JSON), come back whole; the report's
    Comparison and the config's ComparisonConfig declare the same keys."""
    from dataclasses import fields

    from bnexp.config import ComparisonConfig
    from bnexp.report.verdicts import comparisons_from_config
    assert [f.name for f in fields(Comparison)] == [f.name for f in fields(ComparisonConfig)]
    recorded = ('[{"factor": "norm.kind", "reference": "none", "contrast": "batch", '
                '"tune": "optim.lr", "label": "fair", "metric": "final_test_loss"}, '
                '{"factor": "optim.lr", "reference": 0.1, "contrast": null}]')
    assert comparisons_from_config(recorded) == [
        Comparison("norm.kind", "none", "batch", "optim.lr", "fair", "final_test_loss"),
        Comparison("optim.lr", "0.1")]


def test_a_cell_names_keys_briefly_unless_two_share_a_short_name():
    assert label({"norm.kind": "batch", "norm.placement": "after"}) == "kind=batch, placement=after"
    assert label({"train.batch_size": 32, "eval.batch_size": 32, "norm.kind": "batch"}) == \
        "train.batch_size=32, eval.batch_size=32, kind=batch"
    assert label({}) == "all runs"


def test_the_question_is_the_one_the_latest_run_recorded():
    """A study that gained an arm after most of its runs were recorded reports its current
    claim and comparisons, not the majority's older ones."""
    from bnexp.report.question import asked_comparisons, resolve
    runs = pd.DataFrame({
        "question.claim": ["old", "old", "new", "old"],
        "question.comparisons": ["[]", "[]", '[{"factor": "norm.kind", "reference": "batch"}]',
                                 "[]"],
        "started_at": ["2026-11-01T10:00:00+00:00", "2026-11-01T11:00:00+00:00",
                       "2026-11-30T17:00:00+00:00", None],
        "norm.kind": ["batch", "group", "ghost", "batch"]})
    with pytest.warns(UserWarning, match="latest run"):
        question = resolve(runs, ["norm.kind"], asked_comparisons(runs))
    assert question.claim == "new"
    assert [(c.factor, c.reference) for c in question.comparisons] == [("norm.kind", "batch")]

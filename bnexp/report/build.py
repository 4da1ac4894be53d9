"""build_report(results, out): collect -> question -> statistics -> verdicts -> tables ->
figures -> pages."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import pandas as pd

from bnexp.report import diagnostics, layout, plots, question as questions, sections
from bnexp.report.collect import Collection, collect
from bnexp.report.metrics import axis_label
from bnexp.report.outcomes import chance_accuracy, to_target
from bnexp.report.probe_outcomes import probe_outcomes
from bnexp.report.stats import METRICS, detect_factors, held_fixed, summarize, texts
from bnexp.report.verdicts import compare
from bnexp.schema import Status

TARGET_METRICS = ["examples_to_target", "steps_to_target"]


@dataclass
class Options:
    metric: Optional[str] = None  # primary metric; None: the study's, else final test accuracy
    baselines: Optional[list[str]] = None  # KEY=VALUE comparisons; None: the study's
    target: Optional[float] = None  # test accuracy for examples_to_target; None: the study's
    x: Optional[str] = None  # factor on the x axis of the main comparison
    hue: Optional[list[str]] = None  # factors that colour lines and bars
    col: Optional[str] = None  # factor split into panel columns
    row: Optional[str] = None  # factor split into panel rows
    seeds: bool = False  # draw every seed's curve too
    curves_x: str = "examples"  # or "step"


@dataclass
class Report:
    out: Path
    factors: list[str]
    summary: pd.DataFrame
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    question: Optional[questions.Question] = None
    figures: dict[str, plt.Figure] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)


def build_report(results: Path, out: Optional[Path] = None, options: Optional[Options] = None,
                 keep_figures: bool = False) -> Report:
    """Write runs.csv, curves.csv, summary.csv/.md, comparisons.csv, figures (PNG + SVG),
    report.md and report.html."""
    options = options or Options()
    out = out or results / "report"
    data = collect(results)
    if data.runs.empty:
        raise ValueError(f"no run folders under {results} (looked for summary.json, "
                         "metrics.csv, .hydra/config.yaml)")
    asked_keys = [key for key in [options.x, options.col, options.row, *(options.hue or [])]
                  if key is not None]
    asked = questions.asked_comparisons(data.runs, options.baselines)
    factors = detect_factors(data.runs, data.config_keys,
                             [*questions.named_keys(asked), *asked_keys])
    for key in asked_keys:
        if key not in data.runs:
            raise ValueError(f"{key} is not a config key of these runs; factors: "
                             f"{', '.join(factors) or 'none'}")
    question = questions.resolve(data.runs, factors, asked, options.metric, options.target,
                                 options.baselines)
    derived = probe_outcomes(data.extras)
    data.runs = data.runs.merge(derived, on="run", how="left")
    metrics = [*METRICS, "effective_lr",
               *[column for key in ("final_test_accuracy", "final_train_accuracy")
                 for mode, column in diagnostics.mode_columns(data.runs, key).items()
                 if mode != "running"],
               *[c for c in derived if c != "run"]]
    if question.target is not None and not data.curves.empty:
        data.runs = data.runs.merge(to_target(data.curves, question.target), on="run", how="left")
        metrics += TARGET_METRICS
    if question.metric not in metrics:
        metrics.append(question.metric)
    summary = summarize(data.runs, factors, metrics)
    verdicts = pd.concat([compare(data.runs, factors, c, question.metric)
                          for c in question.comparisons] or [pd.DataFrame()], ignore_index=True)
    out.mkdir(parents=True, exist_ok=True)
    _write_tables(data, summary, verdicts, factors, question.metric, out)
    roles = layout.assign_roles(summary, factors, options.hue, options.x,
                                [k for k in (options.col, options.row) if k] or None)
    palette = layout.Palette(summary, roles.hue)
    fixed = held_fixed(data.runs, data.config_keys)
    figures = _make_figures(data, summary, factors, roles, palette, options, question.metric)
    for name, (figure, *_) in figures.items():
        figure.savefig(out / f"{name}.png", dpi=90)
        figure.savefig(out / f"{name}.svg")
    blocks = sections.blocks(results, data.runs, summary, verdicts, factors, fixed, question,
                             [(name, *texts) for name, (_, *texts) in figures.items()],
                             [f"{name}.csv" for name in sorted(data.extras)])
    (out / "report.md").write_text(sections.page.markdown(blocks))
    (out / "report.html").write_text(sections.page.html_page(blocks, f"bnexp report: {results.name}",
                                                             out))
    report = Report(out, factors, summary, verdicts, question,
                    incomplete=data.runs.loc[data.runs["status"] == Status.incomplete, "run"].tolist())
    if keep_figures:
        report.figures = {name: figure for name, (figure, *_) in figures.items()}
    else:
        for figure, *_ in figures.values():
            plt.close(figure)
    return report


def _write_tables(data: Collection, summary: pd.DataFrame, verdicts: pd.DataFrame,
                  factors: list[str], metric: str, out: Path) -> None:
    data.runs.to_csv(out / "runs.csv", index=False)
    factor_columns = data.runs[["run", *factors, *(["seed"] if "seed" in data.runs else [])]]
    data.curves.merge(factor_columns, on="run").to_csv(out / "curves.csv", index=False)
    for name, table in data.extras.items():
        table.merge(factor_columns, on="run").to_csv(out / f"{name}.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    verdicts.to_csv(out / "comparisons.csv", index=False)
    (out / "summary.md").write_text(sections.summary_markdown(summary, verdicts, factors, metric))


Figures = dict[str, tuple[plt.Figure, str, str, str]]  # name -> (figure, title, caption, alt)


def _make_figures(data: Collection, summary: pd.DataFrame, factors: list[str],
                  roles: layout.Roles, palette: layout.Palette, options: Options,
                  metric: str) -> Figures:
    """The figures, the one that shows the primary metric first."""
    chance = chance_accuracy(data.runs)
    what = axis_label(metric)
    hue = ", ".join(roles.hue) or "one colour"
    panels = _panels_phrase(roles.panels)
    primary: Figures = {}
    rest: Figures = {}
    numeric = [f for f in factors if layout.is_numeric(summary[f]) and f not in roles.hue
               and not _tied_to_a_category(summary, f, factors)]
    for key in numeric:
        primary[f"vs_{key.split('.')[-1]}"] = (
            plots.vs_factor(summary, key, metric, roles, palette, chance),
            f"{metric} against {key}",
            f"{what} against {key}: mean over completed seeds with 95% t-interval error bars; "
            "markers at the bottom count diverged and untrained runs.",
            f"Line chart of {what} against {key}, one line per {hue}"
            f"{_panels_phrase([p for p in roles.panels if p != key])}.")
    if {"train.batch_size", "optim.lr"} <= set(numeric):
        rest["heatmap_batch_size_lr"] = (
            plots.heatmap(summary, metric, roles),
            f"{metric} over batch size and learning rate",
            f"{what} over batch size and learning rate; diverged and untrained runs are counted "
            "in each cell.",
            f"Heat map of {what}: batch size rows, learning rate columns, one panel per {hue}.")
    mode_metric = metric in {column for mode, column in diagnostics.mode_columns(data.runs).items()
                             if mode != "running"}
    if diagnostics.scored_in_other_modes(data.runs):
        (primary if mode_metric else rest)["eval_modes"] = (
            diagnostics.eval_mode_bars(data, factors, roles, palette, chance),
            "test accuracy by eval mode",
            "Test accuracy by the statistics BN normalises with: running averages, batch "
            "statistics of shuffled test batches, of single-class (homogeneous) batches, and "
            "PreciseBN; bars are means with 95% t-intervals, dots are seeds.",
            f"Bar chart of test accuracy per eval mode, one bar per {hue}.")
    if not numeric and not mode_metric and len(summary) > 1:
        primary[f"bars_{metric}"] = (
            plots.bars(summary, metric, roles, palette, data.runs, chance),
            f"{metric} per variant",
            f"{what} per variant: bar = mean over completed seeds, error bar = 95% t-interval, "
            "dots = seeds, counts of diverged, untrained or never-reaching runs written above; "
            "the y axis starts near the data.",
            f"Bar chart of {what}, one bar per {hue}{panels}.")
    if not data.curves.empty:
        rest["learning_curves"] = (
            plots.learning_curves(data.curves, data.runs, roles, palette, options.curves_x,
                                  options.seeds, chance),
            "learning curves",
            "Test accuracy (upper) and train loss (lower, log scale) over training: mean over "
            "completed seeds with a 95% t band (seeds drawn instead when fewer than 3); the "
            "dotted line is chance.",
            f"Learning curves, one line per {hue}{panels}.")
    if metric != "generalization_gap" and len(summary) > 1 \
            and summary["generalization_gap_n"].sum() > 0:
        rest["generalization_gap"] = (
            plots.bars(summary, "generalization_gap", roles, palette, data.runs),
            "generalization gap",
            "Final train accuracy (eval mode) minus test accuracy, per variant; dots are seeds.",
            f"Bar chart of the generalization gap, one bar per {hue}.")
    rest.update(_probe_figures(data, roles, palette, hue))
    return {**primary, **rest}


def _panels_phrase(panels: list[str]) -> str:
    """The alt text's panel clause: ", panels by norm.kind", or nothing for a single panel."""
    return f", panels by {', '.join(panels)}" if panels else ""


def _tied_to_a_category(summary: pd.DataFrame, key: str, factors: list[str]) -> bool:
    """Whether a numeric factor only relabels a categorical one (each value of either fixes
    the other: a study's network choice sets depth and LR together), so a line against it
    would draw the categories as if the number caused the difference."""
    for other in factors:
        if other == key or layout.is_numeric(summary[other]):
            continue
        pairs = texts(summary[[key, other]]).drop_duplicates()
        if pairs[key].is_unique and pairs[other].is_unique:
            return True
    return False


def _probe_figures(data: Collection, roles: layout.Roles, palette: layout.Palette,
                   hue: str) -> Figures:
    figures: Figures = {}
    if "activations" in data.extras:
        figures["activation_percentiles"] = (
            diagnostics.percentile_bands(data, roles, palette),
            "activation input percentiles over training",
            "Input of the last hidden activation layer over training (Ioffe & Szegedy 2015, "
            "Fig. 1): 15th–85th percentile band and median averaged over sampled units and "
            "seeds, a 95% interval of the median over seeds, and one example unit.",
            "Per variant, bands of the activation input percentiles over SGD steps.")
        figures["saturation"] = (
            diagnostics.saturation(data, roles, palette),
            "saturated and dead units",
            "Fraction of each activation layer's inputs in its flat region over training "
            "(ReLU: at or below 0; sigmoid/tanh: beyond probe.saturation), mean over seeds; "
            "darker lines are deeper layers.",
            "Per variant, saturated fraction of each layer's inputs over SGD steps.")
        figures["activation_std_by_layer"] = (
            diagnostics.std_by_layer(data, roles, palette),
            "activation std by depth",
            "Standard deviation of each activation layer's input at the first (dotted) and "
            "last (solid) probe, mean over seeds.",
            f"Line chart of activation input std against depth, one line per {hue}.")
    if "gradients" in data.extras and (data.extras["gradients"]["followed_by_norm"]
                                       .astype(str).str.lower() == "true").any():
        figures["effective_step"] = (
            diagnostics.effective_step(data, roles, palette),
            "effective step of normalized weights",
            "Effective step ||update|| / ||weight|| of the weights followed by a norm layer, "
            "mean over those layers and seeds (log scale).",
            f"Line chart of the effective step over SGD steps, one line per {hue}.")
    if "norm_affine" in data.extras and data.extras["norm_affine"]["gamma"].notna().any():
        figures["gamma_distribution"] = (
            diagnostics.gamma_distribution(data, roles, palette),
            "learned gamma",
            "Distribution of the learned |gamma| over all norm channels and seeds at the end "
            "of training; each panel lists the fraction below 0.05 (channels switched off).",
            f"Histogram of learned gamma magnitudes, one outline per {hue}.")
    return figures

"""build_report(results, out): collect -> statistics -> tables -> figures -> pages."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import pandas as pd

from bnexp.report import diagnostics, layout, page, plots
from bnexp.report.collect import Collection, collect
from bnexp.report.stats import (METRICS, detect_factors, held_fixed, markdown_table,
                                summarize, summary_cells)
from bnexp.schema import REPORTED, Status

HEADLINE_KEYS = [  # what a figure title names when it was held fixed
    "data.name", "data.train_subset", "model.name", "model.depth", "model.width",
    "model.activation", "norm.kind", "norm.placement", "norm.affine", "optim.name", "optim.lr",
    "optim.schedule", "train.batch_size", "train.epochs", "train.steps",
]


@dataclass
class Options:
    metric: str = "final_test_accuracy"
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
    figures: dict[str, plt.Figure] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)


def build_report(results: Path, out: Optional[Path] = None, options: Optional[Options] = None,
                 keep_figures: bool = False) -> Report:
    """Write runs.csv, curves.csv, summary.csv/.md, figures, report.md and report.html."""
    options = options or Options()
    out = out or results / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = collect(results)
    if data.runs.empty:
        raise ValueError(f"no run folders under {results} (looked for summary.json, "
                         "metrics.csv, .hydra/config.yaml)")
    for key in [options.x, options.col, options.row, *(options.hue or [])]:
        if key is not None and key not in data.runs:
            raise ValueError(f"{key} is not a config key of these runs; factors: "
                             f"{', '.join(detect_factors(data.runs, data.config_keys)) or 'none'}")
    factors = detect_factors(data.runs, data.config_keys)
    mode_metrics = sorted(c for c in data.runs if c.startswith(diagnostics.MODE_PREFIX))
    summary = summarize(data.runs, factors, METRICS + mode_metrics)
    fixed = held_fixed(data.runs, data.config_keys)
    _write_tables(data, summary, factors, options.metric, out)
    roles = layout.assign_roles(summary, factors, _fixed_title(fixed), options.hue, options.x,
                               [k for k in (options.col, options.row) if k] or None)
    palette = layout.Palette(summary.apply(layout.hue_label, axis=1, hue=roles.hue).tolist())
    figures = _make_figures(data, summary, factors, roles, palette, options)
    for name, (figure, _) in figures.items():
        figure.savefig(out / f"{name}.png", dpi=90)
        figure.savefig(out / f"{name}.svg")
    blocks = _blocks(results, out, data, summary, factors, fixed, options.metric,
                     {name: caption for name, (_, caption) in figures.items()})
    (out / "report.md").write_text(page.markdown(blocks))
    (out / "report.html").write_text(page.html_page(blocks, f"bnexp report: {results.name}", out))
    report = Report(out, factors, summary,
                    incomplete=data.runs.loc[data.runs["status"] == Status.incomplete, "run"].tolist())
    if keep_figures:
        report.figures = {name: figure for name, (figure, _) in figures.items()}
    else:
        for figure, _ in figures.values():
            plt.close(figure)
    return report


def _fixed_title(fixed: dict) -> str:
    def short(key: str) -> str:  # data.name -> data, model.depth -> depth
        return key.split(".")[0] if key.endswith(".name") else key.split(".")[-1]
    shown = [f"{short(key)}={fixed[key]}" for key in HEADLINE_KEYS
             if key in fixed and fixed[key] is not None and not pd.isna(fixed[key])]
    return "fixed: " + ", ".join(shown) if shown else "nothing held fixed"


def _write_tables(data: Collection, summary: pd.DataFrame, factors: list[str], metric: str,
                  out: Path) -> None:
    data.runs.to_csv(out / "runs.csv", index=False)
    factor_columns = data.runs[["run", *factors, *(["seed"] if "seed" in data.runs else [])]]
    data.curves.merge(factor_columns, on="run").to_csv(out / "curves.csv", index=False)
    for name, table in data.extras.items():
        table.merge(factor_columns, on="run").to_csv(out / f"{name}.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(markdown_table(summary, factors, metric) + "\n")


def _make_figures(data: Collection, summary: pd.DataFrame, factors: list[str],
                  roles: layout.Roles, palette: layout.Palette, options: Options
                  ) -> dict[str, tuple[plt.Figure, str]]:
    figures: dict[str, tuple[plt.Figure, str]] = {}
    metric = options.metric
    if not data.curves.empty:
        figures["learning_curves"] = (
            plots.learning_curves(data.curves, data.runs, roles, palette, options.curves_x,
                                  options.seeds),
            "Test accuracy and train loss over training: mean over seeds, 95% t-interval band.")
    numeric = [f for f in factors if layout.is_numeric(summary[f]) and f not in roles.hue]
    for key in numeric:
        figures[f"vs_{key.split('.')[-1]}"] = (
            plots.vs_factor(summary, key, metric, roles, palette),
            f"{metric} against {key}: mean over seeds, 95% t-interval error bars.")
    if {"train.batch_size", "optim.lr"} <= set(numeric):
        figures["heatmap_batch_size_lr"] = (
            plots.heatmap(summary, metric, roles),
            f"{metric} over batch size and learning rate; diverged runs counted in each cell.")
    if len(summary) > 1 and (roles.hue or (options.x and options.x not in numeric)):
        figures[f"bars_{metric}"] = (plots.bars(summary, metric, roles, palette),
                                     f"{metric} per variant with 95% t-intervals.")
    if len(summary) > 1 and summary["generalization_gap_n"].sum() > 0:
        figures["generalization_gap"] = (
            plots.bars(summary, "generalization_gap", roles, palette),
            "Final train accuracy (eval mode) minus test accuracy, per variant.")
    if any(c.startswith(diagnostics.MODE_PREFIX) for c in data.runs):
        figures["eval_modes"] = (
            diagnostics.eval_mode_bars(data, factors, roles, palette),
            "Test accuracy by the statistics BN normalises with: running averages, batch "
            "statistics of shuffled test batches, of single-class batches, and PreciseBN.")
    if "activations" in data.extras:
        figures["activation_percentiles"] = (
            diagnostics.percentile_bands(data, factors, roles),
            "15th/50th/85th percentiles of one unit's activation input over training "
            "(Ioffe & Szegedy 2015, Fig. 1), one panel per variant.")
        figures["activation_std_by_layer"] = (
            diagnostics.std_by_layer(data, factors, roles, palette),
            "Standard deviation of each activation layer's input at the first and last probe.")
    return figures


def _blocks(results: Path, out: Path, data: Collection, summary: pd.DataFrame,
            factors: list[str], fixed: dict, metric: str, captions: dict[str, str]
            ) -> list[page.Block]:
    runs = data.runs
    counts = ", ".join(f"{(runs['status'] == s).sum()} {s}" for s in REPORTED)
    varied = "; ".join(f"`{f}`: {', '.join(sorted(runs[f].astype(str).unique()))}"
                       for f in factors) or "nothing (a single variant)"
    seeds = sorted(runs["seed"].astype(str).unique()) if "seed" in runs else []
    blocks: list[page.Block] = [
        page.Heading(f"bnexp report: {results.name}", 1),
        page.Paragraph(f"{len(runs)} runs under `{results}` ({counts}); generated "
                       f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}."),
        page.Heading("What varied and what was held fixed"),
        page.Paragraph(f"Factors: {varied}. Replicates: seeds {', '.join(seeds) or '–'}."),
        page.Paragraph("Held fixed: " + ", ".join(f"`{k}={v}`" for k, v in fixed.items()
                                                  if k != "seed") + "."),
        page.Heading(f"Summary: {metric}"),
        page.Paragraph("Mean and sample standard deviation over completed seeds; 95% "
                       "confidence interval from Student's t with n−1 degrees of freedom. "
                       "Diverged and failed runs are counted, not averaged."),
        page.Table(*summary_cells(summary, factors, metric)),
        page.Heading("Figures"),
        *[page.Figure(name, caption) for name, caption in captions.items()],
        page.Heading("Runs"),
        _runs_table(results, out, runs, factors),
        page.Heading("Provenance"),
        page.Paragraph(_provenance(runs)),
    ]
    return blocks


def _runs_table(results: Path, out: Path, runs: pd.DataFrame, factors: list[str]) -> page.Table:
    columns = [*factors, *(["seed"] if "seed" in runs else [])]
    header = ["run", "status", *columns, "final test accuracy", "note"]
    rows, links = [], {}
    for index, (_, run) in enumerate(runs.iterrows()):
        accuracy = run.get("final_test_accuracy")
        rows.append([run["run"], run["status"], *[str(run[c]) for c in columns],
                     "–" if pd.isna(accuracy) else f"{accuracy:.4f}", run.get("problem") or ""])
        links[(index, 0)] = os.path.relpath(results / run["run"], out)
    return page.Table(header, rows, links)


def _provenance(runs: pd.DataFrame) -> str:
    def values(column: str) -> str:
        return ", ".join(sorted(runs[column].dropna().astype(str).unique())) if column in runs else "–"
    started = runs["started_at"].dropna() if "started_at" in runs else pd.Series(dtype=str)
    span = f"{started.min()} to {started.max()}" if not started.empty else "–"
    return (f"bnexp {values('bnexp_version')}; torch {values('torch_version')}; devices "
            f"{values('device')} ({values('device_name')}); git {values('git_commit')}; "
            f"runs started {span}.")


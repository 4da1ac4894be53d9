"""Comparison figures, chosen by which factors vary. Every function returns its Figure so
tests can read the plotted values back.

Roles: the hue factors (categorical by default: norm kind, placement, affine, activation)
give each line or bar its colour and line style, from one `Palette` per report, so a variant
looks the same in every figure. A figure's x factor goes on the axis; every other varying
factor becomes a panel. Lines and bars are the per-variant means over completed seeds, with
95% Student-t intervals; diverged runs are drawn as x markers with a legend note.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

from bnexp.report.layout import (DIVERGED, LEGEND_INCHES, Palette, Roles, clip_fraction_axes,
                                 grid, hue_label, legend, panels_of, title)
from bnexp.report.stats import label, t_interval
from bnexp.schema import Status

AXIS_LABELS = {
    "final_test_accuracy": "final test accuracy (fraction)",
    "final_test_loss": "final test loss (cross-entropy, nats)",
    "best_test_accuracy": "best test accuracy (fraction)",
    "final_train_accuracy": "final train accuracy (fraction, eval mode)",
    "generalization_gap": "train − test accuracy (fraction)",
    "train_seconds": "training time (s)",
    "mode_accuracy": "test accuracy by eval mode (fraction)",
    "train.batch_size": "batch size (examples, log2 scale)",
    "optim.lr": "learning rate (log scale)",
    "examples": "examples seen (training images)",
    "step": "SGD steps",
}
LOG2_KEYS = {"train.batch_size", "optim.base_batch_size", "norm.virtual_batch_size"}


def _set_x_scale(axis, key: str) -> None:
    if key in LOG2_KEYS:
        axis.set_xscale("log", base=2)
    elif key == "optim.lr" or key.endswith("init_std"):
        axis.set_xscale("log")


def vs_factor(summary: pd.DataFrame, x: str, metric: str, roles: Roles,
              palette: Palette) -> Figure:
    """Mean `metric` against a numeric factor, a line per hue variant, CI error bars; cells
    with diverged runs get an x at the bottom of the axes."""
    panels = panels_of(summary, [key for key in roles.panels if key != x])
    figure, axes = grid(len(panels), f"{AXIS_LABELS.get(metric, metric)} vs {x} · {roles.fixed_title}")
    diverged_seen = False
    for axis, (where, table) in zip(axes, panels):
        for name, group in table.groupby(table.apply(hue_label, axis=1, hue=roles.hue), sort=True):
            group = group.assign(_x=pd.to_numeric(group[x])).sort_values("_x")
            shown = group[group[f"{metric}_n"] > 0]
            error = [shown[f"{metric}_mean"] - shown[f"{metric}_ci_low"],
                     shown[f"{metric}_ci_high"] - shown[f"{metric}_mean"]]
            axis.errorbar(shown["_x"], shown[f"{metric}_mean"], yerr=np.nan_to_num(error),
                          color=palette.colour(name), linestyle=palette.linestyle(name),
                          marker="o", capsize=3, label=name)
            for _, cell in group[group["diverged"] > 0].iterrows():
                diverged_seen = True
                axis.plot([cell["_x"]], [0.02], transform=axis.get_xaxis_transform(),
                          color=palette.colour(name), **DIVERGED)
                axis.annotate(f"{cell['diverged']} div", (cell["_x"], 0.05), fontsize=7,
                              xycoords=axis.get_xaxis_transform(), ha="center")
        _set_x_scale(axis, x)
        axis.set_xlabel(AXIS_LABELS.get(x, x))
        axis.set_ylabel(AXIS_LABELS.get(metric, metric))
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3)
    legend(figure, axes[0], diverged_seen)
    clip_fraction_axes(axes, metric)
    return figure


def bars(summary: pd.DataFrame, metric: str, roles: Roles, palette: Palette) -> Figure:
    """Grouped bars: groups along x (the x factor's values, or one group), a bar per hue
    variant, 95% CI error bars; diverged-only cells show an x."""
    panels = panels_of(summary, [key for key in roles.panels if key != roles.x])
    figure, axes = grid(len(panels), f"{AXIS_LABELS.get(metric, metric)} · {roles.fixed_title}")
    names = sorted(palette.styles)
    width = 0.8 / max(1, len(names))
    diverged_seen = False
    for axis, (where, table) in zip(axes, panels):
        values = table[roles.x].astype(str).unique() if roles.x else [""]
        is_factor = bool(roles.x) and "." in roles.x  # a config key, not a derived axis
        groups = sorted(values) if is_factor else list(values)
        for g_index, group_value in enumerate(groups):
            cells = table[table[roles.x].astype(str) == group_value] if roles.x else table
            for b_index, name in enumerate(names):
                cell = cells[cells.apply(hue_label, axis=1, hue=roles.hue) == name]
                if cell.empty:
                    continue
                cell = cell.iloc[0]
                position = g_index + (b_index - (len(names) - 1) / 2) * width
                mean = cell[f"{metric}_mean"]
                if cell[f"{metric}_n"] > 0:
                    error = [[mean - cell[f"{metric}_ci_low"]], [cell[f"{metric}_ci_high"] - mean]]
                    axis.bar(position, mean, width, color=palette.colour(name),
                             yerr=np.nan_to_num(error), capsize=3,
                             label=name if g_index == 0 else None)
                if cell["diverged"] > 0:
                    diverged_seen = True
                    axis.plot([position], [0.02], transform=axis.get_xaxis_transform(),
                              color=palette.colour(name), **DIVERGED)
        axis.set_xticks(range(len(groups)), [f"{roles.x.rsplit('.', 1)[-1]}={g}" if is_factor
                                             else g for g in groups])
        axis.set_ylabel(AXIS_LABELS.get(metric, metric))
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    legend(figure, axes[0], diverged_seen)
    clip_fraction_axes(axes, metric)
    return figure


def heatmap(summary: pd.DataFrame, metric: str, roles: Roles) -> Figure:
    """Batch size x learning rate per hue variant; a cell's diverged runs are written in it."""
    panels = panels_of(summary, roles.hue)
    figure, axes = grid(len(panels), f"{AXIS_LABELS.get(metric, metric)}: batch size × learning "
                                      f"rate · {roles.fixed_title}", height=3.8)
    for axis, (where, table) in zip(axes, panels):
        size = pd.to_numeric(table["train.batch_size"])
        rate = pd.to_numeric(table["optim.lr"])
        sizes, rates = sorted(size.unique()), sorted(rate.unique())
        cells = np.full((len(sizes), len(rates)), np.nan)
        for index, cell in table.iterrows():
            i, j = sizes.index(size[index]), rates.index(rate[index])
            cells[i, j] = cell[f"{metric}_mean"]
            text = "" if math.isnan(cells[i, j]) else f"{cells[i, j]:.3f}"
            if cell["diverged"]:
                text += f"\n{cell['diverged']}× div"
            axis.text(j, i, text or "–", ha="center", va="center", fontsize=7)
        image = axis.imshow(cells, cmap="viridis", aspect="auto", origin="lower")
        axis.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        axis.set_yticks(range(len(sizes)), [str(s) for s in sizes])
        axis.set_xlabel("learning rate")
        axis.set_ylabel("batch size (examples)")
        axis.set_title(label(where) if where else "", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8)
    return figure


def learning_curves(curves: pd.DataFrame, runs: pd.DataFrame, roles: Roles, palette: Palette,
                    x: str = "examples", seeds: bool = False) -> Figure:
    """Test accuracy (top) and train loss (bottom) over training: per hue variant the mean
    over completed seeds with a 95% CI band; diverged runs end in an x."""
    keyed = curves.merge(runs[["run", "status", *roles.hue, *roles.panels]], on="run")
    panels = panels_of(keyed, roles.panels)
    figure, axes = plt.subplots(2, len(panels), figsize=(max(7.0, 5.2 * len(panels)) + LEGEND_INCHES, 7.4),
                                squeeze=False, layout="constrained")
    title(figure, f"Learning curves · {roles.fixed_title}")
    diverged_seen = False
    for column, (where, table) in enumerate(panels):
        for row, (split, metric, ylabel) in enumerate([
                ("test", "accuracy", "test accuracy (fraction)"),
                ("train", "loss", "train loss (cross-entropy, nats)")]):
            axis = axes[row][column]
            rows = table[table["split"] == split]
            for name, group in rows.groupby(rows.apply(hue_label, axis=1, hue=roles.hue), sort=True):
                diverged_seen |= _draw_variant_curve(axis, group, name, metric, x, palette, seeds)
            axis.set_xlabel(AXIS_LABELS[x])
            axis.xaxis.set_major_formatter(EngFormatter(sep=""))  # 10k, not 10000
            axis.xaxis.set_major_locator(MaxNLocator(6))
            axis.set_ylabel(ylabel)
            if metric == "loss":
                axis.set_yscale("log")
            axis.set_title(label(where) if where else "", fontsize=9)
            axis.grid(alpha=0.3)
    legend(figure, axes[0][0], diverged_seen)
    for axis in axes[0]:
        axis.set_ylim(max(0.0, axis.get_ylim()[0]), min(1.0, axis.get_ylim()[1]))
    return figure


def _draw_variant_curve(axis, group: pd.DataFrame, name: str, metric: str, x: str,
                        palette: Palette, seeds: bool) -> bool:
    colour, style = palette.colour(name), palette.linestyle(name)
    completed = group[group["status"] == Status.completed]
    if not completed.empty:
        points = [(position, *t_interval(values[metric]))
                  for position, values in completed.groupby(x, sort=True)]
        xs = [p[0] for p in points]
        axis.plot(xs, [p[2] for p in points], color=colour, linestyle=style, label=name)
        axis.fill_between(xs, [p[4] for p in points], [p[5] for p in points], color=colour,
                          alpha=0.2, linewidth=0)
        if seeds:
            for _, run in completed.groupby("run"):
                axis.plot(run[x], run[metric], color=colour, linewidth=0.6, alpha=0.5)
    diverged = group[group["status"] == Status.diverged]
    for _, run in diverged.groupby("run"):
        finite = run[np.isfinite(run[metric].astype(float))]
        y = finite[metric].iloc[-1] if not finite.empty else np.nan
        axis.plot([run[x].iloc[-1]], [y], color=colour, **DIVERGED)
    return not diverged.empty



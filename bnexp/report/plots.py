"""Comparison figures, chosen by which factors vary. Every function returns its Figure so
tests can read the plotted values back.

Roles: the hue factors (categorical by default: norm kind, placement, affine, activation)
give each line or bar its colour and line style from the report's `Palette`; a figure's x
factor goes on the axis; every other varying factor becomes a panel, in rows of at most four.
Panels of one metric share their y axis, so a variant at chance is drawn as low as it is.
Lines and bars are the per-variant means over completed seeds with 95% Student-t intervals,
clipped to the metric's range in the drawing (raw in the tables); diverged runs are x markers,
runs that failed to train hollow triangles, and accuracy axes carry a dotted chance line.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import (EngFormatter, FuncFormatter, LogLocator, MaxNLocator,
                               NullFormatter)

from bnexp.report.layout import (DIVERGED, FAILED_TO_TRAIN, Palette, Roles, chance_line,
                                 clip_to, grid, hue_labels, legend, panels_of)
from bnexp.report.metrics import axis_label, metric_info
from bnexp.report.stats import label, sort_key, t_quantile, text, texts
from bnexp.schema import Status

AXIS_LABELS = {
    "train.batch_size": "batch size (examples, log2 scale)",
    "optim.lr": "learning rate (log scale)",
    "examples": "examples seen (training images)",
    "step": "SGD steps",
}
LOG2_KEYS = {"train.batch_size", "optim.base_batch_size", "norm.virtual_batch_size"}
FAILED = str(Status.failed_to_train)
MIN_BAND_SEEDS = 3  # below this a t band is uninformative: the seeds are drawn instead


def _set_x_scale(axis, key: str) -> None:
    if key in LOG2_KEYS:
        axis.set_xscale("log", base=2)
    elif key == "optim.lr" or key.endswith("init_std"):
        axis.set_xscale("log")


def _error(mean: pd.Series, low: pd.Series, high: pd.Series, metric: str) -> np.ndarray:
    """Error bar lengths of intervals clipped to the metric's range."""
    info = metric_info(metric)
    low = low.map(info.clip)
    high = high.map(info.clip)
    return np.nan_to_num(np.vstack([mean - low, high - mean]).astype(float))


def _finish_accuracy_axes(axes: list, metric: str, chance: Optional[float]) -> None:
    info = metric_info(metric)
    for axis in axes:
        if info.unit == "points" and info.low == 0:
            chance_line(axis, chance)
        clip_to(axis, info.low, info.high)


def vs_factor(summary: pd.DataFrame, x: str, metric: str, roles: Roles, palette: Palette,
              chance: Optional[float] = None) -> Figure:
    """Mean `metric` against a numeric factor, a line per hue variant, CI error bars; cells
    with diverged or untrained runs get a marker and a count at the bottom of the axes. Where
    a scale rule makes the effective LR differ from optim.lr, each point is labelled with it."""
    panels = panels_of(summary, [key for key in roles.panels if key != x])
    figure, stacks = grid(len(panels))
    axes = [stack[0] for stack in stacks]
    diverged_seen = failed_seen = False
    for axis, (where, table) in zip(axes, panels):
        for name, group in table.groupby(hue_labels(table, roles.hue), sort=False):
            group = group.assign(_x=pd.to_numeric(group[x])).sort_values("_x")
            shown = group[group[f"{metric}_n"] > 0]
            axis.errorbar(shown["_x"], shown[f"{metric}_mean"],
                          yerr=_error(shown[f"{metric}_mean"], shown[f"{metric}_ci_low"],
                                      shown[f"{metric}_ci_high"], metric),
                          color=palette.colour(name), linestyle=palette.linestyle(name),
                          marker="o", capsize=3, label=name)
            _label_effective_lr(axis, shown, metric)
            for _, cell in group.iterrows():
                bad = [(cell.get("diverged", 0), DIVERGED, "div"),
                       (cell.get(FAILED, 0), FAILED_TO_TRAIN, "untrained")]
                for height, (count, style, word) in zip((0.03, 0.1), bad):
                    if count:
                        axis.plot([cell["_x"]], [height], transform=axis.get_xaxis_transform(),
                                  color=palette.colour(name), **style)
                        axis.annotate(f"{count} {word}", (cell["_x"], height + 0.03), fontsize=6,
                                      xycoords=axis.get_xaxis_transform(), ha="center")
                diverged_seen |= bool(cell.get("diverged", 0))
                failed_seen |= bool(cell.get(FAILED, 0))
        _set_x_scale(axis, x)
        axis.set_xlabel(AXIS_LABELS.get(x, x))
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3)
    for stack in stacks:
        stack[0].set_ylabel(axis_label(metric))
    _finish_accuracy_axes(axes, metric, chance)
    legend(figure, axes, diverged_seen, failed_seen)
    return figure


def _label_effective_lr(axis, shown: pd.DataFrame, metric: str) -> None:
    if "effective_lr_mean" not in shown or "optim.lr" not in shown:
        return
    effective = shown["effective_lr_mean"]
    nominal = pd.to_numeric(shown["optim.lr"], errors="coerce")
    if effective.notna().all() and not np.allclose(effective, nominal):
        for _, row in shown.iterrows():
            axis.annotate(f"lr {row['effective_lr_mean']:.3g}", (row["_x"], row[f"{metric}_mean"]),
                          textcoords="offset points", xytext=(0, 6), fontsize=6, ha="center")


def bars(summary: pd.DataFrame, metric: str, roles: Roles, palette: Palette,
         runs: Optional[pd.DataFrame] = None, chance: Optional[float] = None) -> Figure:
    """Grouped bars: groups along x (the x factor's values, or one group), a bar per hue
    variant labelled under it, 95% CI error bars, each completed seed as a dot (from `runs`),
    and the counts of diverged / untrained runs written above. The y axis starts near the
    data, not at 0, so a 1-point effect is visible."""
    panels = panels_of(summary, [key for key in roles.panels if key != roles.x])
    figure, stacks = grid(len(panels), panel=(max(3.6, 0.55 * len(palette.order) + 1.5), 3.2))
    axes = [stack[0] for stack in stacks]
    names = palette.order
    width = 0.8 / max(1, len(names))
    values_drawn: list[float] = []
    seeds_seen = False
    for axis, (where, table) in zip(axes, panels):
        groups = [""]
        if roles.x:  # a config key's values in numeric order; a derived axis as given
            x_values = texts(table[roles.x])
            groups = list(x_values.unique())
            groups = sorted(groups, key=sort_key) if "." in roles.x else groups
        hues = hue_labels(table, roles.hue)
        ticks, tick_labels = [], []
        for g_index, group_value in enumerate(groups):
            in_group = x_values == group_value if roles.x else pd.Series(True, table.index)
            for b_index, name in enumerate(names):
                cell = table[in_group & (hues == name)]
                if cell.empty:
                    continue
                cell = cell.iloc[0]
                position = g_index + (b_index - (len(names) - 1) / 2) * width
                if not roles.x:  # one group: each bar is labelled with its variant
                    ticks.append(position)
                    tick_labels.append("\n".join(text(cell[key]) for key in roles.hue))
                mean = cell[f"{metric}_mean"]
                if cell[f"{metric}_n"] > 0:
                    axis.bar(position, mean, width * 0.9, color=palette.colour(name), alpha=0.85,
                             hatch=palette.hatch(name), edgecolor="white",
                             yerr=_error(pd.Series([mean]), pd.Series([cell[f"{metric}_ci_low"]]),
                                         pd.Series([cell[f"{metric}_ci_high"]]), metric),
                             capsize=3, label=name)
                    values_drawn += [cell[f"{metric}_ci_low"], cell[f"{metric}_ci_high"], mean]
                seeds = _seed_values(runs, cell, metric, roles)
                if len(seeds):
                    seeds_seen = True
                    axis.plot(np.full(len(seeds), position), seeds, "o", color="black",
                              markersize=3, alpha=0.7)
                    values_drawn += list(seeds)
                never = cell.get(str(Status.completed), 0) - cell[f"{metric}_n"] \
                    if metric.endswith("_to_target") else 0
                notes = [f"{cell.get('diverged', 0)} div" if cell.get("diverged", 0) else "",
                         f"{cell.get(FAILED, 0)} untrained" if cell.get(FAILED, 0) else "",
                         f"{never} never reached" if never else ""]
                if any(notes):
                    axis.annotate("\n".join(n for n in notes if n), (position, 0.98),
                                  xycoords=axis.get_xaxis_transform(), ha="center", va="top",
                                  fontsize=6, color="firebrick")
        if roles.x:  # groups: each labelled with the x factor's value, bars by the legend
            short = roles.x.rsplit(".", 1)[-1]
            ticks = list(range(len(groups)))
            tick_labels = [f"{short}={g}" if "." in roles.x else g for g in groups]
        else:
            axis.set_xlabel(" / ".join(key.rsplit(".", 1)[-1] for key in roles.hue), fontsize=7)
        axis.set_xticks(ticks, tick_labels, fontsize=6 if len(ticks) > 4 else 7)
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3, axis="y")
    for stack in stacks:
        stack[0].set_ylabel(axis_label(metric))
    _zoom_to(axes, values_drawn, metric)
    _finish_accuracy_axes(axes, metric, chance if _shows(values_drawn, chance) else None)
    legend(figure, axes, seeds=seeds_seen)  # failures are written above their bars
    return figure


def _shows(values: list[float], chance: Optional[float]) -> bool:
    finite = [v for v in values if v is not None and not pd.isna(v)]
    return chance is not None and bool(finite) and min(finite) < chance + 0.1


def _zoom_to(axes: list, values: list[float], metric: str) -> None:
    finite = [v for v in values if v is not None and not pd.isna(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = max((high - low) * 0.15, 1e-3)
    info = metric_info(metric)
    for axis in axes:
        axis.set_ylim(info.clip(low - pad), info.clip(high + pad))


def _seed_values(runs: Optional[pd.DataFrame], cell: pd.Series, metric: str,
                 roles: Roles) -> np.ndarray:
    """The completed runs' values of the cell (matched on its hue, panel and x values)."""
    if runs is None or metric not in runs:
        return np.array([])
    match = runs["status"] == Status.completed
    for key in [*roles.hue, *roles.panels, *([roles.x] if roles.x else [])]:
        if key in runs and key in cell:
            match &= texts(runs[key]) == text(cell[key])
    return pd.to_numeric(runs.loc[match, metric], errors="coerce").dropna().to_numpy()


def heatmap(summary: pd.DataFrame, metric: str, roles: Roles) -> Figure:
    """Batch size x learning rate per hue variant; a cell's diverged and untrained runs are
    written in it."""
    panels = panels_of(summary, roles.hue)
    figure, stacks = grid(len(panels), sharey=False, panel=(4.2, 3.4))
    info = metric_info(metric)
    for (axis,), (where, table) in zip(stacks, panels):
        size = pd.to_numeric(table["train.batch_size"])
        rate = pd.to_numeric(table["optim.lr"])
        sizes, rates = sorted(size.unique()), sorted(rate.unique())
        cells = np.full((len(sizes), len(rates)), np.nan)
        for index, cell in table.iterrows():
            i, j = sizes.index(size[index]), rates.index(rate[index])
            cells[i, j] = cell[f"{metric}_mean"]
            annotation = "" if math.isnan(cells[i, j]) else f"{cells[i, j]:.3f}"
            if cell["diverged"]:
                annotation += f"\n{cell['diverged']}× div"
            if cell.get(FAILED, 0):
                annotation += f"\n{cell[FAILED]}× untrained"
            axis.text(j, i, annotation or "–", ha="center", va="center", fontsize=7)
        image = axis.imshow(cells, cmap="viridis", aspect="auto", origin="lower",
                            vmin=info.low, vmax=info.high)
        axis.set_xticks(range(len(rates)), [f"{r:g}" for r in rates])
        axis.set_yticks(range(len(sizes)), [str(s) for s in sizes])
        axis.set_xlabel("learning rate")
        axis.set_ylabel("batch size (examples)")
        axis.set_title(label(where) if where else "", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8, label=axis_label(metric))
    return figure


CURVES = [("test", "accuracy", "test accuracy (fraction)"),
          ("train", "loss", "train loss (cross-entropy, nats, log scale)")]


def learning_curves(curves: pd.DataFrame, runs: pd.DataFrame, roles: Roles, palette: Palette,
                    x: str = "examples", seeds: bool = False,
                    chance: Optional[float] = None) -> Figure:
    """Per panel, test accuracy over train loss, sharing x; all accuracy axes share y, as do
    all loss axes. Per hue variant the mean over completed seeds with a 95% t band (the loss's
    band computed on log(loss), so it never crosses 0); with fewer than MIN_BAND_SEEDS seeds
    each seed is drawn instead. Diverged runs end in an x, untrained runs in a triangle."""
    keyed = curves.merge(runs[["run", "status", *roles.hue, *roles.panels]], on="run")
    panels = panels_of(keyed, roles.panels)
    figure, stacks = grid(len(panels), rows_per_panel=2, sharex=True)
    diverged_seen = failed_seen = False
    for stack, (where, table) in zip(stacks, panels):
        for axis, (split, metric, _) in zip(stack, CURVES):
            rows = table[table["split"] == split]
            for name, group in rows.groupby(hue_labels(rows, roles.hue),
                                            sort=False):
                drawn = _draw_variant_curve(axis, group, name, metric, x, palette, seeds)
                diverged_seen |= drawn[0]
                failed_seen |= drawn[1]
            axis.grid(alpha=0.3)
        accuracy_axis, loss_axis = stack
        accuracy_axis.set_title(label(where) if where else "", fontsize=9)
        loss_axis.set_yscale("log")
        loss_axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        loss_axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        loss_axis.yaxis.set_minor_formatter(NullFormatter())
        loss_axis.set_xlabel(AXIS_LABELS[x])
        loss_axis.xaxis.set_major_formatter(EngFormatter(sep=""))  # 10k, not 10000
        loss_axis.xaxis.set_major_locator(MaxNLocator(5))
        accuracy_axis.tick_params(labelbottom=False)
    for stack in stacks:
        for axis, (_, _, ylabel) in zip(stack, CURVES):
            axis.set_ylabel(ylabel, fontsize=8)
    _finish_accuracy_axes([stack[0] for stack in stacks], "final_test_accuracy", chance)
    legend(figure, [axis for stack in stacks for axis in stack], diverged_seen, failed_seen)
    return figure


def _draw_variant_curve(axis, group: pd.DataFrame, name: str, metric: str, x: str,
                        palette: Palette, seeds: bool) -> tuple[bool, bool]:
    colour, style = palette.colour(name), palette.linestyle(name)
    completed = group[group["status"] == Status.completed]
    if not completed.empty:
        runs = completed["run"].nunique()
        log = metric == "loss"
        values = pd.to_numeric(completed[metric], errors="coerce")
        if log:  # the band of a loss is computed on log(loss): it never crosses 0
            values = np.log(values.where(values > 0))
        points = values.groupby(completed[x]).agg(["count", "mean", "std"]).sort_index()
        half = points["std"] / np.sqrt(points["count"]) * points["count"].map(
            lambda n: t_quantile(n - 1) if n > 1 else np.nan)
        back = np.exp if log else (lambda v: np.asarray(v, float))
        xs = points.index.to_numpy()
        axis.plot(xs, back(points["mean"]), color=colour, linestyle=style, label=name,
                  marker="o" if len(xs) <= 3 else None, markersize=3)
        if runs >= MIN_BAND_SEEDS:
            axis.fill_between(xs, back(points["mean"] - half), back(points["mean"] + half),
                              color=colour, alpha=0.2, linewidth=0)
        if seeds or runs < MIN_BAND_SEEDS:
            for _, run in completed.groupby("run"):
                axis.plot(run[x], run[metric], color=colour, linewidth=0.6, alpha=0.5)
    seen = []
    for status, style in ((Status.diverged, DIVERGED), (Status.failed_to_train, FAILED_TO_TRAIN)):
        ended = group[group["status"] == status]
        for _, run in ended.groupby("run"):
            if metric == "loss":  # at the top edge: a diverging loss would stretch the axis
                axis.plot([run[x].iloc[-1]], [0.95], color=colour,
                          transform=axis.get_xaxis_transform(), **style)
                continue
            finite = run[np.isfinite(run[metric].astype(float))]
            y = finite[metric].iloc[-1] if not finite.empty else np.nan
            axis.plot([run[x].iloc[-1]], [y], color=colour, **style)
        seen.append(not ended.empty)
    return seen[0], seen[1]

"""Figures of the BN diagnostics: activation distributions over training (from
activations.csv) and test accuracy per eval mode (from the summaries)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from bnexp.report import layout, plots
from bnexp.report.collect import Collection
from bnexp.report.stats import label, summarize
from bnexp.schema import FINISHED

MAX_PANELS = 12
MODE_PREFIX = "final_test_accuracy_"  # + batch | homogeneous | precise; running is unsuffixed


def eval_mode_summary(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """The summary in long form: one row per (variant, eval mode), metric `mode_accuracy`."""
    modes = ["running"] + sorted(c[len(MODE_PREFIX):] for c in runs if c.startswith(MODE_PREFIX))
    parts = []
    for mode in modes:
        column = "final_test_accuracy" if mode == "running" else MODE_PREFIX + mode
        renamed = runs.rename(columns={column: "mode_accuracy"})
        part = summarize(renamed, factors, ["mode_accuracy"])
        parts.append(part.assign(**{"eval mode": mode}))
    return pd.concat(parts, ignore_index=True)


def eval_mode_bars(data: Collection, factors: list[str], roles: layout.Roles,
                   palette: layout.Palette) -> plt.Figure:
    long = eval_mode_summary(data.runs, factors)
    mode_roles = layout.Roles(roles.hue, roles.panels, "eval mode", roles.fixed_title)
    figure = plots.bars(long, "mode_accuracy", mode_roles, palette)
    for axis in figure.axes:
        axis.set_ylabel("test accuracy (fraction) by statistics used")
    return figure


def _variant_runs(data: Collection, factors: list[str]) -> list[tuple[str, pd.DataFrame]]:
    runs = data.runs[data.runs["status"].isin(FINISHED)]
    if factors:
        groups = runs.groupby(factors, dropna=False, sort=True)
        named = [(label(dict(zip(factors, k if isinstance(k, tuple) else (k,)))), g)
                 for k, g in groups]
    else:
        named = [("all runs", runs)]
    return named[:MAX_PANELS]


def percentile_bands(data: Collection, factors: list[str], roles: layout.Roles) -> plt.Figure:
    """One unit of the last hidden activation layer: its input's 15/50/85th percentiles over
    training, one panel per variant (the lowest seed of each), side by side."""
    activations = data.extras["activations"]
    variants = _variant_runs(data, factors)
    figure, axes = layout.grid(len(variants), "Input distribution of one unit of the last "
                               f"hidden activation over training · {roles.fixed_title}")
    shared = None
    for axis, (name, runs) in zip(axes, variants):
        run = runs.sort_values("seed").iloc[0]["run"] if "seed" in runs else runs.iloc[0]["run"]
        table = activations[(activations["run"] == run) & (activations["kind"] == "activation")]
        last = table[table["layer"] == table["layer"].max()]
        unit = last.loc[last["unit"].astype(str) != "all", "unit"].iloc[0]
        series = last[last["unit"].astype(str) == str(unit)].sort_values("step")
        axis.fill_between(series["step"], series["p15"], series["p85"], alpha=0.3,
                          label="15th–85th percentile")
        axis.plot(series["step"], series["p50"], label="median")
        axis.set_title(f"{name}\n{series['module'].iloc[0]} input, layer "
                       f"{series['name'].iloc[0]}, unit {unit}", fontsize=8)
        axis.set_xlabel("SGD steps")
        axis.set_ylabel("activation input")
        axis.grid(alpha=0.3)
        shared = shared or axis
    if shared is not None:
        shared.legend(fontsize=7)
    return figure


def std_by_layer(data: Collection, factors: list[str], roles: layout.Roles,
                 palette: layout.Palette) -> plt.Figure:
    """Per-layer standard deviation of every activation's input, at the first (dotted) and
    the last (solid) probed step, mean over seeds; one panel per value of the panel factors
    (e.g. the init scale): vanishing or exploding activations with depth."""
    activations = data.extras["activations"]
    whole = activations[(activations["kind"] == "activation")
                        & (activations["unit"].astype(str) == "all")]
    keyed = whole.merge(data.runs[["run", *roles.hue, *roles.panels]], on="run")
    panels = layout.panels_of(keyed, roles.panels)[:MAX_PANELS]
    figure, axes = layout.grid(len(panels), "Activation input std by depth, first (dotted) "
                               f"and last (solid) probe · {roles.fixed_title}")
    for axis, (where, table) in zip(axes, panels):
        hues = table.apply(layout.hue_label, axis=1, hue=roles.hue)
        for name, group in table.groupby(hues, sort=True):
            for when, style in (("min", ":"), ("max", "-")):
                steps = group.groupby("run")["step"].transform(when)
                at = group[group["step"] == steps].groupby("layer")["std"].mean()
                axis.plot(range(len(at)), at.values, style, marker="o",
                          color=palette.colour(name),
                          label=name if when == "max" else None)
        axis.set_yscale("log")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("activation layer (input side = 0)")
        axis.set_ylabel("std of the activation input")
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3)
    layout.legend(figure, axes[0], False)
    return figure

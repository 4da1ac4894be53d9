"""Figures of the BN diagnostics: test accuracy per eval mode (from the summaries), the
activation distributions and saturation over training (activations.csv), the effective step of
scale-invariant weights (gradients.csv) and the learned gammas (norm_affine.csv).

Variants are panels, in rows of at most four, in numeric order; panels share their y axis.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from bnexp.report import layout, plots
from bnexp.report.collect import Collection
from bnexp.report.probe_outcomes import GAMMA_OFF, dead_fraction
from bnexp.report.stats import label, sort_key, summarize, t_interval
from bnexp.config import EvalMode
from bnexp.schema import FINISHED, Status, summary_key

MAX_PANELS = 16
PROBED = (*FINISHED, Status.failed_to_train)  # runs whose probe tables are drawn: all that ran


def mode_columns(runs: pd.DataFrame, key: str = "final_test_accuracy") -> dict[str, str]:
    """{eval mode: its column of `key`} for the modes these runs were scored in, running
    first (schema.summary_key names them)."""
    columns = {mode.value: summary_key(key, mode.value) for mode in EvalMode}
    return {mode: column for mode, column in columns.items() if column in runs}


def scored_in_other_modes(runs: pd.DataFrame) -> bool:
    """Whether any run was scored in an eval mode besides running."""
    return len(mode_columns(runs)) > 1


def eval_mode_summary(runs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """The summary in long form: one row per (variant, eval mode), metric `mode_accuracy`."""
    parts = []
    for mode, column in mode_columns(runs).items():
        renamed = runs.drop(columns=["mode_accuracy"], errors="ignore").rename(
            columns={column: "mode_accuracy"})
        part = summarize(renamed, factors, ["mode_accuracy"])
        parts.append(part.assign(**{"eval mode": mode}))
    return pd.concat(parts, ignore_index=True)


def eval_mode_bars(data: Collection, factors: list[str], roles: layout.Roles,
                   palette: layout.Palette, chance: float) -> plt.Figure:
    """Test accuracy per eval mode (the bar groups) and variant, with each seed's value."""
    long = eval_mode_summary(data.runs, factors)
    per_run = pd.concat([data.runs.assign(**{"eval mode": mode, "mode_accuracy": data.runs[column]})
                         for mode, column in mode_columns(data.runs).items()], ignore_index=True)
    mode_roles = layout.Roles(roles.hue, roles.panels, "eval mode")
    figure = plots.bars(long, "mode_accuracy", mode_roles, palette, per_run, chance)
    for axis in figure.axes:
        if axis.get_visible():
            axis.set_ylabel("test accuracy (fraction) by the statistics used", fontsize=8)
    return figure


def _keyed(table: pd.DataFrame, data: Collection, roles: layout.Roles) -> pd.DataFrame:
    runs = data.runs[data.runs["status"].isin(PROBED)]
    return table.merge(runs[["run", "seed", *roles.hue, *roles.panels]]
                       if "seed" in runs else runs[["run", *roles.hue, *roles.panels]], on="run")


def _variants(table: pd.DataFrame, roles: layout.Roles) -> list[tuple[str, dict, pd.DataFrame]]:
    """(hue label, panel values, rows) per variant, in numeric order, at most MAX_PANELS."""
    keys = [*roles.panels, *roles.hue]
    if not keys:
        return [("all runs", {}, table)]
    groups = sorted(table.groupby(keys, dropna=False, sort=False),
                    key=lambda item: [sort_key(v) for v in (item[0] if isinstance(item[0], tuple)
                                                             else (item[0],))])
    named = []
    for key, group in groups[:MAX_PANELS]:
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        named.append((label({k: values[k] for k in roles.hue}),
                      {k: values[k] for k in roles.panels}, group))
    return named


def _finish(figure: plt.Figure, stacks: list[list], ylabel: str) -> plt.Figure:
    """Every panel's y label, and one legend gathered from all of them."""
    for (axis,) in stacks:
        axis.set_ylabel(ylabel, fontsize=8)
    layout.legend(figure, [stack[0] for stack in stacks])
    return figure


def percentile_bands(data: Collection, roles: layout.Roles, palette: layout.Palette) -> plt.Figure:
    """The input of the last hidden activation layer over training, one panel per variant:
    the 15th-85th percentile band and the median averaged over the sampled units and the seeds,
    a 95% t band of that median over seeds, and one example unit (the same unit index in every
    panel, lowest seed) as a thin line. Panels share y."""
    activations = data.extras["activations"]
    units = activations[(activations["kind"] == "activation")
                        & (activations["unit"].astype(str) != "all")]
    units = units[units["layer"] == units.groupby("run")["layer"].transform("max")]
    variants = _variants(_keyed(units, data, roles), roles)
    figure, stacks = layout.grid(len(variants))
    example_unit = str(sorted(units["unit"].astype(str).unique(), key=sort_key)[0])
    for (axis,), (name, where, table) in zip(stacks, variants):
        colour = palette.colour(name) if name in palette.styles else "C0"
        per_seed = table.groupby(["run", "step"])[["p15", "p50", "p85"]].mean().reset_index()
        mean = per_seed.groupby("step")[["p15", "p50", "p85"]].mean()
        axis.fill_between(mean.index, mean["p15"], mean["p85"], color=colour, alpha=0.2,
                          linewidth=0, label="15th–85th percentile (mean over units, seeds)")
        axis.plot(mean.index, mean["p50"], color=colour, label="median (mean over units, seeds)")
        spread = [t_interval(g["p50"]) for _, g in per_seed.groupby("step")]
        axis.fill_between(mean.index, [s[3] for s in spread], [s[4] for s in spread],
                          color=colour, alpha=0.45, linewidth=0, label="95% interval of the median")
        first = table[table["run"] == table.sort_values("seed" if "seed" in table else "run")
                      ["run"].iloc[0]]
        example = first[first["unit"].astype(str) == example_unit].sort_values("step")
        axis.plot(example["step"], example["p50"], color="black", linewidth=0.7, linestyle="--",
                  label=f"one unit's median (unit {example_unit}, lowest seed)")
        axis.set_title("\n".join(t for t in (label(where) if where else "", name) if t),
                       fontsize=8)
        axis.set_xlabel("SGD steps")
        axis.grid(alpha=0.3)
    return _finish(figure, stacks, "pre-activation value")


def saturation(data: Collection, roles: layout.Roles, palette: layout.Palette) -> plt.Figure:
    """Fraction of each activation layer's inputs in its flat region over training (ReLU:
    x <= 0, the dead side; sigmoid/tanh: |x| beyond probe.saturation), mean over seeds, one
    line per layer (darker = deeper), one panel per variant; the title gives the fraction of
    sampled units with every input on the flat side at the last probe (dead units)."""
    activations = data.extras["activations"]
    table = activations[activations["kind"] == "activation"]
    variants = _variants(_keyed(table, data, roles), roles)
    figure, stacks = layout.grid(len(variants))
    for (axis,), (name, where, rows) in zip(stacks, variants):
        colour = palette.colour(name) if name in palette.styles else "C0"
        whole = rows[rows["unit"].astype(str) == "all"]
        layers = sorted(whole["layer"].unique())
        for depth, layer in enumerate(layers):
            series = whole[whole["layer"] == layer].groupby("step")["saturated"].mean()
            axis.plot(series.index, series.values, color=colour,
                      alpha=0.35 + 0.65 * (depth + 1) / len(layers), label=f"layer {depth}")
        sampled = rows[rows["unit"].astype(str) != "all"]
        last = sampled[sampled["step"] == sampled.groupby("run")["step"].transform("max")]
        dead = dead_fraction(last)
        axis.set_title("\n".join(t for t in (label(where) if where else "", name,
                                              f"dead units at the end: {dead:.0%}") if t),
                       fontsize=8)
        axis.set_ylim(0, 1)
        axis.set_xlabel("SGD steps")
        axis.grid(alpha=0.3)
    return _finish(figure, stacks, "fraction of inputs saturated")


def effective_step(data: Collection, roles: layout.Roles, palette: layout.Palette) -> plt.Figure:
    """||update|| / ||weight|| of the weights directly followed by a norm layer (invariant to
    their own scale, so this ratio is the step that matters), mean over those layers and the
    seeds, per hue variant; one panel per value of the panel factors."""
    gradients = data.extras["gradients"]
    table = gradients[gradients["followed_by_norm"].astype(str).str.lower() == "true"]
    keyed = _keyed(table, data, roles)
    panels = layout.panels_of(keyed, roles.panels)[:MAX_PANELS]
    figure, stacks = layout.grid(len(panels))
    for (axis,), (where, rows) in zip(stacks, panels):
        for name, group in rows.groupby(layout.hue_labels(rows, roles.hue),
                                        sort=False):
            series = group.groupby("step")["effective_step"].mean()
            axis.plot(series.index, series.values, color=palette.colour(name),
                      linestyle=palette.linestyle(name), label=name)
        axis.set_yscale("log")
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.set_xlabel("SGD steps")
        axis.grid(alpha=0.3)
    return _finish(figure, stacks, "effective step (update / weight norm)")


def gamma_distribution(data: Collection, roles: layout.Roles, palette: layout.Palette
                       ) -> plt.Figure:
    """Histogram of the learned |gamma| at the end of training, all layers and seeds pooled,
    per hue variant; each panel lists the fraction of its channels below GAMMA_OFF (switched
    off). One panel per value of the panel factors; panels share both axes."""
    gammas = data.extras["norm_affine"].dropna(subset=["gamma"])
    keyed = _keyed(gammas, data, roles)
    panels = layout.panels_of(keyed, roles.panels)[:MAX_PANELS]
    figure, stacks = layout.grid(len(panels))
    top = max(float(keyed["gamma"].abs().quantile(0.995)), GAMMA_OFF * 2) if len(keyed) else 1.0
    bins = np.linspace(0, top, 40)
    for (axis,), (where, rows) in zip(stacks, panels):
        notes = []
        for name, group in rows.groupby(layout.hue_labels(rows, roles.hue),
                                        sort=False):
            values = group["gamma"].abs().clip(upper=top)
            notes.append(f"{(values < GAMMA_OFF).mean():.1%} off: {name}")
            axis.hist(values, bins=bins, histtype="step", color=palette.colour(name),
                      linestyle=palette.linestyle(name), density=True, label=name)
        axis.text(0.98, 0.98, "\n".join(notes), transform=axis.transAxes, ha="right",
                  va="top", fontsize=6)
        axis.axvline(GAMMA_OFF, color="0.4", linestyle=":", linewidth=1)
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.set_xlabel("|gamma| at the end of training")
        axis.grid(alpha=0.3)
    return _finish(figure, stacks, "density (channels)")


def std_by_layer(data: Collection, roles: layout.Roles, palette: layout.Palette) -> plt.Figure:
    """Per-layer standard deviation of every activation's input, at the first (dotted) and
    the last (solid) probed step, mean over seeds; one panel per value of the panel factors
    (e.g. the init scale): vanishing or exploding activations with depth."""
    activations = data.extras["activations"]
    whole = activations[(activations["kind"] == "activation")
                        & (activations["unit"].astype(str) == "all")]
    keyed = whole.merge(data.runs[["run", *roles.hue, *roles.panels]], on="run")
    panels = layout.panels_of(keyed, roles.panels)[:MAX_PANELS]
    figure, stacks = layout.grid(len(panels))
    for (axis,), (where, table) in zip(stacks, panels):
        hues = layout.hue_labels(table, roles.hue)
        for name, group in table.groupby(hues, sort=False):
            for when, style in (("min", ":"), ("max", "-")):
                steps = group.groupby("run")["step"].transform(when)
                at = group[group["step"] == steps].groupby("layer")["std"].mean()
                axis.plot(range(len(at)), at.values, style, marker="o",
                          color=palette.colour(name),
                          label=name if when == "max" else None)
        axis.set_yscale("log")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("activation layer (input side = 0)")
        axis.set_title(label(where) if where else "", fontsize=9)
        axis.grid(alpha=0.3)
    return _finish(figure, stacks, "std of the activation input")

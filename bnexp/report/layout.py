"""Figure layout shared by every report figure: variant roles (hue, panels, x), the
palette that keeps a variant's colour across figures, panel grids, titles and legends."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bnexp.report.stats import label  # noqa: E402

LINESTYLES = ["-", "--", "-.", ":"]
DIVERGED = dict(marker="x", markersize=9, markeredgewidth=2, linestyle="none")
LEGEND_INCHES = 2.4  # room on the right of every figure for its legend


@dataclass
class Roles:
    hue: list[str]
    panels: list[str]
    x: Optional[str]
    fixed_title: str  # "fixed: data=..., model=..."


class Palette:
    """A colour and line style per hue variant, fixed for the whole report."""

    def __init__(self, labels: list[str]):
        colours = plt.get_cmap("tab10").colors
        self.styles = {name: (colours[i % 10], LINESTYLES[(i // 10) % 4])
                       for i, name in enumerate(sorted(set(labels)))}

    def colour(self, name: str):
        return self.styles[name][0]

    def linestyle(self, name: str) -> str:
        return self.styles[name][1]


def is_numeric(series: pd.Series) -> bool:
    return pd.to_numeric(series, errors="coerce").notna().all() and series.dtype != bool


def panels_of(table: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    if not keys:
        return [({}, table)]
    groups = table.groupby(keys, dropna=False, sort=True)
    return [(dict(zip(keys, k if isinstance(k, tuple) else (k,))), g) for k, g in groups]


def grid(count: int, heading: str, height: float = 3.6) -> tuple[Figure, list]:
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(max(7.0, 5.2 * columns) + LEGEND_INCHES,
                                                        height * rows + 1.2), squeeze=False,
                                layout="constrained")
    for axis in axes.flat[count:]:
        axis.set_visible(False)
    title(figure, heading)
    return figure, list(axes.flat[:count])




def title(figure: Figure, text: str) -> None:
    """A suptitle wrapped to the panels' width (about 11 characters per inch at 10 pt)."""
    width = figure.get_figwidth() - LEGEND_INCHES
    figure.suptitle(textwrap.fill(text, width=int(width * 11)), fontsize=10)


def hue_label(row: pd.Series, hue: list[str]) -> str:
    return label({key: row[key] for key in hue})


def legend(figure: Figure, axis, diverged_seen: bool) -> None:
    """One legend for the figure, outside the panels on the right, so it hides no data."""
    handles, labels = axis.get_legend_handles_labels()
    if diverged_seen:
        handles.append(Line2D([], [], color="black", **DIVERGED))
        labels.append("diverged run (non-finite loss)")
    if handles:
        figure.legend(handles, labels, fontsize=7, loc="outside right upper")


def clip_fraction_axes(axes: list, metric: str) -> None:
    """Accuracies live in [0, 1]; a wide interval from two seeds must not stretch the axis
    beyond it (the interval is still in summary.csv)."""
    if "accuracy" in metric:
        for axis in axes:
            low, high = axis.get_ylim()
            axis.set_ylim(max(low, 0.0), min(high, 1.0))


MAX_HUES = 6  # more lines than this in one panel are hard to tell apart


def assign_roles(summary: pd.DataFrame, factors: list[str], fixed_title: str,
                 hue: Optional[list[str]] = None, x: Optional[str] = None,
                 panels: Optional[list[str]] = None) -> Roles:
    """Defaults: categorical factors are the hue, norm.* keys first, while they make at most
    MAX_HUES variants (further ones become panels); numeric ones become panels; a user's
    choice wins."""
    if hue is None:  # norm keys first: what a bnexp figure compares above all
        hue = sorted((f for f in factors if not is_numeric(summary[f]) and f != x),
                     key=lambda f: (not f.startswith("norm."), f))
        while len(hue) > 1 and len(summary.groupby(hue, dropna=False)) > MAX_HUES:
            hue = hue[:-1]
    if panels is None:
        panels = [f for f in factors if f not in hue and f != x]
    return Roles(hue=hue, panels=panels, x=x, fixed_title=fixed_title)


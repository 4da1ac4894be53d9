"""Figure layout shared by every report figure: variant roles (hue, panels, x), the palette
that gives a variant the same colour in every figure of every study, panel grids that wrap,
shared axes, the chance line and one legend gathered from all panels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bnexp.report.collect import NOT_APPLICABLE  # noqa: E402
from bnexp.report.stats import label, sort_key, text, texts  # noqa: E402

LINESTYLES = ["-", "--", "-.", ":"]
DIVERGED = dict(marker="x", markersize=9, markeredgewidth=2, linestyle="none")
FAILED_TO_TRAIN = dict(marker="v", markersize=8, markeredgewidth=1.5, linestyle="none",
                       markerfacecolor="none")
LEGEND_INCHES = 2.6  # room on the right of every figure for its legend
MAX_COLUMNS = 4  # panels per row before a grid wraps
PANEL_INCHES = (3.6, 2.7)  # width, height of one panel
# A normalizer keeps its colour family in every study; variants of one kind (placement,
# affine, activation, ...) take shades and line styles within it.
NORM_FAMILIES = {"none": "Greys", "batch": "Blues", "ghost": "Reds", "group": "Greens",
                 "layer": "Purples", "batch_renorm": "Oranges",
                 "ghost_renorm": "YlOrBr"}
SHADES = [0.85, 0.55, 0.7, 0.4, 0.95, 0.3]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo"]  # bars of one family told apart by pattern
OTHER_COLOURS = plt.get_cmap("Dark2").colors  # hues that do not involve norm.kind


@dataclass
class Roles:
    hue: list[str]
    panels: list[str]
    x: Optional[str]


def hue_labels(table: pd.DataFrame, hue: list[str]) -> pd.Series:
    """Each row's variant name, `stats.label` of its hue values (`kind=batch, placement=after`),
    computed by column: a row-wise apply was most of a large report's figure time."""
    if not hue:
        return pd.Series(label({}), index=table.index)
    parts = [key.rsplit(".", 1)[-1] + "=" + texts(table[key]) for key in hue]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ", " + part
    return joined


class Palette:
    """A colour and line style per hue variant, fixed for the whole report, and derived from
    the variant's values alone, so `kind=none` is the same grey in every study."""

    def __init__(self, table: pd.DataFrame, hue: list[str]):
        variants = dict(zip(hue_labels(table, hue),
                            zip(*[table[key] for key in hue]) if hue else [()] * len(table)))
        ordered = sorted(variants, key=lambda name: [sort_key(v) for v in variants[name]])
        self.styles: dict[str, tuple] = {}
        if "norm.kind" in hue:
            where = hue.index("norm.kind")
            families: dict[str, list[str]] = {}
            for name in ordered:
                families.setdefault(str(variants[name][where]), []).append(name)
            for kind, names in families.items():
                cmap = plt.get_cmap(NORM_FAMILIES.get(kind, "copper"))  # a new normalizer: brown
                for i, name in enumerate(names):
                    self.styles[name] = (cmap(SHADES[i % len(SHADES)]),
                                         LINESTYLES[i % len(LINESTYLES)], HATCHES[i % len(HATCHES)])
        else:
            for i, name in enumerate(ordered):
                self.styles[name] = (OTHER_COLOURS[i % len(OTHER_COLOURS)],
                                     LINESTYLES[(i // len(OTHER_COLOURS)) % len(LINESTYLES)], "")
        self.order = ordered

    def colour(self, name: str):
        return self.styles[name][0]

    def linestyle(self, name: str) -> str:
        return self.styles[name][1]

    def hatch(self, name: str) -> str:
        return self.styles[name][2]


def is_numeric(series: pd.Series) -> bool:
    return pd.to_numeric(series, errors="coerce").notna().all() and series.dtype != bool


def panels_of(table: pd.DataFrame, keys: list[str]) -> list[tuple[dict, pd.DataFrame]]:
    """(the panel's factor values, its rows), panels in numeric order of their values.

    Rows whose runs do not read a panel key (n/a: the no-norm arm has no placement) are drawn
    in every panel that agrees with them on the keys they do read, as the reference they are
    there; they get a panel of their own only where no such panel exists."""
    if not keys:
        return [({}, table)]
    groups = [(dict(zip(keys, k if isinstance(k, tuple) else (k,))), g)
              for k, g in table.groupby(keys, dropna=False, sort=False)]
    spelled = [{key: text(value) for key, value in where.items()} for where, _ in groups]
    panels = []
    for (where, _), values in zip(groups, spelled):
        if any(_belongs_in(values, other) and _unread(other) < _unread(values)
               for other in spelled):
            continue  # drawn in the panels that read more of these keys
        members = [rows for other, (_, rows) in zip(spelled, groups) if _belongs_in(other, values)]
        panels.append((where, pd.concat(members)))
    return sorted(panels, key=lambda item: [sort_key(v) for v in item[0].values()])


def _unread(where: dict[str, str]) -> set[str]:
    return {key for key, value in where.items() if value == NOT_APPLICABLE}


def _belongs_in(rows: dict[str, str], panel: dict[str, str]) -> bool:
    """Whether rows with these key values belong in the panel of those: equal, or n/a."""
    return all(value in (panel[key], NOT_APPLICABLE) for key, value in rows.items())


MARGINS = dict(left=0.75, right=0.25, bottom=0.75, top=0.45)  # inches around the panels
GAPS = (0.75, 0.85)  # inches between panel columns, between panel rows
STACK_GAP = 0.12  # inches between the axes stacked in one panel (they share x)


def grid(count: int, rows_per_panel: int = 1, sharex: bool = False, sharey: bool = True,
         panel: tuple[float, float] = PANEL_INCHES) -> tuple[Figure, list[list]]:
    """Panels in rows of at most MAX_COLUMNS; each panel is `rows_per_panel` axes stacked
    (e.g. test accuracy over train loss, sharing x). Returns the figure and, per panel, its
    axes. Axes in the same stacked position share y across panels when `sharey`.

    Margins are fixed in inches rather than solved by a layout engine, which would measure
    every text box at each save (most of a report's time); the legend gets its own column on
    the right (`legend` widens the figure for long labels)."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    heights = []  # grid rows: the stacked axes of each panel row, then a spacer
    for row in range(rows):
        heights += [panel[1]] * rows_per_panel + ([GAPS[1]] if row < rows - 1 else [])
    width = max(panel[0] * columns + GAPS[0] * (columns - 1) + MARGINS["left"]
                + MARGINS["right"], 5.0)
    stack_gaps = STACK_GAP * (rows_per_panel - 1) * rows
    height = sum(heights) + stack_gaps + MARGINS["bottom"] + MARGINS["top"]
    figure = plt.figure(figsize=(width + LEGEND_INCHES, height))
    spec = figure.add_gridspec(len(heights), columns, height_ratios=heights,
                               left=MARGINS["left"] / (width + LEGEND_INCHES),
                               right=(width - MARGINS["right"]) / (width + LEGEND_INCHES),
                               bottom=MARGINS["bottom"] / height,
                               top=1 - MARGINS["top"] / height,
                               wspace=GAPS[0] / panel[0], hspace=STACK_GAP / panel[1])
    panels = []
    for index in range(count):
        r, c = divmod(index, columns)
        first = r * (rows_per_panel + 1)
        panels.append([figure.add_subplot(spec[first + k, c]) for k in range(rows_per_panel)])
    for k in range(rows_per_panel):
        for stack in panels[1:]:
            if sharey:
                stack[k].sharey(panels[0][k])
    if sharex:
        for stack in panels:
            for axis in stack[1:]:
                axis.sharex(stack[0])
    return figure, panels


def chance_line(axis, chance: Optional[float]) -> None:
    if chance is not None:
        axis.axhline(chance, color="0.4", linestyle=":", linewidth=1, label="chance accuracy")


def legend(figure: Figure, axes: list, diverged: bool = False, failed: bool = False,
           seeds: bool = False) -> None:
    """One legend for the figure, gathered from every panel (each label once), outside the
    panels on the right so it covers nothing."""
    seen: dict[str, object] = {}
    for axis in axes:
        for handle, name in zip(*axis.get_legend_handles_labels()):
            if name and not name.startswith("_"):
                seen.setdefault(name, handle)
    if seeds:
        seen["one completed seed"] = Line2D([], [], color="black", marker="o", markersize=3,
                                            linestyle="none")
    if diverged:
        seen["diverged run (non-finite loss)"] = Line2D([], [], color="black", **DIVERGED)
    if failed:
        seen["failed to train (at chance)"] = Line2D([], [], color="black", **FAILED_TO_TRAIN)
    if seen:
        _make_room(figure, max(LEGEND_INCHES, 0.055 * max(map(len, seen)) + 0.5))
        width = figure.get_figwidth()
        panels_right = max(axis.get_position().x1 for axis in figure.axes) * width
        figure.legend(list(seen.values()), list(seen), fontsize=7, loc="upper left",
                      bbox_to_anchor=((panels_right + MARGINS["right"]) / width, 0.98),
                      frameon=False)


def _make_room(figure: Figure, legend_inches: float) -> None:
    """Widen the figure so the legend column is `legend_inches` wide, the panels keeping
    their size in inches."""
    width = figure.get_figwidth()
    right = max(axis.get_position().x1 for axis in figure.axes) * width + MARGINS["right"]
    extra = right + legend_inches - width
    if extra <= 0:
        return
    boxes = [(axis, axis.get_position()) for axis in figure.axes]
    figure.set_figwidth(width + extra)
    scale = width / (width + extra)
    for axis, box in boxes:
        axis.set_position([box.x0 * scale, box.y0, box.width * scale, box.height])


def clip_to(axis, low: Optional[float], high: Optional[float]) -> None:
    """Keep the y axis within the metric's range (a wide interval is clipped, not drawn past
    1; the raw interval is in the tables)."""
    bottom, top = axis.get_ylim()
    axis.set_ylim(max(bottom, low) if low is not None else bottom,
                  min(top, high) if high is not None else top)


MAX_HUES = 6  # more lines than this in one panel are hard to tell apart


def assign_roles(summary: pd.DataFrame, factors: list[str], hue: Optional[list[str]] = None,
                 x: Optional[str] = None, panels: Optional[list[str]] = None) -> Roles:
    """Defaults: categorical factors are the hue, norm.* keys first, while they make at most
    MAX_HUES variants (further ones become panels); numeric ones become panels; a user's
    choice wins."""
    if hue is None:  # norm keys first: what a bnexp figure compares above all
        hue = sorted((f for f in factors if not is_numeric(summary[f]) and f != x),
                     key=lambda f: (f != "norm.kind", not f.startswith("norm."), f))
        while len(hue) > 1 and len(summary.groupby(hue, dropna=False)) > MAX_HUES:
            hue = hue[:-1]
    if panels is None:
        panels = [f for f in factors if f not in hue and f != x]
    return Roles(hue=hue, panels=panels, x=x)

"""The report: tables from synthetic run folders with known numbers, figures whose plotted
values equal the summary, and a page that opens from disk."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bnexp.report.build import Options, build_report
from bnexp.report.collect import collect
from bnexp.report.diagnostics import eval_mode_summary
from bnexp.report.stats import detect_factors
from helpers import run_bnexp, run_injected

T_975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantiles, from tables


def write_run(folder: Path, config: dict, status: str = "completed", accuracy: float = 0.8,
              steps: int = 4, truncate: bool = False, summary: bool = True) -> None:
    """A run folder in bnexp's record format, written by hand."""
    folder.mkdir(parents=True)
    tree: dict = {}
    for key, value in config.items():
        node = tree
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(tree))
    lines = ["step,epoch,examples,split,loss,accuracy,lr,seconds"]
    for step in range(1, steps + 1):
        loss = "nan" if status == "diverged" and step == steps else f"{1 / step:.4f}"
        lines.append(f"{step},{step / 2},{step * 8},train,{loss},{accuracy - 0.1},0.1,{step}")
        if status != "diverged":
            lines.append(f"{step},{step / 2},{step * 8},test,0.5,{accuracy if step == steps else 0.5},0.1,{step}")
    text = "\n".join(lines) + "\n"
    (folder / "metrics.csv").write_text(text[:-7] if truncate else text)
    if summary:
        record = {"status": status, "config": config, "steps": steps, "train_seconds": 1.0,
                  "bnexp_version": "0.1.0", "torch_version": "2.x", "device": "cpu",
                  "started_at": "2026-11-22T10:00:00+00:00"}
        if status == "completed":
            record.update(final_test_accuracy=accuracy, final_train_accuracy=accuracy + 0.05,
                          final_test_loss=0.5)
        (folder / "summary.json").write_text(json.dumps(record))


def write_running_run(folder: Path, tree: dict, sort_keys: bool = True) -> None:
    """A run still training: only the config Hydra saved (nested, as Hydra writes it)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(tree, sort_keys=sort_keys))


GRID_ACCURACY = {("batch", 8): [0.81, 0.84, 0.80], ("batch", 64): [0.86, 0.85, 0.88],
                 ("none", 8): [0.70, 0.75, 0.72], ("none", 64): [0.79, 0.77, 0.80]}


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    root = tmp_path / "study"
    for (kind, batch), accuracies in GRID_ACCURACY.items():
        for seed, accuracy in enumerate(accuracies):
            config = {"seed": seed, "norm.kind": kind, "train.batch_size": batch,
                      "optim.lr": 0.1, "norm.placement": "before", "study": "s"}
            write_run(root / f"{kind}{batch}s{seed}", config, accuracy=accuracy)
    base = {"norm.kind": "batch", "train.batch_size": 8, "optim.lr": 0.1,
            "norm.placement": "before", "study": "s"}
    write_run(root / "diverged", {**base, "seed": 3}, status="diverged")
    write_run(root / "truncated", {**base, "seed": 4}, truncate=True)
    write_run(root / "nosummary", {**base, "seed": 5}, summary=False)
    return root


def test_tables_hold_the_right_values_and_an_independent_ci(synthetic, tmp_path):
    with pytest.warns(UserWarning, match="incomplete run"):
        report = build_report(synthetic, tmp_path / "out")
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 15
    status = dict(zip(runs["run"], runs["status"]))
    assert status["truncated"] == "incomplete" and status["nosummary"] == "incomplete"
    assert status["diverged"] == "diverged"
    assert "truncated" in runs.set_index("run").loc["truncated", "problem"]
    assert report.factors == ["norm.kind", "train.batch_size"]
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    for (kind, batch), accuracies in GRID_ACCURACY.items():
        row = summary[(summary["norm.kind"] == kind) & (summary["train.batch_size"] == batch)].iloc[0]
        mean, std = statistics.mean(accuracies), statistics.stdev(accuracies)
        half = T_975[2] * std / math.sqrt(3)
        assert row["final_test_accuracy_n"] == 3
        assert row["final_test_accuracy_mean"] == pytest.approx(mean)
        assert row["final_test_accuracy_std"] == pytest.approx(std)
        assert row["final_test_accuracy_ci_low"] == pytest.approx(mean - half)
        assert row["final_test_accuracy_ci_high"] == pytest.approx(mean + half)
        assert row["generalization_gap_mean"] == pytest.approx(0.05)
    batch8 = summary[(summary["norm.kind"] == "batch") & (summary["train.batch_size"] == 8)].iloc[0]
    assert (batch8["diverged"], batch8["incomplete"], batch8["completed"]) == (1, 2, 3)
    table = (tmp_path / "out" / "summary.md").read_text()
    assert "| batch | 8 | 3 | 0 | 1 | 0 | 2 |" in table


def test_factor_detection_on_a_mixed_grid(tmp_path):
    root = tmp_path / "mixed"
    for index, (kind, placement, lr) in enumerate([("batch", "before", 0.1), ("batch", "after", 0.1),
                                                   ("none", "before", 0.1), ("none", "before", 0.5)]):
        config = {"seed": index, "norm.kind": kind, "norm.placement": placement, "optim.lr": lr,
                  "norm.affine": "both", "train.threads": index, "results_dir": f"r{index}"}
        write_run(root / str(index), config)
    data = collect(root)
    # placement is n/a for norm=none, so it varies among batch runs only; threads and
    # results_dir say how a run executed, and seed is the replicate
    assert detect_factors(data.runs, data.config_keys) == ["norm.kind", "norm.placement", "optim.lr"]
    assert data.runs.set_index("run").loc["2", "norm.placement"] == "n/a"


def test_a_key_that_relabels_a_factor_is_that_factor_not_a_second_one():
    """eval.batch_size set to train.batch_size varies with it one to one: one factor, named
    by the key the schema declares first; keys crossed with each other both stay."""
    grid = [(kind, batch, lr) for kind in ("batch", "group") for batch in (1, 32)
            for lr in (0.1, 0.5)]
    runs = pd.DataFrame({"norm.kind": [k for k, _, _ in grid],
                         "train.batch_size": [b for _, b, _ in grid],
                         "eval.batch_size": [b for _, b, _ in grid],
                         "optim.lr": [lr for _, _, lr in grid], "seed": 0})
    keys = ["eval.batch_size", "norm.kind", "optim.lr", "seed", "train.batch_size"]
    assert detect_factors(runs, keys) == ["norm.kind", "optim.lr", "train.batch_size"]
    assert detect_factors(runs, keys, prefer=["eval.batch_size"]) == [
        "eval.batch_size", "norm.kind", "optim.lr"]
    noisy = pd.DataFrame({"norm.kind": ["batch", "noisy_batch", "noisy_batch"],
                          "norm.noise_mean": ["n/a", 0.5, 0.1], "norm.noise_std": ["n/a", 0.5, 0.1],
                          "seed": 0})  # a noise level sets both; n/a goes with n/a alone
    assert detect_factors(noisy, ["norm.kind", "norm.noise_mean", "norm.noise_std", "seed"]) \
        == ["norm.kind", "norm.noise_mean"]


def test_runs_of_another_bnexp_version_still_report(tmp_path):
    """A metrics.csv without the optional lr/seconds columns (an older bnexp) or with a column
    this bnexp does not know (a newer one) reports; one without a required column is
    incomplete, named in the warning."""
    root = tmp_path / "versions"
    for name, drop, add in [("old", ("lr", "seconds"), None), ("new", (), "grad_scale"),
                            ("broken", ("loss",), None)]:
        folder = root / name
        write_run(folder, {"seed": 0, "norm.kind": "batch", "optim.lr": 0.1})
        table = pd.read_csv(folder / "metrics.csv").drop(columns=list(drop))
        if add:
            table[add] = 1.0
        table.to_csv(folder / "metrics.csv", index=False)
    with pytest.warns(UserWarning, match=r"broken: metrics.csv lacks the columns \['loss'\]"):
        data = collect(root)
    runs = data.runs.set_index("run")
    assert runs.loc["old", "status"] == "completed" == runs.loc["new", "status"]
    assert runs.loc["broken", "status"] == "incomplete"
    old = data.curves[data.curves["run"] == "old"]
    assert old["lr"].isna().all() and list(old["loss"])[:2] == [1.0, 0.5]
    new = data.curves[data.curves["run"] == "new"]
    assert (new["grad_scale"] == 1.0).all() and (new["lr"] == 0.1).all()


def test_every_key_a_run_does_not_read_is_n_a(tmp_path):
    """Not only norm keys: init_std without init=normal, the step schedule's keys with a
    cosine schedule, train.epochs when train.steps is set."""
    root = tmp_path / "init"
    base = {"norm.kind": "batch", "norm.placement": "before", "optim.schedule": "cosine",
            "optim.step_gamma": 0.1, "train.steps": 100, "train.epochs": 5}
    for index, (init, std) in enumerate([("normal", 0.1), ("normal", 1.0), ("kaiming", 0.01)]):
        write_run(root / str(index), {**base, "seed": 0, "model.init": init,
                                       "model.init_std": std})
    runs = collect(root).runs.set_index("run")
    assert list(runs["model.init_std"]) == [0.1, 1.0, "n/a"]
    assert set(runs["optim.step_gamma"]) == {"n/a"} and set(runs["train.epochs"]) == {"n/a"}
    assert set(runs["norm.placement"]) == {"before"}


def test_explicit_roles_are_honoured(synthetic, tmp_path):
    options = Options(x="norm.kind", hue=["train.batch_size"], col="norm.kind")
    with pytest.warns(UserWarning):
        report = build_report(synthetic, tmp_path / "out", options, keep_figures=True)
    bars = report.figures["bars_final_test_accuracy"]
    labels = bars.axes[0].get_legend_handles_labels()[1]
    assert labels[:2] == ["batch_size=8", "batch_size=64"]  # numeric order, not text
    assert [t.get_text() for t in bars.axes[0].get_xticklabels()] == ["kind=batch", "kind=none"]
    with pytest.raises(ValueError, match="not a config key"):
        build_report(synthetic, tmp_path / "x", Options(x="norm.colour"))


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory) -> Path:
    """Six tiny Fashion-MNIST runs and one that diverges."""
    cwd = tmp_path_factory.mktemp("sweep")
    common = ["data.train_subset=400", "train.log_every=4", "train.epochs=2", "study=tiny"]
    first = run_bnexp("-m", "norm=batch,none", "train.batch_size=16,32", "seed=0,1", *common,
                      cwd=cwd)
    assert first.returncode == 0, first.stderr
    diverged = run_bnexp("norm=none", "optim.lr=1e6", "train.batch_size=16", "seed=2", *common,
                         cwd=cwd)
    assert diverged.returncode == 0, diverged.stderr
    return cwd / "results" / "tiny"


def test_plotted_values_equal_the_summary(real_sweep, tmp_path, fashion_mnist):
    report = build_report(real_sweep, tmp_path / "out", keep_figures=True)
    summary = report.summary
    assert set(report.figures) >= {"learning_curves", "vs_batch_size", "generalization_gap"}
    assert "bars_final_test_accuracy" not in report.figures  # it would repeat vs_batch_size
    plotted = set()
    for axis in report.figures["vs_batch_size"].axes:  # one panel per learning rate
        rate = float(axis.get_title().split("=")[1])
        for container in axis.containers:  # errorbar(): the line and its CI bars
            name, line = container.get_label(), container.lines[0]
            if name.startswith("kind="):
                rows = summary[summary["variant"].str.startswith(name)
                               & (summary["optim.lr"] == rate) & (summary["final_test_accuracy_n"] > 0)]
                rows = rows.sort_values("train.batch_size")
                assert list(line.get_xdata()) == rows["train.batch_size"].astype(float).tolist()
                np.testing.assert_allclose(np.asarray(line.get_ydata(), float),
                                           rows["final_test_accuracy_mean"].to_numpy(float))
                plotted.update(rows.index)
    assert plotted == set(summary.index[summary["final_test_accuracy_n"] > 0])
    heights = sorted(p.get_height() for ax in report.figures["generalization_gap"].axes
                     for p in ax.patches)
    expected = sorted(summary.loc[summary["generalization_gap_n"] > 0, "generalization_gap_mean"])
    np.testing.assert_allclose(np.asarray(heights, float), np.asarray(expected, float))
    diverged_markers = [line for ax in report.figures["learning_curves"].axes for line in ax.lines
                        if line.get_marker() == "x" and len(line.get_xdata())]
    assert diverged_markers  # the diverged run is drawn, not a silent gap
    assert any("diverged" in text.get_text()  # the figure's legend, outside the panels
               for text in report.figures["learning_curves"].legends[0].get_texts())
    assert summary.loc[summary["optim.lr"] == 1e6, "diverged"].tolist() == [1]


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets, self.tables, self.images, self.ids = [], 0, 0, set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tables += tag == "table"
        self.images += tag == "img"
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key) and not attrs[key].startswith("data:"):
                self.targets.append(attrs[key])


def test_html_page_is_self_contained_and_links_resolve(real_sweep, tmp_path, fashion_mnist):
    report = build_report(real_sweep, tmp_path / "out")
    page = (tmp_path / "out" / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert parser.tables >= 2 and parser.images == len(list((tmp_path / "out").glob("*.png")))
    for target in parser.targets:
        if target.startswith("#"):
            assert target[1:] in parser.ids, target
        else:
            assert (tmp_path / "out" / target).exists(), target
    assert "95% CI" in page and "final_test_accuracy mean" in page
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Provenance" in markdown and "torch" in markdown
    assert report.out == tmp_path / "out"


def test_report_cli_and_module_entry(real_sweep, tmp_path, fashion_mnist):
    result = subprocess.run([sys.executable, "-m", "bnexp.report", str(real_sweep), "--out",
                             str(tmp_path / "cli"), "--hue", "norm.kind", "--vs-step"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "report in" in result.stdout and (tmp_path / "cli" / "report.html").exists()
    help_text = subprocess.run([sys.executable, "-m", "bnexp.report", "--help"],
                               capture_output=True, text=True).stdout
    assert "--hue" in help_text and "--metric" in help_text


@pytest.mark.slow
def test_sweep_with_report_true_writes_it_even_when_a_run_failed(tmp_path, idx_root):
    result = run_injected({"kind": "fail", "seed": 1}, "-m", "seed=0,1", "data=mnist",
                          f"data.root={idx_root}", "train.batch_size=16", "train.epochs=1",
                          "report=true", cwd=tmp_path)
    assert result.returncode == 1
    assert (tmp_path / "results" / "adhoc" / "report" / "report.html").exists()
    runs = pd.read_csv(tmp_path / "results" / "adhoc" / "report" / "runs.csv")
    assert sorted(runs["status"]) == ["completed", "failed"]


@pytest.mark.slow
def test_diagnostic_figures_from_probed_runs(tmp_path, idx_root):
    result = run_bnexp("-m", "norm=batch,none", "seed=0,1", "data=mnist", f"data.root={idx_root}",
                       "train.batch_size=16", "train.epochs=2", "model.activation=sigmoid",
                       "probe.activations=true", "probe.every=3",
                       "eval.modes=[running,batch,homogeneous,precise]", "eval.precise_batches=4",
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = build_report(tmp_path / "results" / "adhoc", tmp_path / "out", keep_figures=True)
    assert {"eval_modes", "activation_percentiles", "activation_std_by_layer"} <= set(report.figures)
    long = eval_mode_summary(collect(tmp_path / "results" / "adhoc").runs, report.factors)
    heights = sorted(p.get_height() for p in report.figures["eval_modes"].axes[0].patches)
    np.testing.assert_allclose(heights, sorted(long["mode_accuracy_mean"].dropna()))
    assert len(long) == 2 * 4  # two variants x four modes
    activations = pd.read_csv(tmp_path / "out" / "activations.csv")
    assert {"norm.kind", "seed", "p15", "p85"} <= set(activations.columns)
    panels = report.figures["activation_percentiles"].axes
    assert [axis.get_title().splitlines()[0] for axis in panels] == ["kind=batch", "kind=none"]


@pytest.mark.slow
def test_heatmap_and_seed_curves_from_a_batch_by_lr_grid(tmp_path):
    root = tmp_path / "grid"
    for batch in (8, 64):
        for lr in (0.1, 1.0):
            for seed in (0, 1):
                config = {"seed": seed, "norm.kind": "batch", "train.batch_size": batch,
                          "optim.lr": lr}
                diverged = batch == 8 and lr == 1.0 and seed == 0
                write_run(root / f"b{batch}lr{lr}s{seed}", config,
                          status="diverged" if diverged else "completed",
                          accuracy=0.5 + batch / 1000 + lr / 10 + seed / 100)
    report = build_report(root, tmp_path / "out", Options(seeds=True), keep_figures=True)
    axis = report.figures["heatmap_batch_size_lr"].axes[0]
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text()
             for t in axis.texts}
    # rows: batch 8, 64; columns: lr 0.1, 1.0; the mean over completed seeds, written in
    assert cells[(0, 0)] == f"{0.5 + 0.008 + 0.01 + 0.005:.3f}"
    assert cells[(1, 0)].startswith(f"{0.5 + 0.008 + 0.1 + 0.01:.3f}")  # seed 1 only
    assert "1× div" in cells[(1, 0)] and "div" not in cells[(1, 1)]
    axes = report.figures["learning_curves"].axes
    accuracy_panels = [axis for axis in axes if axis.get_ylabel().startswith("test accuracy")]
    assert len(accuracy_panels) == 4  # one per cell
    seed_lines = [line for axis in accuracy_panels for line in axis.lines
                  if line.get_linewidth() == 0.6]
    assert len(seed_lines) == 7  # every completed seed drawn (--seeds), 8 runs less 1 diverged


def test_page_escapes_cells_links_and_figure_names(tmp_path):
    """Parsed back by the standard library's HTML parser: every name and cell arrives as the
    text it was, no tag or attribute is injected, and each link leads to the named file."""
    from urllib.parse import unquote

    from bnexp.report import page

    name = 'fig" onmouseover="alert(1) #1'
    (tmp_path / f"{name}.png").write_bytes(b"not really a png")
    link = 'runs/a b#"<c>?'
    blocks = [page.Table(["a|b", "c"], [["x|y", "<script>alert(2)</script>"]], {(0, 0): link}),
              page.Figure(name, 'title <i>', 'caption "quoted" <b>', 'alt "quoted" <b>')]

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.hrefs, self.cells, self.in_cell = [], [], [], False

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.hrefs += [value for key, value in attrs if key == "href"]
            assert all(key in {"href", "alt", "src", "lang", "charset", "name", "content", "id",
                               "class", "title"} for key, _ in attrs)
            self.in_cell = tag == "td" or (self.in_cell and tag == "a")

        def handle_endtag(self, tag):
            self.in_cell = self.in_cell and tag != "td"

        def handle_data(self, data):
            if self.in_cell:
                self.cells.append(data)

    reader = Reader()
    reader.feed(page.html_page(blocks, "t", tmp_path))
    assert "script" not in reader.tags and "b" not in reader.tags
    assert [unquote(href) for href in reader.hrefs] == [link, f"{name}.svg", f"{name}.svg"]
    assert reader.cells == ["x|y", "<script>alert(2)</script>"]
    markdown = page.markdown(blocks)
    assert "x\\|y" in markdown  # a '|' in a cell does not split the Markdown row


def _wide_grid(root: Path, seeds: int = 2) -> None:
    """6 panels (batch size x lr) of two norm kinds; one run reports a huge loss interval."""
    for batch in (8, 64, 512):
        for lr in (0.1, 1.0):
            for kind in ("batch", "none"):
                for seed in range(seeds):
                    config = {"seed": seed, "norm.kind": kind, "train.batch_size": batch,
                              "optim.lr": lr, "data.name": "fashion_mnist"}
                    accuracy = 0.15 + 0.8 * seed if kind == "none" else 0.8
                    write_run(root / f"{kind}{batch}lr{lr}s{seed}", config, accuracy=accuracy)


def test_figures_wrap_share_axes_clip_intervals_and_mark_chance(tmp_path):
    root = tmp_path / "grid"
    _wide_grid(root)
    report = build_report(root, tmp_path / "out", keep_figures=True)
    curves = report.figures["learning_curves"]
    accuracy_axes = [a for a in curves.axes if a.get_ylabel().startswith("test accuracy")]
    loss_axes = [a for a in curves.axes if a.get_ylabel().startswith("train loss")]
    assert len(accuracy_axes) == len(loss_axes) == 6
    columns = {round(a.get_position().x0, 3) for a in accuracy_axes}
    assert len(columns) == 4  # 6 panels wrap into rows of at most 4
    assert len({a.get_ylim() for a in accuracy_axes}) == 1  # one y range for every panel
    assert len({a.get_ylim() for a in loss_axes}) == 1
    assert all(a.lines for a in curves.axes)  # no empty panel
    assert all(min(a.get_ylim()) > 0 for a in loss_axes)  # log-space bands stay above 0
    chance = [line for a in accuracy_axes for line in a.lines
              if line.get_label() == "chance accuracy"]
    assert chance and all(line.get_ydata()[0] == pytest.approx(0.1) for line in chance)
    legend_texts = [t.get_text() for t in curves.legends[0].get_texts()]
    assert {"kind=batch", "kind=none"} <= set(legend_texts)
    vs = report.figures["vs_lr"]
    assert len({a.get_ylim() for a in vs.axes}) == 1
    for axis in vs.axes:  # none's interval over 2 seeds (0.15, 0.95) runs past 1: clipped
        for container in axis.containers:
            for segment in container.lines[2][0].get_segments():
                assert 0 <= segment[:, 1].min() and segment[:, 1].max() <= 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert (summary["final_test_accuracy_ci_high"] > 1).any()  # the table keeps the raw interval


def test_a_variant_keeps_its_colour_across_studies(tmp_path):
    """kind=none is the same grey whether or not other factors and kinds are in the study."""
    from bnexp.report.layout import Palette
    first = pd.DataFrame({"norm.kind": ["none", "batch"]})
    second = pd.DataFrame({"norm.kind": ["group", "none", "batch", "layer"]})
    assert Palette(first, ["norm.kind"]).colour("kind=none") == \
        Palette(second, ["norm.kind"]).colour("kind=none")
    assert Palette(first, ["norm.kind"]).colour("kind=batch") == \
        Palette(second, ["norm.kind"]).colour("kind=batch")
    third = pd.DataFrame({"norm.kind": ["none", "batch"], "norm.placement": ["n/a", "before"]})
    assert Palette(third, ["norm.kind", "norm.placement"]).colour("kind=none, placement=n/a") \
        == Palette(first, ["norm.kind"]).colour("kind=none")


def test_a_number_that_only_relabels_a_category_gets_no_line(tmp_path):
    """mechanism's networks: depth 6 is always the ReLU MLP, 10 the linear one, so accuracy is
    drawn per variant (bars), not against depth; a free numeric factor keeps its line."""
    root = tmp_path / "study"
    for activation, depth in (("relu", 6), ("identity", 10)):
        for kind in ("batch", "none"):
            for seed in range(3):
                config = {"seed": seed, "norm.kind": kind, "model.activation": activation,
                          "model.depth": depth, "study": "s"}
                write_run(root / f"{activation}{kind}{seed}", config,
                          accuracy=0.8 + 0.01 * seed + (0.02 if kind == "batch" else 0))
    report = build_report(root, tmp_path / "out", keep_figures=True)
    assert "vs_depth" not in report.figures and "bars_final_test_accuracy" in report.figures
    free = tmp_path / "free"
    for depth in (6, 10):
        for kind in ("batch", "none"):
            for seed in range(3):
                config = {"seed": seed, "norm.kind": kind, "model.depth": depth, "study": "s"}
                write_run(free / f"{depth}{kind}{seed}", config, accuracy=0.8 + 0.01 * seed)
    assert "vs_depth" in build_report(free, tmp_path / "out2", keep_figures=True).figures


def test_the_page_names_the_keys_that_follow_a_factor():
    from bnexp.report.stats import aliases
    runs = pd.DataFrame({"model.activation": ["relu", "identity"] * 2, "model.depth": [6, 10] * 2,
                         "optim.lr": [0.1, 0.003] * 2, "norm.kind": ["batch"] * 2 + ["none"] * 2,
                         "final_test_accuracy": [0.8, 0.7, 0.6, 0.5], "seed": 0})
    assert aliases(runs, ["model.activation", "norm.kind"]) == {
        "model.activation": ["model.depth", "optim.lr"]}


def test_a_comparison_on_the_later_of_two_aliases_still_pairs(tmp_path):
    """A study contrasting eval.batch_size (which follows train.batch_size one to one) gets
    its verdict: the key its comparison names is the factor, the schema's first the alias.
    Expected differences by hand: batch 1 - batch 32 is -0.05 in every seed."""
    root = tmp_path / "study"
    comparison = [{"factor": "eval.batch_size", "reference": "32"}]
    for batch, accuracy in ((1, 0.75), (32, 0.8)):
        for seed in range(3):
            config = {"seed": seed, "norm.kind": "batch", "train.batch_size": batch,
                      "eval.batch_size": batch, "eval.modes": ["running", "batch"],
                      "study": "s", "question.comparisons": comparison}
            write_run(root / f"b{batch}s{seed}", config, accuracy=accuracy + 0.01 * seed)
    report = build_report(root, tmp_path / "out")
    assert report.factors == ["eval.batch_size"]
    (row,) = report.comparisons.to_dict("records")
    assert (row["factor"], row["reference"], row["n"]) == ("eval.batch_size", "32", 3)
    assert row["mean"] == pytest.approx(-0.05)
    assert "with `train.batch_size`" in (tmp_path / "out" / "report.md").read_text()


def test_a_key_only_one_arm_reads_follows_the_factor_it_copies(tmp_path):
    """The A/A arm's `norm.virtual_batch_size: ${train.batch_size}` is n/a on the BN and none
    arms: it adds no cell, so the cells are norm.kind x batch, labelled by the batch that every
    run reads. Expected differences by hand: ghost - batch is +0.01 in every seed."""
    root = tmp_path / "study"
    comparison = [{"factor": "norm.kind", "reference": "batch", "contrast": "ghost"}]
    for kind, offset in (("batch", 0.0), ("none", -0.05), ("ghost", 0.01)):
        for batch in (32, 256):
            for seed in range(3):
                config = {"seed": seed, "norm.kind": kind, "train.batch_size": batch,
                          "norm.virtual_batch_size": batch, "study": "s",
                          "question.comparisons": comparison}
                write_run(root / f"{kind}{batch}s{seed}", config,
                          accuracy=0.8 + offset + 0.01 * seed + batch / 10_000)
    report = build_report(root, tmp_path / "out")
    assert report.factors == ["norm.kind", "train.batch_size"]
    rows = report.comparisons.sort_values("train.batch_size").to_dict("records")
    assert [(row["within"], row["n"]) for row in rows] == [("batch_size=32", 3),
                                                          ("batch_size=256", 3)]
    assert [row["mean"] for row in rows] == pytest.approx([0.01, 0.01])
    assert "`norm.virtual_batch_size` where read, one to one" in \
        (tmp_path / "out" / "report.md").read_text()


def test_a_key_read_by_some_runs_of_a_cell_is_still_a_factor():
    """Where a key's n/a is not decided by the other factors (here two runs share every other
    value and differ only in whether they read the key), leaving it out would merge them."""
    runs = pd.DataFrame({"norm.kind": ["ghost"] * 4, "train.batch_size": [32, 32, 256, 256],
                         "norm.virtual_batch_size": ["n/a", 32, "n/a", 256], "seed": 0})
    assert detect_factors(runs, list(runs.columns)) == ["norm.virtual_batch_size",
                                                        "train.batch_size"]


def test_a_null_valued_cell_still_counts_in_the_alias_check():
    """FrozenBN off is a null factor value (NaN in the table): a key read by some of that
    cell's runs and not others splits it, so it is a factor, not an alias of the freeze
    step (pandas' astype(str) kept NaN and groupby dropped the cell from the check)."""
    runs = pd.DataFrame({"train.freeze_norm_stats_at": [math.nan] * 4 + [0.8] * 2,
                         "eval.precise_examples": ["n/a", "n/a", 1000, 1000, 100, 100],
                         "seed": [0, 1, 0, 1, 0, 1]})
    assert detect_factors(runs, list(runs.columns)) == ["eval.precise_examples",
                                                        "train.freeze_norm_stats_at"]
    runs["eval.precise_examples"] = [1000] * 4 + [100] * 2  # now one to one, null included
    assert detect_factors(runs, list(runs.columns)) == ["train.freeze_norm_stats_at"]


def test_a_study_report_leaves_out_its_full_scale_runs_and_theirs_is_their_own(tmp_path):
    """results/<study>/full/ holds the study's full-scale runs: the quick report (of
    results/<study>) does not count them, the full report (of that folder) counts only them."""
    study = tmp_path / "study"
    for seed in range(2):
        write_run(study / f"quick{seed}", {"seed": seed, "norm.kind": "batch", "study": "s",
                                           "scale": "quick"}, accuracy=0.8)
        write_run(study / "full" / f"full{seed}", {"seed": seed, "norm.kind": "batch",
                                                   "study": "s", "scale": "full"}, accuracy=0.9)
    assert sorted(collect(study).runs["run"]) == ["quick0", "quick1"]
    assert sorted(collect(study / "full").runs["run"]) == ["full0", "full1"]


def test_a_figure_with_one_panel_is_described_without_panels(tmp_path):
    """Alt text names the panel factor only where there are panels: a one-factor study's
    bar chart is "one bar per norm.kind.", not "panels by none"."""
    root = tmp_path / "study"
    for kind in ("batch", "none"):
        for seed in range(2):
            write_run(root / f"{kind}{seed}", {"seed": seed, "norm.kind": kind, "study": "s"})
    build_report(root, tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "![Bar chart of final test accuracy (fraction), one bar per norm.kind.]" in text
    assert "panels by none" not in text


def test_a_run_still_training_reads_its_config_resolved_like_the_finished_ones(tmp_path):
    """A run without a summary is read from Hydra's saved config, which keeps `${scale}`
    unresolved: resolved, its study command matches the finished runs' (no "runs disagree")."""
    root = tmp_path / "study"
    command = "bnexp -m experiment=s/full report=true"
    write_run(root / "done", {"seed": 0, "norm.kind": "batch", "study": "s", "scale": "full",
                              "question.command": command})
    write_running_run(root / "running", {
        "seed": 1, "study": "s", "scale": "full", "norm": {"kind": "batch"},
        "question": {"command": "bnexp -m experiment=s/${scale} report=true"}})
    runs = collect(root).runs.set_index("run")
    assert runs.loc["running", "question.command"] == command
    write_running_run(root / "hydra_resolver", {
        "seed": 2, "study": "s", "norm": {"kind": "batch"}, "out": "${hydra:runtime.cwd}"})
    assert collect(root).runs.set_index("run").loc["hydra_resolver", "out"] == \
        "${hydra:runtime.cwd}"


def test_a_run_still_training_agrees_with_the_finished_ones_on_a_list_of_mappings(tmp_path):
    """Hydra saves a study's comparisons in the order the experiment file wrote their keys; a
    finished run's summary keeps them sorted. Both must read as one value (no "runs
    disagree on question.comparisons" while a sweep is still running)."""
    root = tmp_path / "study"
    declared = [{"factor": "norm.kind", "reference": "none", "contrast": "batch"}]
    recorded = [dict(sorted(comparison.items())) for comparison in declared]  # as summaries
    write_run(root / "done", {"seed": 0, "norm.kind": "batch", "study": "s",
                              "question.comparisons": recorded})
    running = root / "running"
    write_running_run(running, {"seed": 1, "study": "s", "norm": {"kind": "batch"},
                                "question": {"comparisons": declared}}, sort_keys=False)
    assert "factor: norm.kind\n    reference" in (running / ".hydra" / "config.yaml").read_text()
    runs = collect(root).runs.set_index("run")
    assert runs.loc["running", "question.comparisons"] == runs.loc["done", "question.comparisons"]


def test_a_variant_that_does_not_read_the_panel_key_is_drawn_in_every_panel(tmp_path):
    """The no-norm arm has no placement (n/a): its bar is the reference in both placement
    panels, not a third `placement=n/a` panel that a reader has to compare across."""
    root = tmp_path / "study"
    accuracies = {("batch", "before"): [0.90, 0.92], ("batch", "after"): [0.86, 0.88],
                  ("none", "before"): [0.80, 0.82]}
    for (kind, placement), values in accuracies.items():
        for seed, accuracy in enumerate(values):
            config = {"seed": seed, "norm.kind": kind, "norm.placement": placement,
                      "study": "s"}  # norm.kind=none does not read it: n/a in the table
            write_run(root / f"{kind}{placement}s{seed}", config, accuracy=accuracy)
    report = build_report(root, tmp_path / "out", Options(hue=["norm.kind"],
                                                          col="norm.placement"),
                          keep_figures=True)
    axes = [axis for axis in report.figures["bars_final_test_accuracy"].axes if axis.patches]
    drawn = {axis.get_title(): sorted(round(patch.get_height(), 3) for patch in axis.patches)
             for axis in axes}
    assert drawn == {"placement=after": [0.81, 0.87], "placement=before": [0.81, 0.91]}


def test_a_variant_whose_value_is_null_gets_its_bars_seeds_and_name(tmp_path):
    """FrozenBN off is `train.freeze_norm_stats_at: null`, NaN in the runs table: its variant
    is drawn and named "null" like any other (it was dropped from every bar chart)."""
    root = tmp_path / "study"
    accuracies = {None: [0.70, 0.72], 0.8: [0.80, 0.84]}
    for freeze, values in accuracies.items():
        for seed, accuracy in enumerate(values):
            write_run(root / f"freeze{freeze}s{seed}", {
                "seed": seed, "norm.kind": "batch", "train.freeze_norm_stats_at": freeze,
                "study": "s"}, accuracy=accuracy)
    report = build_report(root, tmp_path / "out", keep_figures=True)
    [axis] = report.figures["bars_final_test_accuracy"].axes[:1]
    bars = {label.get_text(): patch.get_height()
            for label, patch in zip(axis.get_xticklabels(), axis.patches)}
    assert bars == pytest.approx({"0.8": 0.82, "null": 0.71})
    dots = sorted(value for line in axis.lines if line.get_marker() == "o"
                  for value in line.get_ydata())
    assert dots == pytest.approx([0.70, 0.72, 0.80, 0.84])

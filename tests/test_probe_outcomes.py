"""The per-run numbers the report derives from probe tables (dead units, saturated inputs,
gamma switched off, effective step, weight norm growth), against values counted by hand from
small tables written in the probes' format, and a report whose study compares them by seed."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bnexp.report.build import build_report
from bnexp.report.metrics import metric_info
from bnexp.report.probe_outcomes import probe_outcomes
from bnexp.report.verdicts import Comparison, Paired, compare, verdict
from bnexp.schema import TABLES
from test_report import write_run


def _activation_rows(run: str) -> pd.DataFrame:
    rows = []
    # an early probe: every unit dead there, which the last probe must override
    for unit in ("all", 3, 7):
        rows.append((10, 0, "act0", "activation", "ReLU", unit, 1.0, run))
    # the last probe (step 20): layer 0 units 1.0 and 0.5, layer 1 units 1.0 and 0.0;
    # whole layers 0.4 and 0.6; a norm layer's row has no saturation
    for layer, whole, units in ((0, 0.4, (1.0, 0.5)), (1, 0.6, (1.0, 0.0))):
        rows.append((20, layer, f"act{layer}", "activation", "ReLU", "all", whole, run))
        rows += [(20, layer, f"act{layer}", "activation", "ReLU", unit, value, run)
                 for unit, value in zip((3, 7), units)]
    rows.append((20, 2, "norm0", "norm", "BatchNorm1d", "all", math.nan, run))
    return pd.DataFrame(rows, columns=["step", "layer", "name", "kind", "module", "unit",
                                       "saturated", "run"])


def _gradient_rows(run: str) -> pd.DataFrame:
    #           step, layer, followed, weight_norm, effective_step
    rows = [(1, 0, True, 2.0, 0.10), (1, 1, True, 4.0, 0.30), (1, 2, False, 9.0, math.nan),
            (11, 0, True, 3.0, 0.02), (11, 1, True, 5.0, 0.04), (11, 2, False, 1.0, math.nan),
            (21, 0, True, 4.0, 0.01), (21, 1, True, 6.0, 0.03), (21, 2, False, 1.0, math.nan)]
    return pd.DataFrame([(step, layer, f"w{layer}", followed, 1.0, norm, 0.1, effective, run)
                         for step, layer, followed, norm, effective in rows],
                        columns=[*TABLES["gradients"].columns, "run"])


def test_outcomes_are_the_values_counted_by_hand():
    gammas = pd.DataFrame({"layer": [0, 0, 1, 1], "name": "n", "channel": [0, 1, 0, 1],
                           "gamma": [0.01, -0.02, 0.5, -1.0], "beta": 0.0, "run": "a"})
    outcomes = probe_outcomes({"activations": _activation_rows("a"),
                               "gradients": _gradient_rows("a"), "norm_affine": gammas})
    row = outcomes.set_index("run").loc["a"]
    assert row["dead_units"] == pytest.approx(2 / 4)  # 1.0 and 1.0 of 1.0, 0.5, 1.0, 0.0
    assert row["saturated_inputs"] == pytest.approx((0.4 + 0.6) / 2)
    assert row["gamma_off"] == pytest.approx(2 / 4)  # |0.01| and |-0.02| below 0.05
    assert row["effective_step"] == pytest.approx((0.10 + 0.30 + 0.02 + 0.04 + 0.01 + 0.03) / 6)
    assert row["initial_effective_step"] == pytest.approx((0.10 + 0.30) / 2)
    assert row["weight_norm_growth"] == pytest.approx((4.0 / 2.0 + 6.0 / 4.0) / 2)


def test_santurkar_measures_average_the_settled_steps_by_hand():
    ics = pd.DataFrame({"step": [0, 0, 100, 100, 150, 150], "layer": [0, 1] * 3,
                        "name": "w", "grad_norm": [9.0, 9.0, 2.0, 4.0, 1.0, 2.0],
                        "ics_l2": [5.0, 5.0, 0.2, 0.4, 0.3, 0.1],
                        "ics_cosine": [0.0, 0.0, 0.9, 0.8, 1.0, 0.7], "run": "a"})
    landscape = pd.DataFrame({"step": [0, 100, 150], "lr": 0.1, "loss": 1.0,
                              "loss_min": [0.0, 0.5, 0.2], "loss_max": [9.0, 0.9, 0.3],
                              "grad_change": [7.0, 0.4, 0.2],
                              "beta_smoothness": [70.0, 4.0, 6.0], "run": "a"})
    row = probe_outcomes({"ics": ics, "landscape": landscape}).set_index("run").loc["a"]
    # step 0 (the initialisation) is left out; the rest averaged over steps and layers
    assert row["ics_l2"] == pytest.approx((0.2 + 0.4 + 0.3 + 0.1) / 4)
    assert row["ics_relative"] == pytest.approx((0.2 / 2 + 0.4 / 4 + 0.3 / 1 + 0.1 / 2) / 4)
    assert row["ics_cosine"] == pytest.approx((0.9 + 0.8 + 1.0 + 0.7) / 4)
    assert row["loss_range"] == pytest.approx((0.4 + 0.1) / 2)
    assert row["grad_change"] == pytest.approx((0.4 + 0.2) / 2)
    assert row["beta_smoothness"] == pytest.approx((4.0 + 6.0) / 2)


def test_a_run_without_a_table_has_no_value_not_zero():
    outcomes = probe_outcomes({"activations": pd.concat([_activation_rows("a"),
                                                         _activation_rows("b")]),
                               "gradients": _gradient_rows("a")})
    table = outcomes.set_index("run")
    assert table.loc["b", "dead_units"] == pytest.approx(0.5)
    assert math.isnan(table.loc["b", "effective_step"])
    assert "gamma_off" not in table
    assert list(probe_outcomes({}).columns) == ["run"]
    # a deep linear network's activations have no flat side, so no saturation to count
    linear = _activation_rows("c").assign(module="LinearActivation", saturated=math.nan)
    measured = probe_outcomes({"activations": pd.concat([_activation_rows("a"), linear])})
    measured = measured.set_index("run").reindex(["a", "c"])
    assert measured.loc["a", "dead_units"] == pytest.approx(0.5)
    assert measured.loc["c", ["dead_units", "saturated_inputs"]].isna().all()


def test_a_measure_is_worded_by_its_direction_not_as_better():
    dead = metric_info("dead_units")
    assert verdict(Paired(5, 0.2, 0.05, 0.15, 0.25), dead).endswith("contrast higher")
    assert "worse" not in verdict(Paired(5, -0.2, 0.05, -0.25, -0.15), dead)
    step = metric_info("effective_step")
    assert verdict(Paired(5, 0.0012, 0.0001, 0.0011, 0.0013), step).startswith(
        "+0.0012 [+0.0011, +0.0013] ratio")
    # a gradient measure is not a ratio: its difference is stated in its own unit
    shift = verdict(Paired(5, -0.0196, 0.003, -0.024, -0.0152), metric_info("ics_l2"))
    assert shift.startswith("-0.0196 [-0.024, -0.0152] gradient norm,")
    cosine = verdict(Paired(5, 0.00142, 0.0003, 0.00096, 0.00187), metric_info("ics_cosine"))
    assert cosine.startswith("+0.00142 [+0.00096, +0.00187] cosine,")


def test_a_study_compares_dead_units_by_seed(tmp_path: Path):
    """Runs written by hand with activation tables: after − before on dead_units is paired by
    seed and the derived numbers land in runs.csv and summary.csv."""
    root = tmp_path / "study"
    dead = {"before": [0.0, 0.0, 0.1], "after": [0.3, 0.4, 0.4]}
    comparisons = [{"factor": "norm.placement", "reference": "before", "metric": "dead_units"}]
    for placement, fractions in dead.items():
        for seed, fraction in enumerate(fractions):
            folder = root / f"{placement}-{seed}"
            write_run(folder, {"seed": seed, "norm.kind": "batch", "norm.placement": placement,
                               "question.comparisons": comparisons})
            units = 10
            rows = ["step,layer,name,kind,module,unit,mean,std,p15,p50,p85,saturated"]
            rows.append("5,0,act,activation,ReLU,all,0,1,0,0,0,0.5")
            rows += [f"5,0,act,activation,ReLU,{unit},0,1,0,0,0,"
                     f"{1.0 if unit < round(fraction * units) else 0.6}" for unit in range(units)]
            (folder / "activations.csv").write_text("\n".join(rows) + "\n")
    report = build_report(root)
    runs = pd.read_csv(report.out / "runs.csv")
    assert sorted(runs["dead_units"].round(2)) == sorted(dead["before"] + dead["after"])
    [row] = report.comparisons.to_dict("records")
    assert row["metric"] == "dead_units" and row["n"] == 3
    differences = [a - b for a, b in zip(dead["after"], dead["before"])]
    assert row["mean"] == pytest.approx(sum(differences) / 3)
    assert "dead_units" in json.dumps(list(pd.read_csv(report.out / "summary.csv").columns))


def test_a_cell_whose_runs_do_not_measure_the_metric_has_no_row():
    """The effective step exists only where a norm follows a weight: against std 0.1, the
    BN cell is compared and the no-norm cell is left out, not called 'not testable'."""
    rows = []
    for kind in ("batch", "none"):
        for std in (0.1, 0.01):
            for seed in range(3):
                step = (0.01 if std == 0.1 else 0.15) + seed / 1000 if kind == "batch" \
                    else math.nan
                rows.append((f"{kind}-{std}-{seed}", seed, kind, std, "completed", step))
    runs = pd.DataFrame(rows, columns=["run", "seed", "norm.kind", "model.init_std", "status",
                                       "effective_step"])
    table = compare(runs, ["norm.kind", "model.init_std"],
                    Comparison("model.init_std", "0.1", metric="effective_step"), "unused")
    assert list(table["norm.kind"]) == ["batch"]
    assert table.loc[0, "n"] == 3 and table.loc[0, "mean"] == pytest.approx(0.14)

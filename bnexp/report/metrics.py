"""What each reported metric means: its axis label, the unit a difference is stated in, the
range its values live in (an interval wider than that range is unresolved; plots clip to it)
and which direction is better. Summary keys of every eval mode inherit their base metric.

`examples_to_target` and `steps_to_target` are derived by the report from each run's test
curve (`outcomes.to_target`): the first evaluation whose test accuracy reaches the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class Metric:
    label: str  # axis label, with its unit
    unit: str  # the unit a difference is stated in
    scale: float = 1.0  # value x scale = value in `unit` (fractions shown as points)
    low: Optional[float] = None  # smallest possible value, None: unbounded
    high: Optional[float] = None
    higher_is_better: Optional[bool] = True  # None: a measure, neither side better
    decades: bool = False  # spans decades (1e-4 to 0.3): differences in significant digits

    @property
    def span(self) -> float:
        """Width of the range of values (inf when unbounded)."""
        if self.low is None or self.high is None:
            return math.inf
        return self.high - self.low

    def clip(self, value: float) -> float:
        """A value drawn within the metric's range (tables keep the raw value)."""
        if self.low is not None:
            value = max(value, self.low)
        if self.high is not None:
            value = min(value, self.high)
        return value


ACCURACY = dict(unit="points", scale=100.0, low=0.0, high=1.0)
FRACTION = dict(ACCURACY, higher_is_better=None)  # a fraction that measures, not scores
# positive measures spanning decades; a ratio has no unit, a gradient measure has its own
RATIO = dict(unit="ratio", low=0.0, higher_is_better=None, decades=True)
GRADIENT = dict(RATIO, unit="gradient norm")
METRIC_INFO: dict[str, Metric] = {
    "final_test_accuracy": Metric("final test accuracy (fraction)", **ACCURACY),
    "best_test_accuracy": Metric("best test accuracy (fraction)", **ACCURACY),
    "final_train_accuracy": Metric("final train accuracy (fraction, eval mode)", **ACCURACY),
    "mode_accuracy": Metric("test accuracy by eval mode (fraction)", **ACCURACY),
    "generalization_gap": Metric("train − test accuracy (fraction)", unit="points", scale=100.0,
                                 low=-1.0, high=1.0, higher_is_better=False),
    "final_test_loss": Metric("final test loss (cross-entropy, nats)", "nats", low=0.0,
                              higher_is_better=False),
    "best_test_loss": Metric("best test loss (cross-entropy, nats)", "nats", low=0.0,
                             higher_is_better=False),
    "final_train_loss": Metric("final train loss (cross-entropy, nats)", "nats", low=0.0,
                               higher_is_better=False),
    "train_seconds": Metric("training time (s)", "s", low=0.0, higher_is_better=False),
    "examples_to_target": Metric("examples to reach the target test accuracy", "examples",
                                 low=0.0, higher_is_better=False),
    "steps_to_target": Metric("SGD steps to reach the target test accuracy", "steps", low=0.0,
                              higher_is_better=False),
    # measures of the network, not scores (bnexp.report.probe_outcomes): neither side is better
    "dead_units": Metric("dead units at the end (fraction of sampled units)", **FRACTION),
    "saturated_inputs": Metric("activation inputs on the flat side at the end (fraction)",
                               **FRACTION),
    "gamma_off": Metric("norm channels with |gamma| < 0.05 at the end (fraction)", **FRACTION),
    "effective_step": Metric("effective step ||update|| / ||weight|| (mean over training)",
                             **RATIO),
    "initial_effective_step": Metric("effective step at the first probe", **RATIO),
    "weight_norm_growth": Metric("normalized weights' norm, last / first probe", **RATIO),
    "ics_l2": Metric("ICS ||G − G′|| (Santurkar et al.; mean over layers and steps)",
                     **GRADIENT),
    "ics_relative": Metric("ICS relative to the gradient, ||G − G′|| / ||G||", **RATIO),
    "ics_cosine": Metric("cos(G, G′) (Santurkar et al.)",
                         **{**RATIO, "unit": "cosine", "low": -1.0, "high": 1.0}),
    "loss_range": Metric("loss range along the gradient (nats)", "nats", low=0.0,
                         higher_is_better=None),
    "grad_change": Metric("largest gradient change along the gradient", **GRADIENT),
    "beta_smoothness": Metric("effective β-smoothness along the gradient",
                              **{**GRADIENT, "unit": "gradient norm per parameter distance"}),
}
MODES = ("batch", "homogeneous", "precise")  # eval modes whose keys carry a suffix


def metric_info(name: str) -> Metric:
    """The metric's description; `final_test_accuracy_homogeneous` is described like
    `final_test_accuracy`, named after its mode. Unknown names get a plain unbounded metric."""
    if name in METRIC_INFO:
        return METRIC_INFO[name]
    base, _, mode = name.rpartition("_")
    if base in METRIC_INFO and mode in MODES:
        info = METRIC_INFO[base]
        named = info.label.replace("test", f"test ({mode} statistics)", 1) if "test" in \
            info.label else info.label.replace("eval mode", f"{mode} statistics")
        return replace(info, label=named)
    return Metric(name, "")


def axis_label(name: str) -> str:
    return metric_info(name).label

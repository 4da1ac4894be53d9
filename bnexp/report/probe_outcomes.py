"""Per-run numbers the report derives from the probe tables, one row per run, so a study can
compare them seed by seed like any other metric (`question.comparisons[].metric`):

- `dead_units`: of the sampled units of every activation layer, the fraction whose every
  probed input lay on the flat side at the run's last probe (ReLU: x <= 0 on the whole batch,
  a dead unit; sigmoid/tanh: |x| beyond probe.saturation on the whole batch);
- `saturated_inputs`: the fraction of all activation inputs on the flat side at the last
  probe, mean over the activation layers (ReLU: the inactive half; sigmoid/tanh: saturated);
- `gamma_off`: the fraction of norm channels whose learned |gamma| ended below `GAMMA_OFF`
  (switched off: Frankle et al. 2021);
- `effective_step`: ||update|| / ||weight|| of the weights a norm layer follows (invariant to
  their own scale, so this is the step that changes the function), mean over those layers
  and every probed step, and `initial_effective_step`, the same at the first probed step;
- `weight_norm_growth`: those weights' norm at the last probe over their norm at the first,
  mean over the layers (an update orthogonal to a scale-invariant weight only grows its norm,
  which shrinks every later effective step).
"""
from __future__ import annotations

import pandas as pd

GAMMA_OFF = 0.05  # |gamma| below this switches a channel (nearly) off
DEAD = 1.0  # a unit's probed inputs all on the flat side
OUTCOMES = ("dead_units", "saturated_inputs", "gamma_off", "effective_step",
            "initial_effective_step", "weight_norm_growth")


def _at_last_probe(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["step"] == table.groupby("run")["step"].transform("max")]


def dead_fraction(rows: pd.DataFrame) -> float:
    """Of per-unit activation rows, the fraction whose saturated fraction is 1 (all flat)."""
    return float((rows["saturated"] >= DEAD).mean()) if len(rows) else float("nan")


def _from_activations(activations: pd.DataFrame) -> pd.DataFrame:
    flat = activations[(activations["kind"] == "activation")
                       & activations["saturated"].notna()]
    last = _at_last_probe(flat)
    whole = last["unit"].astype(str) == "all"
    dead = last[~whole].groupby("run").apply(dead_fraction, include_groups=False)
    saturated = last[whole].groupby("run")["saturated"].mean()
    return pd.DataFrame({"dead_units": dead, "saturated_inputs": saturated})


def _from_gradients(gradients: pd.DataFrame) -> pd.DataFrame:
    normalized = gradients[gradients["followed_by_norm"].astype(str).str.lower() == "true"]
    if normalized.empty:
        return pd.DataFrame(columns=["effective_step", "initial_effective_step",
                                     "weight_norm_growth"])
    ordered = normalized.sort_values(["run", "layer", "step"])
    per_layer = ordered.groupby(["run", "layer"])["weight_norm"]
    growth = (per_layer.last() / per_layer.first()).groupby("run").mean()
    first = ordered[ordered["step"] == ordered.groupby("run")["step"].transform("min")]
    return pd.DataFrame({
        "effective_step": ordered.groupby("run")["effective_step"].mean(),
        "initial_effective_step": first.groupby("run")["effective_step"].mean(),
        "weight_norm_growth": growth})


def _from_norm_affine(norm_affine: pd.DataFrame) -> pd.DataFrame:
    gammas = norm_affine.dropna(subset=["gamma"])
    off = (gammas["gamma"].abs() < GAMMA_OFF).groupby(gammas["run"]).mean()
    return pd.DataFrame({"gamma_off": off})


DERIVED_FROM = {"activations": _from_activations, "gradients": _from_gradients,
                "norm_affine": _from_norm_affine}


def probe_outcomes(extras: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A `run` column and whichever OUTCOMES the recorded tables give (a run without the
    table has no value: the report counts it as such, never as zero)."""
    parts = [derive(extras[name]) for name, derive in DERIVED_FROM.items()
             if name in extras and not extras[name].empty]
    if not parts:
        return pd.DataFrame(columns=["run"])
    joined = pd.concat(parts, axis=1)
    joined.index.name = "run"
    return joined.astype(float).reset_index()

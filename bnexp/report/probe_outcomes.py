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
  which shrinks every later effective step);
- Santurkar et al.'s measures (ics.csv, landscape.csv), means over the probed steps from
  `SETTLED_STEP` on (the first steps measure the initialisation, not training) and over the
  weight layers: `ics_l2` (||G - G'||), `ics_relative` (||G - G'|| / ||G||), `ics_cosine`
  (cos(G, G')), and along the gradient `loss_range` (max - min loss), `grad_change` (max
  ||g(eta) - g||) and `beta_smoothness` (max ||g(eta) - g|| / ||eta g||).
"""
from __future__ import annotations

import pandas as pd

GAMMA_OFF = 0.05  # |gamma| below this switches a channel (nearly) off
DEAD = 1.0  # a unit's probed inputs all on the flat side
SETTLED_STEP = 100  # the Santurkar measures are averaged over probed steps from this one on


def _at_last_probe(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["step"] == table.groupby("run")["step"].transform("max")]


def dead(rows: pd.DataFrame) -> pd.Series:
    """Per per-unit activation row: whether every probed input was on the flat side."""
    return rows["saturated"] >= DEAD


def dead_fraction(rows: pd.DataFrame) -> float:
    """Of per-unit activation rows, the fraction that are dead."""
    return float(dead(rows).mean()) if len(rows) else float("nan")


def _from_activations(activations: pd.DataFrame) -> pd.DataFrame:
    flat = activations[(activations["kind"] == "activation")
                       & activations["saturated"].notna()]
    last = _at_last_probe(flat)
    whole = last["unit"].astype(str) == "all"
    units = last[~whole]
    saturated = last[whole].groupby("run")["saturated"].mean()
    return pd.DataFrame({"dead_units": dead(units).groupby(units["run"]).mean(),
                         "saturated_inputs": saturated})


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


def _from_ics(ics: pd.DataFrame) -> pd.DataFrame:
    settled = ics[ics["step"] >= SETTLED_STEP].assign(
        ics_relative=lambda t: t["ics_l2"] / t["grad_norm"])
    return settled.groupby("run")[["ics_l2", "ics_relative", "ics_cosine"]].mean()


def _from_landscape(landscape: pd.DataFrame) -> pd.DataFrame:
    settled = landscape[landscape["step"] >= SETTLED_STEP].assign(
        loss_range=lambda t: t["loss_max"] - t["loss_min"])
    return settled.groupby("run")[["loss_range", "grad_change", "beta_smoothness"]].mean()


DERIVED_FROM = {"activations": _from_activations, "gradients": _from_gradients,
                "norm_affine": _from_norm_affine, "ics": _from_ics,
                "landscape": _from_landscape}


def probe_outcomes(extras: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A `run` column and whichever numbers above the recorded tables give (a run without the
    table has no value: the report counts it as such, never as zero)."""
    parts = [derive(extras[name]) for name, derive in DERIVED_FROM.items()
             if name in extras and not extras[name].empty]
    if not parts:
        return pd.DataFrame(columns=["run"])
    joined = pd.concat(parts, axis=1)
    joined.index.name = "run"
    return joined.astype(float).reset_index()

"""Summarize the Santurkar probes (ics.csv, landscape.csv) of a study's runs, per run and as
paired differences against a reference norm, into <study>/report/probe_summary.csv.

    python scripts/probe_summary.py results/mechanism [--reference none] [--after-step 100]

Per run (one row: norm.kind, seed, status), over the sampled steps at or after --after-step
(the first steps of a run are dominated by its initialisation): the mean over steps and
layers of ics_l2, of ics_l2 / grad_norm (the shift relative to the gradient) and of
ics_cosine; the mean over steps of the loss range along the gradient (loss_max - loss_min),
of grad_change and of beta_smoothness. Then, per other norm, the seed-paired differences
with a 95% Student-t interval (bnexp.report.stats.t_interval), printed and written as rows of
kind `paired`. Runs that did not complete are listed and left out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from bnexp.report.stats import t_interval

MEASURES = ["ics_l2", "ics_relative", "ics_cosine", "loss_range", "grad_change",
            "beta_smoothness"]


def run_row(folder: Path, after_step: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    row = {"run_id": folder.name, "norm.kind": summary["config"]["norm.kind"],
           "seed": summary["config"]["seed"], "status": summary["status"]}
    ics = pd.read_csv(folder / "ics.csv")
    ics = ics[ics["step"] >= after_step]
    landscape = pd.read_csv(folder / "landscape.csv")
    landscape = landscape[landscape["step"] >= after_step]
    row.update({
        "ics_l2": ics["ics_l2"].mean(),
        "ics_relative": (ics["ics_l2"] / ics["grad_norm"]).mean(),
        "ics_cosine": ics["ics_cosine"].mean(),
        "loss_range": (landscape["loss_max"] - landscape["loss_min"]).mean(),
        "grad_change": landscape["grad_change"].mean(),
        "beta_smoothness": landscape["beta_smoothness"].mean(),
        "sampled_steps": int(landscape["step"].nunique()),
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--reference", default="none")
    parser.add_argument("--after-step", type=int, default=100)
    args = parser.parse_args()
    folders = sorted(p.parent for p in args.study.glob("*/landscape.csv")
                     if (p.parent / "summary.json").exists())  # not report/: run folders
    runs = pd.DataFrame([run_row(folder, args.after_step) for folder in folders])
    left_out = runs[runs["status"] != "completed"]
    for _, run in left_out.iterrows():
        print(f"left out: {run['run_id']} ({run['status']})")
    runs = runs[runs["status"] == "completed"]
    paired = []
    reference = runs[runs["norm.kind"] == args.reference].set_index("seed")
    for kind in sorted(set(runs["norm.kind"]) - {args.reference}):
        contrast = runs[runs["norm.kind"] == kind].set_index("seed")
        for measure in MEASURES:
            both = pd.concat([reference[measure], contrast[measure]], axis=1,
                             join="inner").dropna()
            n, mean, _, low, high = t_interval(both.iloc[:, 1] - both.iloc[:, 0])
            paired.append({"kind": "paired", "contrast": kind, "reference": args.reference,
                           "measure": measure, "n": n, "mean": mean, "ci_low": low,
                           "ci_high": high})
            print(f"{kind} - {args.reference}: {measure} {mean:+.4g} [{low:+.4g}, {high:+.4g}]"
                  f" (n = {n}); means {both.iloc[:, 0].mean():.4g} -> {both.iloc[:, 1].mean():.4g}")
    out = args.study / "report" / "probe_summary.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([runs.assign(kind="run"), pd.DataFrame(paired)]).to_csv(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

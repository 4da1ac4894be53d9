"""Report benchmark: how long `bnexp-report` takes on a study of N runs.

    .venv/bin/python scripts/bench_report.py              # 200 runs (the README's figure)
    .venv/bin/python scripts/bench_report.py --runs 20    # seconds; CI checks it runs

It writes N run folders in bnexp's record format (summary.json with the flat config, and a
metrics.csv of 60 train and 60 test rows): 5 norm kinds x 4 batch sizes x 2 learning rates
x seeds, with a declared comparison, so every part of the report (statistics, verdicts, all
comparison figures, both page formats) is timed. It prints the wall time of build_report and
writes it as JSON. Nothing here is a test.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
import warnings
from pathlib import Path

from bnexp.report.build import build_report

KINDS = ("batch", "none", "group", "layer", "ghost")
BATCHES = (8, 16, 64, 512)
RATES = (0.01, 0.1)
ROWS = 60  # evaluations per run


def write_run(folder: Path, config: dict, accuracy: float) -> None:
    folder.mkdir(parents=True)
    lines = ["step,epoch,examples,split,loss,accuracy,lr,seconds"]
    for step in range(1, ROWS + 1):
        progress = step / ROWS
        for split, loss in (("train", 2.3 * (1 - progress) + 0.3), ("test", 2.3 * (1 - progress) + 0.4)):
            lines.append(f"{step * 10},{progress},{step * 640},{split},{loss:.4f},"
                         f"{accuracy * progress:.4f},0.1,{step}")
    (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    (folder / "summary.json").write_text(json.dumps({
        "status": "completed", "config": config, "steps": ROWS * 10, "train_seconds": 1.0,
        "final_test_accuracy": accuracy, "final_train_accuracy": accuracy + 0.03,
        "final_test_loss": 0.4, "final_train_loss": 0.3, "initial_train_loss": 2.3}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="run folders to report (200)")
    parser.add_argument("--out", type=Path, default=Path("bench_report.json"))
    args = parser.parse_args()
    cells = list(itertools.product(KINDS, BATCHES, RATES))
    seeds = max(1, -(-args.runs // len(cells)))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "study"
        question = {"question.comparisons": [{"factor": "norm.kind", "reference": "none"}]}
        runs = 0
        for (kind, batch, rate), seed in itertools.product(cells, range(seeds)):
            if runs == args.runs:
                break
            config = {"seed": seed, "norm.kind": kind, "train.batch_size": batch,
                      "optim.lr": rate, "data.name": "fashion_mnist", **question}
            accuracy = 0.7 + 0.1 * (kind == "batch") + seed / 100 - batch / 10_000
            write_run(root / f"run{runs:04d}", config, accuracy)
            runs += 1
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = build_report(root)
        seconds = time.perf_counter() - started
    print(f"{runs} runs, {len(report.summary)} variants: report in {seconds:.1f} s")
    args.out.write_text(json.dumps({"runs": runs, "variants": len(report.summary),
                                    "seconds": round(seconds, 2)}) + "\n")


if __name__ == "__main__":
    main()

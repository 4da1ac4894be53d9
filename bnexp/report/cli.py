"""bnexp-report: the command-line face of bnexp.report.build."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from bnexp.report.build import Options, build_report


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bnexp-report",
        description="Turn a folder of bnexp runs into tables (runs.csv, curves.csv, "
                    "summary.csv/.md), comparison figures (PNG + SVG) and a report page "
                    "(report.html, report.md). Factors are the config keys that vary; seed is "
                    "the replicate.",
        epilog="example: bnexp-report results/placement --x norm.placement --hue "
               "norm.affine --col model.activation")
    parser.add_argument("results", type=Path, help="folder searched recursively for runs")
    parser.add_argument("--out", type=Path, help="output folder (default: RESULTS/report)")
    parser.add_argument("--metric", default="final_test_accuracy",
                        help="summary metric: final_test_accuracy (default), final_test_loss, "
                             "best_test_accuracy, final_train_accuracy, generalization_gap, "
                             "train_seconds")
    parser.add_argument("--x", help="factor on the x axis of the comparison figure")
    parser.add_argument("--hue", help="comma-separated factors that colour lines and bars "
                                      "(default: the categorical factors)")
    parser.add_argument("--col", help="factor split into panels")
    parser.add_argument("--row", help="second factor split into panels")
    parser.add_argument("--seeds", action="store_true", help="draw each seed's curve too")
    parser.add_argument("--vs-step", action="store_true",
                        help="learning curves against SGD steps instead of examples seen")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if not args.results.is_dir():
        sys.exit(f"bnexp-report: {args.results} is not a folder")
    options = Options(metric=args.metric, x=args.x, col=args.col, row=args.row,
                      hue=args.hue.split(",") if args.hue else None, seeds=args.seeds,
                      curves_x="step" if args.vs_step else "examples")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            report = build_report(args.results, args.out, options)
        except ValueError as error:
            sys.exit(f"bnexp-report: {error}")
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    print(f"{len(report.summary)} variants over factors {', '.join(report.factors) or '(none)'}; "
          f"{len(report.incomplete)} incomplete runs; report in {report.out / 'report.html'} "
          f"({time.perf_counter() - started:.1f} s)")

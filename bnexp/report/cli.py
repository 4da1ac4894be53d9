"""bnexp-report: the command-line face of bnexp.report.build."""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from bnexp.report.build import Options, build_report
from bnexp.report.metrics import METRIC_INFO


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
    parser.add_argument("--metric",
                        help="primary metric (default: the study's question.metric, else "
                             f"final_test_accuracy): {', '.join(METRIC_INFO)}, or a recorded "
                             "per-eval-mode key such as final_test_accuracy_homogeneous")
    parser.add_argument("--baseline", action="append", metavar="KEY=VALUE",
                        help="a comparison: every other value of KEY against VALUE, paired by "
                             "seed (repeatable; default: the study's question.comparisons)")
    parser.add_argument("--target", type=float,
                        help="test accuracy that examples_to_target / steps_to_target count to "
                             "(default: the study's question.target)")
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
    options = Options(metric=args.metric, baselines=args.baseline, target=args.target, x=args.x, col=args.col, row=args.row,
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

"""The report page's content, in reading order: the question, the verdicts, the figure that
answers it, the summary table, the other figures, what varied, the files, the runs and the
provenance. Returns `page` blocks, which become report.md and report.html alike."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bnexp.report import page
from bnexp.report.metrics import metric_info
from bnexp.report.question import Question
from bnexp.report.stats import aliases, read_by_every_run, sort_key, summary_cells, text
from bnexp.report.verdicts import signed
from bnexp.schema import REPORTED

HEADLINE_KEYS = [  # what the page names first among the settings held fixed
    "data.name", "data.train_subset", "data.test_subset", "model.name", "model.depth",
    "model.width", "model.activation", "norm.kind", "norm.placement", "norm.affine",
    "optim.name", "optim.lr", "optim.schedule", "train.batch_size", "train.epochs",
    "train.steps",
]
COMPARISON_HEADER = ["within", "n", "contrast − reference [95% CI], verdict",
                     "left out (seed: why)"]


def blocks(results: Path, runs: pd.DataFrame, summary: pd.DataFrame, verdicts: pd.DataFrame,
           factors: list[str], fixed: dict, question: Question,
           figures: list[tuple[str, str, str, str]], probe_tables: list[str]
           ) -> list[page.Block]:
    counts = ", ".join(f"{(runs['status'] == s).sum()} {s}" for s in REPORTED
                       if (runs["status"] == s).any())
    fixed_text = _fixed_text(fixed)
    figure_blocks = [page.Figure(name, title, f"{caption} Fixed: {fixed_text}.", alt)
                     for name, title, caption, alt in figures]
    out: list[page.Block] = [
        page.Heading(f"bnexp report: {results.name}", 1),
        page.Paragraph(f"{len(runs)} runs ({counts}); generated "
                       f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}."),
        page.Contents(),
        page.Heading("Question"),
        *_question(question),
        page.Heading("Verdict"),
        *_verdict(verdicts, question),
        *figure_blocks[:1],
        page.Heading(f"Summary: {question.metric}"),
        page.Paragraph("Per variant: runs by outcome, then mean and sample standard deviation "
                       "over completed seeds with a 95% Student-t interval (n − 1 degrees of "
                       "freedom). Diverged runs and runs that failed to train (completed "
                       "within 2 points of chance, or train loss never below its start) are "
                       "counted, never averaged."),
        page.Table(*summary_cells(summary, factors, question.metric)),
        *([page.Heading("More figures")] if len(figure_blocks) > 1 else []),
        *figure_blocks[1:],
        page.Heading("What varied and what was held fixed"),
        page.Paragraph(_varied(runs, factors)),
        page.Paragraph(f"Held fixed: {fixed_text}."),
        page.Details(f"All {len(fixed)} settings every run shared",
                     ", ".join(f"`{k}={v}`" for k, v in fixed.items() if k != "seed") or "none"),
        page.Heading("Files"),
        page.Paragraph("Every number on this page comes from these tables, written next to it "
                       "(and committed with the curated studies' reports):"),
        page.Table(["file", "holds"], [[name, holds] for name, holds in FILES.items()],
                   {(i, 0): name for i, name in enumerate(FILES)}),
        *([page.Paragraph("The probe figures read " + ", ".join(f"`{n}`" for n in probe_tables)
                          + ", also written here (one row per probed event, with each run's "
                          "factors; the curated reports commit the small ICS and landscape tables, "
                          "not the large activation, gradient and γ/β ones).")]
          if probe_tables else []),
        page.Heading("Runs"),
        _runs_table(runs, factors, question.metric),
        page.Heading("Provenance"),
        page.Paragraph(_provenance(runs, results)),
    ]
    return out


FILES = {  # the tables every report writes (bnexp.report.build), each linked from the page
    "runs.csv": "one row per run: its config, outcome and summary values",
    "curves.csv": "one row per logged train interval and test evaluation of every run",
    "summary.csv": "one row per variant: outcome counts, mean, std and 95% CI per metric",
    "comparisons.csv": "one row per comparison cell: the seed pairs, their differences, "
                       "mean, std, 95% CI and verdict",
    "summary.md": "the summary and the paired comparisons as Markdown tables",
}


def _question(question: Question) -> list[page.Block]:
    parts = []
    if question.claim:
        parts.append(page.Paragraph(f"**Claim.** {question.claim}"))
    else:
        parts.append(page.Paragraph("No claim is recorded for these runs (an ad hoc folder); "
                                    "the verdicts below contrast the comparisons given."))
    if question.source:
        parts.append(page.Paragraph(f"**Source.** {question.source}"))
    if question.command:
        parts.append(page.Paragraph(f"**Reproduce.** `{question.command}`"))
    target = (f" (target test accuracy {question.target:g})"
              if question.metric.endswith("_to_target") else "")
    parts.append(page.Paragraph(f"**Primary metric.** `{question.metric}`{target}: "
                                f"{metric_info(question.metric).label}."))
    return parts


def _verdict(verdicts: pd.DataFrame, question: Question) -> list[page.Block]:
    skipped = [page.Paragraph(f"Not tested here: {problem}.") for problem in question.skipped]
    if verdicts.empty:
        return skipped + [page.Paragraph(
            "No comparison could be made: pass `--baseline KEY=VALUE` to bnexp-report, or "
            "list `question.comparisons` in the study.")]
    return skipped + _verdict_tables(verdicts, question)


def _verdict_tables(verdicts: pd.DataFrame, question: Question) -> list[page.Block]:
    if verdicts.empty:
        return [page.Paragraph("No comparison is declared: pass `--baseline KEY=VALUE` to "
                               "bnexp-report, or list `question.comparisons` in the study.")]
    info = metric_info(question.metric)
    parts: list[page.Block] = [page.Paragraph(
        "Each row contrasts one value of a factor with its reference, within one combination "
        "of the other factors, over the seeds with a completed run on both sides (paired by "
        f"seed). Differences are contrast − reference in {info.unit}; the wording never claims "
        "more than the 95% interval allows."
        + ("" if question.declared else " No comparison was declared: norm.kind=none is the "
                                        "default reference."))]
    for name, rows in verdicts.groupby("comparison", sort=False):
        parts += [page.Heading(name, 3), page.Paragraph(headline(rows)),
                  page.Table(*_comparison_cells(rows))]
    return parts


def headline(rows: pd.DataFrame) -> str:
    """How the cells of one comparison came out, counted: the answer in one sentence."""
    words = rows["verdict"]
    better = words.str.contains("contrast better").sum()
    worse = words.str.contains("contrast worse").sum()
    bounded = rows[words.str.contains("no difference larger")]
    unresolved = words.str.contains("unresolved|not testable|single pair").sum()
    parts = [f"**{len(rows)} cell{'s' * (len(rows) != 1)}**: contrast better in {better}, "
             f"worse in {worse}"]
    if len(bounded):
        widest = bounded["ci_high"].abs().combine(bounded["ci_low"].abs(), max).max()
        info = metric_info(rows["metric"].iloc[0])
        parts.append(f"no difference detectable in {len(bounded)} (their widest interval "
                     f"still allows {signed(widest, info).lstrip('+')} {info.unit})")
    if unresolved:
        parts.append(f"unresolved or not testable in {unresolved}")
    sizes = sorted(rows["n"].unique())
    return (", ".join(parts) + f"; n = {'–'.join(map(str, [sizes[0], sizes[-1]])) if len(sizes) > 1 else sizes[0]} "
            "seed pairs per cell.")


def _comparison_cells(verdicts: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    rows = [[row["within"], str(row["n"]), row["verdict"],
             row["left_out"] if isinstance(row["left_out"], str) and row["left_out"] else "–"]
            for _, row in verdicts.iterrows()]
    return COMPARISON_HEADER, rows


def summary_markdown(summary: pd.DataFrame, verdicts: pd.DataFrame, factors: list[str],
                     metric: str) -> str:
    """summary.md: the per-variant summary, then the paired comparisons, as the page has them."""
    blocks: list[page.Block] = [page.Table(*summary_cells(summary, factors, metric)),
                                page.Heading("Paired comparisons")]
    if verdicts.empty:
        return page.markdown(blocks + [page.Paragraph("No comparison declared.")])
    for name, group in verdicts.groupby("comparison", sort=False):
        blocks += [page.Heading(name, 3), page.Paragraph(headline(group)),
                   page.Table(*_comparison_cells(group))]
    return page.markdown(blocks)


def _fixed_text(fixed: dict) -> str:
    def short(key: str) -> str:  # data.name -> data, model.depth -> depth
        return key.split(".")[0] if key.endswith(".name") else key.split(".")[-1]
    shown = [f"{short(key)}={fixed[key]}" for key in HEADLINE_KEYS
             if key in fixed and fixed[key] is not None and not pd.isna(fixed[key])]
    return ", ".join(shown) if shown else "nothing"


def _varied(runs: pd.DataFrame, factors: list[str]) -> str:
    following = aliases(runs, factors)

    def with_aliases(factor: str) -> str:
        keys = [f"`{key}`" + ("" if read_by_every_run(runs[key]) else " where read")
                for key in following.get(factor, [])]
        return f" (with {', '.join(keys)}, one to one)" if keys else ""
    varied = "; ".join(
        f"`{f}`: {', '.join(sorted(runs[f].map(text).unique(), key=sort_key))}"
        f"{with_aliases(f)}" for f in factors) or "nothing (a single variant)"
    seeds = sorted(runs["seed"].astype(str).unique(), key=sort_key) if "seed" in runs else []
    return f"Factors: {varied}. Replicates: seeds {', '.join(seeds) or '–'}."


def _runs_table(runs: pd.DataFrame, factors: list[str], metric: str) -> page.Table:
    columns = [*factors, *(["seed"] if "seed" in runs else [])]
    header = ["run folder", "status", *columns, metric, "note"]
    ordered = sorted(runs.index, key=lambda i: [sort_key(runs.at[i, c]) for c in columns])
    rows = []
    for index in ordered:
        run = runs.loc[index]
        value = pd.to_numeric(pd.Series([run.get(metric)]), errors="coerce").iloc[0]
        rows.append([run["run"], str(run["status"]), *[str(run[c]) for c in columns],
                     "–" if pd.isna(value) else f"{value:.4g}", _text(run.get("problem"))])
    return page.Table(header, rows)


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _provenance(runs: pd.DataFrame, results: Path) -> str:
    def values(column: str) -> str:
        return ", ".join(sorted(runs[column].dropna().astype(str).unique())) if column in runs else "–"
    started = runs["started_at"].dropna() if "started_at" in runs else pd.Series(dtype=str)
    span = f"{started.min()} to {started.max()}" if not started.empty else "–"
    return (f"Run folders under `{results.name}/`. bnexp {values('bnexp_version')}; torch "
            f"{values('torch_version')}; devices {values('device')} ({values('device_name')}); "
            f"git {values('git_commit')}; runs started {span}.")

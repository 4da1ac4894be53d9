"""A sweep as a whole: every job checked before the first starts, one table at the end.

The jobs are expanded exactly as Hydra's basic sweeper does (its own `split_arguments` on
`hydra.sweeper.params` plus the command line), each composed by Hydra's config loader and
checked like a single run. Jobs report their outcomes to a launch log (`jobs.LAUNCH_LOG_ENV`),
which works for every launcher because the log lives in the study folder and the variable is
inherited by local processes, joblib workers and SLURM jobs alike.

The closing table never depends on the launch log alone: a line torn by concurrent appends
is skipped, and a run without a report is counted from its own record (`summary.json`),
so a failed run is never hidden and the sweep's exit status stays right.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from bnexp.identity import run_folder
from bnexp.records import recorded_status
from bnexp.schema import FAILING, LAUNCH_OUTCOMES, RECORDED, Status



def expand_jobs(sweep_cfg: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch."""
    params = sweep_cfg.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(sweep_cfg.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in _basic_sweeper_split(parsed) for job in batch]


def _basic_sweeper_split(parsed: list) -> list[list[list[str]]]:
    """The job batches Hydra's basic sweeper makes of parsed overrides. Its only use of a
    private Hydra module (`hydra._internal`), checked against hydra-core 1.3.8; if a Hydra
    release moves it, this is the one place to change."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(parsed, None)


def compose_job(sweep_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The job's config, composed once per sweep: the checking callback and the packing
    sweeper both read every job, and composing is the slowest step of a launch (~0.2 s a job
    on a 2-core CPU). Callers must not modify the config they get."""
    global _composed
    if _composed[0] is not sweep_cfg:
        _composed = (sweep_cfg, {})
    jobs = _composed[1]
    key = tuple(overrides)
    if key not in jobs:
        loader = GlobalHydra.instance().config_loader()
        jobs[key] = loader.load_sweep_config(sweep_cfg, list(overrides))
    return jobs[key]


_composed: tuple[Optional[DictConfig], dict[tuple[str, ...], DictConfig]] = (None, {})


def open_launch_log(study: Path) -> Path:
    """A fresh, empty launch log under `<study>/.launches/`."""
    folder = study / ".launches"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{stamp}-{os.getpid()}.jsonl"
    path.write_text("")
    return path


def read_launch_log(path: Path) -> tuple[list[dict], int]:
    """The outcomes reported so far, and how many lines could not be read (torn); progress
    events (`jobs.report_event`) are neither."""
    outcomes, _, torn = _read_entries(path)
    return outcomes, torn


def read_progress(path: Path) -> tuple[int, int]:
    """(runs reported, packs training now) from the launch log."""
    outcomes, events, _ = _read_entries(path)
    started = sum(event["event"] == "pack started" for event in events)
    return len(outcomes), started - sum(event["event"] == "pack ended" for event in events)


def _read_entries(path: Path) -> tuple[list[dict], list[dict], int]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    outcomes, events, torn = [], [], 0
    for line in filter(str.strip, lines):
        try:
            entry = json.loads(line)
        except ValueError:
            torn += 1
            continue
        if isinstance(entry, dict) and {"status", "folder"} <= set(entry):
            outcomes.append({"detail": "", **entry})
        elif isinstance(entry, dict) and "event" in entry:
            events.append(entry)
        else:
            torn += 1
    return outcomes, events, torn


def closing_table(launch_log: Path, folders: list[Path]) -> tuple[str, bool]:
    """The sweep's table and whether it failed (a run failed, or its record is unreadable).

    `folders` are the sweep's run folders; one that reported nothing is counted by its own
    record when it has one, else as "no report"."""
    outcomes, torn = read_launch_log(launch_log)
    reported = {outcome["folder"] for outcome in outcomes}
    unreported = 0
    for folder in dict.fromkeys(str(folder) for folder in folders):
        if folder in reported:
            continue
        status = recorded_status(Path(folder))
        if status in (*RECORDED, Status.unreadable):  # what a run folder can say
            outcomes.append({"status": status, "folder": folder,
                             "detail": "no launch report; counted from its record"})
        else:
            unreported += 1
    table = outcome_table(outcomes, unreported, torn)
    return table, any(outcome["status"] in FAILING for outcome in outcomes)


def outcome_table(outcomes: list[dict], unreported: int, torn: int = 0) -> str:
    """Counts by status, the folders that need attention, and jobs that never reported."""
    counts = Counter(outcome["status"] for outcome in outcomes)
    lines = ["", "sweep summary", "-------------"]
    lines += [f"{status:<11} {counts.get(status, 0):>5}" for status in LAUNCH_OUTCOMES]
    if unreported > 0:
        lines.append(f"{'no report':<11} {unreported:>5}   (not run yet, killed, or still "
                     "running elsewhere)")
    if torn:
        lines.append(f"({torn} unreadable line(s) in the launch log were skipped)")
    for status in (Status.failed, Status.unreadable, Status.interrupted, Status.busy):
        for outcome in outcomes:
            if outcome["status"] == status:
                lines.append(f"{status}: {outcome['folder']}  {outcome['detail']}")
    return "\n".join(lines)


def job_folders(sweep_cfg: DictConfig, jobs: list[DictConfig]) -> list[Path]:
    launch_dir = sweep_cfg.hydra.runtime.cwd
    return [run_folder(job, launch_dir) for job in jobs]

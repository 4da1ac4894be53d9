"""A sweep as a whole: every job checked before the first starts, one table at the end.

The jobs are expanded exactly as Hydra's basic sweeper does (its own `split_arguments` on
`hydra.sweeper.params` plus the command line), each composed by Hydra's config loader and
checked like a single run. Jobs report their outcomes to a launch log (`jobs.LAUNCH_LOG_ENV`),
which works for every launcher because the log lives in the study folder and the variable is
inherited by local processes, joblib workers and SLURM jobs alike.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from bnexp.identity import run_id, study_dir

STATUSES = ["completed", "diverged", "failed", "skipped", "busy"]


def expand_jobs(sweep_cfg: DictConfig) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch."""
    params = sweep_cfg.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(sweep_cfg.hydra.overrides.task)
    loader = GlobalHydra.instance().config_loader()
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_job(sweep_cfg: DictConfig, overrides: list[str]) -> DictConfig:
    return GlobalHydra.instance().config_loader().load_sweep_config(sweep_cfg, overrides)


def open_launch_log(study: Path) -> Path:
    """A fresh, empty launch log under `<study>/.launches/`."""
    folder = study / ".launches"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = folder / f"{stamp}-{os.getpid()}.jsonl"
    path.write_text("")
    return path


def read_launch_log(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def outcome_table(outcomes: list[dict], expected: int) -> str:
    """Counts by status, the failed and busy folders, and jobs that never reported."""
    counts = Counter(outcome["status"] for outcome in outcomes)
    lines = ["", "sweep summary", "-------------"]
    lines += [f"{status:<10} {counts.get(status, 0):>5}" for status in STATUSES]
    missing = expected - len(outcomes)
    if missing > 0:
        lines.append(f"{'no report':<10} {missing:>5}   (killed, or still running elsewhere)")
    for status in ("failed", "busy"):
        for outcome in outcomes:
            if outcome["status"] == status:
                lines.append(f"{status}: {outcome['folder']}  {outcome['detail']}")
    return "\n".join(lines)


def job_folders(sweep_cfg: DictConfig, jobs: list[DictConfig]) -> list[Path]:
    launch_dir = sweep_cfg.hydra.runtime.cwd
    return [study_dir(job, launch_dir) / run_id(job) for job in jobs]

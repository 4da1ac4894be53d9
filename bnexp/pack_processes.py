"""A pack split over worker processes of one thread each.

On a CPU a small model's pack is bound by the dispatch of its operations, which a second
thread does not speed up; a second process running half the pack does (scripts/
bench_packed.py measures both). `pack=auto` with the local launcher therefore trains a pack
as one part per core, each part a pack of its own in a spawned process (a fork of a process
that has started torch's threads can hang). Each part keeps every rule of `execute_pack`:
its members' locks, records, and interruption handling; an interruption of this process
(Ctrl-C, SIGTERM) stops the parts too, and each records nothing but its checkpoints.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bnexp import interrupts, pack_jobs
from bnexp.jobs import Outcome
from bnexp.packing import PackedJob


def parts_for(members: list[PackedJob], launcher: Any, pack: str) -> int:
    """How many processes to split a pack over: one per core with pack=auto, the local
    launcher and a CPU device; one otherwise (joblib and SLURM already spread the jobs)."""
    from bnexp.session import resolve_device

    if pack != "auto" or "BasicLauncher" not in str(launcher.get("_target_", "")):
        return 1
    if resolve_device(members[0].config.train.device).type != "cpu":
        return 1
    return max(1, min(len(os.sched_getaffinity(0)), len(members)))


def split(members: list[PackedJob], parts: int) -> list[list[PackedJob]]:
    """Consecutive runs of members (neighbours share their norm settings: one wide layer)."""
    size = math.ceil(len(members) / parts)
    return [members[start: start + size] for start in range(0, len(members), size)]


def execute_in_processes(members: list[PackedJob], parts: int) -> list[Outcome]:
    if parts <= 1:
        return pack_jobs.execute_pack(members)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(parts, mp_context=context) as pool:
        futures = [pool.submit(_train_part, part) for part in split(members, parts)]
        try:
            return [outcome for future in futures for outcome in future.result()]
        except BaseException:
            for process in multiprocessing.active_children():
                process.terminate()  # SIGTERM: each part records its interruption
            raise


def _train_part(members: list[PackedJob]) -> list[Outcome]:
    with interrupts.sigterm_raises():
        return pack_jobs.execute_pack(members, threads=1)

"""Which runs of a sweep train together as one pack, and the sweeper that launches packs.

A pack is a set of runs that differ only in keys that change neither a tensor's shape nor
the sequence of operations (`PACKABLE_KEYS`): every other key, and a few facts derived from
them (dropout on or off), must be equal. Some runs never pack (`unpackable`): other
optimizers than SGD, probes, torch.compile, bf16 autocast. `pack` (a top-level key, not part
of a run's identity) chooses:

    pack=off   every run alone, as before
    pack=N     packs of at most N runs
    pack=auto  packs where `auto_packs` says a pack is faster, of at most `AUTO_MAX_MEMBERS`

The sweeper (`hydra_plugins.bnexp_packing`) is Hydra's basic sweeper with its job list
rewritten by `pack_batch`: a pack becomes one job
(its first member's overrides plus `pack_members=<file>`), so every launcher (local,
joblib, SLURM) runs a pack as it runs a job: a pack per joblib worker, a pack per SLURM
array task. The file, under `<study>/.packs/`, holds each member's composed config, overrides
and run folder; the job trains them with `bnexp.jobs.execute_pack`.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from bnexp.config import Compile, OptimName, Trainable, probes_on
from bnexp.norm import NORMS
from bnexp.identity import run_folder, semantic_config, study_dir, task_config
from bnexp.sweep import compose_job

PACKABLE_KEYS = (  # may differ within a pack: each member computes its own values
    "seed",
    "optim.lr", "optim.schedule", "optim.warmup_steps", "optim.step_milestones",
    "optim.step_gamma", "optim.scale_rule", "optim.base_batch_size",  # the LR schedule
    "optim.momentum", "optim.weight_decay", "optim.decay_norm_bias",
    "model.init", "model.init_std",
    "model.dropout",  # its rate; on (> 0) or off is part of the pack's structure
    "norm.momentum", "norm.eps",
    "data.subset_seed",
)
AUTO_MAX_MEMBERS = 16  # pack=auto: members per pack (the gain flattens beyond; bench.py)
PACK_FOLDER = ".packs"


def unpackable(cfg: DictConfig) -> Optional[str]:
    """Why this run never trains in a pack, or None."""
    if cfg.optim.name != OptimName.sgd:
        return f"optim={cfg.optim.name.value} (packs implement SGD)"
    if probes_on(cfg.probe):
        return "probes are on (they hook one model's layers)"
    if cfg.train.compile != Compile.off:
        return "train.compile is on"
    if cfg.train.amp:
        return "train.amp is on"
    if cfg.train.trainable == Trainable.random_matched:
        return "train.trainable=random_matched (its masks are one model's)"
    if cfg.norm.kind in NORMS and not NORMS[cfg.norm.kind].packs:
        return f"norm.kind={cfg.norm.kind} has no packed form"
    if cfg.train.freeze_norm_stats_at is not None:
        return "train.freeze_norm_stats_at is set (FrozenBN switches one model's norms)"
    return None


def pack_key(cfg: DictConfig) -> str:
    """Equal for runs that may share a pack: the semantic config less `PACKABLE_KEYS`,
    plus whether dropout is on."""
    values = {key: value for key, value in semantic_config(cfg).items()
              if key not in PACKABLE_KEYS}
    values["dropout_on"] = cfg.model.dropout > 0
    return json.dumps(values, sort_keys=True, default=str)


AUTO_CPU_MAX_BATCH = 64  # pack=auto on a CPU: the MLP up to this batch (bench_packed.py)


def auto_packs(cfg: DictConfig) -> bool:
    """pack=auto's rule, from scripts/bench_packed.py (README, Performance): a pack pays
    where a step is bound by per-operation dispatch. On a CPU that is the MLP at batch 8 and
    64 (K = 16: 2.8x and 1.9x the model-steps/s of single runs); at 512 a pack ran at
    0.88-0.98x, and ResNet-20's grouped convolutions at 0.65x (K = 16). On a GPU both models
    are dispatch-bound at these sizes."""
    from bnexp.session import resolve_device

    if resolve_device(cfg.train.device).type != "cpu":
        return True
    return cfg.model.name == "mlp" and cfg.train.batch_size <= AUTO_CPU_MAX_BATCH


def group_packs(jobs: list[DictConfig], pack: str) -> list[list[int]]:
    """The indices of `jobs`, grouped into packs (single runs are packs of one), in the
    order of each pack's first job."""
    if pack == "off":
        return [[index] for index in range(len(jobs))]
    limit = AUTO_MAX_MEMBERS if pack == "auto" else int(pack)
    groups: dict[str, list[list[int]]] = {}
    packs: list[list[int]] = []
    for index, job in enumerate(jobs):
        if unpackable(job) is not None or (pack == "auto" and not auto_packs(job)):
            packs.append([index])
            continue
        open_packs = groups.setdefault(pack_key(job), [])
        if not open_packs or len(open_packs[-1]) >= limit:
            open_packs.append([])
            packs.append(open_packs[-1])
        open_packs[-1].append(index)
    return packs


@dataclass
class PackedJob:
    """One member of a pack file: what its single job would have received."""

    overrides: list[str]
    config: DictConfig  # the task config (no hydra node), as Hydra hands a job
    folder: Path


def write_pack_file(study: Path, members: list[PackedJob]) -> Path:
    folder = study / PACK_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    names = "\n".join(str(member.folder) for member in members)
    path = folder / f"{hashlib.sha256(names.encode()).hexdigest()[:16]}.pkl"
    path.write_bytes(pickle.dumps(members))
    return path


def read_pack_file(path: str) -> list[PackedJob]:
    return pickle.loads(Path(path).read_bytes())


def pack_batch(sweep_config: DictConfig, batch: list[list[str]]) -> list[list[str]]:
    """A batch of the basic sweeper's jobs with each pack rewritten into one job: its first
    member's overrides plus `pack_members=<pack file>` (`sweep_config.pack` decides)."""
    launch_dir = sweep_config.hydra.runtime.cwd
    composed = [compose_job(sweep_config, list(job)) for job in batch]
    jobs = []
    for indices in group_packs(composed, str(sweep_config.pack)):
        if len(indices) == 1:
            jobs.append(list(batch[indices[0]]))
            continue
        members = [PackedJob(list(batch[i]), task_config(composed[i]),
                             run_folder(composed[i], launch_dir)) for i in indices]
        path = write_pack_file(study_dir(composed[indices[0]], launch_dir), members)
        jobs.append([*batch[indices[0]], f"pack_members={path}"])
    return jobs

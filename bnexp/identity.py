"""Deterministic run identity: where a run's folder is, derived from its config alone.

A run lives in `<results_dir>/<study>/<run-id>`. The run-id is a readable prefix (the values of
the keys people usually vary) and a hash of the semantic config: every resolved value that can
change what the run computes. The hash ignores the order of overrides (the config is a
mapping), whether a default was written out (`optim.lr=0.1` composes to the same value), and
keys that only say where or how to execute (listed in `NOT_SEMANTIC`), so relaunching a sweep
in any order finds the same folders.

The resolvers registered here let Hydra's `run.dir`/`sweep.dir` use the same functions.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnexp.config import flatten
from bnexp.norm import unused_keys

NOT_SEMANTIC = {
    "study", "results_dir", "rerun", "report",  # where records go, what a relaunch repeats
    "scale",  # a label: the budget it selects is in the semantic keys themselves
    "train.threads",  # execution only (joblib/SLURM choose it per job)
    "train.checkpoint_every",  # a resumed run equals an uninterrupted one
}
NAME_KEYS = [  # the readable prefix, in this order; values only
    ("model.name", ""), ("norm.kind", ""), ("norm.placement", ""), ("norm.affine", "affine-"),
    ("train.batch_size", "bs"), ("optim.lr", "lr"), ("seed", "s"),
]
HASH_CHARS = 10  # 40 bits: a collision among a study's runs is vanishingly unlikely


def task_config(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own node (present when called from an interpolation)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The flattened config less the keys that cannot change the run: execution keys, and
    norm keys the chosen norm does not read (`norm=none` with either placement is one run)."""
    values = flatten(task_config(cfg))
    ignored = NOT_SEMANTIC | unused_keys(values["norm.kind"])
    return {key: value for key, value in values.items() if key not in ignored}


def config_hash(cfg: DictConfig) -> str:
    canonical = json.dumps(semantic_config(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def run_id(cfg: DictConfig) -> str:
    """e.g. `mlp-batch-before-affine-both-bs64-lr0.1-s0-3f9c0e1a2b`."""
    values = semantic_config(cfg)
    parts = [f"{prefix}{values[key]}" for key, prefix in NAME_KEYS if key in values]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))
    return f"{readable}-{config_hash(cfg)}"


def study_dir(cfg: DictConfig, launch_dir: str) -> Path:
    """`<results_dir>/<study>`, absolute; a relative results_dir is taken from `launch_dir`."""
    return (Path(launch_dir) / Path(cfg.results_dir).expanduser() / cfg.study).resolve()


def register_resolvers() -> None:
    """`${bnexp_run_id:}` and `${bnexp_study_dir:}` for conf/config.yaml's hydra dirs."""
    if not OmegaConf.has_resolver("bnexp_run_id"):
        OmegaConf.register_new_resolver("bnexp_run_id", lambda *, _root_: run_id(_root_))
    if not OmegaConf.has_resolver("bnexp_study_dir"):
        OmegaConf.register_new_resolver(
            "bnexp_study_dir",
            lambda *, _root_: str(study_dir(_root_, _root_.hydra.runtime.cwd)))

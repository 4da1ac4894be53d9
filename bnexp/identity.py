"""Deterministic run identity: where a run's folder is, derived from its config alone.

A run lives in `<results_dir>/<study>/<run-id>` (a full-scale one in `<study>/full/`). The
run-id is a readable prefix (the values of the keys people usually vary) and a hash of the
semantic config: every resolved value that can change what the run computes. The hash ignores
the order of overrides (the config is a mapping), whether a default was written out
(`optim.lr=0.1` composes to the same value), keys that only say where or how to execute or
where the data is found (`NOT_SEMANTIC`), and keys the config does not read (`unread_keys`:
`model.init_std` unless `model.init=normal`, the norm keys a normalizer ignores, ...) and keys
added later at the value that reproduces the runs recorded before them (`ADDED_WITH_DEFAULT`),
so relaunching a sweep in any order finds the same folders and two configs that train the same
run share one.

A folder recorded by an older bnexp under its own rule (identity v1, which hashed every key
but the execution keys and the norm keys a normalizer ignores) is found and used as it is:
`run_folder` prefers it when the current folder does not exist, and `accepted_hashes` lets its
checkpoint resume. Nothing is renamed or retrained.

The resolvers registered here let Hydra's `run.dir`/`sweep.subdir` use the same functions.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnexp.config import CONFIG_DIR, READ_WHEN, Config, QuestionConfig, flatten
from bnexp.norm import unused_keys

EXECUTION_KEYS = {
    "study", "results_dir", "rerun", "report",  # where records go, what a relaunch repeats
    "pack", "pack_members",  # whether it trains packed with others: the numbers are its own
    "scale",  # a label: the budget it selects is in the semantic keys themselves
    "train.threads",  # execution only (joblib/SLURM choose it per job)
    "train.checkpoint_every",  # a resumed run equals an uninterrupted one
}
DESCRIPTIVE_KEYS = {f"question.{name}" for name in QuestionConfig.__dataclass_fields__}
NOT_SEMANTIC = EXECUTION_KEYS | DESCRIPTIVE_KEYS | {
    "data.root", "data.download",  # where the data is found, not which data (checksummed)
}
ADDED_SINCE_V1 = {"train.eval_every_steps"}  # keys v1 never saw: hashed there only when set
ADDED_LATER = (  # keys added after runs were recorded without them; their schema default
    # computes what those runs computed, so they are hashed only at another value: older
    # folders keep their ids and a relaunch finds them
    "train.sampler", "train.classes_per_batch", "train.freeze_norm_stats_at",
    "probe.ics", "probe.landscape", "probe.landscape_steps",
    "eval.precise_examples", "eval.precise_estimator", "data.test_subset",
)
ADDED_WITH_DEFAULT = {key: value for key, value in flatten(OmegaConf.structured(Config)).items()
                      if key in ADDED_LATER}  # the defaults, read from the schema
NAME_KEYS = [  # the readable prefix, in this order; values only
    ("model.name", ""), ("norm.kind", ""), ("norm.placement", ""), ("norm.affine", "affine-"),
    ("train.batch_size", "bs"), ("optim.lr", "lr"), ("seed", "s"),
]
HASH_CHARS = 10  # 40 bits: a collision among a study's runs is vanishingly unlikely


def unread_keys(values: dict[str, Any]) -> set[str]:
    """The keys of a flat config that it does not read (so they cannot change the run)."""
    unread = {key for key, read in READ_WHEN.items() if key in values and not read(values)}
    return unread | unused_keys(values.get("norm.kind", ""))


def task_config(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own node (present when called from an interpolation)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def _at_added_default(key: str, value: Any) -> bool:
    return key in ADDED_WITH_DEFAULT and value == ADDED_WITH_DEFAULT[key]


def _semantic(values: dict[str, Any]) -> dict[str, Any]:
    ignored = NOT_SEMANTIC | unread_keys(values)
    return {key: value for key, value in values.items()
            if key not in ignored and not _at_added_default(key, value)}


def semantic_config(cfg: DictConfig) -> dict[str, Any]:
    """The flattened config less the keys that cannot change the run."""
    return _semantic(flatten(task_config(cfg)))


def _digest(values: dict[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_CHARS]


def config_hash(cfg: DictConfig) -> str:
    return _digest(semantic_config(cfg))


def _hashes(values: dict[str, Any]) -> list[str]:
    """The current hash of a flat config, then the one identity v1 gave it (every key but
    the execution keys and the norm keys a normalizer ignores), if different."""
    ignored = EXECUTION_KEYS | DESCRIPTIVE_KEYS | unused_keys(values.get("norm.kind", ""))
    legacy = {key: value for key, value in values.items()
              if key not in ignored and not (key in ADDED_SINCE_V1 and value is None)
              and not _at_added_default(key, value)}
    return list(dict.fromkeys([_digest(_semantic(values)), _digest(legacy)]))


def accepted_hashes(cfg: DictConfig) -> list[str]:
    """The hashes a record of this config may carry: the current one first, then the one an
    older bnexp wrote."""
    return _hashes(flatten(task_config(cfg)))


def _readable(semantic: dict[str, Any]) -> str:
    parts = [f"{prefix}{semantic[key]}" for key, prefix in NAME_KEYS if key in semantic]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def run_id(cfg: DictConfig) -> str:
    """e.g. `mlp-batch-before-affine-both-bs64-lr0.1-s0-3f9c0e1a2b`."""
    semantic = semantic_config(cfg)
    return f"{_readable(semantic)}-{_digest(semantic)}"


def run_folder(cfg: DictConfig, launch_dir: str) -> Path:
    """`<study dir>/<run-id>`; or, when that does not exist, the folder an older bnexp
    recorded the same run in (its readable prefix names the same values; a full-scale run
    recorded before scales had their own folder lies in `<results_dir>/<study>` itself)."""
    values = flatten(task_config(cfg))
    readable = _readable(_semantic(values))
    folders = list(dict.fromkeys([study_dir(cfg, launch_dir),
                                  _unscaled_study_dir(cfg, launch_dir)]))
    current, *legacy = [folder / f"{readable}-{digest}" for folder in folders
                        for digest in _hashes(values)]
    if not current.exists():
        for candidate in legacy:
            if candidate.is_dir():
                return candidate
    return current


ROOT_SCALE = "quick"  # the scale whose runs live in the study folder itself


def scale_subfolders() -> set[str]:
    """The folders a study's other scales keep their runs in: `<study>/<scale>/` for every
    scale some study defines (conf/experiment/<study>/<scale>.yaml) but the root one."""
    return {path.stem for path in (CONFIG_DIR / "experiment").glob("*/*.yaml")} - {ROOT_SCALE}


def study_dir(cfg: DictConfig, launch_dir: str) -> Path:
    """`<results_dir>/<study>`, absolute (a relative results_dir is taken from
    `launch_dir`), with `/<scale>` for a scale other than quick: a study's full-scale runs
    never share a folder, a sweep or a report with its quick ones."""
    folder = _unscaled_study_dir(cfg, launch_dir)
    scale = cfg.get("scale")
    return folder if scale in (None, ROOT_SCALE) else folder / scale


def _unscaled_study_dir(cfg: DictConfig, launch_dir: str) -> Path:
    return (Path(launch_dir) / Path(cfg.results_dir).expanduser() / cfg.study).resolve()


def register_resolvers() -> None:
    """`${bnexp_run_folder:}` and `${bnexp_study_dir:}` for conf/config.yaml's hydra dirs."""
    if not OmegaConf.has_resolver("bnexp_run_folder"):
        OmegaConf.register_new_resolver(
            "bnexp_run_folder",
            lambda *, _root_: run_folder(_root_, _root_.hydra.runtime.cwd).name)
    if not OmegaConf.has_resolver("bnexp_study_dir"):
        OmegaConf.register_new_resolver(
            "bnexp_study_dir",
            lambda *, _root_: str(study_dir(_root_, _root_.hydra.runtime.cwd)))

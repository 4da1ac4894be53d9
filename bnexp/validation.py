"""Checks a config must pass before anything runs: values no type can express
(`train.batch_size=0`, `optim.lr=-1`, a non-finite number, an unknown key added with `+`)
and combinations (batch norm on a batch of one, Nesterov without momentum, ...), each a
`ConfigError` of one line naming the key and what is allowed. Norm-specific rules are the
norm registry's (`bnexp.norm.validate_norm` and each normalizer's `check` hook).
"""
from __future__ import annotations

import math
import re
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from bnexp.config import (Compile, Config, ConfigError, Device, EvalMode, OptimName, Sampler,
                          probes_on)
from bnexp.datasets import DATASETS
from bnexp.models import MODELS, norm_use
from bnexp.norm import NORMS, validate_norm


def validate(cfg: DictConfig) -> None:
    """Reject values no type can catch, with one line naming the key and what is allowed."""
    for key, registry in (("model.name", MODELS), ("data.name", DATASETS), ("norm.kind", NORMS)):
        if OmegaConf.select(cfg, key) not in registry:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)} is invalid: expected one of "
                              f"{', '.join(registry)}")
    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a bnexp key (a typo, or added with '+'?): "
                          "remove it; bnexp --cfg job lists every key")
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is invalid: expected a finite number")
    checks = [
        (cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size, "an integer >= 1"),
        (cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "an integer >= 1"),
        (cfg.train.steps is None or cfg.train.steps >= 1, "train.steps", cfg.train.steps,
         "null or an integer >= 1"),
        (cfg.train.eval_every >= 1, "train.eval_every", cfg.train.eval_every, "an integer >= 1"),
        (cfg.train.log_every >= 1, "train.log_every", cfg.train.log_every, "an integer >= 1"),
        (cfg.train.eval_every_steps is None or cfg.train.eval_every_steps >= 1,
         "train.eval_every_steps", cfg.train.eval_every_steps, "an integer >= 1 or null"),
        (cfg.train.checkpoint_every >= 0, "train.checkpoint_every", cfg.train.checkpoint_every,
         "an integer >= 0 (0: no checkpoints)"),
        (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.study) is not None, "study", cfg.study,
         "a folder name of letters, digits, '_', '-', '.'"),
        (cfg.pack in ("auto", "off") or (cfg.pack.isdigit() and int(cfg.pack) >= 1), "pack",
         cfg.pack, "auto, off or an integer >= 1 (the most runs in one pack)"),
        (cfg.train.threads is None or cfg.train.threads >= 1, "train.threads", cfg.train.threads,
         "null or an integer >= 1"),
        (cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "a number > 0"),
        (0 <= cfg.optim.momentum < 1, "optim.momentum", cfg.optim.momentum, "a number in [0, 1)"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay", cfg.optim.weight_decay, "a number >= 0"),
        (cfg.optim.warmup_steps >= 0, "optim.warmup_steps", cfg.optim.warmup_steps, "an integer >= 0"),
        (all(0 < m < 1 for m in cfg.optim.step_milestones), "optim.step_milestones",
         list(cfg.optim.step_milestones), "fractions of the budget, each in (0, 1)"),
        (cfg.optim.step_gamma > 0, "optim.step_gamma", cfg.optim.step_gamma, "a number > 0"),
        (0 <= cfg.norm.momentum <= 1, "norm.momentum", cfg.norm.momentum,
         "a number in [0, 1] (PyTorch convention: weight of the new batch)"),
        (cfg.norm.eps > 0, "norm.eps", cfg.norm.eps, "a number > 0"),
        (cfg.data.train_subset is None or cfg.data.train_subset >= 1, "data.train_subset",
         cfg.data.train_subset, "null or an integer >= 1"),
        (cfg.data.test_subset is None or cfg.data.test_subset >= 1, "data.test_subset",
         cfg.data.test_subset, "null or an integer >= 1"),
        (cfg.model.depth >= 1, "model.depth", cfg.model.depth, "an integer >= 1"),
        (cfg.model.width > 0, "model.width", cfg.model.width, "a number > 0"),
        (0 <= cfg.model.dropout < 1, "model.dropout", cfg.model.dropout, "a probability in [0, 1)"),
        (cfg.model.init_std > 0, "model.init_std", cfg.model.init_std, "a number > 0"),
        (cfg.optim.base_batch_size >= 1, "optim.base_batch_size", cfg.optim.base_batch_size,
         "an integer >= 1"),
        (cfg.probe.every >= 1, "probe.every", cfg.probe.every, "an integer >= 1"),
        (cfg.probe.units >= 1, "probe.units", cfg.probe.units, "an integer >= 1"),
        (len(cfg.probe.landscape_steps) >= 1 and all(m > 0 for m in cfg.probe.landscape_steps),
         "probe.landscape_steps", list(cfg.probe.landscape_steps),
         "a non-empty list of multiples of the LR, each > 0"),
        (cfg.probe.saturation > 0, "probe.saturation", cfg.probe.saturation, "a number > 0"),
        (len(cfg.eval.modes) >= 1 and EvalMode.running in cfg.eval.modes, "eval.modes",
         [m.value for m in cfg.eval.modes], "a list that includes running"),
        (cfg.eval.batch_size >= 1, "eval.batch_size", cfg.eval.batch_size, "an integer >= 1"),
        (cfg.eval.precise_batches >= 1, "eval.precise_batches", cfg.eval.precise_batches,
         "an integer >= 1"),
        (cfg.train.classes_per_batch >= 1, "train.classes_per_batch",
         cfg.train.classes_per_batch, "an integer >= 1"),
        (cfg.train.freeze_norm_stats_at is None or 0 <= cfg.train.freeze_norm_stats_at < 1,
         "train.freeze_norm_stats_at", cfg.train.freeze_norm_stats_at,
         "null or a fraction of the budget in [0, 1)"),
        (cfg.eval.precise_examples is None or cfg.eval.precise_examples >= 1,
         "eval.precise_examples", cfg.eval.precise_examples, "null or an integer >= 1"),
        (cfg.norm.groups >= 1, "norm.groups", cfg.norm.groups, "an integer >= 1"),
        (cfg.norm.virtual_batch_size >= 2, "norm.virtual_batch_size",
         cfg.norm.virtual_batch_size, "an integer >= 2"),
        (cfg.norm.r_max >= 1, "norm.r_max", cfg.norm.r_max, "a number >= 1"),
        (cfg.norm.d_max >= 0, "norm.d_max", cfg.norm.d_max, "a number >= 0"),
        (cfg.norm.renorm_warmup_steps >= 0, "norm.renorm_warmup_steps",
         cfg.norm.renorm_warmup_steps, "an integer >= 0"),
    ]
    for ok, key, value, allowed in checks:
        if not ok:
            raise ConfigError(f"{key}={value} is invalid: expected {allowed}")
    _validate_combinations(cfg)


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys of `cfg` that no schema declares (Hydra lets `+key=value` add them even to a
    structured config); the `hydra` node is Hydra's own."""
    def walk(node: Any, schema: Any, prefix: str) -> list[str]:
        declared = {item.name for item in fields(schema)}
        found = []
        for key in node.keys():
            if key == "hydra" and not prefix:
                continue
            if key not in declared:
                found.append(f"{prefix}{key}")
                continue
            child = MODELS[cfg.model.name].schema if prefix + key == "model" \
                else getattr(schema, key)
            if is_dataclass(child) and isinstance(node[key], DictConfig):
                found += walk(node[key], child, f"{prefix}{key}.")
        return found
    return walk(cfg, Config(), "")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every scalar in the config, lists included, `hydra` excluded."""
    if isinstance(node, DictConfig):
        items = [(key, node[key]) for key in node.keys() if prefix or key != "hydra"]
        return [leaf for key, value in items for leaf in _leaves(value, f"{prefix}{key}.")]
    if isinstance(node, ListConfig):
        return [leaf for index, value in enumerate(node)
                for leaf in _leaves(value, f"{prefix[:-1]}[{index}].")]
    return [(prefix[:-1], node)]


def _validate_eval_batch(cfg: DictConfig) -> None:
    """Test batches of one example have batch statistics only on feature maps (H x W values
    per channel), as training batches of one do."""
    modes = {EvalMode.batch, EvalMode.homogeneous} & set(cfg.eval.modes)
    if not modes or cfg.eval.batch_size != 1 or not NORMS[cfg.norm.kind].batch_statistics:
        return
    use = norm_use(cfg.model, cfg.eval.batch_size)
    if not use.feature_maps:
        raise ConfigError(
            f"eval.batch_size=1 is invalid with eval.modes {sorted(m.value for m in modes)} and "
            f"norm.kind={cfg.norm.kind} on model={use.model}: batch statistics of one example "
            "are undefined (its variance is 0); use eval.batch_size >= 2")


def _validate_clustered(cfg: DictConfig) -> None:
    classes, batch = cfg.train.classes_per_batch, cfg.train.batch_size
    if batch % classes:
        raise ConfigError(f"train.classes_per_batch={classes} must divide train.batch_size="
                          f"{batch} (train.sampler=class_clustered puts batch / classes "
                          "examples of each class in a batch)")
    available = DATASETS[cfg.data.name].num_classes
    if classes > available:
        raise ConfigError(f"train.classes_per_batch={classes} exceeds the {available} classes "
                          f"of data={cfg.data.name}: choose at most {available}")


def _validate_combinations(cfg: DictConfig) -> None:
    MODELS[cfg.model.name].check(cfg.model)
    if cfg.optim.nesterov and cfg.optim.name != OptimName.sgd:
        raise ConfigError(f"optim.nesterov=true is invalid with optim={cfg.optim.name.value}: "
                          "Nesterov momentum is an SGD option; use optim=sgd")
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        raise ConfigError("optim.nesterov=true is invalid with optim.momentum=0: "
                          "Nesterov needs momentum > 0")
    validate_norm(cfg.norm, norm_use(cfg.model, cfg.train.batch_size), cfg.train.trainable,
                  cfg.train.freeze_norm_stats_at)
    _validate_eval_batch(cfg)
    if cfg.train.sampler == Sampler.class_clustered:
        _validate_clustered(cfg)
    if cfg.train.compile != Compile.off and probes_on(cfg.probe):
        raise ConfigError("train.compile and probes do not mix: every probed step attaches "
                          "hooks, which forces a recompilation; set train.compile=off")
    if cfg.train.amp and cfg.train.device in (Device.cpu, Device.mps):
        raise ConfigError(f"train.amp=true is invalid with train.device={cfg.train.device.value}: "
                          "bf16 autocast is used on CUDA only; set train.amp=false")

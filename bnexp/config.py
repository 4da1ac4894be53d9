"""Configuration schemas: typed dataclasses registered in Hydra's ConfigStore.

Enum fields make Hydra reject an unknown word (`norm.kind=foo`) and a wrong type
(`train.batch_size=abc`) while it composes the config. Range and cross-field checks that a
type cannot express (`train.batch_size=0`, `optim.lr=-1`, batch norm on a batch of one) live
in `validate`, which runs before any run folder exists (see `bnexp.callbacks`).

Enum members are lower-case words so that `norm.kind=batch` reads the same on the command
line, in the saved config and in every CSV column.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf


class DatasetName(Enum):
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"


class ModelName(Enum):
    mlp = "mlp"
    resnet = "resnet"


class Activation(Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"
    gelu = "gelu"


class Init(Enum):
    default = "default"  # PyTorch's own layer initialisation
    kaiming = "kaiming"  # He normal, fan_in, gain for ReLU
    xavier = "xavier"  # Glorot normal
    normal = "normal"  # N(0, model.init_std^2)


class NormKind(Enum):
    none = "none"
    batch = "batch"  # Ioffe & Szegedy 2015
    group = "group"  # Wu & He 2018: norm.groups groups of channels per example
    layer = "layer"  # Ba et al. 2016: all features of one example
    batch_renorm = "batch_renorm"  # Ioffe 2017: r/d correction towards the running statistics
    ghost = "ghost"  # Hoffer et al. 2017: statistics of virtual batches inside the SGD batch


class Placement(Enum):
    before = "before"  # weight -> norm -> activation (Ioffe & Szegedy 2015)
    after = "after"  # weight -> activation -> norm


class Affine(Enum):
    both = "both"  # learnable scale (gamma) and shift (beta)
    scale = "scale"  # gamma only
    shift = "shift"  # beta only
    none = "none"  # neither: pure standardisation


class OptimName(Enum):
    sgd = "sgd"
    adam = "adam"
    adamw = "adamw"


class Schedule(Enum):
    constant = "constant"
    cosine = "cosine"  # cosine decay to zero over the whole budget
    step = "step"  # multiply by optim.step_gamma at each fraction in optim.step_milestones


class Rerun(Enum):
    missing = "missing"  # run what has no finished record; interrupted runs resume
    failed = "failed"  # also run again what failed (the failed record is archived)
    all = "all"  # run everything again (earlier records are archived, never deleted)


class ScaleRule(Enum):
    none = "none"  # optim.lr as given
    linear = "linear"  # lr * batch_size / base_batch_size (Goyal et al. 2017)
    sqrt = "sqrt"  # lr * sqrt(batch_size / base_batch_size) (Hoffer et al. 2017)


class Trainable(Enum):
    all = "all"
    norm_only = "norm_only"  # only the norms' gamma/beta; the rest stays at init (Frankle et al. 2021)


class EvalMode(Enum):
    running = "running"  # model.eval(): the running (moving-average) statistics
    batch = "batch"  # train-mode normalization on shuffled test batches of eval.batch_size
    homogeneous = "homogeneous"  # the same, each batch a single class
    precise = "precise"  # PreciseBN: exact population statistics over eval.precise_batches


class Compile(Enum):
    off = "off"  # eager PyTorch
    default = "default"  # torch.compile of the training forward, inductor's default mode
    reduce_overhead = "reduce_overhead"  # the same with CUDA graphs: for small batches on a GPU
    max_autotune = "max_autotune"  # longer compile, tuned kernels


class Device(Enum):
    auto = "auto"  # cuda if available, else mps, else cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


@dataclass
class DataConfig:
    name: DatasetName = DatasetName.fashion_mnist
    root: Optional[str] = None  # folder searched first; else $BNEXP_DATA, user cache, /usr/share/datasets
    download: bool = False  # fetch with torchvision's downloader (checksummed) when not found
    train_subset: Optional[int] = None  # examples kept from the training set (class-balanced); null = all
    subset_seed: int = 0  # seed of the class-balanced pick; fixed so that seeds share one subset
    augment: bool = False  # batched random crop (4-pixel padding) + horizontal flip, on the device


@dataclass
class MLPConfig:
    name: ModelName = ModelName.mlp
    depth: int = 3  # hidden layers
    width: int = 100  # units per hidden layer
    activation: Activation = Activation.relu
    dropout: float = 0.0  # probability, after each hidden block
    init: Init = Init.default
    init_std: float = 0.01  # std of N(0, std^2) weights when init=normal


@dataclass
class ResNetConfig:
    name: ModelName = ModelName.resnet
    depth: int = 20  # 6n+2 layers: 20, 32, 44, 56, 110 (He et al. 2016, CIFAR)
    width: float = 1.0  # channel multiplier on the 16/32/64 stages
    activation: Activation = Activation.relu
    dropout: float = 0.0  # probability, before the classifier
    init: Init = Init.kaiming
    init_std: float = 0.01  # std of N(0, std^2) weights when init=normal


@dataclass
class NormConfig:
    kind: NormKind = NormKind.batch
    placement: Placement = Placement.before
    affine: Affine = Affine.both
    momentum: float = 0.1  # PyTorch convention: weight of the NEW batch in the running average
    eps: float = 1e-5  # added to the variance before the square root
    groups: int = 4  # group: groups of channels (must divide every layer's width)
    virtual_batch_size: int = 16  # ghost: examples per statistics batch
    r_max: float = 3.0  # batch_renorm: final clip of r = sigma_B / sigma (Ioffe 2017)
    d_max: float = 5.0  # batch_renorm: final clip of d = (mu_B - mu) / sigma
    renorm_warmup_steps: int = 5000  # batch_renorm: steps over which r_max/d_max ramp from 1/0


@dataclass
class OptimConfig:
    name: OptimName = OptimName.sgd
    lr: float = 0.1  # peak learning rate, reached after warmup
    momentum: float = 0.9  # SGD momentum; beta1 for adam/adamw
    nesterov: bool = False  # SGD only
    weight_decay: float = 0.0  # L2 (sgd, adam) or decoupled (adamw)
    decay_norm_bias: bool = False  # false: norm scales/shifts and biases get no weight decay
    schedule: Schedule = Schedule.constant
    warmup_steps: int = 0  # linear warmup from 0 to optim.lr over this many steps
    step_milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of the budget
    step_gamma: float = 0.1  # LR factor at each milestone (schedule=step)
    scale_rule: ScaleRule = ScaleRule.none  # scale optim.lr with train.batch_size
    base_batch_size: int = 64  # batch size at which the scaled LR equals optim.lr


@dataclass
class TrainConfig:
    batch_size: int = 64  # examples per SGD step; the last incomplete batch of an epoch is dropped
    epochs: int = 5  # budget in passes over the training set (ignored when train.steps is set)
    steps: Optional[int] = None  # budget in SGD steps; overrides train.epochs when set
    eval_every: int = 1  # evaluate the test set every N epochs, and always at the end
    log_every: int = 50  # steps averaged into one train row of metrics.csv
    device: Device = Device.auto
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    amp: bool = False  # bf16 autocast, CUDA only
    checkpoint_every: int = 1  # epochs between checkpoints a killed run resumes from; 0 = never
    trainable: Trainable = Trainable.all  # norm_only: train gamma/beta alone
    compile: Compile = Compile.off  # torch.compile the training step's forward pass


@dataclass
class ProbeConfig:
    activations: bool = False  # inputs of every activation and norm layer -> activations.csv
    gradients: bool = False  # per-layer gradient/weight norms, effective step -> gradients.csv
    every: int = 50  # steps between samples (step 0 and the last step are always sampled)
    units: int = 8  # units per layer, a fixed seeded sample, whose percentiles are recorded
    saturation: float = 3.0  # |x| beyond which a sigmoid/tanh input counts as saturated


@dataclass
class EvalConfig:
    modes: List[EvalMode] = field(default_factory=lambda: [EvalMode.running])
    batch_size: int = 64  # examples per test batch in the batch and homogeneous modes
    precise_batches: int = 200  # training batches PreciseBN averages (fvcore's default)


@dataclass
class Config:
    seed: int = 0  # seeds python, numpy and torch at the start of the run
    study: str = "adhoc"  # runs go to <results_dir>/<study>/<run-id>
    results_dir: str = "results"  # relative paths are taken from the launch directory
    rerun: Rerun = Rerun.missing  # what a repeated launch runs again
    report: bool = False  # after a sweep (-m), write <results_dir>/<study>/report/
    scale: str = "quick"  # study budget chosen by the scale group (quick | full)
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None  # MLPConfig or ResNetConfig, chosen by the model group
    norm: NormConfig = field(default_factory=NormConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def register_configs() -> None:
    """Put the schemas where the YAML files of `conf/` find them (`/<name>@_here_`)."""
    cs = ConfigStore.instance()
    # Stored outside the groups, so that `bnexp --help` lists only the real options.
    for name, node in [("config_schema", Config), ("data_schema", DataConfig),
                       ("mlp_schema", MLPConfig), ("resnet_schema", ResNetConfig),
                       ("norm_schema", NormConfig), ("optim_schema", OptimConfig),
                       ("train_schema", TrainConfig)]:
        cs.store(name=name, node=node)


class ConfigError(ValueError):
    """A config value that composes but cannot be run; the message names key and fix."""


MODEL_SCHEMAS = {ModelName.mlp: MLPConfig, ModelName.resnet: ResNetConfig}


def validate(cfg: DictConfig) -> None:
    """Reject values no type can catch, with one line naming the key and what is allowed."""
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
        (cfg.train.checkpoint_every >= 0, "train.checkpoint_every", cfg.train.checkpoint_every,
         "an integer >= 0 (0: no checkpoints)"),
        (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.study) is not None, "study", cfg.study,
         "a folder name of letters, digits, '_', '-', '.'"),
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
        (cfg.model.depth >= 1, "model.depth", cfg.model.depth, "an integer >= 1"),
        (cfg.model.width > 0, "model.width", cfg.model.width, "a number > 0"),
        (0 <= cfg.model.dropout < 1, "model.dropout", cfg.model.dropout, "a probability in [0, 1)"),
        (cfg.model.init_std > 0, "model.init_std", cfg.model.init_std, "a number > 0"),
        (cfg.optim.base_batch_size >= 1, "optim.base_batch_size", cfg.optim.base_batch_size,
         "an integer >= 1"),
        (cfg.probe.every >= 1, "probe.every", cfg.probe.every, "an integer >= 1"),
        (cfg.probe.units >= 1, "probe.units", cfg.probe.units, "an integer >= 1"),
        (cfg.probe.saturation > 0, "probe.saturation", cfg.probe.saturation, "a number > 0"),
        (len(cfg.eval.modes) >= 1 and EvalMode.running in cfg.eval.modes, "eval.modes",
         [m.value for m in cfg.eval.modes], "a list that includes running"),
        (cfg.eval.batch_size >= 2, "eval.batch_size", cfg.eval.batch_size, "an integer >= 2"),
        (cfg.eval.precise_batches >= 1, "eval.precise_batches", cfg.eval.precise_batches,
         "an integer >= 1"),
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
            child = MODEL_SCHEMAS.get(cfg.model.name) if prefix + key == "model" \
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


def _validate_combinations(cfg: DictConfig) -> None:
    if cfg.model.name == ModelName.resnet and (cfg.model.depth - 2) % 6 != 0:
        raise ConfigError(
            f"model.depth={cfg.model.depth} is invalid for model=resnet: expected 6n+2 "
            "(20, 32, 44, 56, 110)")
    if cfg.optim.nesterov and cfg.optim.name != OptimName.sgd:
        raise ConfigError(f"optim.nesterov=true is invalid with optim={cfg.optim.name.value}: "
                          "Nesterov momentum is an SGD option; use optim=sgd")
    if cfg.optim.nesterov and cfg.optim.momentum == 0:
        raise ConfigError("optim.nesterov=true is invalid with optim.momentum=0: "
                          "Nesterov needs momentum > 0")
    from bnexp.norm import validate_norm  # norm facts live in the norm module

    validate_norm(cfg.norm, cfg.model, cfg.train)
    if cfg.train.compile != Compile.off and (cfg.probe.activations or cfg.probe.gradients):
        raise ConfigError("train.compile and probes do not mix: every probed step attaches "
                          "hooks, which forces a recompilation; set train.compile=off")
    if cfg.train.amp and cfg.train.device in (Device.cpu, Device.mps):
        raise ConfigError(f"train.amp=true is invalid with train.device={cfg.train.device.value}: "
                          "bf16 autocast is used on CUDA only; set train.amp=false")


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {'norm.kind': 'batch', ...}: words, not Enum objects."""
    return flatten_tree(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten_tree(value, f"{prefix}{key}."))
    return flat

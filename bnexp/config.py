"""Configuration schemas: typed dataclasses (registered in Hydra's ConfigStore by
`bnexp.compose`; each model's own schema lives beside its builder in `bnexp.models`).

Enum fields make Hydra reject an unknown word (`model.activation=swish`) and a wrong type
(`train.batch_size=abc`) while it composes the config. The names of registry entries
(`norm.kind`, `model.name`, `data.name`) are plain words checked against their registry, so
adding a normalizer, model or dataset never touches this file. Range and cross-field checks that a
type cannot express (`train.batch_size=0`, `optim.lr=-1`, batch norm on a batch of one) live
in `bnexp.validation`, which runs before any run folder exists (see `bnexp.callbacks`). This
module imports nothing of bnexp: every other module may import it.

Enum members are lower-case words so that `norm.kind=batch` reads the same on the command
line, in the saved config and in every CSV column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

from omegaconf import DictConfig, OmegaConf

CONFIG_DIR = Path(__file__).resolve().parent / "conf"  # the YAML files, shipped in the package
INCLUDED_ONLY = ("studies", "budget")  # conf/ folders that experiment files include, never chosen


class Activation(Enum):
    relu = "relu"
    sigmoid = "sigmoid"
    tanh = "tanh"
    gelu = "gelu"
    identity = "identity"  # none: a deep linear network (Santurkar et al. 2018)


class Init(Enum):
    default = "default"  # PyTorch's own layer initialisation
    kaiming = "kaiming"  # He normal, fan_in, gain for ReLU
    xavier = "xavier"  # Glorot normal
    normal = "normal"  # N(0, model.init_std^2)


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
    random_matched = "random_matched"  # norm_only's control: as many random non-norm weights train


class Sampler(Enum):
    iid = "iid"  # shuffled full batches: each a uniform sample without replacement
    class_clustered = "class_clustered"  # train.classes_per_batch classes x equal examples per batch (Ioffe 2017)


class EvalMode(Enum):
    running = "running"  # model.eval(): the running (moving-average) statistics
    batch = "batch"  # train-mode normalization on shuffled test batches of eval.batch_size
    homogeneous = "homogeneous"  # the same, each batch a single class
    precise = "precise"  # PreciseBN: running stats re-estimated as the mean over eval.precise_batches training batches of each batch's mean and unbiased variance


class PreciseEstimator(Enum):  # named after the statistic, as fvcore names its estimators
    mean_of_batch_variances = "mean_of_batch_variances"  # mean over batches of each batch's unbiased variance
    population_variance = "population_variance"  # the variance of all sampled inputs (adds the spread of batch means)


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
    name: str = "fashion_mnist"  # a dataset of bnexp.datasets.DATASETS (bnexp --help lists them)
    root: Optional[str] = None  # folder searched first; else $BNEXP_DATA, user cache, /usr/share/datasets
    download: bool = False  # fetch with torchvision's downloader (checksummed) when not found
    train_subset: Optional[int] = None  # examples kept from the training set (class-balanced); null = all
    test_subset: Optional[int] = None  # examples kept from the test set (class-balanced); null = all: coarser accuracies, for smoke tests
    subset_seed: int = 0  # seed of the class-balanced pick; fixed so that seeds share one subset
    augment: bool = False  # batched random crop (4-pixel padding) + horizontal flip, on the device


@dataclass
class NormConfig:
    kind: str = "batch"  # a normalizer of bnexp.norm.NORMS (bnexp --help lists them)
    placement: Placement = Placement.before
    affine: Affine = Affine.both
    momentum: float = 0.1  # PyTorch convention: weight of the NEW batch in the running average
    eps: float = 1e-5  # added to the variance before the square root
    groups: int = 4  # group: groups of channels (must divide every layer's width)
    virtual_batch_size: int = 16  # ghost, ghost_renorm: examples per statistics batch
    r_max: float = 3.0  # batch_renorm, ghost_renorm: final clip of r = sigma_B / sigma (Ioffe 2017)
    d_max: float = 5.0  # batch_renorm, ghost_renorm: final clip of d = (mu_B - mu) / sigma
    renorm_warmup_steps: int = 5000  # (ghost_)renorm: steps over which r_max/d_max ramp from 1/0
    noise_mean: float = 0.5  # noisy_batch: per-unit mean shifts drawn from U(-noise_mean, noise_mean) each step
    noise_scale: float = 2.0  # noisy_batch: per-unit scales drawn from U(1, noise_scale) each step
    noise_std: float = 0.5  # noisy_batch: std of the per-example Gaussian noise added on top


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
    eval_every_steps: Optional[int] = None  # also evaluate the test set every N steps (and at step 0)
    device: Device = Device.auto
    threads: Optional[int] = None  # torch CPU threads; null = torch's default
    amp: bool = False  # bf16 autocast, CUDA only
    checkpoint_every: int = 1  # epochs between checkpoints a killed run resumes from; 0 = never
    trainable: Trainable = Trainable.all  # norm_only: train gamma/beta alone; random_matched: its control
    compile: Compile = Compile.off  # torch.compile the training step's forward pass
    sampler: Sampler = Sampler.iid  # how batches are drawn (bnexp.samplers)
    classes_per_batch: int = 1  # class_clustered: distinct classes per batch (must divide the batch)
    freeze_norm_stats_at: Optional[float] = None  # FrozenBN from this fraction of the budget on: norms use their running statistics in training (frozen; gamma/beta train on); null: never


@dataclass
class ProbeConfig:
    activations: bool = False  # inputs of every activation and norm layer -> activations.csv
    gradients: bool = False  # per-layer gradient/weight norms, effective step -> gradients.csv
    ics: bool = False  # Santurkar's internal covariate shift per weight layer -> ics.csv (bnexp.optimization_probes)
    landscape: bool = False  # loss and gradient along the step's gradient -> landscape.csv
    landscape_steps: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])  # step sizes, in multiples of the step's LR
    every: int = 50  # steps between samples (step 0 and the last step are always sampled)
    units: int = 8  # units per layer, a fixed seeded sample, whose percentiles are recorded
    saturation: float = 3.0  # |x| beyond which a sigmoid/tanh input counts as saturated


@dataclass
class EvalConfig:
    modes: List[EvalMode] = field(default_factory=lambda: [EvalMode.running])
    batch_size: int = 64  # examples per test batch in the batch and homogeneous modes
    precise_batches: int = 200  # training batches PreciseBN averages (fvcore's default)
    precise_examples: Optional[int] = None  # PreciseBN's sample in training examples (whole batches, rounded up); replaces precise_batches when set
    precise_estimator: PreciseEstimator = PreciseEstimator.mean_of_batch_variances


@dataclass
class ComparisonConfig:
    """One contrast a study's verdict rests on: each other value of `factor` against
    `reference`, paired by seed within every combination of the other factors."""

    factor: str  # the config key contrasted, e.g. norm.kind
    reference: str  # its reference value, e.g. none; compared as text
    contrast: Optional[str] = None  # only this value against the reference; null: every other value
    tune: Optional[str] = None  # a key each side picks its best value of, per cell (best LR vs best LR)
    label: Optional[str] = None  # the comparison's role in the study, e.g. "A/A control"
    metric: Optional[str] = None  # this comparison's metric; null: the study's primary metric


@dataclass
class QuestionConfig:
    """What a study asks and how its report answers. Describes the runs, never changes them
    (not part of a run's identity)."""

    claim: Optional[str] = None  # the claim under test, one or two sentences
    source: Optional[str] = None  # where the claim is made
    command: Optional[str] = None  # the command that reproduces the study
    metric: str = "final_test_accuracy"  # the primary metric (bnexp.report.metrics)
    target: Optional[float] = None  # test accuracy of the examples_to_target metric
    comparisons: List[ComparisonConfig] = field(default_factory=list)


@dataclass
class Config:
    seed: int = 0  # seeds python, numpy and torch at the start of the run
    study: str = "adhoc"  # runs go to <results_dir>/<study>/<run-id> (full scale: <study>/full/)
    results_dir: str = "results"  # relative paths are taken from the launch directory
    rerun: Rerun = Rerun.missing  # what a repeated launch runs again
    report: bool = False  # after a sweep (-m), write the study folder's report/
    pack: str = "auto"  # sweeps: auto | off | N (most runs trained as one model); bnexp.packing
    pack_members: Optional[str] = None  # set by the packing sweeper: this job's pack file
    scale: Optional[str] = None  # a study's scale, set by experiment=<study>/<scale>; null: ad hoc
    # (quick runs live in the study folder, any other scale's in <study>/<scale>/: identity.study_dir)
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = None  # the chosen model's schema (bnexp.models.MODELS), from the model group
    norm: NormConfig = field(default_factory=NormConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    question: QuestionConfig = field(default_factory=QuestionConfig)


PROBE_SWITCHES = ("activations", "gradients", "ics", "landscape")  # the probe.* keys that turn one on


def probes_on(probe: Any) -> bool:
    """Whether any probe is on (`probe`: the config's probe node)."""
    return any(getattr(probe, name) for name in PROBE_SWITCHES)


# When a key is read: a key not read under a config cannot change the run, so it is left out of
# the run's identity and shown as n/a in reports. The norm registry says the same of norm.*
# keys (bnexp.norm.NormSpec.reads). Each condition takes the flat config ({'optim.schedule':
# 'step', ...}); `.get` lets records of an older bnexp that lack a key be judged too.
READ_WHEN: dict[str, Callable[[dict[str, Any]], bool]] = {
    "model.init_std": lambda c: c.get("model.init") == "normal",
    "optim.step_milestones": lambda c: c.get("optim.schedule") == "step",
    "optim.step_gamma": lambda c: c.get("optim.schedule") == "step",
    "optim.base_batch_size": lambda c: c.get("optim.scale_rule") not in (None, "none"),
    "optim.decay_norm_bias": lambda c: (c.get("optim.weight_decay") or 0) > 0,
    "train.epochs": lambda c: c.get("train.steps") is None,
    "train.eval_every_steps": lambda c: c.get("train.eval_every_steps") is not None,
    "train.classes_per_batch": lambda c: c.get("train.sampler") == "class_clustered",
    "data.subset_seed": lambda c: c.get("data.train_subset") is not None
    or c.get("data.test_subset") is not None,
    "probe.every": lambda c: any(c.get(f"probe.{name}") for name in PROBE_SWITCHES),
    "probe.landscape_steps": lambda c: bool(c.get("probe.landscape")),
    "probe.units": lambda c: bool(c.get("probe.activations")),
    "probe.saturation": lambda c: bool(c.get("probe.activations")),
    "eval.batch_size": lambda c: bool({"batch", "homogeneous"} & set(c.get("eval.modes") or [])),
    "eval.precise_batches": lambda c: "precise" in (c.get("eval.modes") or [])
    and c.get("eval.precise_examples") is None,
    "eval.precise_examples": lambda c: "precise" in (c.get("eval.modes") or []),
    "eval.precise_estimator": lambda c: "precise" in (c.get("eval.modes") or []),
}


class ConfigError(ValueError):
    """A config value that composes but cannot be run; the message names key and fix."""


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

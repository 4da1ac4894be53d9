"""Everything one run builds from its config, before the first step: device, threads, seeds,
data on the device, model via the norm factory, optimizer, schedule, probes and the fitter."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from bnexp import datasets
from bnexp.config import Compile, ConfigError, DataConfig, Device, TrainConfig, Trainable
from bnexp.engine import StepPlan, Fitter, autocast_for
from bnexp.evaluation import evaluate_modes, precise_batch_count, precise_statistics
from bnexp.loader import PixelStandardizer, TrainBatches, balanced_subset, to_device
from bnexp.samplers import batch_order
from bnexp.models import MODELS, build_model
from bnexp.norm import BlockFactory
from bnexp.optim import FrozenElements, build_optimizer, build_schedule, effective_lr
from bnexp.probes import ActivationProbe, GradientProbe
from bnexp.optimization_probes import ICSProbe, LandscapeProbe

TRAIN_EVAL_EXAMPLES = 10_000  # training examples re-scored in eval mode for the final train accuracy
PRECISE_SEED_OFFSET = 104_729  # PreciseBN's training batches: their own seed, per evaluation


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def resolve_device(choice: Device) -> torch.device:
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
                 "cpu": True}
    if choice == Device.auto:
        return torch.device(next(name for name, ok in available.items() if ok))
    if not available[choice.value]:
        raise ConfigError(f"train.device={choice.value} is not available on this machine: "
                          "use train.device=auto or cpu")
    return torch.device(choice.value)


def check_device(cfg: TrainConfig) -> torch.device:
    """The training device, refusing what this machine cannot run (before any folder)."""
    device = resolve_device(cfg.device)
    if cfg.amp and device.type != "cuda":
        raise ConfigError(f"train.amp=true needs CUDA but this run uses {device}: "
                          "set train.amp=false")
    return device


def load_splits(cfg: DataConfig, batch_size: int) -> tuple[datasets.Splits, Optional[torch.Tensor]]:
    """The decoded dataset and the indices of the training subset (None: all of it), after
    every check that needs the data itself: the subsets fit in their sets, the batch in the
    training set, and no input channel is constant (its std of 0 would make every input NaN). Run
    before any run folder exists (bnexp.callbacks) and again by the run; decoding is cached
    per process."""
    splits = datasets.load(cfg.name, cfg.root, cfg.download)
    available = splits.train_labels.shape[0]
    subset = None
    if cfg.train_subset is not None:
        if cfg.train_subset > available:
            raise ConfigError(f"data.train_subset={cfg.train_subset} exceeds the {available} "
                              f"training examples of {cfg.name}: lower it or use null")
        subset = balanced_subset(splits.train_labels, cfg.train_subset, cfg.subset_seed)
    tests = splits.test_labels.shape[0]
    if cfg.test_subset is not None and cfg.test_subset > tests:
        raise ConfigError(f"data.test_subset={cfg.test_subset} exceeds the {tests} test "
                          f"examples of {cfg.name}: lower it or use null")
    examples = available if subset is None else len(subset)
    if batch_size > examples:
        raise ConfigError(f"train.batch_size={batch_size} exceeds the {examples} training "
                          "examples: lower the batch size or raise data.train_subset")
    images = splits.train_images if subset is None else splits.train_images[subset]
    channels = images.transpose(0, 1).reshape(images.shape[1], -1)
    constant = (channels.amin(dim=1) == channels.amax(dim=1)).nonzero().flatten().tolist()
    if constant:
        raise datasets.DatasetContentError(
            f"{splits.folder}: input channel {constant[0]} of the training images is constant, "
            "so it cannot be standardised (std 0): use a dataset (or data.train_subset) whose "
            "images vary")
    return splits, subset


def place_data(cfg: DataConfig, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Decode the dataset, pick the subsets, and move both splits to `device`."""
    splits, subset = load_splits(cfg, batch_size)
    train = to_device(splits.train_images, splits.train_labels, device, subset)
    test = to_device(splits.test_images, splits.test_labels, device, None if cfg.test_subset is None
                     else balanced_subset(splits.test_labels, cfg.test_subset, cfg.subset_seed))
    rescored = train if len(train) <= TRAIN_EVAL_EXAMPLES else to_device(
        train.images, train.labels, device,
        balanced_subset(train.labels, TRAIN_EVAL_EXAMPLES, cfg.subset_seed).to(device))
    return {"train": train, "test": test, "train_eval": rescored,
            "normalize": PixelStandardizer(train.images), "folder": str(splits.folder),
            "checksum": splits.checksum}


@dataclass
class Session:
    device: torch.device
    data: dict[str, Any]
    model: nn.Module
    norms: BlockFactory
    batches: TrainBatches
    fitter: Fitter
    plan: StepPlan
    autocast: Callable
    lr: float  # the effective peak learning rate after optim.scale_rule
    evaluate: Callable[[], dict[str, tuple[float, float]]]  # test split, every eval mode, at the current step
    evaluate_train: Callable[[], dict[str, tuple[float, float]]]  # the same on data["train_eval"]
    trainable_parameters: int  # elements the optimizer may change (train.trainable)


def build_session(cfg: DictConfig, threads: Optional[int], data: Optional[dict] = None
                  ) -> Session:
    """The run's objects; `data` (what `place_data` returned for the same data config and
    device) is reused instead of placed again, so a pack holds its dataset once."""
    device = check_device(cfg.train)
    threads = threads if threads is not None else cfg.train.threads
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    data = data if data is not None else place_data(cfg.data, cfg.train.batch_size, device)
    model, norms = build_model(cfg.model, cfg.norm, tuple(data["train"].images.shape[1:]),
                               datasets.DATASETS[cfg.data.name].num_classes)
    channels_last = device.type == "cuda" and MODELS[cfg.model.name].feature_maps
    model.to(device)
    if channels_last:  # NHWC convolutions are the fast path on recent GPUs
        model.to(memory_format=torch.channels_last)
    frozen = None
    if cfg.train.trainable == Trainable.norm_only:
        norms.train_norms_only(model)
    elif cfg.train.trainable == Trainable.random_matched:  # its own generator: init and data
        # order stay those of the same seed's other runs
        frozen = FrozenElements(norms.train_random_matched(
            model, torch.Generator().manual_seed(cfg.seed)))
    order = batch_order(cfg.train.sampler, data["train"].labels, cfg.train.batch_size,
                        cfg.train.classes_per_batch)
    batches = TrainBatches(data["train"], data["normalize"], cfg.train.batch_size,
                           cfg.data.augment, cfg.seed, channels_last, order)
    total_steps = cfg.train.steps or cfg.train.epochs * batches.steps_per_epoch
    lr = effective_lr(cfg.optim, cfg.train.batch_size)
    optimizer = build_optimizer(model, cfg.optim, lr)
    autocast = autocast_for(device, cfg.train.amp)
    probes = _probes(cfg, model, norms, optimizer)
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, total_steps),
                    batches, autocast, probes)
    if cfg.train.freeze_norm_stats_at is not None:
        fitter.freeze_statistics_at(round(cfg.train.freeze_norm_stats_at * total_steps),
                                    norms.population_layers())
    if cfg.train.compile != Compile.off:  # the model itself stays plain: state_dict, eval
        fitter.forward = torch.compile(model, mode=cfg.train.compile.value.replace("_", "-"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if frozen is not None:
        fitter.update = frozen.after(fitter.update)
        trainable = frozen.trained_elements()
    plan = StepPlan(total_steps, cfg.train.log_every, cfg.train.eval_every,
                    cfg.probe.every if probes else 0, cfg.train.eval_every_steps or 0)
    precise = _precise_twin(cfg, model, data, fitter)
    return Session(device, data, model, norms, batches, fitter, plan, autocast, lr,
                   _evaluator(cfg, model, data, autocast, precise, "test"),
                   _evaluator(cfg, model, data, autocast, precise, "train_eval"), trainable)


def _probes(cfg: DictConfig, model: nn.Module, norms: BlockFactory,
            optimizer: torch.optim.Optimizer) -> list:
    probes: list = []
    if cfg.probe.activations:
        probes.append(ActivationProbe(model, norms.created, cfg.probe.units,
                                      cfg.probe.saturation, cfg.seed))
    if cfg.probe.gradients:
        probes.append(GradientProbe(model, norms.normalized_weights))
    if cfg.probe.ics:
        probes.append(ICSProbe(model))
    if cfg.probe.landscape:
        probes.append(LandscapeProbe(model, optimizer, cfg.probe.landscape_steps))
    return probes


def _precise_twin(cfg: DictConfig, model: nn.Module, data: dict[str, Any], fitter: Fitter
                  ) -> Callable[[], nn.Module]:
    """PreciseBN's twin of the model at the current step, estimated once per step and shared
    by the test and training-example evaluations. Its training batches come from a seed of
    their own per step, so the training order and a resumed run are unaffected."""
    estimated: dict[int, nn.Module] = {}  # step -> twin; only the latest step is kept
    count = precise_batch_count(cfg.eval.precise_batches, cfg.eval.precise_examples,
                                cfg.train.batch_size)

    def images() -> Iterator[torch.Tensor]:
        sampler = TrainBatches(data["train"], data["normalize"], cfg.train.batch_size,
                               cfg.data.augment, cfg.seed + PRECISE_SEED_OFFSET + fitter.step_count)
        while True:
            for batch, _ in sampler.epoch():
                yield batch

    def twin() -> nn.Module:
        if fitter.step_count not in estimated:
            estimated.clear()
            estimated[fitter.step_count] = precise_statistics(
                model, images(), count, cfg.eval.precise_estimator.value)
        return estimated[fitter.step_count]
    return twin


def _evaluator(cfg: DictConfig, model: nn.Module, data: dict[str, Any], autocast: Callable,
               precise: Callable[[], nn.Module], split: str
               ) -> Callable[[], dict[str, tuple[float, float]]]:
    """Evaluation of `data[split]` (test, or the training examples rescored) in every eval
    mode (`precise`: PreciseBN's twin at the current step)."""
    modes = [mode.value for mode in cfg.eval.modes]
    return lambda: evaluate_modes(model, modes, data[split], data["normalize"], autocast,
                                  cfg.eval.batch_size, cfg.seed, precise)

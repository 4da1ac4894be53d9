"""Test-set evaluation (`score`, `evaluate`) in the eval modes of `eval.modes`, none of
which changes the model.

- running: `model.eval()`, the moving-average statistics (`evaluate`).
- batch: norm layers in training mode (batch statistics), everything else in eval mode
  (no dropout), on seeded shuffled test batches of `eval.batch_size`.
- homogeneous: the same, but every batch holds one class: the "similar images in one batch"
  failure of batch statistics.
- precise: PreciseBN (Wu & Johnson 2021, fvcore): the running statistics of every norm layer
  that has them, re-estimated from `eval.precise_batches` training batches (or as many as
  `eval.precise_examples` fill) of its input, earlier layers normalising with batch
  statistics as in training, then a running-mode evaluation. The mean is the mean of the
  batch means; the variance is chosen by `eval.precise_estimator`:
    mean_of_batch_variances  the mean of each batch's unbiased variance (fvcore's default);
    population_variance      the unbiased variance of all sampled inputs together, which
                             adds the variance of the batch means to the former (Wu & Johnson
                             2021, sec. 3.1: the statistics of the population, not of a batch).

The batch, homogeneous and precise modes work on a deep copy of the model, so the trained
model, its running statistics, later training and checkpoints are untouched. Test batches
are drawn from a fixed seed, so every evaluation of a run sees the same batches; a leftover
batch of one example is merged into its neighbour (batch statistics of one example are
undefined on vectors); `eval.batch_size=1` itself is allowed on feature maps only.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, ContextManager, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.loader import DeviceSplit, PixelStandardizer
from bnexp.norm import is_norm_layer

EVAL_BATCH = 1000  # examples per forward pass in running mode (eval mode: no effect on results)
EVAL_SEED_OFFSET = 7919  # test-batch order: seed + offset, independent of the training order


@torch.no_grad()
def score(model: nn.Module, split: DeviceSplit, normalize: PixelStandardizer, batches: Iterable,
          autocast: Callable[[], ContextManager]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model`, as it is, over `split` taken in `batches`
    (slices or index tensors that cover the split once)."""
    loss = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), device=split.labels.device, dtype=torch.long)
    for index in batches:
        labels = split.labels[index]
        with autocast():
            logits = model(normalize(split.images[index]))
        loss += F.cross_entropy(logits.float(), labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    return loss.item() / len(split), correct.item() / len(split)


def evaluate(model: nn.Module, split: DeviceSplit, normalize: PixelStandardizer,
             autocast: Callable[[], ContextManager]) -> tuple[float, float]:
    """`score` with the model in eval mode (running statistics), in contiguous chunks; the
    model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        chunks = [slice(start, start + EVAL_BATCH) for start in range(0, len(split), EVAL_BATCH)]
        return score(model, split, normalize, chunks, autocast)
    finally:
        model.train(was_training)



def split_name(mode: str) -> str:
    """The metrics.csv split of an eval mode: `test` for running, `test_<mode>` otherwise."""
    return "test" if mode == "running" else f"test_{mode}"


def _merge_singletons(batches: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """A leftover batch of one joins its neighbour, unless batches of one were asked for
    (validation allows that only where one example has batch statistics: feature maps)."""
    if batch_size == 1:
        return batches
    merged: list[torch.Tensor] = []
    for batch in batches:
        if len(batch) == 1 and merged:
            merged[-1] = torch.cat([merged[-1], batch])
        else:
            merged.append(batch)
    return merged


def shuffled_batches(labels: torch.Tensor, batch_size: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    return _merge_singletons(list(order.split(batch_size)), batch_size)


def single_class_batches(labels: torch.Tensor, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Batches of one class each (a class's last batch may be smaller), classes in turn."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    batches = []
    for label in torch.unique(labels).tolist():
        members = order[labels[order] == label]
        batches += _merge_singletons(list(members.split(batch_size)), batch_size)
    return batches


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose norm layers normalise with batch statistics and nothing else trains."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if is_norm_layer(module):
            module.train()
    return twin


class _MeanOfBatchVariances:
    """Per channel: the mean over batches of the batch mean and of the batch's unbiased
    variance."""

    def __init__(self):
        self.batches, self.mean, self.var = 0, 0.0, 0.0

    def add(self, x: torch.Tensor, dims: list[int]) -> None:
        self.batches += 1
        self.mean = self.mean + x.mean(dims)
        self.var = self.var + x.var(dims, unbiased=True)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean / self.batches, self.var / self.batches


class _PopulationVariance:
    """Per channel: the mean and unbiased variance of every sampled input value, from
    float64 sums of x and x^2 (float32 on MPS)."""

    def __init__(self):
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, x: torch.Tensor, dims: list[int]) -> None:
        x = x if x.device.type == "mps" else x.double()  # MPS has no float64
        self.count += x.numel() // x.shape[1]
        self.total = self.total + x.sum(dims)
        self.squares = self.squares + x.square().sum(dims)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.squares - self.count * mean.square()) / max(1, self.count - 1)
        return mean.float(), var.clamp(min=0).float()


ESTIMATORS = {"mean_of_batch_variances": _MeanOfBatchVariances,
              "population_variance": _PopulationVariance}


def precise_batch_count(batches: int, examples: Optional[int], batch_size: int) -> int:
    """PreciseBN's training batches: `examples` in whole batches (rounded up) when given."""
    return batches if examples is None else max(1, math.ceil(examples / batch_size))


@torch.no_grad()
def precise_statistics(model: nn.Module, images: Iterable[torch.Tensor], count: int,
                       estimator: str = "mean_of_batch_variances") -> nn.Module:
    """A copy of `model` whose running statistics are re-estimated from `count` batches of
    each norm layer's input, with the `estimator` named in ESTIMATORS."""
    twin = with_batch_statistics(model)
    layers = [m for m in twin.modules() if is_norm_layer(m) and hasattr(m, "running_mean")]
    sums = {id(m): ESTIMATORS[estimator]() for m in layers}

    def hook(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].float()
        sums[id(module)].add(x, [0, *range(2, x.dim())])

    handles = [layer.register_forward_pre_hook(hook) for layer in layers]
    try:
        seen = 0
        for batch in images:
            if seen == count:
                break
            twin(batch)
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
    for layer in layers:
        if seen:
            mean, var = sums[id(layer)].statistics()
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
    return twin.eval()


def evaluate_modes(model: nn.Module, modes: list[str], test: DeviceSplit,
                   normalize: PixelStandardizer,
                   autocast: Callable[[], ContextManager], batch_size: int, seed: int,
                   precise_model: Callable[[], nn.Module]) -> dict[str, tuple[float, float]]:
    """{split name: (mean loss, accuracy)} for each mode, running first; `precise_model`
    gives PreciseBN's twin of `model` (`precise_statistics`), asked for only in precise mode."""
    results = {}
    for mode in modes:
        if mode == "running":
            result = evaluate(model, test, normalize, autocast)
        elif mode == "precise":
            result = evaluate(precise_model(), test, normalize, autocast)
        else:
            make = shuffled_batches if mode == "batch" else single_class_batches
            batches = make(test.labels, batch_size, seed + EVAL_SEED_OFFSET)
            result = score(with_batch_statistics(model), test, normalize, batches, autocast)
        results[split_name(mode)] = result
    return results

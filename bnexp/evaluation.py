"""Test-set evaluation (`score`, `evaluate`) in the eval modes of `eval.modes`, none of
which changes the model.

- running: `model.eval()`, the moving-average statistics (`evaluate`).
- batch: norm layers in training mode (batch statistics), everything else in eval mode
  (no dropout), on seeded shuffled test batches of `eval.batch_size`.
- homogeneous: the same, but every batch holds one class: the "similar images in one batch"
  failure of batch statistics.
- precise: PreciseBN (Wu & Johnson 2021, fvcore): the running statistics of every norm layer
  that has them, re-estimated as the mean over `eval.precise_batches` training batches of
  the per-batch mean and unbiased variance of its input (earlier layers normalising with
  batch statistics, as in training), then a running-mode evaluation. This is fvcore's
  mean-of-batch-variances estimator, not the population variance (which would add the
  variance of the batch means).

The batch, homogeneous and precise modes work on a deep copy of the model, so the trained
model, its running statistics, later training and checkpoints are untouched. Test batches
are drawn from a fixed seed, so every evaluation of a run sees the same batches; a batch of
one example is merged into its neighbour (batch statistics of one example are undefined).
"""
from __future__ import annotations

import copy
from typing import Callable, ContextManager, Iterable, Iterator

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


def _merge_singletons(batches: list[torch.Tensor]) -> list[torch.Tensor]:
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
    return _merge_singletons(list(order.split(batch_size)))


def single_class_batches(labels: torch.Tensor, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Batches of one class each (a class's last batch may be smaller), classes in turn."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    batches = []
    for label in torch.unique(labels).tolist():
        members = order[labels[order] == label]
        batches += _merge_singletons(list(members.split(batch_size)))
    return batches


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """A copy whose norm layers normalise with batch statistics and nothing else trains."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if is_norm_layer(module):
            module.train()
    return twin


@torch.no_grad()
def precise_statistics(model: nn.Module, images: Iterable[torch.Tensor], count: int) -> nn.Module:
    """A copy of `model` whose running statistics are the average over `count` batches of each
    norm layer's per-batch input mean and unbiased variance (the mean of batch variances)."""
    twin = with_batch_statistics(model)
    layers = [m for m in twin.modules() if is_norm_layer(m) and hasattr(m, "running_mean")]
    sums = {id(m): [0.0, 0.0] for m in layers}

    def hook(module: nn.Module, inputs: tuple) -> None:
        x = inputs[0].float()
        dims = [0, *range(2, x.dim())]
        sums[id(module)][0] = sums[id(module)][0] + x.mean(dims)
        sums[id(module)][1] = sums[id(module)][1] + x.var(dims, unbiased=True)

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
        mean, var = sums[id(layer)]
        if seen:
            layer.running_mean.copy_(mean / seen)
            layer.running_var.copy_(var / seen)
    return twin.eval()


def evaluate_modes(model: nn.Module, modes: list[str], test: DeviceSplit,
                   normalize: PixelStandardizer,
                   autocast: Callable[[], ContextManager], batch_size: int, seed: int,
                   precise_images: Callable[[], Iterator[torch.Tensor]], precise_batches: int
                   ) -> dict[str, tuple[float, float]]:
    """{split name: (mean loss, accuracy)} for each mode, running first."""
    results = {}
    for mode in modes:
        if mode == "running":
            result = evaluate(model, test, normalize, autocast)
        elif mode == "precise":
            twin = precise_statistics(model, precise_images(), precise_batches)
            result = evaluate(twin, test, normalize, autocast)
        else:
            make = shuffled_batches if mode == "batch" else single_class_batches
            batches = make(test.labels, batch_size, seed + EVAL_SEED_OFFSET)
            result = score(with_batch_statistics(model), test, normalize, batches, autocast)
        results[split_name(mode)] = result
    return results

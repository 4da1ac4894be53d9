"""Probes: statistics of the forward pass and of the update, taken on sampled steps.

A probe attaches to one training step through context managers: `forward(step)` around the
forward pass, `update(step)` around `optimizer.step()`. Hooks exist only inside those
contexts and are removed in `finally`. Statistics are reduced on the device into one small
tensor per layer; `rows()` moves everything pending to the host in one transfer, so a probe
costs nothing on the steps it does not sample.

Activation probe (Ioffe & Szegedy 2015, Fig. 1): at the input of every activation and every
norm layer, per layer the mean, standard deviation (over all values: examples, units and
positions), the 15/50/85th percentiles (over at most 65,536 evenly strided values), and the
fraction of saturated inputs (ReLU: x <= 0; sigmoid/tanh: |x| > `saturation`; GELU:
x < -`saturation`; norm inputs: not applicable). The same statistics, per unit over the
examples (and positions), for a fixed seeded sample of `units` units (channels) per layer.

Gradient probe: per weight matrix/kernel, the gradient norm, the weight norm, the update norm
||w_after - w_before||, and for weights directly followed by a norm layer (which makes the
layer invariant to the weight's scale) the effective step size update / weight norm.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import nn

from bnexp.models.layers import ACTIVATIONS

PERCENTILES = (0.15, 0.50, 0.85)
MAX_QUANTILE_VALUES = 65_536  # torch.quantile sorts its input; a strided sample keeps it cheap
ACTIVATION_COLUMNS = ["step", "layer", "name", "kind", "module", "unit", "mean", "std",
                      "p15", "p50", "p85", "saturated"]
GRADIENT_COLUMNS = ["step", "layer", "name", "followed_by_norm", "grad_norm", "weight_norm",
                    "update_norm", "effective_step"]


def _saturation_rule(module: nn.Module, threshold: float):
    if isinstance(module, nn.ReLU):
        return lambda x: x <= 0
    if isinstance(module, (nn.Sigmoid, nn.Tanh)):
        return lambda x: x.abs() > threshold
    if isinstance(module, nn.GELU):
        return lambda x: x < -threshold
    return None  # norm inputs


class ActivationProbe:
    """Input statistics of every activation and norm layer (see the module docstring)."""

    table = "activations"
    columns = ACTIVATION_COLUMNS

    def __init__(self, model: nn.Module, norm_layers: list[nn.Module], units: int,
                 saturation: float, seed: int):
        norm_ids = {id(layer) for layer in norm_layers}
        activation_types = tuple(ACTIVATIONS.values())
        self.targets = [(name, module, "norm" if id(module) in norm_ids else "activation")
                        for name, module in model.named_modules()
                        if id(module) in norm_ids or isinstance(module, activation_types)]
        self.units, self.saturation, self.seed = units, saturation, seed
        self.sampled: dict[int, torch.Tensor] = {}  # layer -> unit indices, fixed on first use
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (step, layer, stats)

    @contextlib.contextmanager
    def forward(self, step: int) -> Iterator[None]:
        handles = [module.register_forward_pre_hook(self._hook(step, index, module))
                   for index, (_, module, _) in enumerate(self.targets)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def update(self, step: int) -> Iterator[None]:
        yield

    def _hook(self, step: int, index: int, module: nn.Module):
        saturated = _saturation_rule(module, self.saturation)

        def record(_module: nn.Module, inputs: tuple) -> None:
            with torch.no_grad():
                self.pending.append((step, index, self._stats(index, inputs[0], saturated)))
        return record

    def _stats(self, index: int, x: torch.Tensor, saturated) -> torch.Tensor:
        """Rows [layer, unit_1..unit_k] x [mean, std, p15, p50, p85, saturated]."""
        values = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)  # units x samples
        if index not in self.sampled:
            generator = torch.Generator().manual_seed(self.seed * 1009 + index)
            count = min(self.units, values.shape[0])
            self.sampled[index] = torch.randperm(values.shape[0], generator=generator)[:count]
        units = values[self.sampled[index].to(values.device)]
        everything = values.reshape(1, -1)
        stride = max(1, math.ceil(everything.shape[1] / MAX_QUANTILE_VALUES))
        rows = []
        for block, sample in ((everything, everything[:, ::stride]), (units, units)):
            q = torch.quantile(sample, torch.tensor(PERCENTILES, device=x.device), dim=1).T
            fraction = (saturated(block).float().mean(1, keepdim=True) if saturated
                        else torch.full_like(block[:, :1], float("nan")))
            rows.append(torch.cat([block.mean(1, keepdim=True), block.std(1, keepdim=True),
                                   q, fraction], dim=1))
        return torch.cat(rows)

    def rows(self) -> list[dict]:
        if not self.pending:
            return []
        flat = torch.cat([stats.flatten() for *_, stats in self.pending]).cpu()  # one transfer
        blocks = flat.split([stats.numel() for *_, stats in self.pending])
        rows = []
        for (step, index, _), block in zip(self.pending, blocks):
            block = block.view(-1, 6).tolist()
            name, module, kind = self.targets[index]
            units = ["all", *self.sampled[index].tolist()]
            for unit, values in zip(units, block):
                rows.append(dict(zip(ACTIVATION_COLUMNS, [step, index, name, kind,
                                                          type(module).__name__, unit, *values])))
        self.pending.clear()
        return rows


class GradientProbe:
    """Gradient, weight and update norms of every Linear/Conv weight (module docstring)."""

    table = "gradients"
    columns = GRADIENT_COLUMNS

    def __init__(self, model: nn.Module, normalized_weights: list[nn.Module]):
        followed = {id(module) for module in normalized_weights}
        self.layers = [(name, module.weight, id(module) in followed)
                       for name, module in model.named_modules()
                       if isinstance(module, (nn.Linear, nn.Conv2d))]
        self.pending: list[tuple[int, torch.Tensor]] = []

    @contextlib.contextmanager
    def forward(self, step: int) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def update(self, step: int) -> Iterator[None]:
        """Around optimizer.step(): norms before, the update after."""
        weights = [weight for _, weight, _ in self.layers]
        with torch.no_grad():
            before = [w.detach().clone() for w in weights]
            grads = torch.stack([w.grad.norm() if w.grad is not None else w.new_zeros(())
                                 for w in weights])
            norms = torch.stack([w.norm() for w in before])
        yield
        with torch.no_grad():
            updates = torch.stack([(w - b).norm() for w, b in zip(weights, before)])
            self.pending.append((step, torch.stack([grads, norms, updates, updates / norms])))

    def rows(self) -> list[dict]:
        if not self.pending:
            return []
        stacked = torch.stack([stats for _, stats in self.pending]).cpu().tolist()
        rows = []
        for (step, _), (grads, norms, updates, ratios) in zip(self.pending, stacked):
            for index, (name, _, followed) in enumerate(self.layers):
                rows.append(dict(zip(GRADIENT_COLUMNS, [
                    step, index, name, followed, grads[index], norms[index], updates[index],
                    ratios[index] if followed else float("nan")])))
        self.pending.clear()
        return rows

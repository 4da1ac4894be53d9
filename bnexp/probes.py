"""Probes: statistics of the forward pass and of the update, taken on sampled steps.

A probe attaches to one training step through context managers: `forward(step, images,
labels)` around the forward pass, `update(step)` around `optimizer.step()`. Hooks exist only inside those
contexts and are removed in `finally`. Statistics are reduced on the device into one small
tensor per layer; `rows()` moves everything pending to the host in one transfer, so a probe
costs nothing on the steps it does not sample.

Activation probe (Ioffe & Szegedy 2015, Fig. 1): at the input of every activation and every
norm layer, per layer the mean, standard deviation (over all values: examples, units and
positions), the 15/50/85th percentiles (over at most 65,536 evenly strided values), and the
fraction of saturated inputs (ReLU: x <= 0; sigmoid/tanh: |x| > `saturation`; GELU:
x < -`saturation`; norm inputs: not applicable). The same statistics, per unit over the
examples (and positions), for a fixed seeded sample of `units` units (channels) per layer;
percentiles come from at most 65,536 evenly strided values per layer or unit.

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
from bnexp.schema import TABLES

PERCENTILES = (0.15, 0.50, 0.85)
MAX_QUANTILE_VALUES = 65_536  # torch.quantile sorts its input; a strided sample keeps it cheap
ACTIVATION_COLUMNS = TABLES["activations"].columns
GRADIENT_COLUMNS = TABLES["gradients"].columns


SATURATION = {  # rule -> (input, threshold) -> saturated mask
    "nonpositive": lambda x, threshold: x <= 0,  # ReLU: zero output and zero gradient
    "beyond": lambda x, threshold: x.abs() > threshold,  # sigmoid, tanh: flat tails
    "below": lambda x, threshold: x < -threshold,  # GELU: its flat negative tail
}


def _saturation_rule(module: nn.Module):
    """The SATURATION rule of an activation layer; None for norm inputs."""
    if isinstance(module, nn.ReLU):
        return "nonpositive"
    if isinstance(module, (nn.Sigmoid, nn.Tanh)):
        return "beyond"
    if isinstance(module, nn.GELU):
        return "below"
    return None


class ActivationProbe:
    """Input statistics of every activation and norm layer (see the module docstring).

    The hooks only keep a reference to each layer's input; when the forward pass is done, the
    layers whose inputs have one shape are reduced together as one stacked tensor, so a probed
    step costs a few dozen operations whatever the depth (one set per distinct shape)."""

    table = "activations"

    def __init__(self, model: nn.Module, norm_layers: list[nn.Module], units: int,
                 saturation: float, seed: int):
        norm_ids = {id(layer) for layer in norm_layers}
        activation_types = tuple(ACTIVATIONS.values())
        self.targets = [(name, module, "norm" if id(module) in norm_ids else "activation")
                        for name, module in model.named_modules()
                        if id(module) in norm_ids or isinstance(module, activation_types)]
        self.rules = [_saturation_rule(module) for _, module, _ in self.targets]
        self.units, self.saturation, self.seed = units, saturation, seed
        self.sampled: dict[int, torch.Tensor] = {}  # layer -> unit indices, fixed on first use
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (step, layer, stats)

    @contextlib.contextmanager
    def forward(self, step: int, *batch: torch.Tensor) -> Iterator[None]:
        captured: dict[int, torch.Tensor] = {}
        handles = [module.register_forward_pre_hook(self._hook(captured, index))
                   for index, (_, module, _) in enumerate(self.targets)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        with torch.no_grad():
            self._reduce(step, captured)

    @contextlib.contextmanager
    def update(self, step: int) -> Iterator[None]:
        yield

    @staticmethod
    def _hook(captured: dict[int, torch.Tensor], index: int):
        def record(_module: nn.Module, inputs: tuple) -> None:
            captured[index] = inputs[0].detach()
        return record

    def _units(self, index: int, channels: int) -> torch.Tensor:
        if index not in self.sampled:
            generator = torch.Generator().manual_seed(self.seed * 1009 + index)
            count = min(self.units, channels)
            self.sampled[index] = torch.randperm(channels, generator=generator)[:count]
        return self.sampled[index]

    def _reduce(self, step: int, captured: dict[int, torch.Tensor]) -> None:
        """Per layer, rows [layer, unit_1..unit_k] x [mean, std, p15, p50, p85, saturated]."""
        by_shape: dict[tuple, list[int]] = {}
        for index, x in captured.items():
            by_shape.setdefault(tuple(x.shape), []).append(index)
        for shape, indices in by_shape.items():
            stacked = torch.stack([captured[i] for i in indices]).float()  # L x N x C x ...
            values = stacked.transpose(1, 2).reshape(len(indices), shape[1], -1)  # L x C x M
            chosen = torch.stack([self._units(i, shape[1]) for i in indices]).to(values.device)
            units = torch.gather(values, 1, chosen[:, :, None].expand(-1, -1, values.shape[2]))
            everything = values.reshape(len(indices), 1, -1)
            stats = torch.cat([self._block(everything, indices), self._block(units, indices)], 1)
            self.pending += [(step, index, rows) for index, rows in zip(indices, stats)]

    def _block(self, block: torch.Tensor, indices: list[int]) -> torch.Tensor:
        """L x R x samples -> L x R x [mean, std, p15, p50, p85, saturated fraction]."""
        stride = max(1, math.ceil(block.shape[2] / MAX_QUANTILE_VALUES))
        q = torch.quantile(block[:, :, ::stride],
                           torch.tensor(PERCENTILES, device=block.device), dim=2)
        saturated = torch.full_like(block[:, :, 0], float("nan"))
        for rule in {self.rules[i] for i in indices} - {None}:
            mine = torch.tensor([self.rules[i] == rule for i in indices], device=block.device)
            fraction = SATURATION[rule](block, self.saturation).float().mean(2)
            saturated = torch.where(mine[:, None], fraction, saturated)
        return torch.stack([block.mean(2), block.std(2), q[0], q[1], q[2], saturated], dim=2)

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

    def __init__(self, model: nn.Module, normalized_weights: list[nn.Module]):
        followed = {id(module) for module in normalized_weights}
        self.layers = [(name, module.weight, id(module) in followed)
                       for name, module in model.named_modules()
                       if isinstance(module, (nn.Linear, nn.Conv2d))]
        self.pending: list[tuple[int, torch.Tensor]] = []

    @contextlib.contextmanager
    def forward(self, step: int, *batch: torch.Tensor) -> Iterator[None]:
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

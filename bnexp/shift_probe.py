"""Santurkar et al.'s measure of internal covariate shift (probe.ics; "How does batch
normalization help optimization?", NeurIPS 2018, Definition 2.1 and Fig. 3).

For every weight layer i (Linear/Conv, in the model's parameter order) at a sampled step t:

    G_i  = the gradient of the batch loss w.r.t. W_i at the step's parameters (the gradient
           the step itself used);
    G'_i = the same gradient, on the same batch, after every parameter that comes before W_i
           (earlier weights, biases, gamma/beta) has taken its step-t update, W_i and the
           later ones still at their step-t values.

The shift layer i sees is ||G_i - G'_i||_2 (`ics_l2`), with cos(G_i, G'_i) (`ics_cosine`) and
||G_i|| (`grad_norm`) beside it. G'_i takes one more forward/backward pass per layer, on a
copy of the model in training mode (batch statistics, dropout with the step's own masks:
the torch generator is rewound to the state the step's forward started from, and restored
afterwards; buffers such as running statistics as that forward saw them, which batch renorm
reads). The copy is thrown away, so a probed run trains exactly as an unprobed one.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.schema import TABLES

ICS_COLUMNS = TABLES["ics"].columns


class ICSProbe:
    """G_i against G'_i for every weight layer (module docstring)."""

    table = "ics"

    def __init__(self, model: nn.Module):
        self.model = model
        position = {id(p): index for index, p in enumerate(model.parameters())}
        self.layers = [(name, position[id(module.weight)]) for name, module
                       in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
        self.batch: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.rng: Optional[tuple] = None
        self.buffers: list[torch.Tensor] = []
        self.pending: list[tuple[int, torch.Tensor]] = []

    @contextlib.contextmanager
    def forward(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> Iterator[None]:
        self.rng = _rng_state()  # the step's dropout masks, replayed for G'
        self.batch = (images.clone(), labels.clone())
        self.buffers = [b.detach().clone() for b in self.model.buffers()]  # before this forward
        yield

    @contextlib.contextmanager
    def update(self, step: int) -> Iterator[None]:
        """Around optimizer.step(): the parameters and gradients before, the shift after."""
        parameters = list(self.model.parameters())
        with torch.no_grad():
            before = [p.detach().clone() for p in parameters]
            gradients = [_grad(parameters[index]) for _, index in self.layers]
        yield
        with torch.no_grad():
            after = [p.detach().clone() for p in parameters]
        self.pending.append((step, self._shift(before, after, gradients)))
        self.batch = None

    def _shift(self, before: list[torch.Tensor], after: list[torch.Tensor],
               gradients: list[torch.Tensor]) -> torch.Tensor:
        """Per layer [grad_norm, ics_l2, ics_cosine]."""
        images, labels = self.batch
        twin = copy.deepcopy(self.model).train(self.model.training)
        twin_parameters = list(twin.parameters())
        resume = _rng_state()
        stats = []
        try:
            for (_, index), gradient in zip(self.layers, gradients):
                with torch.no_grad():
                    for position, parameter in enumerate(twin_parameters):
                        parameter.copy_(after[position] if position < index else before[position])
                    for buffer, value in zip(twin.buffers(), self.buffers):
                        buffer.copy_(value)  # running statistics as the step's forward saw them
                twin.zero_grad(set_to_none=True)
                _set_rng_state(self.rng)
                F.cross_entropy(twin(images), labels).backward()
                shifted = _grad(twin_parameters[index])
                stats.append(torch.stack([
                    gradient.norm(), (gradient - shifted).norm(),
                    F.cosine_similarity(gradient.flatten(), shifted.flatten(), dim=0)]))
        finally:
            _set_rng_state(resume)
        return torch.stack(stats)

    def rows(self) -> list[dict]:
        if not self.pending:
            return []
        stacked = torch.stack([stats for _, stats in self.pending]).cpu().tolist()
        rows = []
        for (step, _), layers in zip(self.pending, stacked):
            for index, ((name, _), values) in enumerate(zip(self.layers, layers)):
                rows.append(dict(zip(ICS_COLUMNS, [step, index, name, *values])))
        self.pending.clear()
        return rows


def _grad(parameter: torch.Tensor) -> torch.Tensor:
    grad = parameter.grad
    return torch.zeros_like(parameter) if grad is None else grad.detach().clone()


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)

"""Santurkar et al.'s probes of the optimization ("How does batch normalization help
optimization?", NeurIPS 2018): internal covariate shift (probe.ics) and the loss landscape
along the gradient (probe.landscape).

Both recompute gradients of the sampled step's batch at other parameters, on a copy of the
model in training mode: batch statistics, buffers (running statistics, which batch renorm
reads) as the step's forward saw them, and dropout / noisy-BN draws replayed from the torch
generator state that forward started from (the generator is restored afterwards). The copy is
thrown away, so a probed run trains bit for bit as an unprobed one (tested).

ICS (Definition 2.1, Fig. 3), for every weight layer i (Linear/Conv, in parameter order):
G_i is the layer's gradient that the step used; G'_i is the same batch's gradient after every
parameter before W_i (earlier weights, biases, gamma/beta) took its step-t update, W_i and the
later ones still at their step-t values. Rows: ||G_i - G'_i||_2 (`ics_l2`), cos(G_i, G'_i)
(`ics_cosine`), ||G_i|| (`grad_norm`). Cost: one forward/backward per layer.

Landscape (sec. 3.1, Fig. 4; Appendix A): from the step's parameters theta and full gradient
g, at theta - eta * g for eta = m * lr, m in `probe.landscape_steps` (multiples of the step's
own LR), the loss and the gradient g(eta). Rows: the loss at theta, the smallest and largest
loss along the line (`loss_min`, `loss_max`: the loss's variation), the largest gradient change
max ||g(eta) - g|| (`grad_change`, "gradient predictiveness") and the effective beta-smoothness
max ||g(eta) - g|| / ||eta g|| (`beta_smoothness`). The paper moves along the gradient at
step sizes spanning its training LR (Fig. 4 plots them for a range of LRs); multiples 0.5-4 of
the current LR keep the same meaning under warmup and decay. Cost: one forward/backward per
multiple.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.schema import TABLES


class _ReplayProbe:
    """Captures what a sampled step's forward saw (batch, buffers, generator state) and the
    parameters and gradients before and after its update; `_gradients(values)` recomputes
    the batch loss and every parameter's gradient at other parameter values."""

    table = ""

    def __init__(self, model: nn.Module):
        self.model = model
        self.batch: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        self.rng: Optional[tuple] = None
        self.buffers: list[torch.Tensor] = []
        self.pending: list[tuple[int, torch.Tensor]] = []

    @contextlib.contextmanager
    def forward(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> Iterator[None]:
        self.rng = _rng_state()
        self.batch = (images.clone(), labels.clone())
        self.buffers = [b.detach().clone() for b in self.model.buffers()]
        yield

    @contextlib.contextmanager
    def update(self, step: int) -> Iterator[None]:
        parameters = list(self.model.parameters())
        with torch.no_grad():
            before = [p.detach().clone() for p in parameters]
            gradients = [_grad(p) for p in parameters]
        yield
        with torch.no_grad():
            after = [p.detach().clone() for p in parameters]
        twin = copy.deepcopy(self.model).train(self.model.training)
        resume = _rng_state()
        try:
            self.pending.append((step, self._measure(twin, before, after, gradients)))
        finally:
            _set_rng_state(resume)
            self.batch = None

    def _measure(self, twin: nn.Module, before: list[torch.Tensor], after: list[torch.Tensor],
                 gradients: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _gradients(self, twin: nn.Module, values: Sequence[torch.Tensor]
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The batch loss and every parameter's gradient with the twin's parameters at
        `values`, replaying the step's buffers and random draws."""
        images, labels = self.batch
        parameters = list(twin.parameters())
        with torch.no_grad():
            for parameter, value in zip(parameters, values):
                parameter.copy_(value)
            for buffer, value in zip(twin.buffers(), self.buffers):
                buffer.copy_(value)
        twin.zero_grad(set_to_none=True)
        _set_rng_state(self.rng)
        loss = F.cross_entropy(twin(images), labels)
        loss.backward()
        return loss.detach(), [_grad(p) for p in parameters]


class ICSProbe(_ReplayProbe):
    """G_i against G'_i for every weight layer (module docstring)."""

    table = "ics"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        position = {id(p): index for index, p in enumerate(model.parameters())}
        self.layers = [(name, position[id(module.weight)]) for name, module
                       in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]

    def _measure(self, twin, before, after, gradients) -> torch.Tensor:
        """Per layer [grad_norm, ics_l2, ics_cosine]."""
        stats = []
        for _, index in self.layers:
            values = [a if position < index else b
                      for position, (a, b) in enumerate(zip(after, before))]
            _, shifted = self._gradients(twin, values)
            g, g_shifted = gradients[index], shifted[index]
            stats.append(torch.stack([g.norm(), (g - g_shifted).norm(),
                                      F.cosine_similarity(g.flatten(), g_shifted.flatten(), 0)]))
        return torch.stack(stats)

    def rows(self) -> list[dict]:
        rows = []
        for step, layers in _drain(self.pending):
            for index, ((name, _), values) in enumerate(zip(self.layers, layers)):
                rows.append(dict(zip(TABLES["ics"].columns, [step, index, name, *values])))
        return rows


class LandscapeProbe(_ReplayProbe):
    """Loss and gradient along the step's gradient direction (module docstring)."""

    table = "landscape"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 multiples: Sequence[float]):
        super().__init__(model)
        self.optimizer, self.multiples = optimizer, list(multiples)

    def _measure(self, twin, before, after, gradients) -> torch.Tensor:
        """[lr, loss, loss_min, loss_max, grad_change, beta_smoothness]."""
        lr = float(self.optimizer.param_groups[0]["lr"])  # the step's (the schedule moves later)
        flat = torch.cat([g.flatten() for g in gradients])
        loss, _ = self._gradients(twin, before)
        losses, changes, smoothness = [loss], [], []
        for multiple in self.multiples:
            eta = multiple * lr
            moved = [b - eta * g for b, g in zip(before, gradients)]
            moved_loss, moved_grads = self._gradients(twin, moved)
            change = (torch.cat([g.flatten() for g in moved_grads]) - flat).norm()
            losses.append(moved_loss)
            changes.append(change)
            smoothness.append(change / (eta * flat.norm()).clamp(min=1e-12))
        losses_t = torch.stack(losses)
        return torch.stack([loss.new_tensor(lr), loss, losses_t.min(), losses_t.max(),
                            torch.stack(changes).max(), torch.stack(smoothness).max()])

    def rows(self) -> list[dict]:
        rows = []
        for step, values in _drain(self.pending):
            rows.append(dict(zip(TABLES["landscape"].columns, [step, *values])))
        return rows


def _drain(pending: list[tuple[int, torch.Tensor]]) -> list[tuple[int, list]]:
    """The pending (step, stats) with the stats on the host, in one transfer; emptied."""
    if not pending:
        return []
    stacked = torch.stack([stats for _, stats in pending]).cpu().tolist()
    drained = [(step, values) for (step, _), values in zip(pending, stacked)]
    pending.clear()
    return drained


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

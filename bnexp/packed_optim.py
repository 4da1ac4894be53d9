"""A pack's SGD: one update for K members, each with its own LR schedule, momentum and
weight decay."""
from __future__ import annotations

from typing import Sequence

import torch

from bnexp.engine import Fitter
from bnexp.packed_model import PackedModel


class PackedSGD:
    """torch.optim.SGD's update (weight decay in the gradient, heavy-ball or Nesterov
    momentum, dampening 0) with each member's LR, momentum and weight decay as tensors
    broadcast over its slice of every packed parameter. The LRs of every step are computed
    once, with each member's own schedule, into a (steps, K) table."""

    def __init__(self, model: PackedModel, fitters: Sequence[Fitter], total_steps: int):
        """`fitters`: the members' own (their optimizers' state and schedules)."""
        count = len(fitters)
        device = next(model.parameters()).device
        optimizers = [fitter.optimizer for fitter in fitters]
        schedules = [fitter.schedule for fitter in fitters]
        self.nesterov = optimizers[0].param_groups[0]["nesterov"]
        self.momentum = torch.tensor([o.param_groups[0]["momentum"] for o in optimizers],
                                     device=device).view(-1, 1)
        self.uses_momentum = bool((self.momentum != 0).any())
        table = [[s.peaks[0] * s.factor(step) for s in schedules] for step in range(total_steps)]
        self.lr = torch.tensor(table, dtype=torch.float32, device=device).view(total_steps, count, 1)
        self.entries = []
        for slot, own in model.parameter_slots():
            slot.packed.requires_grad_(own[0].requires_grad)
            if not own[0].requires_grad:
                continue
            first, size = slot.first, len(own)
            decay = torch.tensor([_group_of(o, p)["weight_decay"] for o, p in
                                  zip(optimizers[first:first + size], own)],
                                 device=device).view(-1, 1)
            buffer = torch.zeros_like(slot.packed) if self.uses_momentum else None
            if buffer is not None:
                for view, optimizer, parameter in zip(_rows(buffer, size),
                                                      optimizers[first:first + size], own):
                    saved = optimizer.state.get(parameter, {}).get("momentum_buffer")
                    if saved is not None:
                        view.copy_(saved.view(-1))
            self.entries.append((slot.packed, first, size, decay if bool((decay != 0).any())
                                 else None, buffer))
        self.members_optimizers = optimizers

    @torch.no_grad()
    def step(self, step: int) -> None:
        lr_all = self.lr[step]
        for parameter, first, size, decay, buffer in self.entries:
            whole = size == len(lr_all)
            lr = lr_all if whole else lr_all[first:first + size]
            weights = parameter.view(size, -1)
            grad = parameter.grad.view(size, -1)
            if decay is not None:
                grad = torch.addcmul(grad, weights, decay)
            if buffer is not None:
                momentum = self.momentum if whole else self.momentum[first:first + size]
                velocity = buffer.view(size, -1)
                torch.addcmul(grad, velocity, momentum, out=velocity)
                grad = grad + momentum * velocity if self.nesterov else velocity
            weights.addcmul_(grad, lr, value=-1)

    def zero_grad(self) -> None:
        for parameter, *_ in self.entries:
            parameter.grad = None

    def store(self, model: PackedModel) -> None:
        """Write each member's momentum buffers into its own optimizer's state."""
        if not self.uses_momentum:
            return
        buffers = {id(parameter): buffer for parameter, _, _, _, buffer in self.entries}
        for slot, own in model.parameter_slots():
            buffer = buffers.get(id(slot.packed))
            if buffer is None:
                continue
            optimizers = self.members_optimizers[slot.first: slot.first + len(own)]
            for view, optimizer, parameter in zip(_rows(buffer, len(own)), optimizers, own):
                optimizer.state[parameter]["momentum_buffer"] = view.view_as(parameter).clone()


def _rows(tensor: torch.Tensor, size: int) -> list[torch.Tensor]:
    return list(tensor.view(size, -1).unbind(0))


def _group_of(optimizer: torch.optim.Optimizer, parameter: torch.Tensor) -> dict:
    return next(g for g in optimizer.param_groups if any(p is parameter for p in g["params"]))

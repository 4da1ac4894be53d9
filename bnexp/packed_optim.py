"""A pack's SGD: one update for K members, each with its own LR schedule, momentum and
weight decay."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from bnexp.engine import Fitter
from bnexp.packed_model import PackedModel, same_view


class _Entry:
    """One packed parameter as (members, elements per member) views: the weights and their
    momentum buffer (its gradient is viewed so at each step: backward makes a new one)."""

    def __init__(self, parameter: torch.Tensor, first: int, size: int,
                 decay: Optional[torch.Tensor], uses_momentum: bool):
        self.parameter, self.first, self.size, self.decay = parameter, first, size, decay
        self.weights = parameter.detach().view(size, -1)
        self.buffer = torch.zeros_like(parameter) if uses_momentum else None
        self.velocity = None if self.buffer is None else self.buffer.view(size, -1)


class PackedSGD:
    """torch.optim.SGD's update (weight decay in the gradient, heavy-ball or Nesterov
    momentum, dampening 0) with each member's LR, momentum and weight decay as (K, 1)
    tensors broadcast over its rows of every packed parameter, in a handful of foreach
    calls per step. The LRs of every step are computed once, with each member's own
    schedule, into a (steps, K, 1) table."""

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
        self.members_optimizers = optimizers
        self.entries: list[_Entry] = []
        for slot, own in model.parameter_slots():
            slot.packed.requires_grad_(own[0].requires_grad)
            if not own[0].requires_grad:
                continue
            first, size = slot.first, len(own)
            decay = torch.tensor([_group_of(o, p)["weight_decay"] for o, p in
                                  zip(optimizers[first:first + size], own)],
                                 device=device).view(-1, 1)
            entry = _Entry(slot.packed, first, size, decay if bool((decay != 0).any()) else None,
                           self.uses_momentum)
            if entry.buffer is not None:
                for view, optimizer, parameter in zip(slot.views,
                                                      optimizers[first:first + size], own):
                    saved = optimizer.state.get(parameter, {}).get("momentum_buffer")
                    if saved is not None:
                        same_view(entry.buffer, view, slot.packed).copy_(saved)
            self.entries.append(entry)
        self._group()

    def _group(self) -> None:
        """Lists for the foreach calls (the members' (K, 1) tensors sliced per entry once)."""
        entries = self.entries
        self.weights = [e.weights for e in entries]
        self.velocities = [e.velocity for e in entries if e.velocity is not None]
        self.momenta = [self._rows(self.momentum, e) for e in entries]
        decayed = [e for e in entries if e.decay is not None]
        self.decay_weights = [e.weights for e in decayed]
        self.decays = [e.decay for e in decayed]
        self.decayed_index = [i for i, e in enumerate(entries) if e.decay is not None]
        self.whole = all(e.first == 0 and e.size == len(self.momentum) for e in entries)

    @staticmethod
    def _rows(values: torch.Tensor, entry: _Entry) -> torch.Tensor:
        return values[entry.first: entry.first + entry.size]

    @torch.no_grad()
    def step(self, step: int) -> None:
        lr = self.lr[step]
        lrs = [lr] * len(self.entries) if self.whole else [self._rows(lr, e) for e in self.entries]
        grads = [e.parameter.grad.view(e.size, -1) for e in self.entries]
        if self.decays:  # grad + decay * weight, as SGD's weight decay
            torch._foreach_addcmul_([grads[i] for i in self.decayed_index], self.decay_weights,
                                    self.decays)
        if self.velocities:
            torch._foreach_mul_(self.velocities, self.momenta)
            torch._foreach_add_(self.velocities, grads)
            if self.nesterov:
                torch._foreach_addcmul_(grads, self.velocities, self.momenta)
            else:
                grads = self.velocities
        torch._foreach_addcmul_(self.weights, grads, lrs, value=-1)

    def zero_grad(self) -> None:
        for entry in self.entries:
            entry.parameter.grad = None

    def store(self, model: PackedModel) -> None:
        """Write each member's momentum buffers into its own optimizer's state."""
        if not self.uses_momentum:
            return
        buffers = {id(e.parameter): e for e in self.entries}
        for slot, own in model.parameter_slots():
            entry = buffers.get(id(slot.packed))
            if entry is None:
                continue
            optimizers = self.members_optimizers[slot.first: slot.first + len(own)]
            for view, optimizer, parameter in zip(slot.views, optimizers, own):
                optimizer.state[parameter]["momentum_buffer"] = same_view(
                    entry.buffer, view, slot.packed).clone(memory_format=torch.contiguous_format)


def _group_of(optimizer: torch.optim.Optimizer, parameter: torch.Tensor) -> dict:
    return next(g for g in optimizer.param_groups if any(p is parameter for p in g["params"]))

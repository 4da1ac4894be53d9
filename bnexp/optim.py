"""Optimizers and learning-rate schedules by name, built from the `optim` config slice."""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn
from torch.optim.sgd import sgd as functional_sgd

from bnexp.config import OptimConfig, Schedule


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Weight decay on weight matrices/kernels; norm scales/shifts and biases (every 1-d
    parameter) are exempt unless `optim.decay_norm_bias`."""
    decay, exempt = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (exempt if parameter.ndim <= 1 and not cfg.decay_norm_bias else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda groups, cfg, lr, fused: torch.optim.SGD(
        groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, fused=fused),
    "adam": lambda groups, cfg, lr, fused: torch.optim.Adam(
        groups, lr=lr, betas=(cfg.momentum, 0.999), fused=fused),
    "adamw": lambda groups, cfg, lr, fused: torch.optim.AdamW(
        groups, lr=lr, betas=(cfg.momentum, 0.999), fused=fused),
}
FUSED_DEVICES = {"cpu", "cuda"}  # one fused kernel per step there: 12% of a small MLP's step


class FunctionalSGD:
    """`optimizer.step()` of a `torch.optim.SGD`, through PyTorch's public functional
    `torch.optim.sgd.sgd` on the optimizer's own param groups and momentum buffers, so the
    update, the optimizer's state and its state_dict are the same as `optimizer.step()`'s.

    It skips the method's per-step wrapping (profiler record, hooks, group set-up), a
    noticeable share of a small model's step on a CPU (measured in the README's Performance
    section). bnexp registers no optimizer hooks. Steps that need the method's set-up go
    through it: the first (it creates the momentum buffers), and any step where a parameter
    has no gradient.
    """

    def __init__(self, optimizer: torch.optim.SGD):
        self.optimizer = optimizer

    def __call__(self) -> None:
        state = self.optimizer.state
        steps = []
        for group in self.optimizer.param_groups:
            params = group["params"]
            grads = [p.grad for p in params]
            buffers = [state[p].get("momentum_buffer") for p in params] \
                if group["momentum"] != 0 else []
            if any(g is None for g in grads) or any(b is None for b in buffers):
                self.optimizer.step()
                return
            steps.append((group, params, grads, buffers))
        with torch.no_grad():  # as in SGD.step: the update is not part of any graph
            for group, params, grads, buffers in steps:
                functional_sgd(
                    params, grads, buffers, weight_decay=group["weight_decay"],
                    momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                    nesterov=group["nesterov"], maximize=group["maximize"],
                    foreach=group["foreach"], fused=group["fused"])


def step_function(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """What the training step calls to update: `FunctionalSGD` for plain SGD, else `step`."""
    return FunctionalSGD(optimizer) if type(optimizer) is torch.optim.SGD else optimizer.step


class FrozenElements:
    """Parameters that train only in part: after every update the elements outside each mask
    are written back to the values they had when this was made (the optimizer's momentum and
    weight decay would move them otherwise), so they keep their initial values exactly."""

    def __init__(self, masks: list[tuple[nn.Parameter, torch.Tensor]]):
        self.masks = masks
        self.values = [parameter.detach().clone() for parameter, _ in masks]

    def after(self, update: Callable[[], None]) -> Callable[[], None]:
        """`update` followed by the write-back."""
        def step() -> None:
            update()
            with torch.no_grad():
                for (parameter, mask), value in zip(self.masks, self.values):
                    parameter.copy_(torch.where(mask, parameter, value))
        return step

    def trained_elements(self) -> int:
        return sum(int(mask.sum()) for _, mask in self.masks)


def effective_lr(cfg: OptimConfig, batch_size: int) -> float:
    """optim.lr scaled by optim.scale_rule for this batch size (base: optim.base_batch_size)."""
    ratio = batch_size / cfg.base_batch_size
    return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.scale_rule.value]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: Optional[float] = None
                    ) -> torch.optim.Optimizer:
    """The optimizer over the trainable parameters, at peak LR `lr` (default optim.lr); the
    fused implementation where PyTorch has one for the parameters' device."""
    groups = parameter_groups(model, cfg)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = bool(devices) and devices <= FUSED_DEVICES
    return OPTIMIZERS[cfg.name.value](groups, cfg, cfg.lr if lr is None else lr, fused or None)


def lr_factor(cfg: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of `optim.lr` before step `step` (0-based): linear warmup, then the
    schedule over the remaining steps. The config is read once here: it is called every step,
    and reading a DictConfig costs microseconds per attribute."""
    warmup, schedule = cfg.warmup_steps, cfg.schedule
    milestones = [fraction * total_steps for fraction in cfg.step_milestones]
    gamma = cfg.step_gamma

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == Schedule.constant:
            return 1.0
        if schedule == Schedule.cosine:
            progress = (step - warmup) / max(1, total_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return gamma ** sum(step >= milestone for milestone in milestones)
    return factor


class LRSchedule:
    """Sets each param group's LR to its peak LR times `lr_factor` before every step.

    Does what LambdaLR does for this use, at a fraction of its per-step cost (LambdaLR's
    step() is a sizeable part of a small model's whole step on a CPU): it writes the LR only
    when the factor changes, so a constant schedule costs a counter increment.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int], float]):
        self.optimizer, self.factor = optimizer, factor
        self.peaks = [group["lr"] for group in optimizer.param_groups]
        self.steps = 0
        self.current = None
        self._apply()

    def _apply(self) -> None:
        factor = self.factor(self.steps)
        if factor != self.current:
            for group, peak in zip(self.optimizer.param_groups, self.peaks):
                group["lr"] = peak * factor
            self.current = factor

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "peaks": self.peaks}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.peaks, self.current = state["steps"], state["peaks"], None
        self._apply()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                   ) -> LRSchedule:
    return LRSchedule(optimizer, lr_factor(cfg, total_steps))


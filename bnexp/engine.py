"""The training loop and test-set evaluation.

The hot path (one SGD step) launches only tensor work: the loss and the count of correct
predictions are summed on the device, and the host reads them once per `train.log_every`
steps. A non-finite loss anywhere in an interval makes that interval's sum non-finite, so
divergence is detected at the next log without a sync per step.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.loader import DeviceSplit, Normalizer, TrainBatches

EVAL_BATCH = 1000  # examples per forward pass at evaluation; eval mode makes it irrelevant to results
RowWriter = Callable[[dict], None]


def autocast_for(device: torch.device, amp: bool) -> Callable[[], ContextManager]:
    """bf16 autocast on CUDA when asked for; otherwise a no-op context."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class IntervalMeter:
    """Sums of step losses and correct predictions over one log interval, on the device."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.steps = 0
        self.examples = 0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, examples: int) -> None:
        self.loss.add_(loss)
        self.correct.add_(correct)
        self.steps += 1
        self.examples += examples

    def read_and_reset(self) -> tuple[float, float]:
        """Mean step loss and accuracy of the interval (the one host sync)."""
        loss, correct = self.loss.item(), self.correct.item()
        mean = (loss / self.steps, correct / self.examples)
        self.loss.zero_()
        self.correct.zero_()
        self.steps = self.examples = 0
        return mean


@torch.no_grad()
def evaluate(model: nn.Module, split: DeviceSplit, normalize: Normalizer,
             autocast: Callable[[], ContextManager]) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over `split` with the model in eval mode (running
    statistics); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    loss = torch.zeros((), device=split.labels.device)
    correct = torch.zeros((), device=split.labels.device, dtype=torch.long)
    try:
        for start in range(0, len(split), EVAL_BATCH):
            labels = split.labels[start:start + EVAL_BATCH]
            with autocast():
                logits = model(normalize(split.images[start:start + EVAL_BATCH]))
            loss += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
    finally:
        model.train(was_training)
    return loss.item() / len(split), correct.item() / len(split)


@dataclass
class FitResult:
    status: str  # completed | diverged
    steps: int
    examples: int
    train_seconds: float  # the training loop alone, evaluations excluded
    diverged_at: Optional[int] = None


class Fitter:
    """Runs the step budget: train rows every `log_every` steps, test rows every
    `eval_every` epochs and at the end, through `write_row`."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, batches: TrainBatches,
                 autocast: Callable[[], ContextManager]):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.batches, self.autocast = batches, autocast

    def step(self, images: torch.Tensor, labels: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        with self.autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        return loss.detach(), (logits.argmax(1) == labels).sum()

    def run(self, total_steps: int, log_every: int, eval_every: int,
            test: Callable[[], tuple[float, float]], write_row: RowWriter,
            on_log: Callable[[int, float, float], None] = lambda *_: None) -> FitResult:
        per_epoch, batch = self.batches.steps_per_epoch, self.batches.batch_size
        meter = IntervalMeter(self.batches.split.labels.device)
        step, epoch, train_seconds = 0, 0, 0.0
        started = time.perf_counter()
        self.model.train()
        while step < total_steps:
            epoch += 1
            tick = time.perf_counter()
            for images, labels in self.batches.epoch():
                lr = self.optimizer.param_groups[0]["lr"]
                meter.add(*self.step(images, labels), batch)
                step += 1
                if step % log_every == 0 or step == total_steps:
                    loss, accuracy = meter.read_and_reset()
                    write_row(self._row(step, "train", loss, accuracy, lr, started))
                    on_log(step, loss, accuracy)
                    if not math.isfinite(loss):
                        train_seconds += time.perf_counter() - tick
                        return FitResult("diverged", step, step * batch, train_seconds, step)
                if step == total_steps:
                    break
            train_seconds += time.perf_counter() - tick
            if epoch % eval_every == 0 or step == total_steps:
                loss, accuracy = test()
                write_row(self._row(step, "test", loss, accuracy, lr, started))
        return FitResult("completed", step, step * batch, train_seconds)

    def _row(self, step: int, split: str, loss: float, accuracy: float, lr: float,
             started: float) -> dict:
        return {"step": step, "epoch": round(step / self.batches.steps_per_epoch, 4),
                "examples": step * self.batches.batch_size, "split": split, "loss": loss,
                "accuracy": accuracy, "lr": lr, "seconds": round(time.perf_counter() - started, 3)}

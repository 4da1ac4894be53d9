"""The training loop.

The hot path (one SGD step) launches only tensor work: the loss and the count of correct
predictions are summed on the device, and the host reads them once per `train.log_every`
steps. A non-finite loss anywhere in an interval makes that interval's sum non-finite, so
divergence is detected at the next log without a sync per step. At every epoch end, before
anything is evaluated or checkpointed, the open interval's loss and every parameter and
floating buffer are checked too (one sync per epoch): a NaN after the last log row, or one that
the last update put into the weights, ends the run as diverged and never overwrites the last
good checkpoint.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, ContextManager, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.loader import TrainBatches
from bnexp.optim import LRSchedule, step_function
from bnexp.schema import Status

NO_HOOKS = contextlib.nullcontext()  # reusable: steps that are not probed enter nothing
TableWriter = Callable[[str, list[dict]], None]  # (table name, rows)


def autocast_for(device: torch.device, amp: bool) -> Callable[[], ContextManager]:
    """bf16 autocast on CUDA when asked for; otherwise a no-op context."""
    if amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class IntervalMeter:
    """Sum of step losses and the correct predictions over one log interval, on the device.

    A step adds its loss to the sum and writes which of its predictions were right into its
    own row of a (rows x batch) bool buffer: three small kernels, no allocation and no sum
    per step. The read sums the rows once (the one host sync of an interval).
    """

    def __init__(self, device: torch.device, batch_size: int, rows: int = 1):
        self.loss = torch.zeros((), device=device)
        self.carried = torch.zeros((), device=device, dtype=torch.long)  # hits not in rows
        self.batch_size = batch_size
        self.steps = 0
        self.examples = 0
        self._allocate(rows)

    def _allocate(self, rows: int) -> None:
        self.hits = torch.zeros((rows, self.batch_size), dtype=torch.bool,
                                device=self.loss.device)
        self.rows = list(self.hits.unbind(0))  # views made once: indexing costs a dispatch

    def reserve(self, rows: int) -> None:
        """Room for an interval of `rows` steps, keeping the open interval's counts."""
        if rows != len(self.rows):
            self.carried.add_(self.hits[: self.steps].sum())
            self._allocate(max(rows, self.steps + 1))

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss.add_(loss.detach())
        torch.eq(logits.argmax(1), labels, out=self.rows[self.steps])
        self.steps += 1
        self.examples += labels.shape[0]

    def correct(self) -> torch.Tensor:
        return self.carried + self.hits[: self.steps].sum()

    def state_dict(self) -> dict:
        return {"loss": self.loss.clone(), "correct": self.correct(),
                "steps": self.steps, "examples": self.examples}

    def load_state_dict(self, state: dict) -> None:
        self.loss.copy_(state["loss"])
        self.carried.copy_(state["correct"])
        self.hits.zero_()
        self.steps, self.examples = state["steps"], state["examples"]
        self.reserve(max(len(self.rows), self.steps + 1))

    def read_and_reset(self) -> tuple[float, float]:
        """Mean step loss and accuracy of the interval (the one host sync)."""
        loss, correct = self.loss.item(), self.correct().item()
        mean = (loss / self.steps, correct / self.examples)
        self.loss.zero_()
        self.carried.zero_()
        self.steps = self.examples = 0
        return mean


@dataclass
class FitResult:
    status: Status  # completed | diverged
    steps: int
    examples: int
    train_seconds: float  # the training loop alone, evaluations excluded
    diverged_at: Optional[int] = None
    initial_loss: Optional[float] = None  # the first step's batch loss, before any update


@dataclass
class StepPlan:
    """How many steps to take and how often to log, evaluate and probe along the way."""

    total_steps: int
    log_every: int  # steps per train row (and per host read of the loss)
    eval_every: int  # epochs per evaluation (and always after the last step)
    probe_every: int = 0  # steps per probe sample; 0: no probes
    eval_every_steps: int = 0  # steps per extra evaluation (and one at step 0); 0: none


class Fitter:
    """Trains through a step plan. Rows go out through `write_rows(table, rows)`: train rows to
    "metrics" every `log_every` steps, one row per evaluation split after evaluations, and
    probe rows to each probe's table at log times and epoch ends.

    Its progress (step, epoch, the open log interval, clocks) and everything that decides the
    remaining steps (model, optimizer, schedule, the data order's generator) are in
    `state_dict()`, taken at epoch ends, so a resumed fit continues bit-identically.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: LRSchedule, batches: TrainBatches,
                 autocast: Callable[[], ContextManager], probes: Sequence = ()):
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.batches, self.autocast, self.probes = batches, autocast, list(probes)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = model  # or its compiled form
        self.update = step_function(optimizer)
        self.meter = IntervalMeter(batches.split.labels.device, batches.batch_size)
        self.step_count, self.epoch, self.train_seconds, self.clock_offset = 0, 0, 0.0, 0.0
        self.initial_loss: Optional[torch.Tensor] = None  # read once, when the fit ends
        self.evaluated_at = -1  # the step of the last test evaluation
        self.eval_seconds = 0.0  # evaluations inside the open epoch, kept out of train_seconds
        self.freeze_step: Optional[int] = None  # FrozenBN: from this step on, `frozen` in eval mode
        self.frozen: list[nn.Module] = []

    def freeze_statistics_at(self, step: int, layers: Sequence[nn.Module]) -> None:
        """FrozenBN (train.freeze_norm_stats_at; Wu & Johnson 2021, sec. 3.3): from `step` on,
        `layers` normalise with their running statistics as they stand then, in training too,
        and stop updating them; their gamma/beta and every other weight keep training."""
        self.freeze_step, self.frozen = step, list(layers)

    def _train_mode(self) -> None:
        """The model in training mode, the frozen norms (once due) in eval mode."""
        self.model.train()
        if self.freeze_step is not None and self.step_count >= self.freeze_step:
            for layer in self.frozen:
                layer.eval()

    def step(self, images: torch.Tensor, labels: torch.Tensor, probing: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step; returns the loss and the logits. With `probing`, the probes' hooks
        watch its forward and update."""
        with self._probing("forward", images, labels) if probing else NO_HOOKS, self.autocast():
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with self._probing("update") if probing else NO_HOOKS:
            self.update()
        self.schedule.step()
        return loss, logits

    def _probing(self, phase: str, *batch: torch.Tensor) -> contextlib.ExitStack:
        """Every probe's `phase` context; the forward phase also hands them the batch."""
        hooks = contextlib.ExitStack()
        for probe in self.probes:
            hooks.enter_context(getattr(probe, phase)(self.step_count, *batch))
        return hooks

    def fit(self, plan: StepPlan, test: Callable[[], dict[str, tuple[float, float]]],
            write_rows: TableWriter, on_log: Callable[[int, float, float], None] = lambda *_: None,
            on_epoch_end: Callable[["Fitter"], None] = lambda _: None) -> FitResult:
        """Train until the plan's steps are done or the loss stops being finite."""
        started = time.perf_counter() - self.clock_offset
        batch = self.batches.batch_size
        self.meter.reserve(plan.log_every)
        self._train_mode()
        if plan.eval_every_steps and self.step_count == 0:
            self._evaluate(test, write_rows, started)  # where every curve starts
        while self.step_count < plan.total_steps:
            self.epoch += 1
            tick = time.perf_counter()
            self.eval_seconds = 0.0
            diverged = self._epoch(plan, test, write_rows, on_log, started) or not self._finite()
            self.train_seconds += time.perf_counter() - tick - self.eval_seconds
            self._flush_probes(write_rows)
            if diverged:
                return FitResult(Status.diverged, self.step_count, self.step_count * batch,
                                 self.train_seconds, self.step_count, self._initial_loss())
            if ((self.epoch % plan.eval_every == 0 or self.step_count == plan.total_steps)
                    and self.evaluated_at != self.step_count):
                self._evaluate(test, write_rows, started)
            self.clock_offset = time.perf_counter() - started
            on_epoch_end(self)
        return FitResult(Status.completed, self.step_count, self.step_count * batch,
                         self.train_seconds, initial_loss=self._initial_loss())

    def _evaluate(self, test: Callable[[], dict[str, tuple[float, float]]],
                  write_rows: TableWriter, started: float) -> None:
        """Test rows at the current step, in every eval mode."""
        tick = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        write_rows("metrics", [self._row(split, loss, accuracy, lr, started)
                               for split, (loss, accuracy) in test().items()])
        self._train_mode()  # evaluation restores train mode everywhere, frozen norms included
        self.evaluated_at = self.step_count
        self.eval_seconds += time.perf_counter() - tick

    def _initial_loss(self) -> Optional[float]:
        return None if self.initial_loss is None else float(self.initial_loss)

    def _epoch(self, plan: StepPlan, test: Callable[[], dict[str, tuple[float, float]]],
               write_rows: TableWriter, on_log: Callable[[int, float, float], None],
               started: float) -> bool:
        """One pass over the batches (or what is left of the plan); True if diverged."""
        probe_every = plan.probe_every if self.probes else 0
        last_step = plan.total_steps - 1
        for images, labels in self.batches.epoch():
            lr = self.optimizer.param_groups[0]["lr"]  # the LR of this step, for its row
            probing = probe_every > 0 and (self.step_count % probe_every == 0
                                           or self.step_count == last_step)
            loss, logits = self.step(images, labels, probing)
            if self.step_count == 0:
                self.initial_loss = loss.detach().clone()
            self.meter.add(loss, logits, labels)
            self.step_count += 1
            if self.step_count == self.freeze_step:
                self._train_mode()
            if self.step_count % plan.log_every == 0 or self.step_count == plan.total_steps:
                loss, accuracy = self.meter.read_and_reset()
                write_rows("metrics", [self._row("train", loss, accuracy, lr, started)])
                self._flush_probes(write_rows)
                on_log(self.step_count, loss, accuracy)
                if not math.isfinite(loss):
                    return True
            if (plan.eval_every_steps and self.step_count % plan.eval_every_steps == 0
                    and self.step_count < plan.total_steps):
                self._evaluate(test, write_rows, started)
            if self.step_count == plan.total_steps:
                break
        return False

    def _finite(self) -> bool:
        """The open interval's loss, every parameter and every floating buffer are finite."""
        tensors = [self.meter.loss, *self.model.parameters(),
                   *(buffer for buffer in self.model.buffers() if buffer.is_floating_point())]
        with torch.no_grad():
            return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())

    def _flush_probes(self, write_rows: TableWriter) -> None:
        for probe in self.probes:
            rows = probe.rows()
            if rows:
                write_rows(probe.table, rows)

    def _row(self, split: str, loss: float, accuracy: float, lr: float, started: float) -> dict:
        return {"step": self.step_count,
                "epoch": round(self.step_count / self.batches.steps_per_epoch, 4),
                "examples": self.step_count * self.batches.batch_size, "split": split,
                "loss": loss, "accuracy": accuracy, "lr": lr,
                "seconds": round(time.perf_counter() - started, 3)}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "generator": self.batches.generator.get_state(),
                "meter": self.meter.state_dict(),
                "progress": {"step": self.step_count, "epoch": self.epoch,
                             "train_seconds": self.train_seconds,
                             "clock_offset": self.clock_offset,
                             "initial_loss": self._initial_loss(),
                             "evaluated_at": self.evaluated_at}}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.batches.generator.set_state(state["generator"])
        self.meter.load_state_dict(state["meter"])
        progress = state["progress"]
        self.step_count, self.epoch = progress["step"], progress["epoch"]
        self.train_seconds, self.clock_offset = progress["train_seconds"], progress["clock_offset"]
        initial = progress.get("initial_loss")  # absent in checkpoints of an older bnexp
        self.initial_loss = None if initial is None else torch.tensor(initial)
        self.evaluated_at = progress.get("evaluated_at", -1)

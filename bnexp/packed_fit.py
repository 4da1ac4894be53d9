"""Training K runs as one pack: the members' data, SGD and log intervals, stacked.

Each member is a fully built single run (`bnexp.session.Session`, resumed from its own
checkpoint when it has one). The pack copies the members' models, momentum buffers, schedule
positions and open log intervals in, trains them together, and writes them back into the
members' own objects before anything is evaluated, checkpointed or recorded, so a member's
evaluation, checkpoint and summary are produced by exactly the code a single run uses, and a
checkpoint written in a pack resumes as a single run (and the other way round).

What is per member, as in its single run: the data order and augmentation (its own
generator), its dropout masks (its own torch generator, from its seeded global state), its
weights, batch and running statistics (`bnexp.packed_model`), its loss (the mean over its own
batch; the pack backpropagates the sum of the members' losses, so each member's gradient is
its own), its LR schedule, momentum and weight decay (length-K tensors), and its log
intervals. The host reads the K losses in one sync per `train.log_every` steps.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from bnexp.engine import FitResult, Fitter
from bnexp.packed_data import PackedBatches
from bnexp.packed_model import PackedModel
from bnexp.packed_optim import PackedSGD
from bnexp.schema import Status
from bnexp.session import Session


@dataclass
class Member:
    """One run in a pack and what the pack calls back into its record."""

    session: Session
    generator: torch.Generator  # the run's global torch RNG stream (dropout), per member
    write_rows: Callable[[str, list[dict]], None]
    on_epoch_end: Callable[[Fitter], None]  # checkpoint, with the member's fit state current
    finish: Callable[[FitResult], None]  # record the member's outcome (summary.json)

    @property
    def fitter(self) -> Fitter:
        return self.session.fitter


class PackedMeter:
    """The members' `IntervalMeter`s as (K,) sums and a (rows, K, B) bool buffer."""

    def __init__(self, members: Sequence[Member], device: torch.device, batch_size: int):
        meters = [m.fitter.meter for m in members]
        self.loss = torch.stack([m.loss for m in meters]).to(device)
        self.carried = torch.stack([m.correct() for m in meters]).to(device)
        self.steps, self.examples = meters[0].steps, meters[0].examples
        self.batch_size, self.count = batch_size, len(members)
        self.hits = torch.zeros((max(1, self.steps), self.count, batch_size), dtype=torch.bool,
                                device=device)

    def reserve(self, rows: int) -> None:
        self.carried.add_(self.hits[: self.steps].sum((0, 2)))
        self.hits = torch.zeros((max(rows, self.steps + 1), self.count, self.batch_size),
                                dtype=torch.bool, device=self.loss.device)
        self.rows = list(self.hits.unbind(0))

    def add(self, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss.add_(losses.detach())
        torch.eq(logits.argmax(2), labels, out=self.rows[self.steps])
        self.steps += 1
        self.examples += labels.shape[1]

    def correct(self) -> torch.Tensor:
        return self.carried + self.hits[: self.steps].sum((0, 2))

    def member_states(self) -> list[dict]:
        """Each member's `IntervalMeter.state_dict()` (the hits summed once for all)."""
        correct = self.correct()
        return [{"loss": self.loss[k].clone(), "correct": correct[k], "steps": self.steps,
                 "examples": self.examples} for k in range(self.count)]

    def read_and_reset(self) -> list[tuple[float, float]]:
        """Each member's mean step loss and accuracy of the interval (one host sync)."""
        values = torch.stack([self.loss.double(), self.correct().double()]).tolist()
        means = [(loss / self.steps, correct / self.examples) for loss, correct in zip(*values)]
        self.loss.zero_()
        self.carried.zero_()
        self.steps = self.examples = 0
        return means


class PackedFitter:
    """Trains the members' runs together through their shared step plan (see the module
    docstring); each member's outcome goes to its `finish` as soon as it is known."""

    def __init__(self, members: Sequence[Member]):
        self.members = list(members)
        lead = self.members[0].fitter
        self.plan = self.members[0].session.plan
        self.model = PackedModel([m.session.model for m in self.members],
                                 [m.generator for m in self.members])
        device = self.members[0].session.device
        self.model.to(device).train()
        self.model.load_members()
        self.optimizer = PackedSGD(self.model, [m.fitter for m in self.members],
                                   self.plan.total_steps)
        self.batches = PackedBatches([m.session.batches for m in self.members])
        self.meter = PackedMeter(self.members, device, self.batches.batch_size)
        self.step_count, self.epoch = lead.step_count, lead.epoch
        self.train_seconds, self.clock_offset = lead.train_seconds, lead.clock_offset
        self.initial = [m.fitter.initial_loss for m in self.members]
        self.active = list(range(len(self.members)))
        self.autocast = self.members[0].session.autocast
        self.eval_seconds = 0.0  # evaluations inside the open epoch, kept out of train_seconds

    def fit(self, on_log: Callable[[int, float, float], None] = lambda *_: None) -> None:
        plan = self.plan
        started = time.perf_counter() - self.clock_offset
        self.meter.reserve(plan.log_every)
        if plan.eval_every_steps and self.step_count == 0:
            self._evaluate(started)
        while self.step_count < plan.total_steps and self.active:
            self.epoch += 1
            tick = time.perf_counter()
            self.eval_seconds = 0.0
            self._epoch(started, tick, on_log)
            self.train_seconds += time.perf_counter() - tick - self.eval_seconds
            diverged = self._not_finite()
            if diverged:
                self._store()
            for member in diverged:
                self._finish(member, Status.diverged)
            if not self.active:
                return
            due = self.epoch % plan.eval_every == 0 or self.step_count == plan.total_steps
            self._store()
            if due and any(self.members[k].fitter.evaluated_at != self.step_count
                           for k in self.active):
                self._evaluate(started)
            self.clock_offset = time.perf_counter() - started
            for k in self.active:
                self.members[k].fitter.clock_offset = self.clock_offset
                self.members[k].on_epoch_end(self.members[k].fitter)
        self._store()
        for member in list(self.active):
            self._finish(member, Status.completed)

    def step(self, images: torch.Tensor, labels: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of every member; returns the (K,) losses and the logits."""
        with self.autocast():
            logits = self.model(images)
            losses = F.cross_entropy(logits.flatten(0, 1), labels.reshape(-1),
                                     reduction="none").view(labels.shape).mean(1)
        self.optimizer.zero_grad()
        losses.sum().backward()  # member k's gradient is that of its own mean loss
        self.optimizer.step(self.step_count)
        return losses, logits

    def _epoch(self, started: float, tick: float, on_log: Callable) -> None:
        plan = self.plan
        for images, labels in self.batches.epoch():
            losses, logits = self.step(images, labels)
            if self.step_count == 0:
                first = losses.detach().clone()
                self.initial = [first[k] for k in range(len(self.members))]
            self.meter.add(losses, logits, labels)
            self.step_count += 1
            if self.step_count % plan.log_every == 0 or self.step_count == plan.total_steps:
                self._log(started, tick, on_log)
                if not self.active:
                    return
            if (plan.eval_every_steps and self.step_count % plan.eval_every_steps == 0
                    and self.step_count < plan.total_steps):
                self._store()
                self._evaluate(started)
            if self.step_count == plan.total_steps:
                return

    def _log(self, started: float, tick: float, on_log: Callable) -> None:
        means = self.meter.read_and_reset()
        diverged = []
        for k in self.active:
            fitter = self.members[k].fitter
            loss, accuracy = means[k]
            lr = fitter.schedule.peaks[0] * fitter.schedule.factor(self.step_count - 1)
            fitter.step_count = self.step_count
            self.members[k].write_rows("metrics", [fitter._row("train", loss, accuracy, lr,
                                                               started)])
            if not math.isfinite(loss):
                diverged.append(k)
        on_log(self.step_count, *means[self.active[0]])
        if diverged:
            seconds = self.train_seconds + time.perf_counter() - tick - self.eval_seconds
            self._store()
            for k in diverged:
                self._finish(k, Status.diverged, seconds)

    def _evaluate(self, started: float) -> None:
        tick = time.perf_counter()
        for k in self.active:
            fitter = self.members[k].fitter
            fitter._evaluate(self.members[k].session.evaluate, self.members[k].write_rows,
                             started)
        self.eval_seconds += time.perf_counter() - tick

    def _not_finite(self) -> list[int]:
        """Members whose open interval's loss, or any parameter or float buffer, is not
        finite (one sync for the pack)."""
        finite = torch.isfinite(self.meter.loss)
        for slot, own in self.model._pairs:
            if slot.packed.is_floating_point() and slot.packed.dim():
                rows = slot.packed.detach().view(len(own), -1)
                finite[slot.first: slot.first + len(own)] &= torch.isfinite(rows).all(1)
        flags = finite.tolist()
        return [k for k in self.active if not flags[k]]

    def _store(self) -> None:
        """Every member's own objects brought up to the pack's state."""
        self.model.store_members()
        self.optimizer.store(self.model)
        for member, initial, meter_state in zip(self.members, self.initial,
                                                self.meter.member_states()):
            fitter = member.fitter
            fitter.step_count, fitter.epoch = self.step_count, self.epoch
            fitter.train_seconds = self.train_seconds
            fitter.initial_loss = initial
            fitter.schedule.steps, fitter.schedule.current = self.step_count, None
            fitter.schedule._apply()
            fitter.meter.load_state_dict(meter_state)

    def _finish(self, member: int, status: Status, seconds: Optional[float] = None) -> None:
        """Record a member's outcome (the caller has brought every member's own objects up
        to the pack's state with `_store`)."""
        fitter = self.members[member].fitter
        batch = self.batches.batch_size
        initial = fitter._initial_loss()
        self.active.remove(member)
        self.members[member].finish(FitResult(
            status, self.step_count, self.step_count * batch,
            self.train_seconds if seconds is None else seconds,
            self.step_count if status == Status.diverged else None, initial))

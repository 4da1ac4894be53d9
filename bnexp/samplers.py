"""Which training examples form each SGD batch of an epoch (`train.sampler`).

    iid              one seeded permutation of the training set cut into full batches: every
                     batch a uniform sample without replacement (the default; the incomplete
                     last batch is dropped)
    class_clustered  every batch holds `train.classes_per_batch` (k) distinct classes with
                     m = batch_size / k examples of each, as in Ioffe 2017's non-i.i.d.
                     mini-batches (there 16 labels x 2 examples); k = 1: single-class batches

A class-clustered epoch: each class's examples, in a seeded random order, are cut into groups of
m (a class's last incomplete group is left out). Group r of every class forms layer r; each layer
puts its classes in a seeded random order and takes consecutive runs of k as batches (the
classes of a layer that do not fill a run of k are left out), so a batch never holds a class
twice. Batches keep their groups contiguous (examples of one class side by side) and the epoch's
batches come in a seeded random order. Which examples an epoch leaves out changes every epoch;
how many it uses does not (`steps_per_epoch`).

Every draw is a handful of tensor operations on the device holding the labels.
"""
from __future__ import annotations

from typing import Union

import torch

from bnexp.config import Sampler


class IIDOrder:
    """Full batches of one seeded permutation per epoch."""

    def __init__(self, labels: torch.Tensor, batch_size: int):
        self.examples, self.batch_size = labels.shape[0], batch_size
        self.steps_per_epoch = self.examples // batch_size

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        """(steps_per_epoch, batch_size) indices into the training split."""
        order = torch.randperm(self.examples, generator=generator, device=generator.device)
        return order[: self.steps_per_epoch * self.batch_size].view(-1, self.batch_size)


class ClassClusteredOrder:
    """Batches of `classes_per_batch` distinct classes, batch_size / classes_per_batch
    examples each (the construction in the module docstring)."""

    def __init__(self, labels: torch.Tensor, batch_size: int, classes_per_batch: int):
        if batch_size % classes_per_batch:
            raise ValueError(f"train.classes_per_batch={classes_per_batch} must divide "
                             f"train.batch_size={batch_size}")
        self.labels, self.batch_size, self.classes = labels, batch_size, classes_per_batch
        self.per_class = batch_size // classes_per_batch
        counts = torch.bincount(labels.cpu())
        self.groups = counts // self.per_class  # full groups of each class
        layers = int(self.groups.max())
        classes_in_layer = (torch.arange(layers).view(-1, 1) < self.groups.view(1, -1)).sum(1)
        self.batches_in_layer = classes_in_layer // classes_per_batch
        self.steps_per_epoch = int(self.batches_in_layer.sum())

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        """(steps_per_epoch, batch_size) indices into the training split."""
        device = self.labels.device
        m, k = self.per_class, self.classes
        order = torch.randperm(self.labels.shape[0], generator=generator, device=device)
        label_of, by_label = torch.sort(self.labels[order], stable=True)
        members = order[by_label]  # the examples grouped by class, random within each class
        groups = self.groups.to(device)
        counts = torch.bincount(label_of, minlength=groups.numel())
        rank = torch.arange(label_of.numel(), device=device) - (counts.cumsum(0) - counts)[label_of]
        layer, slot_in_group = rank // m, rank % m
        layers = self.batches_in_layer.numel()
        present = torch.arange(layers, device=device).view(-1, 1) < groups.view(1, -1)
        keys = torch.rand(layers, groups.numel(), generator=generator, device=device)
        keys = keys.masked_fill(~present, 2.0)  # absent classes sort last in their layer
        position = keys.argsort(1).argsort(1)  # each class's place in its layer's random order
        per_layer = self.batches_in_layer.to(device)
        used = present & (position < (per_layer * k).view(-1, 1))
        first_batch = per_layer.cumsum(0) - per_layer
        kept = layer < groups[label_of]
        layer, label_of, slot_in_group = layer[kept], label_of[kept], slot_in_group[kept]
        members = members[kept]
        taken = used[layer, label_of]
        place = position[layer, label_of][taken]
        batch = first_batch[layer[taken]] + place // k
        column = (place % k) * m + slot_in_group[taken]
        batches = torch.empty(self.steps_per_epoch, self.batch_size, dtype=members.dtype,
                              device=device)
        batches[batch, column] = members[taken]
        shuffle = torch.randperm(self.steps_per_epoch, generator=generator, device=device)
        return batches[shuffle]


BatchOrder = Union[IIDOrder, ClassClusteredOrder]


def batch_order(sampler: Sampler, labels: torch.Tensor, batch_size: int,
                classes_per_batch: int) -> BatchOrder:
    """The epoch order `train.sampler` names, over a split's labels."""
    if sampler == Sampler.class_clustered:
        return ClassClusteredOrder(labels, batch_size, classes_per_batch)
    return IIDOrder(labels, batch_size)

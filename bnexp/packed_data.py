"""A pack's training batches: each member's batch drawn exactly as its single run draws it
(`bnexp.loader.TrainBatches.epoch`: its own generator's batch order, crops and flips), all
gathered with one index per step into a (K, B, ...) tensor."""
from __future__ import annotations

from typing import Sequence

import torch

from bnexp.loader import CROP_PADDING, TrainBatches, crop_and_flip


class PackedBatches:
    """The members' batches as one (K, B, ...) tensor per step, each member's drawn in its
    own order from its own generator (the single run's `TrainBatches.epoch`)."""

    def __init__(self, members: Sequence[TrainBatches]):
        self.members = list(members)
        first = self.members[0]
        self.batch_size, self.steps_per_epoch = first.batch_size, first.steps_per_epoch
        self.augment = first.augment
        splits = [b.split for b in self.members]
        self.examples = len(splits[0])
        shared = all(split is splits[0] for split in splits)
        self.images = splits[0].images if shared else torch.cat([s.images for s in splits])
        self.labels = splits[0].labels if shared else torch.cat([s.labels for s in splits])
        device = self.images.device
        self.offsets = torch.arange(len(splits), device=device).view(-1, 1) * (
            0 if shared else self.examples)
        same = all((b.normalize.mean, b.normalize.std) == (first.normalize.mean,
                                                           first.normalize.std)
                   for b in self.members)
        self.scale = first.normalize.scale if same else torch.stack(
            [b.normalize.scale for b in self.members])  # (K, 1, C, 1, 1) broadcasts
        self.shift = first.normalize.shift if same else torch.stack(
            [b.normalize.shift for b in self.members])

    def epoch(self):
        """(images (K, B, C, H, W), labels (K, B)) per step."""
        count, batch, steps = len(self.members), self.batch_size, self.steps_per_epoch
        device = self.images.device
        orders = torch.stack([b.indices() for b in self.members]) + self.offsets.view(-1, 1, 1)
        index = orders.transpose(0, 1).contiguous()  # (steps, K, batch)
        labels = torch.index_select(self.labels, 0, index.view(-1)).view(steps, count, batch)
        shape = (count * batch, *self.images.shape[1:])
        raw = torch.empty(shape, dtype=torch.uint8, device=device)
        images = torch.empty(shape, dtype=torch.float32, device=device)
        packed_images = images.view(count, batch, *shape[1:])
        for step in range(steps):
            torch.index_select(self.images, 0, index[step].view(-1), out=raw)
            source = raw
            if self.augment:  # each member's crops and flips from its own generator
                source = torch.cat([crop_and_flip(part, CROP_PADDING, b.generator) for part, b
                                    in zip(raw.split(batch), self.members)])
            images.copy_(source)
            packed_images.mul_(self.scale).add_(self.shift)
            yield packed_images, labels[step]

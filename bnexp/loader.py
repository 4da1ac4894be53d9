"""Device-resident data: the decoded uint8 dataset lives on the training device as one tensor.

A batch is an index into it: each epoch is one seeded `randperm`, the last incomplete batch is
dropped, augmentation (crop + flip) is one gather for the whole batch, and normalisation with
the training set's per-channel mean/std is a multiply and an add in place. No DataLoader, no
per-sample Python, no host-device copy after the first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from bnexp.samplers import BatchOrder, IIDOrder

CROP_PADDING = 4  # pixels of zero padding before the random crop (He et al. 2016)


@dataclass
class DeviceSplit:
    """uint8 images (N x C x H x W) and int64 labels on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


class PixelStandardizer:
    """(x / 255 - mean) / std per channel: a float copy, then an in-place multiply and add
    (on a CPU, several times faster than one mixed-dtype or broadcasting addcmul)."""

    def __init__(self, train_images: torch.Tensor):
        pixels = train_images.transpose(0, 1).reshape(train_images.shape[1], -1).double() / 255
        mean, std = pixels.mean(dim=1), pixels.std(dim=1)
        self.mean, self.std = mean.tolist(), std.tolist()
        shape = (1, -1, 1, 1)
        self.scale = (1 / (255 * std)).float().view(shape).to(train_images.device)
        self.shift = (-mean / std).float().view(shape).to(train_images.device)

    def __call__(self, images: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised float32 copy of a uint8 batch, into `out` when given."""
        out = images.float() if out is None else out.copy_(images)
        return out.mul_(self.scale).add_(self.shift)


def balanced_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of `size` examples, picked round-robin over classes after a seeded shuffle:
    the first k of every class before the (k+1)-th of any, so classes stay balanced (up to
    one) until a class runs out. Returned sorted."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.shape[0], generator=generator)
    shuffled = labels.cpu()[order]
    by_class = torch.sort(shuffled, stable=True).indices
    counts = torch.bincount(shuffled)
    class_start = torch.cumsum(counts, 0) - counts
    sorted_labels = shuffled[by_class]
    rank_in_class = torch.arange(labels.shape[0]) - class_start[sorted_labels]
    round_robin = torch.argsort(rank_in_class * counts.numel() + sorted_labels)
    return torch.sort(order[by_class[round_robin[:size]]]).values


class TrainBatches:
    """Seeded batches of one training split, augmented and normalised; which examples form a
    batch is `order`'s choice (`bnexp.samplers`: i.i.d. by default)."""

    def __init__(self, split: DeviceSplit, normalize: PixelStandardizer, batch_size: int,
                 augment: bool, seed: int, channels_last: bool = False,
                 order: Optional[BatchOrder] = None):
        if batch_size > len(split):
            raise ValueError(f"train.batch_size={batch_size} exceeds the {len(split)} training "
                             "examples: lower the batch size or raise data.train_subset")
        self.split, self.normalize = split, normalize
        self.batch_size, self.augment = batch_size, augment
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.order = order if order is not None else IIDOrder(split.labels, batch_size)
        self.steps_per_epoch = self.order.steps_per_epoch  # full batches only
        if self.steps_per_epoch == 0:
            raise ValueError(f"train.batch_size={batch_size} with train.sampler leaves no full "
                             "batch of the training set: lower the batch size or "
                             "train.classes_per_batch, or raise data.train_subset")
        device = split.images.device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def indices(self) -> torch.Tensor:
        """The next epoch's (steps_per_epoch, batch_size) indices into the split."""
        return self.order.epoch(self.generator)

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) per step. Labels are views of the epoch's shuffled labels,
        gathered once. Images are valid until the next batch is drawn: they live in buffers
        reused every step (an allocation per step is a visible share of a small model's step
        on a CPU), filled with index_select, which copies whole rows (on a CPU, far faster
        than tensor indexing `images[index]`)."""
        device = self.split.images.device
        batches = self.indices()
        labels = torch.index_select(self.split.labels, 0, batches.flatten()).view_as(batches)
        shape = (self.batch_size, *self.split.images.shape[1:])
        raw = torch.empty(shape, dtype=torch.uint8, device=device)
        images = torch.empty(shape, dtype=torch.float32, device=device,
                             memory_format=self.memory_format)  # conv nets on a GPU: NHWC
        for index, batch_labels in zip(batches.unbind(0), labels.unbind(0)):
            torch.index_select(self.split.images, 0, index, out=raw)
            source = crop_and_flip(raw, CROP_PADDING, self.generator) if self.augment else raw
            yield self.normalize(source, out=images), batch_labels


def crop_and_flip(images: torch.Tensor, padding: int, generator: torch.Generator
                  ) -> torch.Tensor:
    """Random crop after zero padding, and a random horizontal flip, per image, as a single
    gather over the batch."""
    count, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (count, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (count, 1), generator=generator, device=device).bool()
    columns = torch.arange(width, device=device).expand(count, width)
    columns = torch.where(flip, width - 1 - columns, columns) + dx
    rows = torch.arange(height, device=device) + dy
    return padded[torch.arange(count, device=device).view(-1, 1, 1, 1),
                  torch.arange(channels, device=device).view(1, -1, 1, 1),
                  rows.view(count, 1, height, 1), columns.view(count, 1, 1, width)]


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              subset: Optional[torch.Tensor] = None) -> DeviceSplit:
    if subset is not None:
        images, labels = images[subset], labels[subset]
    return DeviceSplit(images.contiguous().to(device), labels.to(device))

"""Device-resident batching, subsets, normalisation and augmentation, against direct
computations."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bnexp.loader import (DeviceSplit, PixelStandardizer, TrainBatches, balanced_subset,
                          crop_and_flip)


def test_balanced_subset_is_balanced_seeded_and_unique():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 8)
    pick = balanced_subset(labels, 25, seed=3)
    assert len(set(pick.tolist())) == 25
    counts = torch.bincount(labels[pick], minlength=3).tolist()
    assert counts == [9, 8, 8]  # round robin: the first 8 of each class, then one more
    assert torch.equal(pick, balanced_subset(labels, 25, seed=3))
    assert not torch.equal(pick, balanced_subset(labels, 25, seed=4))
    small_class_exhausted = torch.bincount(labels[balanced_subset(labels, 40, 0)], minlength=3)
    assert small_class_exhausted.tolist() == [16, 16, 8]


def test_normalizer_uses_training_mean_and_std_per_channel():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    normalize = PixelStandardizer(images)
    pixels = images.numpy().astype(np.float64) / 255
    for channel in range(3):
        assert np.isclose(normalize.mean[channel], pixels[:, channel].mean())
        assert np.isclose(normalize.std[channel], pixels[:, channel].std(ddof=1))
    out = normalize(images)
    expected = (torch.from_numpy(pixels) - torch.tensor(normalize.mean).view(1, 3, 1, 1)) \
        / torch.tensor(normalize.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected.float(), atol=1e-5, rtol=1e-5)


def _batches(count=103, batch=10, seed=0, augment=False):
    images = torch.arange(count, dtype=torch.uint8).view(-1, 1, 1, 1).expand(count, 1, 2, 2)
    split = DeviceSplit(images.contiguous(), torch.arange(count))
    identity = PixelStandardizer.__new__(PixelStandardizer)
    identity.scale, identity.shift = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    return TrainBatches(split, identity, batch, augment, seed)


def test_epoch_is_a_permutation_without_the_incomplete_batch():
    batches = _batches()
    assert batches.steps_per_epoch == 10
    first = [labels.clone() for _, labels in batches.epoch()]  # batches reuse their buffers
    assert all(len(labels) == 10 for labels in first) and len(first) == 10
    seen = torch.cat(first)
    assert len(set(seen.tolist())) == 100  # 3 examples left over, none repeated
    for images, labels in _batches().epoch():  # images travel with their labels
        assert torch.equal(images[:, 0, 0, 0], labels.float())
    second = torch.cat([labels.clone() for _, labels in batches.epoch()])
    assert not torch.equal(seen, second)  # a new permutation each epoch
    again = torch.cat([labels.clone() for _, labels in _batches().epoch()])
    assert torch.equal(seen, again)  # ... and the same one for the same seed


def test_crop_and_flip_is_a_padded_crop_and_flip_of_each_image():
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 2, 6, 5), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(1)
    out = crop_and_flip(images, 2, generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (2, 2, 2, 2))
    found = set()
    for index in range(len(images)):
        matches = [(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (0, 1)
                   if torch.equal(out[index], _crop(padded[index], dy, dx, flip))]
        assert matches, f"image {index} is not a crop of its padded self"
        found.add(matches[0])
    assert len(found) > 20  # offsets and flips vary per image
    assert {flip for *_, flip in found} == {0, 1}


def _crop(image, dy, dx, flip):
    crop = image[:, dy:dy + 6, dx:dx + 5]
    return crop.flip(-1) if flip else crop

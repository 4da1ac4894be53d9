"""Batch orders (train.sampler): the i.i.d. order is one seeded permutation cut into batches;
a class-clustered batch holds exactly k classes with m examples each, never an example twice in
an epoch, in the number of batches counted by hand; packs draw each member's own batches; bad
values are refused in one line; a class-clustered run trains end to end."""
from __future__ import annotations

import json

import pytest
import torch

from bnexp.compose import compose_config
from bnexp.config import ConfigError, Sampler
from bnexp.loader import DeviceSplit, PixelStandardizer, TrainBatches
from bnexp.packed_data import PackedBatches
from bnexp.samplers import ClassClusteredOrder, IIDOrder, batch_order
from bnexp.validation import validate
from helpers import run_bnexp, run_folders


def _labels(*counts: int) -> torch.Tensor:
    """Class c repeated counts[c] times, then shuffled (the order must not matter)."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(9))]


def test_iid_order_is_one_seeded_permutation_cut_into_full_batches():
    labels = _labels(7, 7, 7)  # 21 examples: 5 full batches of 4, one example dropped
    order = IIDOrder(labels, 4).epoch(torch.Generator().manual_seed(3))
    expected = torch.randperm(21, generator=torch.Generator().manual_seed(3))[:20].view(5, 4)
    assert torch.equal(order, expected)


@pytest.mark.parametrize("counts, batch, classes, steps", [
    # groups of m = batch / k per class; layer r holds the classes with more than r groups;
    # a layer gives floor(classes in it / k) batches
    ((6, 6, 5), 4, 2, 3),  # groups 3, 3, 2: layers of 3, 3, 2 classes -> 1 + 1 + 1
    ((8, 8, 8, 8), 4, 2, 8),  # groups 4 each: 4 layers of 4 classes -> 2 each
    ((5, 3, 9), 3, 1, 5),  # single-class batches of 3: groups 1, 1, 3 -> 5 batches
    ((1000,) * 10, 32, 2, 310),  # 62 groups of 16 per class, 5 batches a layer
])
def test_class_clustered_batches_hold_k_classes_of_m_examples(counts, batch, classes, steps):
    labels = _labels(*counts)
    order = ClassClusteredOrder(labels, batch, classes)
    assert order.steps_per_epoch == steps
    generator = torch.Generator().manual_seed(0)
    epochs = [order.epoch(generator) for _ in range(3)]
    for indices in epochs:
        assert indices.shape == (steps, batch)
        assert indices.unique().numel() == indices.numel()  # no example twice in an epoch
        for row in labels[indices]:
            present, per_class = row.unique(return_counts=True)
            assert len(present) == classes and (per_class == batch // classes).all()
            # each class's examples side by side: the batch is k runs of m equal labels
            assert torch.equal(row.view(classes, -1), row.view(classes, -1)[:, :1].expand(
                classes, batch // classes))
    assert not torch.equal(epochs[0], epochs[1])  # a new order every epoch
    again = ClassClusteredOrder(labels, batch, classes).epoch(torch.Generator().manual_seed(0))
    assert torch.equal(again, epochs[0])  # the seed decides it


def test_every_example_is_drawn_over_enough_epochs():
    labels = _labels(6, 6, 5)
    order, generator = ClassClusteredOrder(labels, 4, 2), torch.Generator().manual_seed(1)
    seen = torch.cat([order.epoch(generator).flatten() for _ in range(60)])
    assert set(seen.tolist()) == set(range(17))


def test_a_pack_draws_each_members_own_class_clustered_batches():
    labels = _labels(8, 8, 8, 8)
    images = torch.arange(32, dtype=torch.uint8).view(32, 1, 1, 1).expand(32, 1, 2, 2).clone()
    split = DeviceSplit(images, labels)
    normalize = PixelStandardizer(split.images)

    def member(seed: int) -> TrainBatches:
        return TrainBatches(split, normalize, 4, False, seed,
                            order=batch_order(Sampler.class_clustered, labels, 4, 2))

    singles = [[(x.clone(), y.clone()) for x, y in member(seed).epoch()] for seed in (0, 1)]
    packed = [(x.clone(), y.clone()) for x, y in PackedBatches([member(0), member(1)]).epoch()]
    assert len(packed) == len(singles[0]) == 8
    for step, (x, y) in enumerate(packed):
        for k in range(2):
            assert torch.equal(x[k], singles[k][step][0]) and torch.equal(y[k], singles[k][step][1])


@pytest.mark.parametrize("overrides, fragment", [
    (["train.sampler=class_clustered", "train.classes_per_batch=3"], "must divide"),
    (["train.sampler=class_clustered", "train.classes_per_batch=16", "train.batch_size=32"],
     "exceeds the 10 classes"),
    (["train.classes_per_batch=0"], ">= 1"),
])
def test_bad_sampler_values_are_refused_with_key_and_fix(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(compose_config(*overrides))


@pytest.mark.slow
def test_a_class_clustered_run_trains_and_records_its_sampler(tmp_path, fashion_mnist):
    bad = run_bnexp("train.sampler=class_clustered", "train.classes_per_batch=3", cwd=tmp_path)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
    done = run_bnexp("train.sampler=class_clustered", "train.classes_per_batch=2",
                     "data.train_subset=640", "train.batch_size=32", "train.epochs=1",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (folder,) = run_folders(tmp_path)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["steps_per_epoch"] == 20  # 64 per class: 4 groups of 16, 5 batches a layer
    assert summary["config"]["train.sampler"] == "class_clustered"

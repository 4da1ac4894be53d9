"""Run identity: the same semantic config always maps to the same folder name."""
from __future__ import annotations

import pytest

from bnexp.identity import config_hash, run_id, semantic_config
from bnexp.compose import compose_config


def test_explicit_default_and_override_order_do_not_change_the_id():
    plain = run_id(compose_config("norm=none", "seed=3"))
    assert run_id(compose_config("seed=3", "norm=none", "optim.lr=0.1")) == plain
    assert run_id(compose_config("seed=3", "norm=none", "optim.lr=1e-1", "train.epochs=5")) == plain


@pytest.mark.parametrize("override", ["study=other", "results_dir=/elsewhere", "rerun=all",
                                      "train.threads=1", "train.checkpoint_every=0"])
def test_where_and_how_to_execute_is_not_part_of_the_hash(override):
    assert config_hash(compose_config(override)) == config_hash(compose_config())


@pytest.mark.parametrize("override", ["seed=1", "optim.lr=0.05", "norm.placement=after",
                                      "train.batch_size=8", "model.activation=tanh",
                                      "data.train_subset=100", "train.log_every=10"])
def test_anything_that_changes_the_run_changes_the_hash(override):
    assert config_hash(compose_config(override)) != config_hash(compose_config())


def test_norm_keys_a_norm_does_not_read_are_ignored():
    """norm=none with either placement trains the same model: one run, one folder."""
    assert run_id(compose_config("norm=none", "norm.placement=after", "norm.momentum=0.5")) \
        == run_id(compose_config("norm=none"))
    assert "norm.placement" not in semantic_config(compose_config("norm=none"))
    assert "norm.placement" in semantic_config(compose_config("norm=batch"))


def test_run_id_is_readable_and_a_safe_folder_name():
    name = run_id(compose_config("norm.placement=after", "train.batch_size=8", "seed=2"))
    assert name.startswith("mlp-batch-after-affine-both-bs8-lr0.1-s2-")
    assert len(name.rsplit("-", 1)[1]) == 10 and "/" not in name

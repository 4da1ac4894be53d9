"""The real config: every group composes and builds; bad values are rejected by the real
`bnexp` command with one line naming the key, before any run folder exists."""
from __future__ import annotations

import itertools

import pytest
import torch

from bnexp.callbacks import check_runnable
from bnexp.config import ConfigError, flatten
from bnexp.validation import validate
from bnexp.datasets import DATASETS
from bnexp.models import MODELS, build_model
from bnexp.norm import NORMS
from bnexp.compose import CONFIG_DIR, compose_config
from helpers import run_bnexp, run_folders

GROUPS = {group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
          for group in ("data", "model", "norm", "optim", "train")}


def test_config_groups_are_exactly_the_registries():
    """Every registered normalizer, model and dataset has its config file, and every config
    file names a registered one (a new entry is then composed, validated and built below)."""
    assert GROUPS["norm"] == sorted(NORMS) and GROUPS["model"] == sorted(MODELS)
    assert GROUPS["data"] == sorted(DATASETS)
    assert GROUPS["optim"] == ["adam", "adamw", "sgd"] and GROUPS["train"] == ["default"]
    for kind in NORMS:
        assert compose_config(f"norm={kind}").norm.kind == kind


@pytest.mark.parametrize("data, model, norm, optim", list(itertools.product(
    GROUPS["data"], GROUPS["model"], GROUPS["norm"], GROUPS["optim"])))
def test_every_combination_composes_validates_and_builds(data, model, norm, optim):
    cfg = compose_config(f"data={data}", f"model={model}", f"norm={norm}", f"optim={optim}")
    validate(cfg)
    assert cfg.data.name == data and cfg.model.name == model
    shape = DATASETS[data].image_shape
    built, _ = build_model(cfg.model, cfg.norm, shape, DATASETS[data].num_classes)
    assert built(torch.zeros(2, *shape)).shape == (2, DATASETS[data].num_classes)
    flat = flatten(cfg)
    assert flat["norm.kind"] == norm and flat["optim.name"] == optim  # words, not Enum objects


@pytest.mark.parametrize("overrides, fragment", [
    (["train.batch_size=1", "norm=batch"], "batch statistics of one example"),
    (["model=resnet", "model.depth=21"], r"6n\+2"),
    (["optim=adam", "optim.nesterov=true"], "SGD option"),
    (["optim.momentum=1"], "optim.momentum"),
    (["model.dropout=1.0"], "model.dropout"),
    (["norm.eps=0"], "norm.eps"),
    (["train.device=cpu", "train.amp=true"], "CUDA only"),
])
def test_validate_rejects_with_key_and_reason(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        validate(compose_config(*overrides))


def test_batch_of_one_is_fine_without_batch_norm():
    validate(compose_config("train.batch_size=1", "norm=none"))


@pytest.mark.parametrize("override, fragments", [
    ("norm.kind=foo", ["norm.kind=foo", "none, batch, group, layer, batch_renorm, ghost"]),
    ("model.name=vgg", ["model.name=vgg", "mlp, resnet"]),
    ("data.name=svhn", ["data.name=svhn", "mnist, fashion_mnist, cifar10"]),
    ("train.batch_size=abc", ["train.batch_size", "abc"]),
    ("train.batch_size=0", ["train.batch_size=0", ">= 1"]),
    ("optim.lr=-1", ["optim.lr", "> 0"]),
    ("optim.colour=red", ["colour", "bnexp --cfg job"]),
    ("norm=foo", ["norm/foo", "batch, batch_renorm, ghost, ghost_renorm, group, layer, noisy_batch, none"]),
    ("model.activation=swish", ["model.activation", "relu, sigmoid, tanh, gelu"]),
])
@pytest.mark.slow
def test_cli_rejects_bad_values_in_one_line_without_a_run_folder(tmp_path, override, fragments):
    result = run_bnexp(override, "train.steps=1", cwd=tmp_path)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(message) == 1, result.stderr
    for fragment in fragments:
        assert fragment in message[0]
    assert run_folders(tmp_path) == [] and not (tmp_path / "results").exists()


@pytest.mark.slow
def test_cli_missing_dataset_is_one_message_before_any_folder(tmp_path):
    (tmp_path / "nowhere").mkdir()
    result = run_bnexp("data=mnist", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path,
                       env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "BNEXP_DATA": ""})
    assert result.returncode == 3
    assert "dataset mnist not found" in result.stderr and "data.download=true" in result.stderr
    assert str(tmp_path / "nowhere" / "mnist") in result.stderr
    assert not (tmp_path / "results").exists()


def test_check_runnable_finds_present_data(idx_root):
    check_runnable(compose_config("data=mnist", f"data.root={idx_root}"))


@pytest.mark.slow
def test_help_is_bnexps_own(tmp_path):
    result = run_bnexp("--help", cwd=tmp_path)
    assert result.returncode == 0
    for text in ("bnexp: Batch Normalization ablation runs", "data: cifar10, fashion_mnist, mnist",
                 "norm: batch, batch_renorm, ghost, ghost_renorm, group, layer, noisy_batch, none",
                 "norm.placement=before|after", "Examples:", "bnexp -m norm=batch,none",
                 "ghost         batch norm over virtual batches",
                 "reads placement, affine, momentum, eps, virtual_batch_size",
                 "resnet        CIFAR ResNet", "cifar10       3x32x32 images, 10 classes"):
        assert text in result.stdout
    for key in flatten(compose_config()):  # every key, generated from the schemas
        assert key.split(".")[0] == "model" or key in result.stdout, key
    assert "Powered by Hydra" not in result.stdout


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_bnexp("--cfg", "job", "norm.affine=shift", cwd=tmp_path)
    assert result.returncode == 0
    assert "affine: shift" in result.stdout and "batch_size: 64" in result.stdout
    assert not (tmp_path / "results").exists()

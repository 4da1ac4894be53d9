"""Fixtures: dataset files written in the real on-disk formats (bnexp.dataset_files, written
independently of bnexp's readers) and the real Fashion-MNIST. Shared helpers are in
helpers.py; the config is composed with bnexp.compose.compose_config."""
from __future__ import annotations

from pathlib import Path

import pytest

from bnexp.dataset_files import write_cifar_dataset, write_idx_dataset
from helpers import FASHION_MNIST


@pytest.fixture
def idx_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_idx_dataset(root / "mnist")
    return root


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_cifar_dataset(root / "cifar-10-batches-py")
    return root


@pytest.fixture
def fashion_mnist() -> Path:
    assert FASHION_MNIST.is_dir(), (
        "Real Fashion-MNIST is missing: apt-get install dataset-fashion-mnist "
        "(scripts/test.sh installs it)")
    return FASHION_MNIST

"""Fixtures: dataset files written in the real on-disk formats (bnexp.dataset_files, written
independently of bnexp's readers) and the real Fashion-MNIST. Shared helpers are in
helpers.py; the config is composed with bnexp.compose.compose_config.

What is `slow` (CI runs it; `-m "not slow"` is the quick loop): every test that trains on the
real dataset (it asks for the `fashion_mnist` or `real_sweep` fixture), the modules that
launch real commands throughout, and the tests marked one by one."""
from __future__ import annotations

from pathlib import Path

import pytest

from bnexp.dataset_files import write_cifar_dataset, write_idx_dataset
from helpers import FASHION_MNIST


SLOW_MODULES = {"test_faults", "test_sweeps", "test_end_to_end", "test_packaging"}
SLOW_FIXTURES = {"fashion_mnist", "real_sweep"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if item.module else ""
        if module in SLOW_MODULES or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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

"""Shared fixtures: the real config composed and shrunk, dataset files written in the real
on-disk formats (independently of bnexp's readers), and the real `bnexp` command."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from bnexp.cli import CONFIG_DIR

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
BNEXP = Path(sys.executable).parent / "bnexp"


def compose_config(*overrides: str) -> DictConfig:
    """The config exactly as `bnexp <overrides>` would compose it."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """An IDX file as LeCun specifies it: 0x0000, type 0x08, ndim, big-endian dims, bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    content = struct.pack(">HBB", 0, 0x08, array.ndim)
    content += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return path


def write_idx_dataset(folder: Path, train: int = 120, test: int = 40, compress: bool = True,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """A small MNIST-format dataset whose images encode their class (learnable)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, count, prefix in (("train", train, "train"), ("test", test, "t10k")):
        labels = np.arange(count) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(count, 28, 28))
        for index, label in enumerate(labels):  # a bright bar whose row is the class
            images[index, 2 + 2 * label: 4 + 2 * label, :] = 250
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images.astype(np.uint8), labels
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
    return arrays


def write_cifar_dataset(folder: Path, per_batch: int = 60, test: int = 60, seed: int = 0
                        ) -> dict[str, np.ndarray]:
    """CIFAR-10's python version: pickled dicts of b'data' (N x 3072 uint8) and b'labels'."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test if name == "test_batch" else per_batch
        labels = list(rng.integers(0, 10, size=count))
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as stream:
            pickle.dump({b"batch_label": name.encode(), b"labels": [int(x) for x in labels],
                         b"data": data, b"filenames": [b"x.png"] * count}, stream)
        arrays[name] = (data, np.array(labels))
    return arrays


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


def run_bnexp(*args: str, cwd: Path, env: Optional[dict] = None, timeout: int = 300
              ) -> subprocess.CompletedProcess:
    """The installed `bnexp` command, as a user types it, in `cwd`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(BNEXP), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_folders(results: Path) -> list[Path]:
    """Every folder holding a run record (a Hydra `.hydra/` snapshot) under `results`."""
    return sorted(p.parent for p in results.rglob(".hydra")) if results.exists() else []


@pytest.fixture
def fashion_mnist() -> Path:
    assert FASHION_MNIST.is_dir(), (
        "Real Fashion-MNIST is missing: apt-get install dataset-fashion-mnist "
        "(scripts/test.sh installs it)")
    return FASHION_MNIST

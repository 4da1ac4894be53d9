"""Small datasets written in the real on-disk formats, independently of bnexp's readers:
LeCun's IDX files (MNIST, Fashion-MNIST) and CIFAR-10's python pickles. The tests use them
to check the readers; scripts/bench.py uses them where a real dataset is not installed."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


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

"""Readers for the datasets' real on-disk formats, strict about every byte.

IDX (LeCun's MNIST format, also Fashion-MNIST), raw or gzip-compressed: two zero bytes, a
type code (0x08 = unsigned byte), the number of dimensions, each dimension as a big-endian
uint32, then exactly prod(dims) bytes. CIFAR-10 "python version": pickled dicts with
b'data' (N x 3072 uint8, channel-major 32x32 planes) and b'labels' (N ints).

A file that is truncated, too long, not the format, or whose labels fall outside the classes
raises `DatasetFileError` naming the file; nothing here returns a partly read tensor.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

IDX_UBYTE = 0x08


class DatasetFileError(ValueError):
    """A dataset file exists but cannot be trusted; the message names file and problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}. Delete or replace the file (or set data.root "
                         "to a folder with intact files; data.download=true refetches them).")
        self.path = path


def read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when the name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFileError(path, f"cannot be read or decompressed ({error})") from error


def md5_hex(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def parse_idx(path: Path, content: bytes, ndim: int) -> torch.Tensor:
    """Decode IDX bytes into a uint8 tensor of `ndim` dimensions, checking the exact length."""
    if len(content) < 4:
        raise DatasetFileError(path, f"is {len(content)} bytes, too short for an IDX header")
    zeros, type_code, dims = struct.unpack(">HBB", content[:4])
    if zeros != 0 or type_code != IDX_UBYTE or dims != ndim:
        raise DatasetFileError(
            path, f"is not an IDX file of {ndim}-d unsigned bytes (magic "
                  f"{content[:4].hex()}, expected 000008{ndim:02x})")
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DatasetFileError(path, "ends inside its IDX header")
    shape = struct.unpack(f">{ndim}I", content[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(content) != expected:
        raise DatasetFileError(
            path, f"is {len(content)} bytes but its header {tuple(shape)} needs {expected} "
                  f"({'truncated' if len(content) < expected else 'trailing bytes'})")
    array = np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing executable."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def parse_cifar_batch(path: Path, content: bytes, num_classes: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one CIFAR-10 python batch into (N x 3 x 32 x 32 uint8, N int64 labels)."""
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as error:  # any unpickling failure means the file is not a batch
        raise DatasetFileError(path, f"is not a readable CIFAR-10 pickle ({error})") from error
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetFileError(path, "is not a CIFAR-10 batch (no b'data'/b'labels' entries)")
    data, labels = batch[b"data"], batch[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        raise DatasetFileError(path, f"b'data' is not an N x 3072 uint8 array "
                                     f"({getattr(data, 'shape', type(data))})")
    labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if labels.shape != (data.shape[0],):
        raise DatasetFileError(path, f"has {data.shape[0]} images but {labels.numel()} labels")
    check_labels(path, labels, num_classes)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, labels


def check_labels(path: Path, labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFileError(path, f"holds labels outside 0..{num_classes - 1}")

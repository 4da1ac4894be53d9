"""Readers for the datasets' real on-disk formats, strict about every byte.

IDX (LeCun's MNIST format, also Fashion-MNIST), raw or gzip-compressed: two zero bytes, a
type code (0x08 = unsigned byte), the number of dimensions, each dimension as a big-endian
uint32, then exactly prod(dims) bytes. CIFAR-10 "python version": pickled dicts with
b'data' (N x 3072 uint8, channel-major 32x32 planes) and b'labels' (N ints).

A file that is truncated, too long, not the format, or whose labels fall outside the classes
raises `DatasetFileError` naming the file; nothing here returns a partly read tensor.

Hostile files cost no more than their honest size: an IDX file is read only as far as its
header says (so a gzip bomb is stopped after `MAX_DECODED_BYTES`, and sizes are computed
without overflow), and the CIFAR unpickler builds arrays only through numpy's own
reconstruction from bytes that are in the file: no class is callable, and an array that
claims more bytes than the file holds (a zero-stride view) is refused before it is copied.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

IDX_UBYTE = 0x08
MAX_DECODED_BYTES = 2 ** 31  # no dataset bnexp reads comes near (CIFAR-10's train set: 150 MB)
READ_CHUNK = 1 << 20


class DatasetFileError(ValueError):
    """A dataset file exists but cannot be trusted; the message names file and problem."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}. Delete or replace the file (or set data.root "
                         "to a folder with intact files; data.download=true refetches them).")
        self.path = path


def read_bytes(path: Path, limit: int = MAX_DECODED_BYTES) -> bytes:
    """The file's content, decompressed when the name ends in .gz; more than `limit` bytes
    (after decompression) is an error, found without decompressing the rest."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return _read_at_most(path, handle, limit)
        size = path.stat().st_size
        if size > limit:
            raise DatasetFileError(path, f"is {size} bytes, more than any dataset bnexp reads")
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFileError(path, f"cannot be read or decompressed ({error})") from error


def _read_at_most(path: Path, handle: BinaryIO, limit: int) -> bytes:
    chunks, total = [], 0
    while chunk := handle.read(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise DatasetFileError(path, f"decompresses to more than {limit} bytes, more than "
                                         "any dataset bnexp reads")
        chunks.append(chunk)
    return b"".join(chunks)


def read_idx(path: Path, ndim: int) -> tuple[bytes, torch.Tensor]:
    """An IDX file's decoded bytes and tensor; a .gz file is decompressed only as far as its
    header says, plus one byte to detect trailing data."""
    header_size = 4 + 4 * ndim
    if path.suffix != ".gz":
        content = read_bytes(path)
        return content, parse_idx(path, content, ndim)
    try:
        with gzip.open(path, "rb") as handle:
            header = handle.read(header_size)
            expected = _idx_size(path, header, ndim)
            content = header + _read_at_most(path, _Limited(handle, expected - len(header) + 1),
                                             MAX_DECODED_BYTES)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFileError(path, f"cannot be read or decompressed ({error})") from error
    return content, parse_idx(path, content, ndim)


class _Limited:
    """A reader that returns at most `remaining` more bytes of `handle`."""

    def __init__(self, handle: BinaryIO, remaining: int):
        self.handle, self.remaining = handle, remaining

    def read(self, size: int) -> bytes:
        chunk = self.handle.read(min(size, self.remaining)) if self.remaining > 0 else b""
        self.remaining -= len(chunk)
        return chunk


def _idx_size(path: Path, content: bytes, ndim: int) -> int:
    """The total size the IDX header announces, after checking the magic number."""
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
    expected = header + math.prod(shape)  # Python integers: no overflow
    if expected > MAX_DECODED_BYTES:
        raise DatasetFileError(path, f"has an IDX header {tuple(shape)} of {expected} bytes, "
                                     "more than any dataset bnexp reads")
    return expected


def md5_hex(content: bytes) -> str:
    return hashlib.md5(content, usedforsecurity=False).hexdigest()


def parse_idx(path: Path, content: bytes, ndim: int) -> torch.Tensor:
    """Decode IDX bytes into a uint8 tensor of `ndim` dimensions, checking the exact length."""
    expected = _idx_size(path, content, ndim)
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", content[4:header])
    if len(content) != expected:
        raise DatasetFileError(
            path, f"is {len(content)} bytes but its header {tuple(shape)} needs {expected} "
                  f"({'truncated' if len(content) < expected else 'trailing bytes'})")
    array = np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


class _ArrayToken:
    """Stands for `numpy.ndarray` inside a pickle: accepted as the class argument of numpy's
    `_reconstruct`, but not callable, so a pickle cannot call `ndarray(shape, buffer, strides)`
    to build a huge view of a few bytes."""


ARRAY_CLASS = _ArrayToken()


def _reconstruct(subtype: object, shape: tuple, dtype: bytes) -> np.ndarray:
    """numpy's `_reconstruct` for plain arrays: the empty array that `__setstate__` then fills
    from bytes in the pickle (numpy checks that they match the shape)."""
    if subtype is not ARRAY_CLASS or tuple(shape) != (0,):
        raise pickle.UnpicklingError("refusing an array that is not rebuilt from its bytes")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing executable."""

    ALLOWED = {
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }
    RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) == ("numpy", "ndarray"):
            return ARRAY_CLASS
        if (module, name) in self.RECONSTRUCT:
            return _reconstruct
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
    for name, value in ((b"data", data), (b"labels", labels)):
        held = value.nbytes if isinstance(value, np.ndarray) else len(value) \
            if isinstance(value, (list, tuple)) else None
        if held is None or held > len(content):  # a view claiming bytes the file lacks
            raise DatasetFileError(path, f"{name!r} claims more data than the file holds")
    try:
        labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    except (TypeError, ValueError, OverflowError) as error:
        raise DatasetFileError(path, f"b'labels' are not integers ({error})") from error
    if labels.shape != (data.shape[0],):
        raise DatasetFileError(path, f"has {data.shape[0]} images but {labels.numel()} labels")
    check_labels(path, labels, num_classes)
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, labels


def check_labels(path: Path, labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFileError(path, f"holds labels outside 0..{num_classes - 1}")

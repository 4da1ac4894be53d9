"""Datasets by name: where their files are looked for, how they are fetched and decoded.

Search order for a dataset's folder (the first that holds every file wins):
`data.root`, `$BNEXP_DATA`, the user cache (`$XDG_CACHE_HOME/bnexp` or `~/.cache/bnexp`),
then `/usr/share/datasets`. Under each root, the dataset's usual folder names are tried
(Debian's `fashion-mnist/`, torchvision's `FashionMNIST/raw/`, ...) and then the root itself.
With `data.download=true` a missing dataset is fetched by torchvision's own downloader (it
verifies its checksums) into the first of those roots that is writable.

Content checks: every file is validated structurally (formats.py). A file of the dataset's
canonical size is also compared with the known MD5 of its decoded bytes where one is known, so
bit rot in a real copy is caught; a smaller file (a test fixture, a user's own subset) is
accepted and recorded as not canonical.
"""
from __future__ import annotations

import fcntl
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from bnexp import formats

SYSTEM_DATASETS = Path("/usr/share/datasets")
DOWNLOAD_LOCK = ".bnexp-download.lock"  # in a download root: one downloader at a time
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_FILES = {name: name for name in CIFAR_TRAIN + ["test_batch"]}
CANONICAL_EXAMPLES = {  # examples in each file of the published datasets
    "train-images-idx3-ubyte": 60000, "train-labels-idx1-ubyte": 60000,
    "t10k-images-idx3-ubyte": 10000, "t10k-labels-idx1-ubyte": 10000,
    **{name: 10000 for name in CIFAR_FILES},
}


class DatasetNotFound(FileNotFoundError):
    """No folder holds the dataset and it could not be downloaded."""


class DatasetContentError(ValueError):
    """The files are intact but their content cannot be trained on (say, a constant channel)."""


@dataclass
class Splits:
    """A decoded dataset: uint8 images N x C x H x W and int64 labels, train and test."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    folder: Path  # where the files were read
    checksum: str  # verified | unknown (no known digest) | not canonical (a smaller file)


Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # train x, y, test x, y


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    folders: tuple[str, ...]  # tried under each root, before the root itself
    files: dict[str, str]  # role -> file name (IDX files may also end in .gz)
    decoded_md5: dict[str, str]  # file name -> MD5 of its decoded canonical content
    download: Callable[[Path], None]  # fetch into a root with torchvision (checksummed)
    decode: Callable[[dict[str, Path], "DatasetInfo"], tuple[Tensors, list[bool]]]
    image_shape: tuple[int, int, int]  # (C, H, W) of one image in the canonical files
    num_classes: int = 10


def _torchvision_download(dataset_class_name: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        import torchvision.datasets

        dataset_class = getattr(torchvision.datasets, dataset_class_name)
        dataset_class(root=str(root), train=True, download=True)
    return fetch


def _decode_idx(paths: dict[str, Path], info: DatasetInfo) -> tuple[Tensors, list[bool]]:
    tensors, canonical = {}, []
    for role, path in paths.items():
        content, tensors[role] = formats.read_idx(path, ndim=3 if "images" in role else 1)
        canonical.append(_check_digest(path, content, info, tensors[role].shape[0]))
    for split in ("train", "test"):
        images, labels = tensors[f"{split}_images"], tensors[f"{split}_labels"]
        if images.shape[0] != labels.shape[0]:
            raise formats.DatasetFileError(
                paths[f"{split}_labels"], f"has {labels.shape[0]} labels but "
                f"{paths[f'{split}_images'].name} has {images.shape[0]} images")
        formats.check_labels(paths[f"{split}_labels"], labels, info.num_classes)
        tensors[f"{split}_images"] = images.unsqueeze(1)
        tensors[f"{split}_labels"] = labels.long()
    decoded = tuple(tensors[role] for role in IDX_FILES)
    check_splits(decoded, paths["train_images"], paths["test_images"])
    return decoded, canonical


def _decode_cifar(paths: dict[str, Path], info: DatasetInfo) -> tuple[Tensors, list[bool]]:
    parts, canonical = {}, []
    for name, path in paths.items():
        content = formats.read_bytes(path)
        parts[name] = formats.parse_cifar_batch(path, content, info.num_classes)
        canonical.append(_check_digest(path, content, info, parts[name][1].shape[0]))
    train = [parts[name] for name in CIFAR_TRAIN]
    tensors = (torch.cat([images for images, _ in train]),
               torch.cat([labels for _, labels in train]), *parts["test_batch"])
    check_splits(tensors, paths[CIFAR_TRAIN[0]], paths["test_batch"])
    return tensors, canonical


def check_splits(tensors: Tensors, train_path: Path, test_path: Path) -> None:
    """Both splits hold examples, and images of one shape."""
    train_images, _, test_images, _ = tensors
    for images, path in ((train_images, train_path), (test_images, test_path)):
        if images.shape[0] == 0:
            raise formats.DatasetFileError(path, "holds no examples")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise formats.DatasetFileError(
            test_path, f"holds images of shape {tuple(test_images.shape[1:])} but the training "
                       f"images are {tuple(train_images.shape[1:])}")


def _check_digest(path: Path, content: bytes, info: DatasetInfo, examples: int) -> bool:
    """True when the file is the canonical one; raises when it holds the canonical number of
    examples but different bytes (bit rot, a wrong file under a right name)."""
    name = path.name.removesuffix(".gz")
    expected = info.decoded_md5.get(name)
    if expected is None or examples != CANONICAL_EXAMPLES[name]:
        return False
    actual = formats.md5_hex(content)
    if actual != expected:
        raise formats.DatasetFileError(
            path, f"has the canonical {info.name} size but its decoded MD5 is {actual}, not "
                  f"{expected}: the content is corrupt")
    return True


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        name="mnist", folders=("mnist", "MNIST/raw"), files=IDX_FILES,
        decoded_md5={},  # torchvision checks its .gz downloads; no digest of decoded MNIST here
        download=_torchvision_download("MNIST"), decode=_decode_idx, image_shape=(1, 28, 28)),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", folders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw"),
        files=IDX_FILES,
        decoded_md5={  # of the decoded IDX bytes (Debian recompresses the .gz files)
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        download=_torchvision_download("FashionMNIST"), decode=_decode_idx,
        image_shape=(1, 28, 28)),
    "cifar10": DatasetInfo(
        name="cifar10", folders=("cifar-10-batches-py", "cifar10"), files=CIFAR_FILES,
        decoded_md5={  # torchvision's list: the batches are stored uncompressed
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
        },
        download=_torchvision_download("CIFAR10"), decode=_decode_cifar,
        image_shape=(3, 32, 32)),
}


def search_roots(root: Optional[str]) -> list[Path]:
    """The roots searched, in order (see the module docstring)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnexp"
    candidates = [root, os.environ.get("BNEXP_DATA"), cache, SYSTEM_DATASETS]
    return [Path(c).expanduser() for c in candidates if c]


def find_files(folder: Path, info: DatasetInfo) -> Optional[dict[str, Path]]:
    """role -> path when `folder` holds every file (raw preferred over .gz), else None."""
    found = {}
    for role, name in info.files.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            return None
    return found


def locate(info: DatasetInfo, root: Optional[str]) -> tuple[Optional[dict[str, Path]], list[Path]]:
    """The files of the first folder that holds them all, and every folder tried."""
    tried = []
    for base in search_roots(root):
        for folder in [base / sub for sub in info.folders] + [base]:
            tried.append(folder)
            found = find_files(folder, info)
            if found:
                return found, tried
    return None, tried


def load(name: str, root: Optional[str], download: bool) -> Splits:
    """Find (or fetch) and decode a dataset; every failure names the files and the fix. An
    explicit `data.root` that is not a folder is an error (unless it is to be downloaded
    into), never silently replaced by the default places."""
    info = DATASETS[name]
    if root is not None and not download and not Path(root).expanduser().is_dir():
        raise DatasetNotFound(f"data.root={root} is not a folder: fix the path, or remove "
                              "data.root to search the default places")
    paths, tried = locate(info, root)
    download_error = None
    if paths is None and download:
        download_error = _download(info, search_roots(root)[:-1])
        paths, tried = locate(info, root)
    if paths is None:
        raise DatasetNotFound(not_found_message(info, tried, download, download_error))
    identity = tuple((role, str(path), path.stat().st_mtime_ns, path.stat().st_size)
                     for role, path in paths.items())
    return _decode(name, identity)


@functools.lru_cache(maxsize=2)
def _decode(name: str, identity: tuple) -> Splits:
    """Decoded once per process for the same files (same paths, sizes and mtimes): a local
    sweep runs many runs on one dataset. Callers never modify the returned tensors."""
    info = DATASETS[name]
    paths = {role: Path(path) for role, path, _, _ in identity}
    tensors, canonical = info.decode(paths, info)
    checksum = ("verified" if all(canonical) else
                "unknown" if not info.decoded_md5 else "not canonical")
    return Splits(*tensors, folder=next(iter(paths.values())).parent, checksum=checksum)


def _download(info: DatasetInfo, roots: list[Path]) -> Optional[str]:
    """Fetch into the first writable root; the error text when every attempt failed.
    Parallel jobs take turns through a lock file in the root, and a job that waited finds
    the files its predecessor fetched instead of fetching them again."""
    errors = []
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with open(root / DOWNLOAD_LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                if locate(info, str(root))[0] is None:
                    info.download(root)
            return None
        except Exception as error:  # network, disk, checksum: report them all together
            errors.append(f"{root}: {error}")
    return "; ".join(errors) or "no writable folder to download into"


def not_found_message(info: DatasetInfo, tried: list[Path], download: bool,
                       download_error: Optional[str]) -> str:
    names = ", ".join(info.files.values())
    lines = [f"dataset {info.name} not found: no folder holds all of {names} "
             "(IDX files may end in .gz).", "Looked in: " + ", ".join(map(str, tried)) + "."]
    if download_error:
        lines.append(f"Download failed: {download_error}.")
    lines.append("Fix: put the files in one of those folders, or point data.root=/path (or "
                 "the BNEXP_DATA environment variable) at them"
                 + ("" if download else "; or add data.download=true to fetch them") + ".")
    if info.name == "fashion_mnist":
        lines.append("On Debian: apt-get install dataset-fashion-mnist.")
    return " ".join(lines)

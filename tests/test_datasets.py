"""Readers and the search for dataset files, on files written here in the real formats."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from bnexp import datasets
from bnexp.formats import DatasetFileError
from bnexp.dataset_files import write_cifar_dataset, write_idx, write_idx_dataset


@pytest.mark.parametrize("compress", [False, True])
def test_idx_dataset_loads_shapes_dtypes_labels(tmp_path, compress):
    arrays = write_idx_dataset(tmp_path / "mnist", train=30, test=20, compress=compress)
    splits = datasets.load("mnist", str(tmp_path), download=False)
    assert splits.train_images.shape == (30, 1, 28, 28) and splits.train_images.dtype == torch.uint8
    assert splits.test_images.shape == (20, 1, 28, 28)
    assert splits.train_labels.dtype == torch.int64
    assert splits.train_labels.tolist() == arrays["train_labels"].tolist()
    assert np.array_equal(splits.test_images[:, 0].numpy(), arrays["test_images"])
    assert splits.folder == tmp_path / "mnist"
    assert splits.checksum == "unknown"


def test_cifar_batches_load_channel_major(tmp_path):
    arrays = write_cifar_dataset(tmp_path / "cifar-10-batches-py", per_batch=7, test=5)
    splits = datasets.load("cifar10", str(tmp_path), download=False)
    assert splits.train_images.shape == (35, 3, 32, 32) and splits.test_images.shape == (5, 3, 32, 32)
    data, labels = arrays["data_batch_2"]
    # CIFAR stores 1024 red, then 1024 green, then 1024 blue values per row
    assert np.array_equal(splits.train_images[7, 1].numpy().ravel(), data[0, 1024:2048])
    assert splits.train_labels[7:14].tolist() == labels.tolist()
    assert splits.checksum == "not canonical"


def test_truncated_idx_names_the_file(tmp_path):
    write_idx_dataset(tmp_path, train=20, test=10, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFileError, match="train-images-idx3-ubyte.*truncated"):
        datasets.load("fashion_mnist", str(tmp_path), download=False)


def test_truncated_gzip_names_the_file(tmp_path):
    write_idx_dataset(tmp_path, train=20, test=10, compress=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DatasetFileError, match="t10k-labels-idx1-ubyte.gz.*decompressed"):
        datasets.load("mnist", str(tmp_path), download=False)


def test_idx_with_trailing_bytes_or_wrong_magic_is_rejected(tmp_path):
    write_idx_dataset(tmp_path, train=20, test=10, compress=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes() + b"\x00")
    with pytest.raises(DatasetFileError, match="trailing bytes"):
        datasets.load("mnist", str(tmp_path), download=False)
    write_idx(labels, np.zeros((20, 1)))  # a 2-d file where labels must be 1-d
    with pytest.raises(DatasetFileError, match="not an IDX file of 1-d"):
        datasets.load("mnist", str(tmp_path), download=False)


def test_label_outside_classes_and_count_mismatch_are_rejected(tmp_path):
    write_idx_dataset(tmp_path, train=20, test=10, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(10, 11))
    with pytest.raises(DatasetFileError, match="labels outside 0..9"):
        datasets.load("mnist", str(tmp_path), download=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(9))
    with pytest.raises(DatasetFileError, match="9 labels but t10k-images-idx3-ubyte has 10"):
        datasets.load("mnist", str(tmp_path), download=False)


def test_canonical_size_with_wrong_content_is_corrupt(tmp_path):
    """A file with the published example count is checked against the known MD5."""
    write_idx_dataset(tmp_path, train=20, test=10, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(10000), compress=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10000, 28, 28)), compress=True)
    with pytest.raises(DatasetFileError, match="decoded MD5 .* content is corrupt"):
        datasets.load("fashion_mnist", str(tmp_path), download=False)


def test_cifar_batch_that_is_not_a_batch(tmp_path):
    write_cifar_dataset(tmp_path, per_batch=4, test=4)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": [1, 2, 3]}))
    with pytest.raises(DatasetFileError, match="data_batch_3.*no b'data'/b'labels'"):
        datasets.load("cifar10", str(tmp_path), download=False)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DatasetFileError, match="data_batch_3.*not a readable CIFAR-10 pickle"):
        datasets.load("cifar10", str(tmp_path), download=False)


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar_dataset(tmp_path, per_batch=4, test=4)

    class Exploit:
        def __reduce__(self):
            return (print, ("owned",))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DatasetFileError, match="refusing to load builtins.print"):
        datasets.load("cifar10", str(tmp_path), download=False)


def test_search_order_root_env_cache_system(tmp_path, monkeypatch):
    monkeypatch.setenv("BNEXP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    roots = datasets.search_roots(str(tmp_path / "root"))
    assert roots == [tmp_path / "root", tmp_path / "env", tmp_path / "cache" / "bnexp",
                     datasets.SYSTEM_DATASETS]
    write_idx_dataset(tmp_path / "cache" / "bnexp" / "MNIST" / "raw", train=20, test=10)
    write_idx_dataset(tmp_path / "env" / "mnist", train=30, test=10)
    assert len(datasets.load("mnist", None, download=False).train_labels) == 30  # env before cache
    (tmp_path / "nothing").mkdir()  # an empty data.root: the later roots are searched
    assert len(datasets.load("mnist", str(tmp_path / "nothing"), False).train_labels) == 30
    write_idx_dataset(tmp_path / "root", train=40, test=10)  # files directly in data.root
    assert len(datasets.load("mnist", str(tmp_path / "root"), False).train_labels) == 40


def test_missing_dataset_lists_paths_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.delenv("BNEXP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "mine").mkdir()
    with pytest.raises(datasets.DatasetNotFound) as caught:
        datasets.load("mnist", str(tmp_path / "mine"), download=False)
    message = str(caught.value)
    for folder in (tmp_path / "mine" / "mnist", tmp_path / "cache" / "bnexp" / "MNIST" / "raw",
                   datasets.SYSTEM_DATASETS / "mnist"):
        assert str(folder) in message
    assert "data.root=" in message and "data.download=true" in message


def test_failed_download_is_reported_with_the_paths(tmp_path, monkeypatch):
    """No network here: torchvision's downloader fails, and the message says so."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    info = datasets.DATASETS["mnist"]

    def refuse(root):
        raise OSError("network unreachable")
    monkeypatch.setitem(datasets.DATASETS, "mnist",
                        datasets.DatasetInfo(**{**info.__dict__, "download": refuse}))
    with pytest.raises(datasets.DatasetNotFound, match="Download failed: .*network unreachable"):
        datasets.load("mnist", str(tmp_path / "mine"), download=True)


def test_real_fashion_mnist_is_verified(fashion_mnist):
    splits = datasets.load("fashion_mnist", str(fashion_mnist), download=False)
    assert splits.train_images.shape == (60000, 1, 28, 28)
    assert splits.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.train_labels).tolist() == [6000] * 10
    assert splits.checksum == "verified"


def test_parallel_downloads_take_turns_and_the_second_finds_the_files(tmp_path):
    """Two jobs with data.download=true: the second waits on the first's lock, then finds
    the files it fetched instead of fetching them again."""
    import threading

    calls, results, waiters = [], [], []

    def fetch(root):
        calls.append(root)
        waiter = threading.Thread(target=lambda: results.append(datasets._download(info, [root])))
        waiters.append(waiter)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked on the lock while this download is under way
        write_idx_dataset(root / "mnist", train=20, test=10)

    info = datasets.DatasetInfo(**{**datasets.DATASETS["mnist"].__dict__, "download": fetch})
    assert datasets._download(info, [tmp_path / "cache"]) is None
    waiters[0].join(timeout=30)
    assert results == [None] and calls == [tmp_path / "cache"]  # fetched once


def test_test_subset_keeps_a_class_balanced_part_of_the_test_set(tmp_path):
    """data.test_subset=20 of the 40 written test images: two per class, the images as
    written; too many is refused naming the key; null keeps every written image."""
    from bnexp.compose import compose_config
    from bnexp.config import ConfigError
    from bnexp.session import place_data
    arrays = write_idx_dataset(tmp_path / "mnist")
    cfg = compose_config("data=mnist", f"data.root={tmp_path}", "data.test_subset=20").data
    test = place_data(cfg, 8, torch.device("cpu"))["test"]
    assert np.bincount(test.labels.numpy(), minlength=10).tolist() == [2] * 10
    written = {image.tobytes() for image in arrays["test_images"]}
    assert all(image.numpy().tobytes() in written for image in test.images.squeeze(1))
    whole = compose_config("data=mnist", f"data.root={tmp_path}").data
    assert len(place_data(whole, 8, torch.device("cpu"))["test"]) == 40
    with pytest.raises(ConfigError, match="data.test_subset=41 exceeds the 40 test"):
        place_data(compose_config("data=mnist", f"data.root={tmp_path}",
                                  "data.test_subset=41").data, 8, torch.device("cpu"))

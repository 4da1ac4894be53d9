"""The real `bnexp` command on real data: what a user types, what a run folder holds."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from bnexp.schema import SUMMARY_KEYS
from helpers import run_bnexp, run_folders


def only_run(results: Path) -> Path:
    folders = run_folders(results)
    assert len(folders) == 1, folders
    return folders[0]


def read_record(folder: Path) -> tuple[dict, list[dict]]:
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "metrics.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return summary, rows


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_fashion_mnist_run_learns_and_leaves_a_complete_record(tmp_path, fashion_mnist, norm):
    result = run_bnexp("data=fashion_mnist", "data.train_subset=5000", "train.epochs=1",
                       f"norm={norm}", "train.log_every=20", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = only_run(tmp_path / "results")
    assert str(folder) in result.stdout
    summary, rows = read_record(folder)
    assert summary["status"] == "completed"
    assert summary["final_test_accuracy"] > 0.6
    assert summary["train_examples"] == 5000 and summary["test_examples"] == 10000
    assert summary["steps"] == 5000 // 64 and summary["data_checksum"] == "verified"
    assert summary["config"]["norm.kind"] == norm and summary["config"]["seed"] == 0
    for key in ("final_test_loss", "best_test_accuracy", "final_train_loss",
                "final_train_accuracy", "wall_seconds", "train_seconds", "device", "threads",
                "torch_version", "bnexp_version", "git_commit", "norm.weight_bias"):
        assert key in summary
    assert summary["norm.weight_bias"] == (norm == "none")
    assert set(summary) <= set(SUMMARY_KEYS), set(summary) - set(SUMMARY_KEYS)  # declared once
    assert list(rows[0]) == ["step", "epoch", "examples", "split", "loss", "accuracy", "lr",
                             "seconds"]
    test_rows = [row for row in rows if row["split"] == "test"]
    assert float(test_rows[-1]["accuracy"]) == summary["final_test_accuracy"]
    train_steps = [int(row["step"]) for row in rows if row["split"] == "train"]
    assert train_steps == [20, 40, 60, 78]
    saved = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())
    assert saved["norm"]["kind"] == norm and saved["data"]["train_subset"] == 5000


def test_resnet_on_cifar_format_files_completes(tmp_path, cifar_root):
    result = run_bnexp("data=cifar10", f"data.root={cifar_root}", "model=resnet",
                       "model.depth=8", "model.width=0.5", "train.batch_size=32",
                       "train.epochs=2", "norm.placement=after", "train.threads=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary, rows = read_record(only_run(tmp_path / "results"))
    assert summary["status"] == "completed" and summary["steps"] == 2 * (300 // 32)
    assert summary["config"]["data.augment"] is True and summary["data_checksum"] == "not canonical"
    assert summary["train_examples"] == 300 and len(summary["data_mean"]) == 3
    assert summary["threads"] == 1 and summary["norm.weight_bias"] is True
    assert [row["split"] for row in rows].count("test") == 2


def test_huge_learning_rate_ends_diverged_with_exit_zero(tmp_path, idx_root):
    result = run_bnexp("data=mnist", f"data.root={idx_root}", "optim.lr=1e6", "norm=none",
                       "train.epochs=3", "train.batch_size=16", "train.log_every=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary, rows = read_record(only_run(tmp_path / "results"))
    assert summary["status"] == "diverged"
    assert summary["steps"] < summary["total_steps"] and summary["diverged_at"] == summary["steps"]
    assert rows[-1]["loss"] in ("nan", "inf")


def test_corrupt_file_is_one_line_before_any_run_folder(tmp_path, idx_root):
    labels = idx_root / "mnist" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-9])  # cut inside the gzip stream
    result = run_bnexp("data=mnist", f"data.root={idx_root}", cwd=tmp_path)
    assert result.returncode == 3
    lines = [line for line in result.stderr.splitlines() if line.startswith("bnexp:")]
    assert len(lines) == 1 and "train-labels-idx1-ubyte.gz" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()  # no run folder, so nothing says completed

"""Fault injection through the real command line: every interruption that is not the run's
own fault resumes on the next launch, damaged files never wedge a run, hostile or bad input
gets one line, and no finished run is ever retrained or lost.

Each test asserts the exit status, the one line on stderr (no traceback), which files exist
afterwards, and, where a run is resumed, that its metrics equal an uninterrupted run's.
Faults are injected by tests/inject_faults.py (real signals, sent by the process to itself
at a chosen step), by damaging files on disk, or by a small tmpfs for a full disk.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import BNEXP, run_bnexp, run_folders, run_injected, slurm_available
from bnexp.dataset_files import write_idx, write_idx_dataset

# 120 examples / 16 = 7 steps per epoch, 28 steps; checkpoints at steps 7, 14, 21, 28
SMALL = ["data=mnist", "train.batch_size=16", "train.log_every=3", "train.epochs=4", "pack=off"]
STEPS_PER_EPOCH = 7


def small(root: Path, *extra: str) -> list[str]:
    return [*SMALL, f"data.root={root}", *extra]


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(),
                      parse_constant=lambda name: pytest.fail(f"bare {name} in summary.json"))


def metrics(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as stream:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(stream)]


def training_starts(folder: Path) -> int:
    return (folder / "bnexp.log").read_text().count("training starts")


def assert_one_line(stderr: str, *fragments: str) -> None:
    """stderr is exactly one line from bnexp (beside Hydra's own log lines), no traceback."""
    assert "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("bnexp:")]
    assert len(ours) == 1, stderr
    for fragment in fragments:
        assert fragment in ours[0], ours[0]


def leftovers(results: Path) -> list[Path]:
    return [path for path in results.rglob("*.tmp")] if results.exists() else []


def count(stdout: str, status: str) -> int:
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == status and parts[1].isdigit():
            return int(parts[1])
    raise AssertionError(f"no {status} row in:\n{stdout}")


@pytest.fixture(scope="module")
def module_root(tmp_path_factory) -> Path:
    """The small MNIST-format dataset, shared by the tests that compare with `straight`."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root / "mnist")
    return root


@pytest.fixture(scope="module")
def straight(tmp_path_factory, module_root: Path) -> dict[int, Path]:
    """Uninterrupted reference records of seeds 0 and 1: {seed: run folder}."""
    out = tmp_path_factory.mktemp("straight")
    result = run_bnexp("-m", "seed=0,1", *small(module_root), f"results_dir={out}", cwd=out)
    assert result.returncode == 0, result.stderr
    return {summary(folder)["config"]["seed"]: folder for folder in run_folders(out)}


# --- interruptions ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupted_pack_keeps_each_members_checkpoint_and_resumes_exactly(
        tmp_path, module_root, name, code):
    """A pack (pack=2: in this process, where the signal is injected) stopped at step 17:
    each member is reported interrupted with its checkpoint of step 14 and no summary; the
    relaunch resumes both, equal to the same pack trained straight through."""
    args = ["-m", "seed=0,1", *small(module_root, "pack=2", "model.dropout=0.2")]
    straight_out = tmp_path / "straight"
    assert run_bnexp(*args, f"results_dir={straight_out}", cwd=tmp_path).returncode == 0
    stopped = run_injected({"kind": "signal", "name": name, "step": 17}, *args, cwd=tmp_path)
    assert stopped.returncode == code, stopped.stderr
    assert count(stopped.stdout, "interrupted") == 2
    folders = run_folders(tmp_path / "results")
    assert len(folders) == 2
    for folder in folders:
        assert not (folder / "summary.json").exists() and not (folder / "error.txt").exists()
        saved = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert saved["fit"]["progress"]["step"] == 14
    resumed = run_bnexp(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    reference = {summary(f)["config"]["seed"]: f for f in run_folders(straight_out)}
    for folder in folders:
        record = summary(folder)
        assert record["status"] == "completed" and record["resumed_from_step"] == 14
        assert record["packed_with"] and len(record["packed_with"]) == 1
        assert metrics(folder) == metrics(reference[record["config"]["seed"]])


@pytest.mark.parametrize("name, code, line", [
    ("SIGINT", 130, "interrupted (Ctrl-C)"),
    ("SIGTERM", 143, "interrupted (SIGTERM)"),
    ("SIGUSR2", 255, None),  # submitit's requeue: sys.exit(-1), which SLURM then restarts
])
def test_interrupted_sweep_stops_at_once_and_resumes_bit_identically(
        tmp_path, module_root, straight, name, code, line):
    args = ["-m", "seed=0,1", *small(module_root)]
    stopped = run_injected({"kind": "signal", "name": name, "step": 17}, *args, cwd=tmp_path)
    assert stopped.returncode == code, stopped.stderr
    results = tmp_path / "results"
    [folder] = run_folders(results)  # the sweep stopped at once: the second job never began
    assert not (folder / "summary.json").exists() and not (folder / "error.txt").exists()
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["fit"]["progress"]["step"] == 14
    assert "interrupted" in (folder / "bnexp.log").read_text()
    if line:
        assert_one_line(stopped.stderr, line, "launch the same command again")
        assert count(stopped.stdout, "interrupted") == 1  # the closing table, before the line
    else:
        assert "Traceback" not in stopped.stderr

    resumed = run_bnexp(*args, cwd=tmp_path)  # the default rerun=missing
    assert resumed.returncode == 0, resumed.stderr
    assert count(resumed.stdout, "completed") == 2
    for folder in run_folders(results):
        record = summary(folder)
        seed = record["config"]["seed"]
        assert record["status"] == "completed"
        assert record["resumed_from_step"] == (14 if seed == 0 else None)
        assert metrics(folder) == metrics(straight[seed])
        expected = summary(straight[seed])
        for key in ("final_test_accuracy", "final_test_loss", "final_train_loss", "steps"):
            assert record[key] == expected[key], key


def test_suspended_lock_holder_keeps_its_run_from_a_second_launcher(tmp_path, idx_root):
    args = [*SMALL[:-1], "train.epochs=200", "train.eval_every=50", f"data.root={idx_root}"]
    first = subprocess.Popen([str(BNEXP), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "results").rglob("checkpoint.pt")):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # Ctrl-Z, scontrol suspend
        [folder] = run_folders(tmp_path / "results")
        ancient = time.time() - 24 * 3600  # its heartbeat is a day old: it is still alive
        os.utime(folder / ".lock", (ancient, ancient))
        second = run_bnexp(*args, cwd=tmp_path)
        assert second.returncode == 0 and "busy" in second.stdout, second.stdout
        assert not (folder / "summary.json").exists()
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert summary(folder)["status"] == "completed" and summary(folder)["steps"] == 200 * 7
    assert training_starts(folder) == 1 and not (folder / ".lock").exists()


# --- damaged files ---------------------------------------------------------------------------

def test_truncated_checkpoint_is_archived_and_the_run_starts_afresh(
        tmp_path, module_root, straight):
    args = ["-m", "seed=0", *small(module_root)]
    killed = run_injected({"kind": "signal", "name": "SIGKILL", "step": 17}, *args, cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    [folder] = run_folders(tmp_path / "results")
    damaged = (folder / "checkpoint.pt").read_bytes()[:5000]
    (folder / "checkpoint.pt").write_bytes(damaged)
    (folder / ".checkpoint.pt.abc.tmp").write_bytes(b"a write the kill interrupted")

    for attempt in range(2):  # never wedged: the next launch and the one after both work
        result = run_bnexp(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
    warnings = [line for line in (folder / "bnexp.log").read_text().splitlines()
                if "checkpoint.pt is damaged" in line]
    assert len(warnings) == 1 and "starts again from step 0" in warnings[0]
    [kept] = (folder / "history").iterdir()
    assert (kept / "checkpoint.pt").read_bytes() == damaged
    record = summary(folder)
    assert record["status"] == "completed" and record["resumed_from_step"] is None
    assert metrics(folder) == metrics(straight[0])
    assert leftovers(tmp_path / "results") == []


def test_damaged_summary_is_rebuilt_from_the_final_checkpoint_without_training(
        tmp_path, idx_root):
    args = small(idx_root)
    assert run_bnexp(*args, cwd=tmp_path).returncode == 0
    [folder] = run_folders(tmp_path / "results")
    original, rows = summary(folder), metrics(folder)
    (folder / "summary.json").write_text(json.dumps(original)[:100])  # torn

    result = run_bnexp(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rebuilt = summary(folder)
    assert rebuilt["status"] == "completed"
    assert rebuilt["resumed_from_step"] == 4 * STEPS_PER_EPOCH  # nothing left to train
    for key in ("final_test_accuracy", "final_test_loss", "final_train_accuracy", "steps"):
        assert rebuilt[key] == original[key], key
    assert metrics(folder) == rows
    [kept] = (folder / "history").iterdir()
    assert (kept / "summary.json").read_text() == json.dumps(original)[:100]


def test_summary_that_cannot_be_read_now_is_left_alone(tmp_path, idx_root):
    args = ["-m", "seed=0", *small(idx_root)]
    assert run_bnexp(*args, cwd=tmp_path).returncode == 0
    [folder] = run_folders(tmp_path / "results")
    text = (folder / "summary.json").read_text()
    (folder / "summary.json").unlink()
    (folder / "summary.json").mkdir()  # reads fail with an OSError, as on a flaky NFS mount
    result = run_bnexp(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert count(result.stdout, "unreadable") == 1 and count(result.stdout, "completed") == 0
    single = run_bnexp(*args[2:], cwd=tmp_path)  # the same run, launched alone
    assert single.returncode == 1 and "unreadable" in single.stdout
    assert not (folder / "history").exists() and training_starts(folder) == 1
    (folder / "summary.json").rmdir()
    (folder / "summary.json").write_text(text)
    again = run_bnexp(*args, cwd=tmp_path)
    assert again.returncode == 0 and count(again.stdout, "skipped") == 1


def test_torn_launch_log_line_still_fails_the_sweep(tmp_path, idx_root):
    # seed 1 fails and its launch-log line is torn; seed 2's line is glued onto the torn one
    faults = [{"kind": "fail", "seed": 1}, {"kind": "torn_report", "status": "failed"}]
    result = run_injected(faults, "-m", "seed=0,1,2", *small(idx_root), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert count(result.stdout, "failed") == 1 and count(result.stdout, "completed") == 2
    assert "1 unreadable line(s) in the launch log" in result.stdout
    assert "no launch report; counted from its record" in result.stdout
    statuses = sorted(summary(folder)["status"] for folder in run_folders(tmp_path / "results"))
    assert statuses == ["completed", "completed", "failed"]


# --- a full disk -----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A mounted tmpfs of 1.5 MB: room for one checkpoint of the small MLP, not for two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_checkpointing_is_an_interruption_that_resumes(
        tmp_path, module_root, small_disk, straight):
    args = ["-m", "seed=0,1", *small(module_root)]
    full = run_bnexp(*args, f"results_dir={small_disk}", cwd=tmp_path)
    assert full.returncode == 4, full.stdout + full.stderr
    assert_one_line(full.stderr, "disk full", "free space")
    assert count(full.stdout, "interrupted") == 1  # the closing table came first
    [folder] = run_folders(small_disk)
    assert not (folder / "summary.json").exists() and (folder / "checkpoint.pt").exists()
    assert leftovers(small_disk) == []  # the failed write cleaned up after itself

    moved = tmp_path / "bigger"  # "free space": the same records on a disk with room
    shutil.copytree(small_disk, moved)
    resumed = run_bnexp(*args, f"results_dir={moved}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for folder in run_folders(moved):
        seed = summary(folder)["config"]["seed"]
        assert summary(folder)["status"] == "completed"
        assert metrics(folder) == metrics(straight[seed])
    assert summary(next(f for f in run_folders(moved) if "-s0-" in f.name))["resumed_from_step"]


def test_disk_full_before_a_job_starts_ends_with_the_table_and_one_line(
        tmp_path, idx_root, small_disk):
    args = ["-m", "seed=0,1", *small(idx_root), f"results_dir={small_disk}"]
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as stream:  # fill the disk to the last block
        try:
            while True:
                stream.write(b"\0" * 4096)
        except OSError:
            pass
    result = run_bnexp(*args, cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    assert_one_line(result.stderr, "No space left", "free space")
    assert "sweep summary" in result.stdout
    assert [f for f in run_folders(small_disk) if (f / "summary.json").exists()] == []


# --- non-finite values that no log row saw ---------------------------------------------------

@pytest.mark.parametrize("epochs, nan_after, diverged_at, checkpoint_step", [
    (1, 7, 7, None),  # the run's last update puts NaN into the weights
    (3, 13, 14, 7),  # NaN in epoch 2's tail (steps 13-14), after its last log row (step 12)
])
def test_nan_that_no_log_row_saw_ends_the_run_as_diverged(
        tmp_path, idx_root, epochs, nan_after, diverged_at, checkpoint_step):
    args = [*SMALL[:-1], f"data.root={idx_root}", f"train.epochs={epochs}", "train.log_every=4"]
    result = run_injected({"kind": "nan", "step": nan_after}, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [folder] = run_folders(tmp_path / "results")
    record = summary(folder)  # strict JSON: no bare NaN
    assert record["status"] == "diverged" and record["diverged_at"] == diverged_at
    if checkpoint_step is None:
        assert not (folder / "checkpoint.pt").exists()
    else:  # the last good checkpoint was not overwritten
        saved = torch.load(folder / "checkpoint.pt", weights_only=True)
        assert saved["fit"]["progress"]["step"] == checkpoint_step
    tests = [row for row in metrics(folder) if row["split"] == "test"]
    assert [int(row["step"]) for row in tests] == ([checkpoint_step] if checkpoint_step else [])


def test_summary_is_strict_json_with_non_finite_numbers_as_null(tmp_path):
    from bnexp import records

    records.write_summary(tmp_path, {"status": "diverged", "final_test_loss": float("nan"),
                                     "curve": [1.0, float("inf"), -float("inf")]})
    loaded = summary(tmp_path)
    assert loaded["final_test_loss"] is None and loaded["curve"] == [1.0, None, None]


# --- bad input: one line, non-zero exit, nothing written -------------------------------------

def write_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                compress: bool = False) -> None:
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


def gzip_bomb(root: Path) -> None:
    """A .gz IDX file whose header announces 40 images, followed by 64 MB of zeros."""
    write_idx_dataset(root, compress=True)
    header = b"\0\0\x08\x03" + (40).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb", compresslevel=1) as stream:
        stream.write(header)
        for _ in range(64):
            stream.write(bytes(1 << 20))


def overflowing_header(root: Path) -> None:
    write_idx_dataset(root, compress=False)
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\0\0\x08\x03" + (2 ** 32 - 1).to_bytes(4, "big") * 3 + bytes(100))


def mismatched_shapes(root: Path) -> None:
    write_idx_dataset(root, compress=False)
    write_split(root, "t10k", np.zeros((40, 20, 20)), np.arange(40) % 10)


def empty_test_split(root: Path) -> None:
    write_idx_dataset(root, compress=False)
    write_split(root, "t10k", np.zeros((0, 28, 28)), np.zeros(0))


def constant_images(root: Path) -> None:
    write_idx_dataset(root, compress=False)
    write_split(root, "train", np.full((120, 28, 28), 7), np.arange(120) % 10)


def truncated_file(root: Path) -> None:
    write_idx_dataset(root, compress=False)
    path = root / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])


class ZeroStrideArray:
    """Pickles as a call of numpy.ndarray: a 3 GB view of one byte (zero strides)."""

    def __reduce__(self):
        return (np.ndarray, ((10 ** 6, 3072), np.dtype(np.uint8), b"\0", 0, (0, 0)))


def cifar_zero_stride(root: Path) -> None:
    from bnexp.dataset_files import write_cifar_dataset

    write_cifar_dataset(root)
    (root / "test_batch").write_bytes(pickle.dumps(
        {b"data": ZeroStrideArray(), b"labels": [0] * 10 ** 6}))


@pytest.mark.parametrize("damage, dataset, fragment", [
    (gzip_bomb, "mnist", "trailing bytes"),
    (overflowing_header, "mnist", "more than any dataset bnexp reads"),
    (mismatched_shapes, "mnist", "holds images of shape (1, 20, 20)"),
    (empty_test_split, "mnist", "holds no examples"),
    (constant_images, "mnist", "input channel 0 of the training images is constant"),
    (truncated_file, "mnist", "truncated"),
    (cifar_zero_stride, "cifar10", "not a readable CIFAR-10 pickle"),
])
def test_hostile_or_damaged_dataset_is_one_line_before_any_folder(
        tmp_path, damage, dataset, fragment):
    root = tmp_path / "data"
    damage(root)
    started = time.perf_counter()
    result = run_bnexp(f"data={dataset}", f"data.root={root}", "train.batch_size=16",
                       "model=resnet" if dataset == "cifar10" else "model=mlp", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert_one_line(result.stderr, fragment)
    assert not (tmp_path / "results").exists()
    assert time.perf_counter() - started < 60  # no bomb went off


def test_gzip_bomb_is_not_decompressed_past_its_header(tmp_path):
    import tracemalloc

    from bnexp import formats

    gzip_bomb(tmp_path)
    tracemalloc.start()
    with pytest.raises(formats.DatasetFileError, match="trailing bytes"):
        formats.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz", ndim=3)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20  # a few chunks of the 64 MB, never all of it


@pytest.mark.parametrize("override, code, fragment", [
    ("+foo=1", 2, "foo is not a bnexp key"),
    ("+optim.lr_decay=0.1", 2, "optim.lr_decay is not a bnexp key"),
    ("data.root=/nonexistent/x", 3, "data.root=/nonexistent/x is not a folder"),
    ("optim.lr=inf", 2, "optim.lr=inf is invalid: expected a finite number"),
    ("optim.lr=1e400", 2, "optim.lr=inf is invalid: expected a finite number"),
    ("data.train_subset=99999999", 2, "data.train_subset=99999999 exceeds the 120"),
    ("train.batch_size=100000", 2, "train.batch_size=100000 exceeds the 120"),
    ("train.device=cuda", 2, "train.device=cuda is not available"),
    ("train.amp=true", 2, "train.amp=true needs CUDA"),
])
def test_bad_value_is_one_line_before_any_folder(tmp_path, idx_root, override, code, fragment):
    if override.startswith("train.") and "cuda" in fragment.lower() and \
            torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    root = [] if override.startswith("data.root") else [f"data.root={idx_root}"]
    result = run_bnexp("data=mnist", *root, override, cwd=tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    assert_one_line(result.stderr, fragment)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("override, fragment", [
    ("+optim.lr_decay=0.1", "optim.lr_decay is not a bnexp key"),
    ("optim.lr=0.1,1e400", "optim.lr=inf is invalid"),
    ("train.batch_size=16,100000", "train.batch_size=100000 exceeds the 120"),
])
def test_bad_value_anywhere_in_a_sweep_is_one_line_before_any_folder(
        tmp_path, idx_root, override, fragment):
    result = run_bnexp("-m", "data=mnist", f"data.root={idx_root}", "seed=0,1", override,
                       cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_line(result.stderr, fragment)
    assert not (tmp_path / "results").exists()


# --- SLURM: a preempted job is requeued and resumes ------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM cluster (scripts/slurm_local.sh)")
def test_slurm_job_signalled_usr2_is_requeued_and_resumes_from_its_checkpoint(tmp_path, idx_root):
    epochs = 800  # long enough to signal it after its first checkpoint
    args = ["-m", "seed=0", *SMALL[:-1], f"train.epochs={epochs}", f"data.root={idx_root}",
            "train.eval_every=100", "train.log_every=50", "hydra/launcher=slurm",
            "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]
    sweep = subprocess.Popen([str(BNEXP), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    results = tmp_path / "results" / "adhoc"
    deadline = time.monotonic() + 180
    while not list(results.rglob("checkpoint.pt")):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.1)
    [job] = [path.name for path in (results / ".submitit").iterdir()
             if path.is_dir() and path.name.replace("_", "").isdigit()]  # <array job>_<task>
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what preemption sends
    out, err = sweep.communicate(timeout=400)
    assert sweep.returncode == 0, out + err
    [folder] = run_folders(tmp_path / "results")
    record = summary(folder)
    assert record["status"] == "completed" and record["steps"] == epochs * STEPS_PER_EPOCH
    assert record["resumed_from_step"] and record["resumed_from_step"] % STEPS_PER_EPOCH == 0
    assert training_starts(folder) == 2 and "interrupted" in (folder / "bnexp.log").read_text()
    for split in ("train", "test"):  # every row once, in order, none missing
        steps = [int(row["step"]) for row in metrics(folder) if row["split"] == split]
        assert steps == sorted(set(steps)) and steps[-1] == epochs * STEPS_PER_EPOCH

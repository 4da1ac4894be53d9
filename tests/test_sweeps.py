"""Sweeps that survive: skip and resume, kill -9, failure isolation, concurrent launchers,
parallel and SLURM launchers; all through the real `bnexp` command."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import BNEXP, run_bnexp, run_folders, run_injected, slurm_available

SMALL = ["train.batch_size=16", "train.log_every=3"]


def data_args(root: Path) -> list[str]:
    return ["data=mnist", f"data.root={root}"]


def summaries(results: Path) -> dict[str, dict]:
    return {folder.name: json.loads((folder / "summary.json").read_text())
            for folder in run_folders(results) if (folder / "summary.json").exists()}


def metric_rows(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def training_starts(folder: Path) -> int:
    """How many times a job began training in this folder (bnexp.log keeps every attempt)."""
    return (folder / "bnexp.log").read_text().count("training starts")


def table_count(stdout: str, status: str) -> int:
    """The count of `status` in the sweep's closing table."""
    match = re.search(rf"^{status} +(\d+)$", stdout, re.MULTILINE)
    assert match, f"no {status} row in:\n{stdout}"
    return int(match.group(1))


def without_clock(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


KILL_AT_STEP = textwrap.dedent("""
    import os, signal, sys
    import bnexp.engine
    from bnexp.cli import main
    kill_at = int(sys.argv.pop(1))
    original = bnexp.engine.Fitter.step
    def step(self, images, labels, probing=False):
        if self.step_count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, images, labels, probing)
    bnexp.engine.Fitter.step = step
    main()
""")


def test_killed_run_resumes_from_checkpoint_bit_identically(tmp_path, idx_root):
    args = [*data_args(idx_root), *SMALL, "train.epochs=4", "model.dropout=0.2",
            "data.augment=true", "probe.activations=true", "probe.every=5",
            "eval.modes=[running,precise]", "eval.precise_batches=3"]
    reference = run_bnexp(*args, f"results_dir={tmp_path / 'straight'}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    # 120 examples / 16 = 7 steps per epoch: step 17 is inside epoch 3, after 2 checkpoints
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP, "17", *args,
                             f"results_dir={tmp_path / 'killed'}"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL
    [folder] = run_folders(tmp_path / "killed")
    assert not (folder / "summary.json").exists() and (folder / "checkpoint.pt").exists()
    assert int(metric_rows(folder)[-1]["step"]) > 14  # rows past the checkpoint were written

    resumed = run_bnexp(*args, f"results_dir={tmp_path / 'killed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    [straight] = run_folders(tmp_path / "straight")
    assert folder.name == straight.name  # results_dir is not part of the identity
    summary = json.loads((folder / "summary.json").read_text())
    expected = json.loads((straight / "summary.json").read_text())
    assert summary["resumed_from_step"] == 14
    for key in ("final_test_accuracy", "final_test_loss", "final_train_loss", "steps"):
        assert summary[key] == expected[key], key
    assert without_clock(metric_rows(folder)) == without_clock(metric_rows(straight))
    # the probe table too: no duplicated or missing rows after the resume
    assert (folder / "activations.csv").read_text() == (straight / "activations.csv").read_text()


@pytest.mark.parametrize("pack", ["off", "2"])
def test_sweep_killed_mid_way_completes_on_rerun_without_repeating(tmp_path, idx_root, pack):
    # pack=auto would train the six seeds as one pack whose members finish together, so the
    # kill would land before or after all of them; single runs and packs of two finish in turn
    results = tmp_path / "results"
    args = ["-m", "seed=0,1,2,3,4,5", *data_args(idx_root), *SMALL, "train.epochs=6",
            f"pack={pack}"]
    started = time.perf_counter()
    sweep = subprocess.Popen([str(BNEXP), *args], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(summaries(results)) < 2 and sweep.poll() is None:
        time.sleep(0.02)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    finished_before = {name: (results / "adhoc" / name / "summary.json").stat().st_mtime_ns
                       for name in summaries(results)}
    assert 2 <= len(finished_before) < 6
    if pack == "2":  # a pack's members finish together: the kill fell between packs' ends
        assert len(finished_before) % 2 == 0

    second = run_bnexp(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert table_count(second.stdout, "skipped") == len(finished_before)
    done = summaries(results)
    assert len(done) == 6 and all(s["status"] == "completed" for s in done.values())
    for name, mtime in finished_before.items():  # finished runs were not run again
        assert (results / "adhoc" / name / "summary.json").stat().st_mtime_ns == mtime
        assert training_starts(results / "adhoc" / name) == 1
    for folder in run_folders(results):  # every step once, none missing
        for split in ("train", "test"):
            steps = [int(r["step"]) for r in metric_rows(folder) if r["split"] == split]
            assert steps == sorted(set(steps)) and steps[-1] == 6 * 7

    third = run_bnexp(*args, cwd=tmp_path)
    assert third.returncode == 0 and table_count(third.stdout, "skipped") == 6
    print(f"kill-and-rerun wall time: {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("pack", ["off", "3"])
def test_one_failing_run_does_not_stop_the_sweep(tmp_path, idx_root, pack):
    # seed 1 raises while it builds: a failure of the run's own, at run time; packed, the
    # other two members train (pack=3 keeps the pack in this process, where it is injected)
    args = ["-m", "seed=0,1,2", *data_args(idx_root), *SMALL, "train.epochs=1", f"pack={pack}"]
    result = run_injected({"kind": "fail", "seed": 1}, *args, cwd=tmp_path)
    assert result.returncode == 1
    assert table_count(result.stdout, "completed") == 2
    assert table_count(result.stdout, "failed") == 1
    runs = summaries(tmp_path / "results")
    [failed] = [name for name, s in runs.items() if s["status"] == "failed"]
    assert f"failed: {tmp_path / 'results' / 'adhoc' / failed}" in result.stdout
    folder = tmp_path / "results" / "adhoc" / failed
    assert "injected failure for seed 1" in (folder / "error.txt").read_text()
    assert "Traceback" in (folder / "bnexp.log").read_text()

    again = run_injected({"kind": "fail", "seed": 1}, *args, "rerun=failed", cwd=tmp_path)
    assert table_count(again.stdout, "skipped") == 2
    assert table_count(again.stdout, "failed") == 1
    assert len(list((folder / "history").iterdir())) == 1  # the first failure is kept


def test_rerun_all_archives_instead_of_deleting(tmp_path, idx_root):
    args = [*data_args(idx_root), *SMALL, "train.epochs=1", "probe.activations=true"]
    assert run_bnexp(*args, cwd=tmp_path).returncode == 0
    [folder] = run_folders(tmp_path / "results")
    first = (folder / "summary.json").read_text()
    assert "skipped" in run_bnexp(*args, cwd=tmp_path).stdout
    assert run_bnexp(*args, "rerun=all", cwd=tmp_path).returncode == 0
    [archived] = (folder / "history").iterdir()
    assert (archived / "summary.json").read_text() == first
    assert (archived / "metrics.csv").exists() and (folder / "summary.json").exists()
    assert (archived / "activations.csv").exists()  # probe tables are kept too


def test_two_identical_sweeps_at_once_run_each_run_once(tmp_path, idx_root):
    args = ["-m", "seed=0,1,2,3", *data_args(idx_root), *SMALL, "train.epochs=3"]
    launches = [subprocess.Popen([str(BNEXP), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [launch.communicate(timeout=300) for launch in launches]
    assert all(launch.returncode == 0 for launch in launches), outputs
    done = summaries(tmp_path / "results")
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values())
    for folder in run_folders(tmp_path / "results"):
        assert training_starts(folder) == 1


def test_invalid_job_anywhere_in_the_sweep_stops_it_before_any_run(tmp_path, idx_root):
    result = run_bnexp("-m", "optim.lr=0.1,-1", *data_args(idx_root), cwd=tmp_path)
    assert result.returncode == 2
    assert "optim.lr=-1.0 is invalid" in result.stderr and "optim.lr=-1" in result.stderr
    assert run_folders(tmp_path / "results") == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_results_folder_fails_before_training(tmp_path, idx_root):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    result = run_bnexp(*data_args(idx_root), f"results_dir={locked}", cwd=tmp_path)
    assert result.returncode == 4 and "not writable" in result.stderr


def test_results_folder_that_is_a_file_fails_before_training(tmp_path, idx_root):
    (tmp_path / "blocked").write_text("a file where the results folder should be")
    result = run_bnexp(*data_args(idx_root), f"results_dir={tmp_path / 'blocked'}", cwd=tmp_path)
    assert result.returncode == 4
    assert "results folder" in result.stderr and "results_dir=" in result.stderr


def test_joblib_runs_a_four_run_sweep_with_two_workers(tmp_path, idx_root):
    result = run_bnexp("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2,3",
                       *data_args(idx_root), *SMALL, "train.epochs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    done = summaries(tmp_path / "results")
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values())
    cores = len(os.sched_getaffinity(0))
    assert all(s["threads"] == max(1, cores // 2) for s in done.values())


@pytest.mark.slow
@pytest.mark.skipif(not slurm_available(), reason="no SLURM cluster (scripts/slurm_local.sh)")
def test_slurm_sweep_completes_like_a_local_one(tmp_path, idx_root):
    common = ["-m", "seed=0,1,2", *data_args(idx_root), *SMALL, "train.epochs=1"]
    slurm = run_bnexp(*common, "hydra/launcher=slurm", "hydra.launcher.partition=debug",
                      "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
                      "hydra.launcher.timeout_min=5", f"results_dir={tmp_path / 'slurm'}",
                      cwd=tmp_path)
    assert slurm.returncode == 0, slurm.stderr
    local = run_bnexp(*common, f"results_dir={tmp_path / 'local'}", cwd=tmp_path)
    assert local.returncode == 0
    on_slurm, on_local = summaries(tmp_path / "slurm"), summaries(tmp_path / "local")
    assert sorted(on_slurm) == sorted(on_local) and len(on_slurm) == 3
    for name in on_slurm:
        assert on_slurm[name]["status"] == "completed"
        assert len(on_slurm[name]["packed_with"]) == 2  # pack=auto: one array task, 3 runs
        assert set(on_slurm[name]) == set(on_local[name])
        files = {p.name for p in (tmp_path / "slurm" / "adhoc" / name).iterdir()}
        assert files == {p.name for p in (tmp_path / "local" / "adhoc" / name).iterdir()}

"""A non-editable install is complete: the wheel carries the configs, and the installed
`bnexp` composes the real config from any directory, away from the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from helpers import ROOT


def _run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def test_the_wheel_installs_with_its_configs_and_runs_elsewhere(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves the checkout alone
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "results", "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-q", "-w", str(tmp_path / "dist"), str(source), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("bnexp-*.whl")
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path).returncode == 0
    installed = _run(str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "-q",
                     str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    # the dependencies (torch, hydra, ...) come from this interpreter's site-packages, after
    # the fresh venv's own: bnexp itself is the wheel's copy, not the checkout
    fresh_site = Path(_run(str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           cwd=tmp_path).stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = _run(str(venv / "bin" / "python"), "-c", "import bnexp; print(bnexp.__file__)",
                 cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(fresh_site)), where.stdout + where.stderr
    job = _run(str(venv / "bin" / "bnexp"), "--cfg", "job", "experiment=resnet_cifar/full",
               cwd=elsewhere, env=env)
    assert job.returncode == 0, job.stderr
    assert "study: resnet_cifar" in job.stdout and "name: cifar10" in job.stdout
    assert "name: resnet" in job.stdout and "scale: full" in job.stdout
    helped = _run(str(venv / "bin" / "bnexp"), "--help", cwd=elsewhere, env=env)
    assert "ghost         batch norm over virtual batches" in helped.stdout
    assert not (elsewhere / "results").exists()

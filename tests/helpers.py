"""Helpers the tests share (conftest.py holds only fixtures): the real `bnexp` command, a
fault-injecting launch, whether SLURM answers, the run folders under a results folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
BNEXP = Path(sys.executable).parent / "bnexp"
INJECT_FAULTS = Path(__file__).with_name("inject_faults.py")
ROOT = Path(__file__).resolve().parents[1]  # the repository


def run_bnexp(*args: str, cwd: Path, env: Optional[dict] = None, timeout: int = 300
              ) -> subprocess.CompletedProcess:
    """The installed `bnexp` command, as a user types it, in `cwd`."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(BNEXP), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_injected(fault, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`bnexp <args>` with a fault injected (tests/inject_faults.py lists them)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(INJECT_FAULTS), json.dumps(fault), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def slurm_available() -> bool:
    """A SLURM cluster answers and has an idle node (scripts/slurm_local.sh starts one)."""
    if shutil.which("sinfo") is None:
        return False
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return probe.returncode == 0 and "idle" in probe.stdout


def run_folders(results: Path) -> list[Path]:
    """Every folder holding a run record (a Hydra `.hydra/` snapshot) under `results`."""
    return sorted(p.parent for p in results.rglob(".hydra")) if results.exists() else []

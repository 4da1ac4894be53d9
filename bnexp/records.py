"""The run folder: metrics.csv appended as training goes, summary.json written last.

Files a reader may see at any moment are whole: metrics rows are flushed one line at a time
and `summary.json` / `error.txt` are written to a temporary file and renamed over the target
(`os.replace` is atomic on POSIX), so a crash never leaves a half-written summary and never a
summary that says completed.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import os
import platform
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

import bnexp

METRIC_COLUMNS = ["step", "epoch", "examples", "split", "loss", "accuracy", "lr", "seconds"]
SUMMARY = "summary.json"
METRICS = "metrics.csv"
ERROR = "error.txt"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would hide records from other users
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class TableLog:
    """A CSV table of the run (metrics.csv, activations.csv, ...): rows are appended and
    flushed as they come. It starts from `rows` (those a resumed run had checkpointed; none
    for a new run), replacing whatever an interrupted attempt had appended after them."""

    def __init__(self, path: Path, columns: list[str],
                 rows: Optional[list[dict[str, Any]]] = None):
        self.rows: list[dict[str, Any]] = list(rows or [])
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(path, buffer.getvalue())
        self.stream = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.stream, fieldnames=columns)

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.writer.writerows(rows)
        self.stream.flush()
        self.rows.extend(rows)

    def close(self) -> None:
        self.stream.close()


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the bnexp checkout that runs, with '-dirty' when it has local changes."""
    source = Path(bnexp.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a run ran, for the summary."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "bnexp_version": bnexp.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
        "hostname": socket.gethostname(),
    }


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    write_atomic(folder / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


def write_error(folder: Path, text: str) -> None:
    write_atomic(folder / ERROR, text)

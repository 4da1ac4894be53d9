"""The run folder: metrics.csv appended as training goes, summary.json written last.

Files a reader may see at any moment are whole: metrics rows are flushed one line at a time
and `summary.json` / `error.txt` / `checkpoint.pt` are written to a temporary file, fsynced,
renamed over the target (`os.replace` is atomic on POSIX) and the folder fsynced, so neither
a crash nor a power cut leaves a half-written summary, and never a summary that says
completed. `summary.json` is strict JSON: a non-finite number is written as null.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import bnexp
from bnexp.schema import ERROR, SUMMARY, Status, Table

HISTORY = "history"  # earlier records of the run, one folder per archiving
TEMPORARY_SUFFIX = ".tmp"  # write_save's temporary files: `.<name>.<random>.tmp`


class SummaryUnreadable(OSError):
    """summary.json exists but cannot be read now (permissions, a network filesystem)."""


class SummaryDamaged(ValueError):
    """summary.json is not a run summary (truncated or edited: not JSON, or no status)."""


def write_saved(path: Path, save: Callable[[Any], None]) -> None:
    """Call `save(stream)` on a temporary binary file beside `path`, make it durable and rename
    it over `path`: readers see the old file or the new one, never a part, also after a power
    cut. The temporary file is removed when anything fails."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=TEMPORARY_SUFFIX)
    try:
        os.fchmod(handle, 0o644)  # mkstemp's 0600 would hide records from other users
        with os.fdopen(handle, "wb") as stream:
            save(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through `write_saved`."""
    write_saved(path, lambda stream: stream.write(text.encode()))


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(descriptor)


def remove_leftovers(folder: Path) -> list[str]:
    """Delete the temporary files of writes that a kill interrupted; call with the run lock
    held (nobody else writes then). Returns their names."""
    leftovers = sorted(folder.glob(f".*{TEMPORARY_SUFFIX}"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return [path.name for path in leftovers]


def archive(folder: Path, names: list[str]) -> Path:
    """Move the named files of the run folder (those present) into `history/<UTC time>/`;
    nothing of a record is ever deleted."""
    target = folder / HISTORY / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target.mkdir(parents=True)
    for name in names:
        if (folder / name).exists():
            os.replace(folder / name, target / name)
    return target


def read_summary(folder: Path) -> Optional[dict[str, Any]]:
    """The folder's summary, or None when it has none. Raises `SummaryUnreadable` when the
    file cannot be read now and `SummaryDamaged` when its content is not a summary."""
    path = folder / SUMMARY
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise SummaryUnreadable(f"{path} cannot be read ({error})") from error
    try:
        summary = json.loads(text)
    except ValueError as error:
        raise SummaryDamaged(f"{path} is not valid JSON ({error})") from error
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        raise SummaryDamaged(f"{path} holds no run status")
    return summary


class TableLog:
    """A CSV table of the run (metrics.csv, activations.csv, ...): rows are appended and
    flushed as they come. It starts from `rows` (those a resumed run had checkpointed; none
    for a new run), replacing whatever an interrupted attempt had appended after them."""

    def __init__(self, folder: Path, table: Table,
                 rows: Optional[list[dict[str, Any]]] = None):
        self.rows: list[dict[str, Any]] = list(rows or [])
        path, columns = folder / table.file, list(table.columns)
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


COMMITTED_RESULTS = "results"  # the checkout's folder of committed reports: outputs, not code


@functools.lru_cache(maxsize=1)
def git_commit() -> Optional[str]:
    """The commit of the bnexp checkout that runs, with '-dirty' when it has local changes."""
    return checkout_commit(Path(bnexp.__file__).resolve().parent.parent)


def checkout_commit(source: Path) -> Optional[str]:
    """HEAD of the git checkout at `source`, with '-dirty' when a tracked file differs from it,
    except under `results/`: committed reports are outputs, and `run_studies.sh` rewrites one
    study's report before the next study's runs start, which must not mark their code dirty."""
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(source), "status", "--porcelain",
                                 "--untracked-files=no", "--", ".",
                                 f":(exclude){COMMITTED_RESULTS}"],
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


def recorded_status(folder: Path) -> Optional[str]:
    """The status in the folder's summary.json; None when there is none, `unreadable` when
    it cannot be read or is damaged."""
    try:
        summary = read_summary(folder)
    except (SummaryUnreadable, SummaryDamaged):
        return Status.unreadable
    return None if summary is None else summary["status"]


def write_summary(folder: Path, summary: dict[str, Any]) -> None:
    text = json.dumps(finite_or_null(summary), indent=2, sort_keys=True, allow_nan=False)
    write_atomic(folder / SUMMARY, text + "\n")


def finite_or_null(value: Any) -> Any:
    """`value` with every NaN or infinity (at any depth) replaced by None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def write_error(folder: Path, text: str) -> None:
    write_atomic(folder / ERROR, text)

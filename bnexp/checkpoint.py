"""checkpoint.pt: everything a killed run needs to continue exactly where it stopped.

Saved at epoch ends (every `train.checkpoint_every` epochs, and after the last): the fit state
(model with its BN buffers, optimizer, schedule, data-order generator, the open log interval,
step and clocks), the global RNG states (torch, CUDA, NumPy, Python: dropout and anything else
drawn from them), and the rows of metrics.csv (and of the probe tables) written so far, so
the resumed run rewrites each table to exactly those rows before it appends. Written through
`records.write_saved` (temporary file, fsync, rename), so a kill or a full disk during the save
leaves the previous checkpoint intact. Stored with plain tensors and lists only, so it loads
with `torch.load(weights_only=True)`. A file that does not load (damaged by a copy, a disk
fault, a filesystem without atomic rename) raises `CheckpointDamaged`, which the run handles
by archiving it and starting afresh rather than failing at every launch.
"""
from __future__ import annotations

import errno
import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from bnexp import records

CHECKPOINT = "checkpoint.pt"


class CheckpointDamaged(ValueError):
    """checkpoint.pt exists but is not a loadable checkpoint."""


def rng_state() -> dict[str, Any]:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss_next],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))


def save(folder: Path, fit_state: dict, tables: dict[str, list[dict]], config_hash: str,
         rng: Optional[dict[str, Any]] = None) -> None:
    """`tables`: the rows of every CSV table of the run so far, by table name; `rng`: the
    run's RNG states when they are not the process's (a member of a pack)."""
    state = {"fit": fit_state, "rng": rng if rng is not None else rng_state(), "tables": tables,
             "config_hash": config_hash}
    serialized = io.BytesIO()  # torch's zip writer turns a failed write (a full disk) into a
    torch.save(state, serialized)  # RuntimeError; a plain write raises the OSError it is
    records.write_saved(folder / CHECKPOINT, lambda stream: stream.write(serialized.getbuffer()))


def load(folder: Path, accepted_hashes: Sequence[str]) -> Optional[dict]:
    """The saved state, or None when there is none. A checkpoint whose config hash is not
    one of `accepted_hashes` (the folder was reused by hand) is refused rather than silently
    mixed in."""
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError, OSError) as error:  # a torn or garbled file
        if isinstance(error, OSError) and error.errno != errno.EINVAL:
            raise  # cannot be read now (permissions, I/O): not evidence of damage
        raise CheckpointDamaged(f"{path} is damaged ({type(error).__name__}: "
                                f"{str(error).splitlines()[0] if str(error) else ''})") from error
    if not isinstance(state, dict) or not {"fit", "rng", "tables"} <= set(state):
        raise CheckpointDamaged(f"{path} is not a bnexp checkpoint")
    if state.get("config_hash") not in accepted_hashes:
        raise ValueError(f"{path} belongs to config {state.get('config_hash')}, not "
                         f"{accepted_hashes[0]}: move it away to start this run afresh")
    return state

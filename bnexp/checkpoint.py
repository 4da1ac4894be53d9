"""checkpoint.pt: everything a killed run needs to continue exactly where it stopped.

Saved at epoch ends (every `train.checkpoint_every` epochs, and after the last): the fit state
(model with its BN buffers, optimizer, schedule, data-order generator, the open log interval,
step and clocks), the global RNG states (torch, CUDA, NumPy, Python: dropout and anything else
drawn from them), and the rows of metrics.csv (and of the probe tables) written so far, so
the resumed run rewrites each table to exactly those rows before it appends. Written to a temporary file and renamed,
so a kill during the save leaves the previous checkpoint intact. Stored with plain tensors and
lists only, so it loads with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"


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


def save(folder: Path, fit_state: dict, tables: dict[str, list[dict]], config_hash: str) -> None:
    """`tables`: the rows of every CSV table of the run so far, by table name."""
    state = {"fit": fit_state, "rng": rng_state(), "tables": tables, "config_hash": config_hash}
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{CHECKPOINT}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, folder / CHECKPOINT)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(folder: Path, config_hash: str) -> Optional[dict]:
    """The saved state, or None when there is none. A checkpoint of another config (the
    folder was reused by hand) is refused rather than silently mixed in."""
    path = folder / CHECKPOINT
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("config_hash") != config_hash:
        raise ValueError(f"{path} belongs to config {state.get('config_hash')}, not "
                         f"{config_hash}: move it away to start this run afresh")
    return state

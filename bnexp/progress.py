"""One line for a whole sweep on a terminal: runs done of the total, packs training now,
elapsed time and an estimate of the rest. It reads the sweep's launch log, which the jobs of
every launcher append to (local, joblib workers, SLURM nodes), once a second from a thread;
silent when stdout is not a terminal."""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from bnexp.sweep import read_progress

POLL_SECONDS = 1.0


class SweepProgress:
    def __init__(self, launch_log: Path, total: int):
        self.launch_log, self.total = launch_log, total
        self.bar: Optional[tqdm] = None
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True, name="sweep-progress")

    def start(self) -> "SweepProgress":
        if sys.stdout.isatty():
            self.bar = tqdm(total=self.total, unit="run", desc="sweep", position=1,
                            leave=False, dynamic_ncols=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        while not self.stopped.wait(POLL_SECONDS):
            self._update()

    def _update(self) -> None:
        done, packs = read_progress(self.launch_log)
        self.bar.n = min(done, self.total)
        self.bar.set_postfix(packs_training=packs, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is None:
            return
        self.stopped.set()
        self.thread.join()
        self.bar.close()
        self.bar = None

"""The `bnexp` command with one fault injected, for the fault-injection tests.

    python tests/inject_faults.py '<fault or list of faults as JSON>' <bnexp arguments...>

Faults (JSON objects, by "kind"):
- {"kind": "signal", "name": "SIGINT", "step": 17}: the process sends itself the signal just
  before the SGD step that would make `step` steps (every job or pack of an in-process
  sweep: pack=off or pack=N; pack=auto's worker processes are not injected);
  "SIGUSR2" first installs what submitit installs: a handler that requeues, then `sys.exit(-1)`;
- {"kind": "fail", "seed": 1}: the run with that seed raises while building (its own failure);
- {"kind": "nan", "step": 6}: after the update of step `step`, the first weight becomes NaN
  (in a pack: every member's);
- {"kind": "torn_report", "status": "failed"}: that outcome's launch-log line is torn.
Everything else is the real command line, unchanged.
"""
from __future__ import annotations

import json
import os
import signal
import sys

import torch

import bnexp.engine
import bnexp.jobs
import bnexp.packed_fit
import bnexp.run
import bnexp.session
from bnexp.cli import main


def signal_at(name: str, at: int) -> None:
    if name == "SIGUSR2":  # submitit's handler: scontrol requeue, then sys.exit(-1)
        signal.signal(signal.SIGUSR2, lambda *_: sys.exit(-1))
    if name == "SIGINT":  # Ctrl-C at a terminal; a test suite launched in the background
        # (`nohup pytest &`) inherits SIGINT ignored, and Python then raises nothing
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for owner in (bnexp.engine.Fitter, bnexp.packed_fit.PackedFitter):
        _before_step(owner, lambda fitter: fitter.step_count == at and os.kill(
            os.getpid(), getattr(signal, name)))


def _before_step(owner: type, action) -> None:
    original = owner.step

    def step(self, *args, **kwargs):
        action(self)
        return original(self, *args, **kwargs)
    owner.step = step


def fail_seed(seed: int) -> None:
    original = bnexp.session.build_session

    def build_session(cfg, threads, data=None):
        if cfg.seed == seed:
            raise RuntimeError(f"injected failure for seed {seed}")
        return original(cfg, threads, data)
    bnexp.session.build_session = build_session
    bnexp.run.build_session = build_session


def nan_after(at: int) -> None:
    for owner in (bnexp.engine.Fitter, bnexp.packed_fit.PackedFitter):
        original = owner.step

        def step(self, *args, original=original, **kwargs):
            result = original(self, *args, **kwargs)
            if self.step_count + 1 == at:  # raised by the caller after the step
                first = next(self.model.parameters())
                with torch.no_grad():  # in a pack (K, ...) weights: every member's first
                    rows = first.view(len(self.members), -1) if hasattr(self, "members") \
                        else first.view(1, -1)
                    rows[:, 0] = float("nan")
            return result
        owner.step = step


def torn_report(status: str) -> None:
    original = bnexp.jobs.report

    def report(outcome):
        if outcome.status != status:
            return original(outcome)
        with open(os.environ[bnexp.jobs.LAUNCH_LOG_ENV], "a") as log:
            log.write(json.dumps(outcome.__dict__)[:17])  # a write cut short by another node
        return outcome
    bnexp.jobs.report = report


if __name__ == "__main__":
    faults = json.loads(sys.argv.pop(1))
    for fault in faults if isinstance(faults, list) else [faults]:
        {"signal": lambda: signal_at(fault["name"], fault["step"]),
         "fail": lambda: fail_seed(fault["seed"]),
         "nan": lambda: nan_after(fault["step"]),
         "torn_report": lambda: torn_report(fault["status"])}[fault["kind"]]()
    main()

"""The run record, declared once: its files, its tables and their columns, the keys of its
summary, and the status words. Writers (run, engine, probes, jobs, sweep) and readers (the
report) take the names from here, so a new column or summary key is added in this file and
where its value is computed.

Readers are tolerant across bnexp versions: a table is complete when it has its `required`
columns; a missing optional column reads as empty and an extra one is kept, so a run written
by an older (or newer) bnexp still reports. This module imports nothing of bnexp.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    """What became of a run. A `str`, so it compares, serialises and prints as its word."""

    completed = "completed"  # trained the whole budget
    diverged = "diverged"  # the loss or a weight stopped being finite; counted, never averaged
    failed = "failed"  # raised an error; error.txt holds the traceback
    interrupted = "interrupted"  # stopped from outside; the next launch resumes it
    unreadable = "unreadable"  # summary.json exists but cannot be read now; left alone
    skipped = "skipped"  # a launch found it recorded already
    busy = "busy"  # another launcher holds its lock
    incomplete = "incomplete"  # (reports) its record is partial: no summary, a torn table
    failed_to_train = "failed to train"  # (reports) completed at chance, or loss never fell

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


RECORDED = (Status.completed, Status.diverged, Status.failed)  # what summary.json may say
FINISHED = (Status.completed, Status.diverged)  # a launch skips these unless rerun=all
FAILING = (Status.failed, Status.unreadable)  # a sweep with any of these exits non-zero
LAUNCH_OUTCOMES = (Status.completed, Status.diverged, Status.failed, Status.interrupted,
                   Status.unreadable, Status.skipped, Status.busy)  # the closing table's rows
REPORTED = (Status.completed, Status.failed_to_train, Status.diverged, Status.failed,
            Status.incomplete)  # report counts

SUMMARY = "summary.json"
ERROR = "error.txt"


@dataclass(frozen=True)
class Table:
    """One CSV table of a run folder: one row per event."""

    file: str
    columns: tuple[str, ...]  # in the order they are written
    required: tuple[str, ...]  # a table without one of these is not usable; others may be absent


TABLES: dict[str, Table] = {
    "metrics": Table("metrics.csv", (
        "step",  # SGD steps done
        "epoch",  # steps / steps per epoch
        "examples",  # training examples seen
        "split",  # train (mean over the log interval) | test | test_<eval mode>
        "loss",  # mean cross-entropy
        "accuracy",  # fraction correct
        "lr",  # learning rate of the row's last step
        "seconds",  # since the run started, evaluations included
    ), required=("step", "split", "loss", "accuracy")),
    "activations": Table("activations.csv", (
        "step", "layer", "name", "kind", "module", "unit", "mean", "std",
        "p15", "p50", "p85", "saturated",  # of each sampled unit's input at the step
    ), required=("step", "layer", "name", "unit", "p15", "p50", "p85")),
    "gradients": Table("gradients.csv", (
        "step", "layer", "name", "followed_by_norm", "grad_norm", "weight_norm",
        "update_norm", "effective_step",  # update norm / weight norm
    ), required=("step", "layer", "name", "grad_norm", "weight_norm")),
    "ics": Table("ics.csv", (
        "step", "layer", "name",  # weight layers in parameter order
        "grad_norm",  # ||G||: the layer's gradient at the step
        "ics_l2", "ics_cosine",  # ||G - G'|| and cos(G, G'): G' after the earlier layers' update
    ), required=("step", "layer", "ics_l2")),
    "landscape": Table("landscape.csv", (
        "step", "lr",  # the step's LR; the line is theta - m * lr * g for m in probe.landscape_steps
        "loss",  # the batch loss at theta
        "loss_min", "loss_max",  # along the line (theta included)
        "grad_change",  # max ||g(eta) - g||
        "beta_smoothness",  # max ||g(eta) - g|| / ||eta g||
    ), required=("step", "loss_min", "loss_max")),
    "norm_affine": Table("norm_affine.csv", (
        "layer", "name", "channel",  # norm layers in build order; channel within the layer
        "gamma", "beta",  # the learned scale and shift when training ended
    ), required=("layer", "channel", "gamma")),
}
METRICS = TABLES["metrics"]

# summary.json: key -> meaning. Keys with a `{mode}` suffix are written once per eval mode
# other than running (`final_test_accuracy_batch`, ...).
SUMMARY_KEYS: dict[str, str] = {
    "status": "a word of RECORDED",
    "config": "the resolved config, flat: {'norm.kind': 'batch', ...}",
    "config_hash": "the run's identity (bnexp.identity)",
    "run_id": "the name of its run folder (an older identity's, when recorded under it)",
    "started_at": "UTC, ISO 8601",
    "resumed_from_step": "the checkpoint's step, or null",
    "steps": "SGD steps done", "examples": "training examples seen",
    "total_steps": "the budget in steps", "steps_per_epoch": "full batches per epoch",
    "train_seconds": "the training loop alone", "wall_seconds": "the whole run",
    "diverged_at": "the step a non-finite value was seen, or null",
    "initial_train_loss": "the first step's batch loss, before any update",
    "effective_lr": "peak LR after optim.scale_rule",
    "train_examples": "training set size", "test_examples": "test set size",
    "parameters": "all parameters", "trainable_parameters": "those that train",
    "norm.weight_bias": "whether weight layers before a norm keep a bias",
    "data_folder": "where the data was read", "data_checksum": "verified | unknown | not canonical",
    "data_mean": "pixel mean used to standardise", "data_std": "pixel std used to standardise",
    "memory_format": "contiguous_format | channels_last",
    "packed_with": "run-ids of the runs trained with it as one pack, or null (alone)",
    "final_test_loss": "last test evaluation", "final_test_accuracy": "last test evaluation",
    "best_test_loss": "over evaluations", "best_test_accuracy": "over evaluations",
    "final_train_loss": "the training subset (at most 10,000 examples, class-balanced) in "
                        "eval mode, after training; per eval mode like the test keys",
    "final_train_accuracy": "the same", "final_train_examples": "examples it covers",
    "error": "ExceptionType: message (failed runs)",
    "device": "cpu | cuda | mps", "device_name": "the card or CPU", "threads": "torch threads",
    "hostname": "where it ran", "python_version": "", "torch_version": "",
    "bnexp_version": "", "git_commit": "the source's commit (+dirty when modified)",
}
PER_EVAL_MODE = ("final_test_loss", "final_test_accuracy", "best_test_loss",
                 "best_test_accuracy", "final_train_loss",
                 "final_train_accuracy")  # also written as <key>_<mode>


def summary_key(key: str, mode: str = "running") -> str:
    """The summary key of `key` for an eval mode (`final_test_accuracy_batch`)."""
    return key if mode == "running" else f"{key}_{mode}"

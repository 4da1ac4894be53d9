"""Run identity: the same semantic config always maps to the same folder name; a key the
config does not read leaves the run (and so its identity) alone; a folder recorded under an
older bnexp's identity is still found, not retrained."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

from bnexp.compose import compose_config
from bnexp.config import READ_WHEN
from bnexp.identity import (ADDED_LATER, ADDED_WITH_DEFAULT, accepted_hashes, config_hash,
                            run_folder, run_id, semantic_config, study_dir)
from bnexp.records import checkout_commit
from bnexp.run import run
from helpers import run_bnexp, run_folders

# key -> (overrides under which it is not read, a different value for it, overrides under
# which it is read)
CONDITIONAL = {
    "model.init_std": (["model.init=kaiming"], "0.5", ["model.init=normal"]),
    "optim.step_milestones": (["optim.schedule=constant"], "[0.3]", ["optim.schedule=step"]),
    "optim.step_gamma": (["optim.schedule=cosine"], "0.5", ["optim.schedule=step"]),
    "optim.base_batch_size": (["optim.scale_rule=none"], "32", ["optim.scale_rule=linear"]),
    "optim.decay_norm_bias": (["optim.weight_decay=0"], "true", ["optim.weight_decay=0.01"]),
    "train.epochs": (["train.steps=3"], "2", ["train.steps=null"]),
    "data.subset_seed": (["data.train_subset=null"], "5", ["data.train_subset=300"]),
    "probe.every": (["probe.activations=false"], "2", ["probe.gradients=true"]),
    "probe.units": (["probe.activations=false"], "3", ["probe.activations=true"]),
    "probe.saturation": (["probe.activations=false"], "1.5", ["probe.activations=true"]),
    "eval.batch_size": (["eval.modes=[running]"], "32", ["eval.modes=[running,batch]"]),
    "eval.precise_batches": (["eval.modes=[running]"], "7", ["eval.modes=[running,precise]"]),
    "eval.precise_examples": (["eval.modes=[running]", "eval.precise_examples=100"], "1000",
                              ["eval.modes=[running,precise]", "eval.precise_examples=100"]),
    "eval.precise_estimator": (["eval.modes=[running]", "eval.precise_estimator=population_variance"],
                               "mean_of_batch_variances",
                               ["eval.modes=[running,precise]",
                                "eval.precise_estimator=population_variance"]),
    "probe.landscape_steps": (["probe.landscape=false", "probe.landscape_steps=[1.0,3.0]"],
                              "[2.0]",
                              ["probe.landscape=true", "probe.landscape_steps=[1.0,3.0]"]),
    "train.classes_per_batch": (["train.sampler=iid", "train.classes_per_batch=2"], "4",
                                ["train.sampler=class_clustered", "train.classes_per_batch=2"]),
}


def test_explicit_default_and_override_order_do_not_change_the_id():
    plain = run_id(compose_config("norm=none", "seed=3"))
    assert run_id(compose_config("seed=3", "norm=none", "optim.lr=0.1")) == plain
    assert run_id(compose_config("seed=3", "norm=none", "optim.lr=1e-1", "train.epochs=5")) == plain


@pytest.mark.parametrize("override", ["study=other", "results_dir=/elsewhere", "rerun=all",
                                      "train.threads=1", "train.checkpoint_every=0",
                                      "data.root=/elsewhere", "data.download=true"])
def test_where_and_how_to_execute_is_not_part_of_the_hash(override):
    assert config_hash(compose_config(override)) == config_hash(compose_config())


@pytest.mark.parametrize("override", ["seed=1", "optim.lr=0.05", "norm.placement=after",
                                      "train.batch_size=8", "model.activation=tanh",
                                      "data.train_subset=100", "train.log_every=10",
                                      "train.sampler=class_clustered", "probe.ics=true", "probe.landscape=true",
                                      "norm=noisy_batch", "model.activation=identity"])
def test_anything_that_changes_the_run_changes_the_hash(override):
    assert config_hash(compose_config(override)) != config_hash(compose_config())


OPTIONAL = {"train.eval_every_steps": "25"}  # read exactly when set (null: off)


def test_every_conditional_key_is_tested_here():
    assert set(CONDITIONAL) | set(OPTIONAL) == set(READ_WHEN)


@pytest.mark.parametrize("key", sorted(OPTIONAL))
def test_an_optional_key_counts_only_when_set(key):
    assert key not in semantic_config(compose_config())
    assert config_hash(compose_config(f"{key}={OPTIONAL[key]}")) != config_hash(compose_config())


def test_keys_added_since_do_not_move_existing_runs():
    """Hashes computed by bnexp before train.eval_every_steps, train.sampler and question.*
    existed (current rule, then identity v1): the same configs must still find the same
    folders."""
    assert set(ADDED_WITH_DEFAULT) == set(ADDED_LATER)  # every key named is a schema key
    assert accepted_hashes(compose_config()) == ["3ee28a5de9", "bd7e9184c4"]
    assert accepted_hashes(compose_config("norm=ghost", "train.batch_size=32",
                                          "model.init=normal", "seed=2")) == [
        "1132c5e47d", "d450028fa1"]


@pytest.mark.parametrize("override", ["question.claim=anything", "question.metric=final_test_loss",
                                      "question.target=0.5"])
def test_what_a_study_asks_is_not_part_of_the_hash(override):
    assert accepted_hashes(compose_config(override)) == accepted_hashes(compose_config())


@pytest.mark.parametrize("key", sorted(CONDITIONAL))
def test_a_key_counts_exactly_when_the_config_reads_it(key):
    unread_when, value, read_when = CONDITIONAL[key]
    unread = compose_config(*unread_when)
    assert key not in semantic_config(unread)
    assert config_hash(compose_config(*unread_when, f"{key}={value}")) == config_hash(unread)
    read = compose_config(*read_when)
    assert key in semantic_config(read)
    assert config_hash(compose_config(*read_when, f"{key}={value}")) != config_hash(read)


def test_norm_keys_a_norm_does_not_read_are_ignored():
    """norm=none with either placement trains the same model: one run, one folder."""
    assert run_id(compose_config("norm=none", "norm.placement=after", "norm.momentum=0.5")) \
        == run_id(compose_config("norm=none"))
    assert "norm.placement" not in semantic_config(compose_config("norm=none"))
    assert "norm.placement" in semantic_config(compose_config("norm=batch"))


def test_run_id_is_readable_and_a_safe_folder_name():
    name = run_id(compose_config("norm.placement=after", "train.batch_size=8", "seed=2"))
    assert name.startswith("mlp-batch-after-affine-both-bs8-lr0.1-s2-")
    assert len(name.rsplit("-", 1)[1]) == 10 and "/" not in name


TINY = ["data.train_subset=256", "train.steps=6", "train.batch_size=32", "train.log_every=2",
        "model.depth=1", "model.width=16"]


def _trained(tmp_path, name: str, *overrides: str) -> tuple[list[str], dict]:
    folder = tmp_path / name
    summary = run(compose_config(*TINY, *overrides), folder)
    metrics = (folder / "metrics.csv").read_text().splitlines()
    return [",".join(line.split(",")[:7]) for line in metrics], summary  # without the clock


@pytest.mark.parametrize("key", sorted(CONDITIONAL))
def test_a_key_the_config_does_not_read_leaves_the_training_alone(tmp_path, fashion_mnist, key):
    """The independent check of READ_WHEN: train with the unread key changed, and every
    logged loss and accuracy is the same to the last digit."""
    unread_when, value, _ = CONDITIONAL[key]
    plain, plain_summary = _trained(tmp_path, "plain", *unread_when)
    changed, changed_summary = _trained(tmp_path, "changed", *unread_when, f"{key}={value}")
    assert plain == changed
    assert plain_summary["final_test_accuracy"] == changed_summary["final_test_accuracy"]


def _v1_hash(config: dict) -> str:
    """The identity an older bnexp gave a run (written out here, independently): every key
    but the execution keys and the norm keys the normalizer ignores."""
    ignored = {"study", "results_dir", "rerun", "report", "scale", "train.threads",
               "train.checkpoint_every", "norm.groups", "norm.virtual_batch_size", "norm.r_max",
               "norm.d_max", "norm.renorm_warmup_steps"}  # norm=batch
    kept = {key: value for key, value in config.items() if key not in ignored}
    canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def test_a_run_recorded_under_the_older_identity_is_skipped_not_retrained(tmp_path,
                                                                          fashion_mnist):
    args = ["norm=batch", "data.train_subset=256", "train.steps=3", "train.log_every=1"]
    first = run_bnexp(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    [folder] = run_folders(tmp_path / "results")
    config = json.loads((folder / "summary.json").read_text())["config"]
    # what the older bnexp recorded had no keys added since: the study's question, the
    # optional train.eval_every_steps (null), pack / pack_members, issue 17's options and
    # data.test_subset
    added_since = {"train.eval_every_steps", "pack", "pack_members", "train.sampler",
                   "train.classes_per_batch", "train.freeze_norm_stats_at", "probe.ics",
                   "probe.landscape", "probe.landscape_steps", "eval.precise_examples",
                   "eval.precise_estimator", "norm.noise_mean", "norm.noise_scale",
                   "norm.noise_std", "data.test_subset"}
    config = {key: value for key, value in config.items()
              if not key.startswith("question.") and key not in added_since}
    old_name = f"{folder.name.rsplit('-', 1)[0]}-{_v1_hash(config)}"
    assert old_name != folder.name  # data.root, data.download, train.epochs now ignored
    legacy = folder.with_name(old_name)
    shutil.move(folder, legacy)
    summary_before = (legacy / "summary.json").read_bytes()
    again = run_bnexp(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"skipped: {legacy}" in again.stdout
    assert run_folders(tmp_path / "results") == [legacy]
    assert (legacy / "summary.json").read_bytes() == summary_before


def test_a_checkout_is_dirty_when_code_differs_not_when_committed_results_do(tmp_path):
    """Provenance: a rewritten report under results/ (run_studies.sh writes one study's
    before the next study runs) leaves the commit clean; a changed source file does not."""
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "bnexp").mkdir()
    (tmp_path / "bnexp" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "study" / "report").mkdir(parents=True)
    (tmp_path / "results" / "study" / "report" / "report.md").write_text("old\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert checkout_commit(tmp_path) == head
    (tmp_path / "results" / "study" / "report" / "report.md").write_text("new\n")
    (tmp_path / "results" / "other.txt").write_text("untracked\n")
    assert checkout_commit(tmp_path) == head
    (tmp_path / "bnexp" / "code.py").write_text("x = 2\n")
    assert checkout_commit(tmp_path) == f"{head}-dirty"
    assert checkout_commit(tmp_path / "nowhere") is None


def test_a_full_scale_run_has_its_own_folder_and_an_older_one_is_still_found(tmp_path):
    """quick runs in results/<study>/, full ones in results/<study>/full/ (so a study's two
    scales never share a sweep or a report); a full run recorded before, in the study folder
    itself, is found there rather than retrained."""
    launch = str(tmp_path)
    quick = compose_config("experiment=lr_robustness/quick", "optim.lr=0.1", "seed=0")
    full = compose_config("experiment=lr_robustness/full", "optim.lr=0.1", "seed=0")
    study = tmp_path / "results" / "lr_robustness"
    assert study_dir(quick, launch) == study and run_folder(quick, launch).parent == study
    assert study_dir(full, launch) == study / "full"
    assert run_folder(full, launch).parent == study / "full"
    older = study / run_folder(full, launch).name
    older.mkdir(parents=True)
    assert run_folder(full, launch) == older
    (study / "full" / older.name).mkdir(parents=True)  # both: the current folder wins
    assert run_folder(full, launch) == study / "full" / older.name

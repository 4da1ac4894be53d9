"""The curated studies: every experiment composes and validates at both scales with the
groups and values its files choose, every quick grid runs end to end (with a tiny budget) and
writes its report, and the README lists them."""
from __future__ import annotations

import html
import re
import urllib.parse
import subprocess

import pytest
import yaml

from bnexp.compose import CONFIG_DIR, compose_config, compose_sweep
from bnexp.config import flatten
from bnexp.identity import task_config
from bnexp.report.metrics import METRIC_INFO
from bnexp.report.stats import text
from bnexp.validation import validate
from helpers import ROOT, run_bnexp

STUDIES = sorted(path.name for path in (CONFIG_DIR / "experiment").iterdir() if path.is_dir())
SCALES = ["quick", "full"]


def test_every_study_has_its_base_and_both_scales():
    assert len(STUDIES) >= 9  # the curated ones; a new study needs no edit here
    for study in STUDIES:
        assert sorted(p.stem for p in (CONFIG_DIR / "experiment" / study).glob("*.yaml")) \
            == sorted(SCALES)
    assert sorted(p.stem for p in (CONFIG_DIR / "studies").glob("*.yaml")) == STUDIES


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_states_its_claim_source_and_command(study):
    header = (CONFIG_DIR / "studies" / f"{study}.yaml").read_text()
    assert header.startswith("# @package _global_")
    question = compose_config(f"experiment={study}/quick").question
    assert question.claim and question.source and question.comparisons
    assert question.command == f"bnexp -m experiment={study}/quick report=true"
    assert question.metric in METRIC_INFO or question.metric.startswith("final_test_accuracy_")
    assert question.target is not None or not question.metric.endswith("_to_target")
    for scale in SCALES:
        text = (CONFIG_DIR / "experiment" / study / f"{scale}.yaml").read_text()
        assert text.startswith("# @package _global_")
        assert f"# Run:  bnexp -m experiment={study}/{scale} report=true" in text


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("study", STUDIES)
def test_a_study_composes_and_validates_at_each_scale(study, scale):
    """The quick loop's check; the slow test below composes every job of the grid."""
    cfg = compose_config(f"experiment={study}/{scale}")
    validate(cfg)
    assert cfg.study == study and cfg.scale == scale


@pytest.mark.slow
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_every_study_composes_and_validates(study, scale):
    base = compose_config(f"experiment={study}/{scale}", hydra_node=True)
    assert base.study == study and base.scale == scale
    params = base.hydra.sweeper.params
    assert "seed" in params and len(params) >= 2
    jobs = compose_sweep(f"experiment={study}/{scale}")
    expected = 1
    for values in params.values():
        expected *= len(str(values).split(","))
    assert len(jobs) == expected
    for job in jobs:
        validate(job)
        choices = job.hydra.runtime.choices  # the recorded groups say what the job runs
        assert choices.data == job.data.name and choices.model == job.model.name
        assert choices.norm == job.norm.kind
    for comparison in base.question.comparisons:  # the factor varies, the reference is run
        values = {text(flatten(task_config(job))[comparison.factor]) for job in jobs}
        assert len(values) > 1 and comparison.reference in values, (comparison, values)


def test_a_scale_may_switch_the_model_and_the_dataset():
    """resnet_cifar: a small ResNet on Fashion-MNIST at quick scale, ResNet-20 on CIFAR-10 at
    full scale, each recorded as the group it is."""
    quick = compose_config("experiment=resnet_cifar/quick", hydra_node=True)
    full = compose_config("experiment=resnet_cifar/full", hydra_node=True)
    assert (quick.model.name, quick.model.depth, quick.data.name) == ("resnet", 8, "fashion_mnist")
    assert (full.model.name, full.model.depth, full.data.name) == ("resnet", 20, "cifar10")
    assert full.hydra.runtime.choices.data == "cifar10" and full.data.augment is True
    placement = compose_config("experiment=placement/full", hydra_node=True)
    assert placement.hydra.runtime.choices.data == "fashion_mnist" == placement.data.name
    assert placement.data.train_subset is None and placement.data.download is False  # offline


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("study", STUDIES)
def test_what_a_study_sets_is_not_overridden_by_its_budget(study, scale):
    """A study's base is composed before the scale's budget, so a key both set would silently
    take the budget's value: a study changes such a key in its scale file instead."""
    def leaves(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    base = yaml.safe_load((CONFIG_DIR / "studies" / f"{study}.yaml").read_text())
    scale_file = yaml.safe_load((CONFIG_DIR / "experiment" / study / f"{scale}.yaml").read_text())
    own = dict(leaves({k: v for k, v in scale_file.items() if k != "defaults"}))
    composed = flatten(compose_config(f"experiment={study}/{scale}"))
    for key, value in leaves({k: v for k, v in base.items() if k not in ("hydra", "question")}):
        if key in own or (isinstance(value, str) and "${" in value):
            continue
        found = composed[key]
        assert found == value or (isinstance(value, list) and list(found) == value), \
            f"{study}/{scale}: {key}={value} in conf/studies/{study}.yaml is overridden ({found})"


def test_a_shared_budget_is_written_once():
    """What every study's quick scale shares lives in budget/quick.yaml, not in its files."""
    quick = yaml.safe_load((CONFIG_DIR / "budget" / "quick.yaml").read_text())
    for study in STUDIES:
        own = yaml.safe_load((CONFIG_DIR / "experiment" / study / "quick.yaml").read_text())
        for group, values in quick.items():
            if isinstance(values, dict) and isinstance(own.get(group), dict):
                repeated = {k: v for k, v in values.items() if own[group].get(k) == v}
                assert not repeated, f"{study}/quick repeats {group}: {repeated}"


@pytest.mark.slow
def test_a_study_without_a_scale_is_refused_in_one_line(tmp_path):
    result = run_bnexp("-m", "experiment=placement", cwd=tmp_path)
    assert result.returncode == 2
    assert "experiment=<study>/quick" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.slow
def test_quick_grids_run_end_to_end_and_report(tmp_path, fashion_mnist):
    """Every study, each with its whole quick grid but two seeds, at a tiny budget (fifteen
    studies: about 15 minutes on 2 cores). 1,100 images: population_stats trains at batch 1024;
    500 test images: online_resnet scores them one by one (batch statistics at batch 1)."""
    results = tmp_path / "results"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "run_studies.sh"), "quick", "--",
                           f"results_dir={results}", "data.train_subset=1100", "data.test_subset=500",
                           "train.steps=2",
                           "eval.precise_batches=2", "seed=0,1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for study in STUDIES:
        report = results / study / "report"
        assert (report / "report.html").exists() and (report / "summary.csv").exists(), study
        assert list(report.glob("*.png")), study


def test_readme_lists_exactly_the_studies():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Curated studies", 1)[1].split("\n## ", 1)[0]
    listed = sorted(set(re.findall(r"`experiment=(\w+)/(?:quick|full)`", section)))
    assert listed == STUDIES
    results_readme = (ROOT / "results" / "README.md").read_text()
    for study in STUDIES:
        assert f"## {study}" in results_readme


def test_committed_reports_link_only_committed_files():
    """Every number in a committed report traces to a committed text file: runs.csv and
    curves.csv are committed with each study's page (and with a full-scale page where one is
    committed, under results/<study>/full/), and no link on it leads to a file that is not
    committed (run folders and the probes' large tables stay local)."""
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.split())
    full_reports = [f"{study}/full" for study in STUDIES
                    if f"results/{study}/full/report/report.md" in tracked]
    for study in [*STUDIES, *full_reports]:
        folder = f"results/{study}/report"
        assert {f"{folder}/{name}" for name in ("report.html", "report.md", "runs.csv",
                                                "curves.csv", "comparisons.csv")} <= tracked
        html_page = (ROOT / folder / "report.html").read_text()
        markdown = (ROOT / folder / "report.md").read_text()
        links = re.findall(r'(?:href|src)="([^"]+)"', html_page)
        links += re.findall(r"\]\(([^)\s]+)\)", markdown)
        for link in links:
            if link.startswith(("#", "data:")):
                continue
            assert f"{folder}/{urllib.parse.unquote(html.unescape(link))}" in tracked, (study, link)

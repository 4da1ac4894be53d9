"""The curated studies: every experiment composes and validates at both scales, every quick
grid runs end to end (with a tiny budget) and writes its report, and the README lists them."""
from __future__ import annotations

import copy
import itertools
import re
import subprocess

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from bnexp.validation import validate
from conftest import CONFIG_DIR

ROOT = CONFIG_DIR.parent
STUDIES = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


def compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def sweep_jobs(params: dict) -> list[list[str]]:
    grid = [[f"{key}={value}" for value in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*grid)]


def test_there_are_nine_studies():
    assert STUDIES == ["affine", "batch_size", "bn_paper_mnist", "eval_mode", "init_sensitivity",
                       "lr_robustness", "placement", "regularization", "resnet_cifar"]


@pytest.mark.parametrize("scale", ["quick", "full"])
@pytest.mark.parametrize("study", STUDIES)
def test_every_job_of_every_study_composes_and_validates(study, scale):
    base = compose_with_hydra([f"experiment={study}", f"scale={scale}"])
    assert base.study == study and base.scale == scale
    header = (CONFIG_DIR / "experiment" / f"{study}.yaml").read_text()
    assert header.startswith("# @package _global_") and "# Claim:" in header
    assert "# Source:" in header and f"experiment={study}" in header
    params = OmegaConf.to_container(base.hydra.sweeper.params)
    assert "seed" in params and len(params) >= 2
    composed = {}
    for job in sweep_jobs(params):
        groups = tuple(o for o in job if "." not in o.split("=")[0] and not o.startswith("seed="))
        if groups not in composed:  # compose once per choice of config groups
            composed[groups] = compose_with_hydra([f"experiment={study}", f"scale={scale}",
                                                   *groups])
        cfg = copy.deepcopy(composed[groups])
        with open_dict(cfg.hydra):
            for override in job:
                key, value = override.split("=", 1)
                if "." in key or key == "seed":
                    OmegaConf.update(cfg, key, yaml.safe_load(value), force_add=False)
        validate(cfg)


@pytest.mark.slow
def test_quick_grids_run_end_to_end_and_report(tmp_path, fashion_mnist):
    """All nine studies, each with its whole quick grid, at a tiny budget."""
    results = tmp_path / "results"
    done = subprocess.run(["bash", str(ROOT / "scripts" / "run_studies.sh"), "quick", "--",
                           f"results_dir={results}", "data.train_subset=600", "train.steps=2",
                           "eval.precise_batches=2"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for study in STUDIES:
        report = results / study / "report"
        assert (report / "report.html").exists() and (report / "summary.csv").exists(), study
        assert list(report.glob("*.png")), study


def test_readme_lists_exactly_the_studies():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Curated studies", 1)[1].split("\n## ", 1)[0]
    listed = sorted(set(re.findall(r"`experiment=(\w+)`", section)))
    assert listed == STUDIES
    results_readme = (ROOT / "results" / "README.md").read_text()
    for study in STUDIES:
        assert f"## {study}" in results_readme

"""Composing bnexp's config outside the `bnexp` command (tests, notebooks, benchmarks) exactly
as the command composes it, and the ConfigStore registration every composition needs.

The YAML files ship inside the package (`bnexp/conf/`; the repository's top-level `conf` is a
link to it), so an installed wheel composes the same config as a checkout.
"""
from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from bnexp import sweep
from bnexp.config import CONFIG_DIR, Config, DataConfig, NormConfig, OptimConfig, TrainConfig
from bnexp.identity import register_resolvers
from bnexp.models import MODELS

__all__ = ["CONFIG_DIR", "compose_config", "compose_sweep", "register_configs"]


def register_configs() -> None:
    """Put the schemas where the YAML files of `conf/` find them (`/<name>_schema@_here_`).
    Stored outside the groups, so that `bnexp --help` lists only the real options."""
    store = ConfigStore.instance()
    schemas = {"config": Config, "data": DataConfig, "norm": NormConfig, "optim": OptimConfig,
               "train": TrainConfig, **{name: spec.schema for name, spec in MODELS.items()}}
    for name, node in schemas.items():
        store.store(name=f"{name}_schema", node=node)
    register_resolvers()


def compose_config(*overrides: str, hydra_node: bool = False) -> DictConfig:
    """The config exactly as `bnexp <overrides>` composes it; `hydra_node` keeps Hydra's own
    node (the sweeper's params, the run folder)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides),
                       return_hydra_config=hydra_node)


def compose_sweep(*overrides: str) -> list[DictConfig]:
    """Every job of `bnexp -m <overrides>`, expanded and composed as the sweep would launch it
    (an experiment's `hydra.sweeper.params` included)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        sweep_cfg = compose(config_name="config", overrides=list(overrides),
                            return_hydra_config=True)
        return [sweep.compose_job(sweep_cfg, job) for job in sweep.expand_jobs(sweep_cfg)]

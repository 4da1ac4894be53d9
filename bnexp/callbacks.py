"""Hydra callbacks: checks that must pass before Hydra creates a run folder."""
from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bnexp import datasets
from bnexp.config import validate


class Rejected(BaseException):
    """Carries a user-fixable error out of a callback.

    Hydra's callback runner turns every `Exception` into a warning and carries on (it would
    then create the run folder), so the rejection travels as a BaseException, which it lets
    through; `bnexp.cli.main` unwraps it into one line and a non-zero exit.
    """

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class ValidateBeforeRun(Callback):
    """Reject a bad value or a missing dataset while nothing is on disk yet.

    Hydra calls `on_run_start` after composing the config and before it creates the run
    folder, so a rejected run leaves no folder behind.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_runnable(config)
        except (ValueError, FileNotFoundError) as error:
            raise Rejected(error) from error


def check_runnable(config: DictConfig) -> None:
    """The config's values are valid and, unless it may download, its dataset is present."""
    validate(config)
    data = config.data
    if not data.download:
        info = datasets.DATASETS[data.name.value]
        found, tried = datasets.locate(info, data.root)
        if found is None:
            raise datasets.DatasetNotFound(datasets.not_found_message(info, tried, False, None))

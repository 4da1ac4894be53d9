"""Command-line entry points: thin wrappers that hand a composed config to `run`.

Errors a user can fix (a bad config value, a missing or corrupt dataset file) are printed as
one line naming the problem and the fix, with a non-zero exit; anything else keeps its full
traceback (and the run folder keeps it in error.txt).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bnexp.callbacks import Rejected
from bnexp.config import ConfigError, register_configs
from bnexp.datasets import DatasetNotFound
from bnexp.formats import DatasetFileError

EXIT_CONFIG = 2  # the command line or config is wrong
EXIT_DATA = 3  # the dataset is missing or damaged

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"  # the repository's conf/

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def train(cfg: DictConfig) -> None:
    from bnexp.run import run  # torch is imported only once the config is known to be good

    folder = Path(HydraConfig.get().runtime.output_dir)
    summary = run(cfg, folder)
    print(f"{summary['status']}: test accuracy {summary.get('final_test_accuracy', 'n/a')} "
          f"after {summary['steps']} steps; record in {folder}")


def config_error_line(error: BaseException) -> str:
    """One line from Hydra's/OmegaConf's layered messages: the key, the value, the rule."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    message = str(cause).strip().splitlines()[0]
    key = getattr(cause, "full_key", None)
    if key and key not in message:
        message = f"{key}: {message}"
    options = [name for name in getattr(error, "options", None) or []
               if not name.endswith("_schema")]
    if options:
        message += f"; choose one of: {', '.join(options)}"
    elif "not in" in message:
        message += " (bnexp --cfg job lists every key)"
    return message


def main() -> None:
    # Let errors reach us instead of Hydra's multi-line report, so that we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        try:
            train()
        except Rejected as rejected:  # raised before any run folder exists
            raise rejected.error from None
    except ConfigError as error:
        sys.exit(_fail(f"invalid config: {error}", EXIT_CONFIG))
    except (HydraException, OmegaConfBaseException) as error:
        sys.exit(_fail(f"invalid config: {config_error_line(error)}", EXIT_CONFIG))
    except (DatasetNotFound, DatasetFileError) as error:
        sys.exit(_fail(str(error), EXIT_DATA))


def _fail(message: str, code: int) -> int:
    print(f"bnexp: {message}", file=sys.stderr)
    return code

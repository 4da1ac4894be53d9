"""Command-line entry points: thin wrappers that hand a composed config to `run`.

Errors a user can fix (a bad config value, a missing or corrupt dataset file) are printed as
one line naming the problem and the fix, with a non-zero exit; anything else keeps its full
traceback (and the run folder keeps it in error.txt).
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bnexp import jobs
from bnexp.callbacks import Rejected, ResultsNotWritable, SweepFailed
from bnexp.config import ConfigError, register_configs
from bnexp.identity import register_resolvers
from bnexp.datasets import DatasetNotFound
from bnexp.formats import DatasetFileError

EXIT_CONFIG = 2  # the command line or config is wrong
EXIT_FAILED_RUNS = 1  # a sweep finished, but some of its runs failed (its table names them)
EXIT_DATA = 3  # the dataset is missing or damaged
EXIT_OUTPUT = 4  # the results folder cannot be written

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"  # the repository's conf/
# conf/hydra/launcher/joblib.yaml is deliberately checked against the joblib plugin's schema of
# the same name; Hydra announces that merge as deprecated at every composition.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against")

register_configs()
register_resolvers()


def train(cfg: DictConfig) -> str:
    """One job: run, resume or skip the run in its folder (see bnexp.jobs). Launchers that
    ship jobs to other processes (joblib, SLURM) pickle it by reference to this module."""
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    single = hydra_cfg.mode == RunMode.RUN
    outcome = jobs.execute(cfg, folder, raise_errors=single,
                           threads=jobs.threads_for(cfg, hydra_cfg.launcher))
    accuracy = outcome.final_test_accuracy
    print(f"{outcome.status}: {folder}"
          + (f"  test accuracy {accuracy:.4f}" if accuracy is not None else "")
          + (f"  ({outcome.detail})" if outcome.detail else ""), flush=True)
    return outcome.status


hydra_entry = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
                         config_name="config")(train)


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
            hydra_entry()
        except Rejected as rejected:  # raised before any run folder exists
            raise rejected.error from None
    except SweepFailed:
        sys.exit(EXIT_FAILED_RUNS)
    except ConfigError as error:
        sys.exit(_fail(f"invalid config: {error}", EXIT_CONFIG))
    except (HydraException, OmegaConfBaseException) as error:
        sys.exit(_fail(f"invalid config: {config_error_line(error)}", EXIT_CONFIG))
    except (DatasetNotFound, DatasetFileError) as error:
        sys.exit(_fail(str(error), EXIT_DATA))
    except ResultsNotWritable as error:
        sys.exit(_fail(str(error), EXIT_OUTPUT))


def _fail(message: str, code: int) -> int:
    print(f"bnexp: {message}", file=sys.stderr)
    return code

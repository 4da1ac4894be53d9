"""Command-line entry points: thin wrappers that hand a composed config to `run`.

Errors a user can fix (a bad config value, a missing or corrupt dataset file, a results
folder that cannot be written or is full) are printed as one line naming the problem and the
fix, with a non-zero exit; anything else keeps its full traceback (and the run folder keeps it
in error.txt). An interrupted sweep (Ctrl-C, SIGTERM, a full disk) prints its closing table
before that line.
"""
from __future__ import annotations

import errno
import os
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from bnexp import interrupts, jobs, pack_jobs
from bnexp.callbacks import Rejected, ResultsNotWritable, SweepFailed, close_sweep
from bnexp.compose import CONFIG_DIR, register_configs
from bnexp.config import ConfigError
from bnexp.help import register_help_resolver
from bnexp.packing import read_pack_file
from bnexp.datasets import DatasetContentError, DatasetNotFound
from bnexp.formats import DatasetFileError
from bnexp.schema import FAILING

EXIT_CONFIG = 2  # the command line or config is wrong
EXIT_FAILED_RUNS = 1  # a sweep finished, but some of its runs failed (its table names them)
EXIT_DATA = 3  # the dataset is missing or damaged
EXIT_OUTPUT = 4  # the results folder cannot be written (or the disk is full)
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, the shell's convention
EXIT_TERMINATED = 143  # SIGTERM: 128 + SIGTERM
NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}  # with a full disk: exit 4, one line
RESUME_HINT = "launch the same command again to resume (finished runs are skipped)"

# conf/hydra/launcher/joblib.yaml is deliberately checked against the joblib plugin's schema of
# the same name; Hydra announces that merge as deprecated at every composition.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against")

register_configs()
register_help_resolver()


def register_sweeper() -> None:
    """An editable install maps hydra_plugins.bnexp_packing from bnexp/hydra_plugin/, which
    Hydra's scan of the hydra_plugins folders does not see: register the sweeper by hand,
    after the scan (it re-imports Hydra's own plugin modules, BasicSweeper among them)."""
    plugins = Plugins.instance()
    from hydra_plugins.bnexp_packing import PackingSweeper

    plugins.register(PackingSweeper)


register_sweeper()


def train(cfg: DictConfig) -> str:
    """One job: run, resume or skip the run in its folder (see bnexp.jobs), or, for a job
    the packing sweeper made of a pack, each of the pack's runs. Launchers that ship jobs to
    other processes (joblib, SLURM) pickle it by reference to this module."""
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir)
    single = hydra_cfg.mode == RunMode.RUN
    threads = jobs.threads_for(cfg, hydra_cfg.launcher)
    if cfg.pack_members:
        outcomes = pack_jobs.execute_pack(read_pack_file(cfg.pack_members), threads)
    else:
        outcomes = [jobs.execute(cfg, folder, raise_errors=single, threads=threads)]
    for outcome in outcomes:
        accuracy = outcome.final_test_accuracy
        print(f"{outcome.status}: {outcome.folder}"
              + (f"  test accuracy {accuracy:.4f}" if accuracy is not None else "")
              + (f"  ({outcome.detail})" if outcome.detail else ""), flush=True)
    if single and any(o.status in FAILING for o in outcomes):  # a sweep: its table, its exit
        sys.exit(EXIT_FAILED_RUNS)
    return ",".join(outcome.status for outcome in outcomes)


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
    elif "Could not find 'experiment/" in message:
        message += ": a study runs as experiment=<study>/quick or experiment=<study>/full " \
                   "(bnexp --help lists them)"
    return message


def main() -> None:
    # Let errors reach us instead of Hydra's multi-line report, so that we can print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        try:
            with interrupts.sigterm_raises():
                hydra_entry()
        except Rejected as rejected:  # raised before any run folder exists
            raise rejected.error from None
    except SweepFailed:
        sys.exit(EXIT_FAILED_RUNS)
    except ConfigError as error:
        sys.exit(_fail(f"invalid config: {error}", EXIT_CONFIG))
    except (HydraException, OmegaConfBaseException) as error:
        sys.exit(_fail(f"invalid config: {config_error_line(error)}", EXIT_CONFIG))
    except (DatasetNotFound, DatasetFileError, DatasetContentError) as error:
        sys.exit(_fail(str(error), EXIT_DATA))
    except ResultsNotWritable as error:
        sys.exit(_fail(str(error), EXIT_OUTPUT))
    except (KeyboardInterrupt, interrupts.Interrupted, OSError) as error:
        if isinstance(error, OSError) and not (interrupts.is_storage_full(error)
                                               or error.errno in NOT_WRITABLE):
            raise
        close_sweep()
        sys.exit(_fail(*_interrupted(error)))


def _interrupted(error: BaseException) -> tuple[str, int]:
    """The line and exit status for a sweep or run stopped from outside."""
    if isinstance(error, (KeyboardInterrupt, interrupts.Terminated)):
        code = EXIT_TERMINATED if isinstance(error, interrupts.Terminated) else EXIT_INTERRUPTED
        return f"{interrupts.interruption(error)}: {RESUME_HINT}", code
    if isinstance(error, OSError) and error.errno in NOT_WRITABLE:
        return (f"cannot write the results ({error}): fix the folder's permissions or set "
                f"results_dir=/a/writable/path, then {RESUME_HINT}"), EXIT_OUTPUT
    return f"{interrupts.interruption(error)}: free space, then {RESUME_HINT}", EXIT_OUTPUT


def _fail(message: str, code: int) -> int:
    print(f"bnexp: {message}", file=sys.stderr)
    return code

"""Wraps entry points so a bad input ends in one line that says what to change, and a failed
job of a multirun is recorded instead of ending the sweep.

Two layers, because Hydra composes the config before our code runs:
- `cli(main)` around the `@hydra.main` function: unknown keys, unknown config choices and bad
  override syntax (Hydra's errors, printed by Hydra over several lines with exit code 1);
- `guarded(run, cfg)` inside it: ConfigError, missing/invalid config values, and constructors
  that reject a value while Hydra instantiates a config (`model.n_heads=5`).
Both print `error: <one line>` on stderr and exit with status 2. HYDRA_FULL_ERROR=1 shows the
whole traceback instead. Inside a multirun, guarded writes any error to <job dir>/failed.json
and returns None, so the other jobs still run. `hydra_entry` puts both around a script's job, so
train.py, eval.py and generate.py share one preamble.
"""

import functools
import inspect
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    HydraException,
    InstantiationException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from lm_lab.cli.launch import external_rank_overrides
from lm_lab.cli.resolvers import register_resolvers
from lm_lab.utils.errors import ConfigError
from lm_lab.utils.io import FAILED_FILE, write_json

EXIT_BAD_INPUT = 2
_USER_FULL_ERROR = "LM_LAB_FULL_ERROR"  # the user's HYDRA_FULL_ERROR, kept while cli() sets it


def full_error() -> bool:
    """Did the user ask for whole tracebacks (HYDRA_FULL_ERROR=1)?"""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR")) == "1"


Job = Callable[[DictConfig], Any]


def hydra_entry(config_name: str) -> Callable[[Job], Callable[[], None]]:
    """`@hydra_entry("train")` over a script's `main(cfg)` makes it a command: conf/ beside the
    script, PROJECT_ROOT set to that folder, the resolvers registered, the job `guarded` and
    Hydra's own errors turned into one line by `cli`. The job stays defined in the script, so
    Hydra names the job (and its log file) after the script."""

    def decorate(job: Job) -> Callable[[], None]:
        root = Path(inspect.getfile(job)).resolve().parent
        os.environ.setdefault("PROJECT_ROOT", str(root))
        register_resolvers()

        @functools.wraps(job)
        def guarded_job(cfg: DictConfig) -> Any:
            return guarded(job, cfg)

        main = hydra.main(str(root / "conf"), config_name, version_base="1.3")(guarded_job)

        def command() -> None:
            sys.argv[1:] = null_groups_removed(sys.argv[1:], root / "conf")
            sys.argv += external_rank_overrides()  # torchrun / srun ranks > 0 write nothing
            cli(main)

        return command

    return decorate


def null_groups_removed(args: list[str], conf_dir: Path) -> list[str]:
    """`logger=null`, as Lightning-Hydra users type it, means no logger; Hydra rejects a null
    group choice (a ValueError, not one of its errors), its spelling is `~logger`."""
    groups = [path.name for path in conf_dir.iterdir() if path.is_dir()]
    removals = {f"{group}=null": f"~{group}" for group in groups}
    return [removals.get(arg, arg) for arg in args]


def cli(main: Callable[[], Any]) -> None:
    """Runs a `@hydra.main` function with Hydra's own errors turned into one line.

    Hydra prints its errors itself unless HYDRA_FULL_ERROR=1, in which case it raises them; so
    that is set while `main` runs, and the user's own choice is kept for `full_error()`."""
    before = {name: os.environ.get(name) for name in ("HYDRA_FULL_ERROR", _USER_FULL_ERROR)}
    os.environ[_USER_FULL_ERROR] = "1" if full_error() else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except (HydraException, OmegaConfBaseException, ConfigError) as err:
        _exit_or_raise(err)
    except OSError as err:
        if not _raised_by_hydra(err):
            raise
        _exit_or_raise(
            ConfigError(
                f"hydra.run.dir: cannot write {err.filename} ({err.strerror}); set "
                "hydra.run.dir (or paths.log_dir) to a writable folder"
            )
        )
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _raised_by_hydra(err: OSError) -> bool:
    """Hydra creates the run dir and writes .hydra/ in it before the task function runs: an
    OSError from there (Hydra's own code or the standard library it calls, not the task
    function) means the run dir cannot be written."""
    frames = traceback.extract_tb(err.__traceback__)
    names = [frame.name for frame in frames]
    if "run_job" not in names:
        return False
    after = frames[names.index("run_job") + 1 :]
    own = (str(Path(hydra.__file__).parent), sysconfig.get_paths()["stdlib"])
    return bool(after) and after[0].filename.startswith(own)


def guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """Runs `fn(*args)`; bad input exits with status 2 and one line on stderr; in a multirun any
    error is recorded in failed.json and None returned."""
    try:
        return fn(*args)
    except Exception as err:
        if in_multirun():
            record_failure(err)
            return None
        if isinstance(err, ConfigError | OmegaConfBaseException | InstantiationException):
            _exit_or_raise(err)
        raise


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(err: Exception) -> None:
    """failed.json holds the one-line error and the traceback; the job's W&B run is closed as
    failed so the next job opens its own."""
    # Lightning is imported here, not at the top: a failed job has loaded it already, and a bad
    # override or `python train.py --cfg job` then answer in a fraction of a second.
    from lightning.pytorch.utilities import rank_zero_warn

    from lm_lab.cli.loggers import finish_wandb

    finish_wandb(exit_code=1)
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    cause = err
    while cause.__cause__ is not None:  # Hydra wraps errors raised while instantiating
        cause = cause.__cause__
    trace = "".join(traceback.format_exception(err))
    failure = {"error": one_line(cause) or _first_line(cause), "type": type(cause).__name__}
    write_json(job_dir / FAILED_FILE, failure | {"traceback": trace})
    rank_zero_warn(f"job failed, the sweep goes on: {failure['error']} ({job_dir / FAILED_FILE})")


def one_line(err: BaseException) -> str | None:
    """The message to print, or None when the error is not about the input (a bug: re-raise)."""
    if isinstance(err, InstantiationException):
        from lightning.fabric.utilities.exceptions import MisconfigurationException  # see above

        cause = err.__cause__
        if isinstance(cause, ValueError | MisconfigurationException | OmegaConfBaseException):
            return one_line(cause)
        return _foreign_key(err) if isinstance(cause, TypeError) else None
    if isinstance(err, HydraException) and (hint := _quoting_hint(err)):
        return hint
    if isinstance(err, MissingConfigException) and err.options:
        options = [o for o in err.options if not o.startswith("_")]  # _base, _sizing: parts
        return f"{_first_line(err)}; choose one of: {', '.join(options)}"
    if isinstance(err, OmegaConfBaseException):
        key = getattr(err, "full_key", None)
        return f"config key {key}: {_first_line(err)}" if key else _first_line(err)
    if isinstance(err, HydraException):
        # e.g. "Could not override 'model.foo'." + "To append to your config use +model.foo=1"
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        return " ".join(lines[:2])
    return _first_line(err)


TEXT_KEYS = ("prompt", "prompt_file", "stop")  # free text: any parse error is a quoting one
STDIN_KEYS = ("prompt",)  # keys that also read `-` as "from stdin" (generate.py)


def _quoting_hint(err: HydraException) -> str | None:
    """How to quote an override Hydra cannot read: a character its grammar has no token for
    (any key), or, in a free-text value, any parse error (`prompt=def fibonacci(n):`) and a
    comma, which Hydra reads as a list or a sweep (`prompt=Hello, world`)."""
    ambiguous = re.match(r"Ambiguous value for argument '(.*)'$", str(err), re.MULTILINE)
    if isinstance(err, OverrideParseException):
        override, any_key = err.override, "LexerNoViableAlt" in err.message
    elif ambiguous:
        override, any_key = ambiguous.group(1), False
    else:
        return None
    key, _, value = override.partition("=")
    name = key.lstrip("+~")
    if not any_key and name not in TEXT_KEYS:
        return None
    quoted = value.replace('"', '\\"')  # Hydra's escape inside a quoted value
    stdin = f", or pass {name}=- and pipe the text on stdin" if name in STDIN_KEYS else ""
    return (
        f"cannot parse the override {override!r}: quote the value for Hydra inside the "
        f"shell's quotes, e.g. '{key}=\"{quoted}\"' (non-ASCII and special characters){stdin}"
    )


# where each package's objects are configured, for naming the key a constructor refuses
GROUPS = {
    "encoders": "model",
    "tasks": "task",
    "finetune": "finetune",
    "baselines": "task.baseline",
}


def _foreign_key(err: InstantiationException) -> str | None:
    """A key the constructor has no parameter for, left by an experiment written for another
    choice of the group (`experiment=pydoc_classify model=bilstm` keeps the CNN's kernel_sizes)."""
    kwarg = re.search(r"unexpected keyword argument '(\w+)'", str(err.__cause__))
    target = re.search(r"target '(lm_lab\.(\w+)\.[\w.]+)'", str(err))
    if not (kwarg and target and target.group(2) in GROUPS):
        return None  # not a key of ours: a bug, shown in full
    key = f"{GROUPS[target.group(2)]}.{kwarg.group(1)}"
    return (
        f"{key}: {target.group(1)} has no parameter {kwarg.group(1)!r} (an experiment or override "
        f"set it for another choice of the group): drop it with ~{key}"
    )


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _exit_or_raise(err: BaseException) -> None:
    message = one_line(err)
    if full_error() or message is None:
        raise err
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)

"""One process writes a run dir at a time: `<run dir>/run.lock` holds the writer's host and PID.

Two runs started with the same `hydra.run.dir` would otherwise both train and overwrite each
other's checkpoints. The lock is taken before data loads and released when the run ends (also on
an error or a signal); a lock whose process is gone (kill -9, a crash of the machine's process)
is stale and taken over, so `resume=<run dir>` of a killed run just works. Only global rank 0
takes it: the other ranks of a DDP job share the run dir on purpose.
"""

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lm_lab.utils.errors import ConfigError
from lm_lab.utils.logging import global_rank

LOCK_FILE = "run.lock"


@contextmanager
def run_dir_lock(run_dir: str | Path) -> Iterator[None]:
    """Holds `<run_dir>/run.lock` for the duration of the block (rank 0 only)."""
    path = Path(run_dir) / LOCK_FILE
    taken = global_rank() == 0 and _acquire(path)
    try:
        yield
    finally:
        if taken:
            path.unlink(missing_ok=True)


def _acquire(path: Path) -> bool:
    """True once the lock file is ours; ConfigError when a live process holds it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"hydra.run.dir={path.parent}: cannot create it ({err.strerror}); "
            "set hydra.run.dir (or paths.log_dir) to a writable folder"
        ) from err
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):  # a second try after removing a stale lock
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = path.read_text().strip()
            if _alive(holder):
                raise ConfigError(
                    f"hydra.run.dir={path.parent}: another run (host, pid: {holder}) is writing "
                    f"there; give this run its own hydra.run.dir, or delete {path} if that "
                    "process is gone"
                ) from None
            path.unlink(missing_ok=True)
            continue
        except OSError as err:
            raise ConfigError(
                f"hydra.run.dir={path.parent}: not writable ({err.strerror}); "
                "set hydra.run.dir (or paths.log_dir) to a writable folder"
            ) from err
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def _alive(holder: str) -> bool:
    """Does the "<host> <pid>" that wrote a lock still run? Another host's process cannot be
    checked from here, so it counts as alive (the message says how to clear it)."""
    host, _, pid = holder.rpartition(" ")
    if not pid.isdigit():
        return False  # empty or garbled: a writer that died mid-write
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True

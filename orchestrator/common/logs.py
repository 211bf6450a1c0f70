"""Log levels, and the copy of a command's console that its MLflow run keeps.

Results (tables, plans, configs, the epoch lines of a training) are printed to stdout; the
project's diagnostics (what it found, where it writes, what it resumed, outages) go to stderr
through `logging`, under the `orchestrator` logger, at the level `--log-level` / `-v` / `-q`
chose. Ray's own loggers follow one step quieter (Ray's INFO lines show with `-v`). Processes
the driver starts work in (Ray Train's controller and workers, Tune's trials) get the level
(`level()`) with their plans or environment and gate their lines by it.

`console_copy` tees this process's stdout and stderr, which also carry what Ray relays from the
workers (rank 0's lines and the controller's), into a file that `TrackedRun.finish` keeps as the
run's `console.log` artifact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LEVEL_ENV = "ALEXNET_RAY_LOG_LEVEL"  # the chosen level's name, for the processes started here


def configure(name: str = "info") -> None:
    """The `orchestrator` loggers at `name`'s level, plain lines to stderr; Ray's a step
    quieter (set before Ray starts: a local Ray's processes inherit the environment)."""
    level = LEVELS[name]
    os.environ[LEVEL_ENV] = name
    logger = logging.getLogger("orchestrator")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    if level == logging.INFO:  # the default keeps the project's own choices (ray_cluster.py)
        return
    ray_level = logging.INFO if level == logging.DEBUG else level
    os.environ["RAY_DATA_LOG_LEVEL"] = logging.getLevelName(ray_level)
    for ray_logger in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(ray_logger).setLevel(ray_level)


def level() -> int:
    """The level this process was given (by `configure`, or by its driver's environment)."""
    return LEVELS.get(os.environ.get(LEVEL_ENV, "info"), logging.INFO)


def ray_init_level() -> int:
    """The level `ray.init` logs at: its 'Connecting to ...' lines only with -v or the default."""
    return logging.INFO if level() <= logging.INFO else logging.WARNING


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a line is written (a console copy may wrap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _Tee:
    """A text stream that also writes into a file (a copy of the console)."""

    def __init__(self, stream, copy):
        self._stream, self._copy = stream, copy

    def write(self, text: str) -> int:
        with contextlib.suppress(Exception):  # the copy never costs the console a line
            self._copy.write(text)
        return self._stream.write(text)

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            self._copy.flush()
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


_COPY: Path | None = None


@contextlib.contextmanager
def console_copy():
    """Meanwhile, stdout and stderr also go to a file (`copied_console()` names it)."""
    global _COPY
    folder = Path(tempfile.mkdtemp(prefix="alexnet-ray-console-"))
    path = folder / "console.log"
    copy = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    os.chmod(path, 0o600)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(sys.stdout, copy), _Tee(sys.stderr, copy)
    _COPY = path
    try:
        yield path
    finally:
        sys.stdout, sys.stderr = saved
        _COPY = None
        copy.close()
        with contextlib.suppress(OSError):
            path.unlink()
            folder.rmdir()


def copied_console() -> str:
    """What the console showed so far in this command ("" when it is not being copied)."""
    if _COPY is None:
        return ""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    try:
        return _COPY.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""

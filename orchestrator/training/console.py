"""A training worker's console: progress from rank 0 only, as lines or as a live bar that the
driver draws on its terminal."""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys


class RankZeroConsole:
    """Progress from rank 0 only (lines, or a live bar per epoch); a no-op on the other ranks."""

    def __init__(self, rank: int, progress_bar: bool, level: int = logging.INFO):
        self.enabled = rank == 0
        self.progress_bar = progress_bar and self.enabled
        self.level = level  # the driver's log level: lines below it are not shown

    def __call__(self, message: str, level: int = logging.INFO) -> None:
        if self.enabled and level >= self.level:
            # To the process's real stdout: Ray Train's patched print() would echo it twice.
            print(message, file=sys.__stdout__, flush=True)

    def epoch_bar(self, epoch: int, images: int) -> "_DriverBar | None":
        """A live bar the driver draws, or None: plain step lines instead."""
        return _DriverBar(f"epoch {epoch}", images) if self.progress_bar else None


class _DriverBar:
    """Ray's distributed tqdm, fed from this worker and drawn on the driver's terminal (images/s,
    ETA). Its state lines must reach the worker's real stdout, which Ray Train's patched print()
    would turn into log records: it prints through the plain one."""

    def __init__(self, description: str, total: int):
        from ray.experimental import tqdm_ray

        with _plain_print():
            self._bar = tqdm_ray.tqdm(desc=description, total=total, unit=" images")

    def update(self, n: int) -> None:
        with _plain_print():
            self._bar.update(n)

    def close(self) -> None:
        with _plain_print():
            self._bar.close()


@contextlib.contextmanager
def _plain_print():
    def plain(*objects, sep=" ", end="\n", file=None, flush=False):
        sys.__stdout__.write(sep.join(map(str, objects)) + end)
        sys.__stdout__.flush()

    patched, builtins.print = builtins.print, plain
    try:
        yield
    finally:
        builtins.print = patched

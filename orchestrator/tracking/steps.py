"""Live curves: rank 0's running training loss, learning rate and images/s every
`train.log_every_n_steps` steps, as `step/*` metrics whose step is the global step (epoch
metrics keep step = epoch). Each point is written to the run's on-disk buffer (buffer.py) at
once, so a worker killed a moment later loses none of it; a thread sends the buffer to MLflow,
so the training never waits on the server, and an outage loses no value."""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from orchestrator.common.redact import redact_exception, redact_text
from orchestrator.tracking.buffer import MetricBuffer
from orchestrator.tracking.client import IMPORTING_MLFLOW, failing_fast

TRAIN_LOSS = "step/train_loss"  # mean cross-entropy of rank 0's batches since the last point
LR = "step/lr"
IMAGES_PER_SECOND = "step/images_per_second"  # all workers, since the last point
STEP_METRICS = (TRAIN_LOSS, LR, IMAGES_PER_SECOND)


@dataclass(frozen=True)
class StepMetricsTarget:
    """The run rank 0 logs its step metrics into, and its buffer (handed to workers)."""

    tracking_uri: str
    run_id: str
    buffer_dir: str
    buffer_max_values: int


class _Point(NamedTuple):  # what the buffer stores of a metric value (MLflow's Metric fields)
    key: str
    value: float
    timestamp: int
    step: int


class StepLogger:
    """Step metrics of one training worker: `log` writes each point to the run's buffer, a
    thread flushes the buffer to MLflow. An outage costs one warning; what MLflow did not take
    stays buffered and is replayed with the next point, by the epoch logger, or by the driver's
    `finish`. A buffer that cannot be written costs a warning too: the points then go to MLflow
    from the thread directly.

    A worker group restarted from a checkpoint trains some steps again: points at or below the
    highest step the run already holds (in MLflow or in its buffer) are left out, so every step
    keeps the values first logged for it, as the epochs do.
    """

    def __init__(self, target: StepMetricsTarget):
        self.target = target
        folder = Path(target.buffer_dir).expanduser().resolve()
        self.buffer = MetricBuffer(folder / f"{target.run_id}.jsonl", target.buffer_max_values)
        self._logged_through = 0
        self._ready = threading.Event()  # _logged_through is known
        self._wake, self._closing = threading.Event(), threading.Event()
        self._direct: list[_Point] = []  # points the buffer could not take
        self._early: list[_Point] = []  # points logged before the thread was ready
        self._lock = threading.Lock()
        self._buffer_failing = False
        self._thread = threading.Thread(target=self._send, daemon=True, name="step-metrics")
        self._thread.start()

    def log(self, step: int, values: dict[str, float]) -> None:
        timestamp = int(time.time() * 1000)
        points = [_Point(key, float(value), timestamp, step) for key, value in values.items()]
        with self._lock:
            if not self._ready.is_set():  # the thread has not yet read what the run holds:
                self._early += points  # it writes these once it has (a kill before then loses
                return  # them, and the restarted workers train those first steps again)
        self._write(points)

    def _write(self, points: list[_Point]) -> None:
        points = [point for point in points if point.step > self._logged_through]
        if not points:
            return
        try:
            self.buffer.add(points)
            self._buffer_failing = False
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            if not self._buffer_failing:
                warnings.warn(
                    f"step metrics: cannot write the MLflow buffer {self.buffer.path} "
                    f"({redact_exception(error, 200)}); they go to MLflow directly",
                    stacklevel=2,
                )
                self._buffer_failing = True
            with self._lock:
                self._direct += points
        self._wake.set()

    def close(self, timeout_s: float = 15) -> None:
        """Sends what is held (one last flush), waiting at most `timeout_s`."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout=timeout_s)

    def _send(self) -> None:
        client = None
        try:
            with IMPORTING_MLFLOW:
                from mlflow.entities import Metric
                from mlflow.tracking import MlflowClient

            client = MlflowClient(self.target.tracking_uri)
            self._logged_through = self._highest_logged(client)
        except Exception as error:  # noqa: BLE001 - the points stay buffered, replayed later
            warnings.warn(
                f"step metrics: no MLflow client ({redact_exception(error)})", stacklevel=1
            )
        with self._lock:
            self._ready.set()
            early, self._early = self._early, []
        self._write(early)
        if client is None:
            return
        outage = False
        while True:
            self._wake.wait()
            self._wake.clear()
            closing = self._closing.is_set()  # then this flush is the last
            with self._lock:
                direct, self._direct = self._direct, []
            try:
                with failing_fast():
                    if direct:
                        client.log_batch(self.target.run_id, metrics=[Metric(*p) for p in direct])
                    self.buffer.flush(client, self.target.run_id, wait_s=10)
                outage = False
            except Exception as error:  # noqa: BLE001 - tracking must never stop training
                if not outage:
                    warnings.warn(
                        f"step metrics: MLflow at {redact_text(self.target.tracking_uri)} did "
                        f"not take them ({redact_exception(error, 200)}); they wait in "
                        f"{self.buffer.path}",
                        stacklevel=1,
                    )
                outage = True
            if closing:
                return

    def _highest_logged(self, client) -> int:
        """The highest step of `step/train_loss` in the run's history or its buffer; 0: none."""
        highest = 0
        with contextlib.suppress(Exception):  # unreachable: what the buffer holds
            with failing_fast():
                history = client.get_metric_history(self.target.run_id, TRAIN_LOSS)
            highest = max((m.step for m in history), default=0)
        return max(highest, self.buffer.highest_step(TRAIN_LOSS))


@contextlib.contextmanager
def step_metrics(target: StepMetricsTarget | None):
    """A `StepLogger` for `target` meanwhile (None when there is none), closed at the end."""
    if target is None:
        yield None
        return
    logger = StepLogger(target)
    try:
        yield logger
    finally:
        logger.close()

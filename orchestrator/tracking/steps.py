"""Live curves: rank 0's running training loss, learning rate and images/s every
`train.log_every_n_steps` steps, as `step/*` metrics whose step is the global step (epoch
metrics keep step = epoch), written through the run's on-disk buffer (buffer.py) by a thread,
so the training never waits on MLflow and an outage loses no value."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

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


class StepLogger:
    """Step metrics of one training worker, queued by `log` and written by a thread: each point
    goes to the run's buffer first, then the buffer is flushed to MLflow. An outage costs one
    warning; what MLflow did not take stays buffered and is replayed with the next point, by the
    epoch logger, or by the driver's `finish`.

    A worker group restarted from a checkpoint trains some steps again: points at or below the
    highest step the run already holds (in MLflow or in its buffer) are left out, so every step
    keeps the values first logged for it, as the epochs do.
    """

    def __init__(self, target: StepMetricsTarget):
        self.target = target
        folder = Path(target.buffer_dir).expanduser().resolve()
        self.buffer = MetricBuffer(folder / f"{target.run_id}.jsonl", target.buffer_max_values)
        self._points: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write, daemon=True, name="step-metrics")
        self._thread.start()

    def log(self, step: int, values: dict[str, float]) -> None:
        self._points.put((step, int(time.time() * 1000), values))

    def close(self, timeout_s: float = 15) -> None:
        """Writes what is queued (one last flush), waiting at most `timeout_s`."""
        self._points.put(None)
        self._thread.join(timeout=timeout_s)

    def _write(self) -> None:
        with IMPORTING_MLFLOW:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

        client = MlflowClient(self.target.tracking_uri)
        logged_through, outage, done = self._highest_logged(client), False, False
        while not done:
            points = [self._points.get()]
            while not self._points.empty():  # whatever queued meanwhile, in one write
                points.append(self._points.get())
            done = points[-1] is None
            metrics = [
                Metric(key, float(value), timestamp, step)
                for step, timestamp, values in filter(None, points)
                if step > logged_through
                for key, value in values.items()
            ]
            try:
                self.buffer.add(metrics)
                with failing_fast():
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

"""The Ray Train callback that logs every epoch's report to its MLflow run, through the
on-disk buffer (tracking/buffer.py), so that a tracking-server outage costs a warning, not the
training run or its metrics."""

from __future__ import annotations

import logging
import time
import warnings

import ray.train

from orchestrator.common import logs
from orchestrator.common.redact import redact_exception, redact_text
from orchestrator.common.storage import uri_of
from orchestrator.tracking import tags
from orchestrator.tracking.buffer import MetricBuffer
from orchestrator.tracking.client import failing_fast
from orchestrator.tracking.metrics import EpochMetrics, restart_of
from orchestrator.tracking.run import TrackedRun


class EpochLogger(ray.train.UserCallback):
    """Logs rank 0's per-epoch report to the MLflow run, with `step=epoch`.

    Runs in the Train controller. Every epoch's values go to the run's on-disk `MetricBuffer`
    first and leave it once MLflow took them, so a tracking-server outage costs a warning, not
    the training run or its metrics: they are replayed with the first epoch after it is back
    (or by the driver's `finish`). A buffer that cannot be written (a full or read-only disk)
    costs a warning too: the values then go to MLflow directly. An epoch reported again (after a
    restart from a checkpoint older than it) keeps the values first logged for it.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str | None,
        buffer: MetricBuffer,
        logged_epochs: set[int] = frozenset(),
        restarts: tuple[str, ...] = (),
        level: int = logging.INFO,
    ):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.buffer = buffer
        self.logged_epochs = set(logged_epochs)
        self.restarts = list(restarts)
        self.level = level  # the driver's log level (common/logs.py): diagnostics below it hide
        self._client = None
        self._outage = False
        self._buffer_failing = False

    def after_report(self, run_context, metrics, checkpoint):
        from mlflow.entities import Metric

        report = metrics[0]  # rank 0's; every rank reports the same all-reduced numbers
        record = EpochMetrics.from_report(report)
        epoch = record.epoch
        restart_tags = self._restart_tags(report)
        if epoch in self.logged_epochs:
            if restart_tags and self.run_id is not None:
                self._log([], restart_tags, epoch)
            return
        self.logged_epochs.add(epoch)
        print(record.line(), flush=True)
        if self.run_id is None:  # untracked (tracking.optional)
            return
        timestamp = int(time.time() * 1000)
        values = [Metric(key, value, timestamp, epoch) for key, value in record.logged().items()]
        if checkpoint is not None:
            where = uri_of(checkpoint.filesystem, checkpoint.path)
            restart_tags.update(tags.last_checkpoint(where, epoch))
        self._log(values, restart_tags, epoch)

    def _restart_tags(self, report: dict) -> dict[str, str]:
        """Tags that record a restart, when `report` is the first of a resumed worker group:
        which checkpoint it resumed from and which epochs it trains again (MLflow keeps the
        values first logged for those)."""
        restart = restart_of(report)
        if restart is None:
            return {}
        resumed, where = restart
        again = sorted(e for e in self.logged_epochs if e > resumed)
        retrained = ", ".join(str(e) for e in again) or "none"
        self.restarts.append(
            f"from the checkpoint of epoch {resumed} ({where}); trained again: {retrained}"
        )
        if again and self.level <= logging.INFO:
            print(
                f"resumed from the checkpoint of epoch {resumed}: epochs {retrained} are "
                "trained again (MLflow keeps the values first logged for them)",
                flush=True,
            )
        return tags.restarts(self.restarts, resumed)

    def _log(self, values: list, tag_values: dict[str, str], epoch: int) -> None:
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        buffered = self._add_to_buffer(values, tag_values)
        try:
            if self._client is None:
                self._client = MlflowClient(self.tracking_uri)
            with failing_fast():
                if not buffered:  # straight to MLflow, the only copy outside Ray Train
                    tag_list = [RunTag(k, v) for k, v in tag_values.items()]
                    self._client.log_batch(self.run_id, metrics=values, tags=tag_list)
                replayed = self.buffer.flush(self._client, self.run_id, wait_s=10)
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            if not self._outage:
                waiting = (
                    f"the metrics wait in {self.buffer.path}, to be replayed when it is back"
                    if buffered
                    else "the metrics it misses are kept only in Ray Train's results and printed"
                )
                warnings.warn(
                    f"MLflow at {redact_text(self.tracking_uri)} is unreachable "
                    f"({redact_exception(error, 200)}); training goes on and {waiting}",
                    stacklevel=1,
                )
                self._outage = True
            elif self.level <= logging.INFO:
                print(
                    f"MLflow still unreachable after epoch {epoch}: {self.buffer.count()} "
                    "values buffered",
                    flush=True,
                )
            return
        if self._outage and self.level <= logging.INFO:
            print(
                f"MLflow is reachable again: replayed {replayed} buffered metric values", flush=True
            )
            self._outage = False

    def _add_to_buffer(self, values: list, tag_values: dict[str, str]) -> bool:
        """Whether the values reached the on-disk buffer. A full or read-only disk warns (once
        until it works again) and never raises: Ray Train would fail the run."""
        try:
            self.buffer.add(values, tag_values)
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            if not self._buffer_failing:
                warnings.warn(
                    f"cannot write the MLflow buffer {self.buffer.path} "
                    f"({redact_exception(error, 200)}); training goes on and each epoch's "
                    "metrics go to MLflow directly while it is reachable (they are also kept "
                    "in Ray Train's results and printed)",
                    stacklevel=2,
                )
                self._buffer_failing = True
            return False
        self._buffer_failing = False
        return True


def epoch_logger(run: TrackedRun) -> EpochLogger:
    """The callback that logs `run`'s epochs: it skips the epochs the run holds already (a
    resumed run) and goes on with the restarts it recorded."""
    if not run.tracked:
        buffer = MetricBuffer.for_run(run.config, None)
        return EpochLogger(run.tracking_uri, None, buffer, level=logs.level())
    record = run.record()
    return EpochLogger(
        run.tracking_uri,
        run.run_id,
        MetricBuffer.for_run(run.config, run.run_id),
        run.store.logged_epochs(run.run_id),
        record.restarts,
        logs.level(),
    )

"""The Ray Train callback that logs every epoch's report to its MLflow run, through the
on-disk buffer (orchestrator/tracking_buffer.py), so that a tracking-server outage costs a
warning, not the training run or its metrics."""

from __future__ import annotations

import time
import warnings

import ray.train

from orchestrator.metrics import EpochMetrics, restart_of
from orchestrator.redact import redact_exception, redact_text
from orchestrator.storage import uri_of
from orchestrator.tracking_buffer import MetricBuffer, failing_fast


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
        restarts: str = "",
    ):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.buffer = buffer
        self.logged_epochs = set(logged_epochs)
        self.restarts = [entry for entry in restarts.split(" | ") if entry]
        self._client = None
        self._outage = False
        self._buffer_failing = False

    def after_report(self, run_context, metrics, checkpoint):
        from mlflow.entities import Metric

        report = metrics[0]  # rank 0's; every rank reports the same all-reduced numbers
        record = EpochMetrics.from_report(report)
        epoch = record.epoch
        tags = self._restart_tags(report)
        if epoch in self.logged_epochs:
            if tags and self.run_id is not None:
                self._log([], tags, epoch)
            return
        self.logged_epochs.add(epoch)
        print(record.line(), flush=True)
        if self.run_id is None:  # untracked (tracking.optional)
            return
        timestamp = int(time.time() * 1000)
        values = [Metric(key, value, timestamp, epoch) for key, value in record.logged().items()]
        if checkpoint is not None:
            tags["last_checkpoint"] = uri_of(checkpoint.filesystem, checkpoint.path)
            tags["last_checkpoint_epoch"] = str(epoch)
        self._log(values, tags, epoch)

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
        if again:
            print(
                f"resumed from the checkpoint of epoch {resumed}: epochs {retrained} are "
                "trained again (MLflow keeps the values first logged for them)",
                flush=True,
            )
        return {"resumed_from_epoch": str(resumed), "restarts": " | ".join(self.restarts)[-5000:]}

    def _log(self, values: list, tags: dict[str, str], epoch: int) -> None:
        from mlflow.entities import RunTag
        from mlflow.tracking import MlflowClient

        buffered = self._add_to_buffer(values, tags)
        try:
            if self._client is None:
                self._client = MlflowClient(self.tracking_uri)
            with failing_fast():
                if not buffered:  # straight to MLflow, the only copy outside Ray Train
                    tag_list = [RunTag(k, v) for k, v in tags.items()]
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
            else:
                print(
                    f"MLflow still unreachable after epoch {epoch}: {self.buffer.count()} "
                    "values buffered",
                    flush=True,
                )
            return
        if self._outage:
            print(
                f"MLflow is reachable again: replayed {replayed} buffered metric values", flush=True
            )
            self._outage = False

    def _add_to_buffer(self, values: list, tags: dict[str, str]) -> bool:
        """Whether the values reached the on-disk buffer. A full or read-only disk warns (once
        until it works again) and never raises: Ray Train would fail the run."""
        try:
            self.buffer.add(values, tags)
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

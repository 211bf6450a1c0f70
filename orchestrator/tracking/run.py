"""MLflow: one run per training run (and per sweep, study, trial, prepare and evaluate),
written from exactly one place: this module and its helpers in the tracking package
(buffer.py, callback.py, system_metrics.py); records.py and reads.py only read.

The driver creates the run (params, config artifact, provenance tags) and closes it with an
honest status. Per-epoch metrics reach it through `EpochLogger` (callback.py), a Ray Train
`UserCallback` that runs in the Train controller process and receives rank 0's report of every
epoch, so no worker ever opens a run of its own; rank 0 only samples its node's system metrics
into it (system_metrics.py).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from typing import TYPE_CHECKING

from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
    wait_incrementing,
)

from orchestrator.common import logs
from orchestrator.common.errors import ConfigError
from orchestrator.common.redact import redact, redact_exception, redact_text
from orchestrator.tracking import models, registry, tags
from orchestrator.tracking.buffer import MetricBuffer, replay_buffers
from orchestrator.tracking.client import check_reachable, failing_fast, quiet_client_output
from orchestrator.tracking.config import (
    TrackingConfig,
    artifact_location,
    redacted,
    resolve_tracking_uri,
)
from orchestrator.tracking.provenance import SOURCE_TAGS, environment_text, provenance_tags
from orchestrator.tracking.records import RunRecord, Store
from orchestrator.tracking.steps import StepMetricsTarget
from orchestrator.tracking.system_metrics import SystemMetricsTarget

if TYPE_CHECKING:
    from orchestrator.data.prepared import PreparedData

log = logging.getLogger(__name__)

DATASET_ATTEMPTS = 4  # adding a dataset two trials add at once fails for one of them
DATASET_DIGEST_CHARS = 16  # MLflow keeps at most 36; the whole digest is in the profile
PARAMS_PER_CALL = 100  # the REST API's limit


def ended_status(error: BaseException) -> str:
    """The MLflow status of a run that `error` ended: KILLED by Ctrl-C, else FAILED."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


class TrackedRun:
    """The driver's handle on one MLflow run.

    With `resume`, an existing run tagged with the same run name in the experiment is continued
    (a driver restarted with the same name) instead of a second one being created; with
    `refuse_existing`, such a run is an error.
    """

    def __init__(
        self,
        config: TrackingConfig,
        run_name: str,
        resume: bool = False,
        parent_run_id: str | None = None,
        refuse_existing: bool = False,
    ):
        from mlflow.tracking import MlflowClient

        quiet_client_output()
        self.config = config
        self.tracking_uri = resolve_tracking_uri(config)
        self._client = MlflowClient(self.tracking_uri)
        self.store = Store(self._client)  # reads, as the project's own records
        self.run_id = None
        self.resumed = False
        self.previous_status = None
        self._console_kept = False  # finish's retries keep it once
        if self._reachable():
            # what an earlier outage left behind
            replay_buffers(self._client, config.buffer_dir, config.buffer_max_values)
            self._open(run_name, resume, parent_run_id, refuse_existing)

    def _reachable(self) -> bool:
        """Whether the store answers; if not, an error, or a warning with `tracking.optional`."""
        problem = check_reachable(self.tracking_uri)
        if problem is None:
            return True
        where = f"the MLflow tracking server at {redacted(self.tracking_uri)}"
        if not self.config.optional:
            if "401" in problem or "UNAUTHENTICATED" in problem or "403" in problem:
                raise ConfigError(
                    f"tracking.uri: {where} refused us ({problem}); give its credentials in "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                )
            raise ConfigError(
                f"tracking.uri: cannot reach {where} ({problem}); start it, point "
                "tracking.uri (or MLFLOW_TRACKING_URI) at a running one, or set "
                "tracking.optional: true to train without tracking"
            )
        warnings.warn(
            f"cannot reach {where} ({problem}); tracking.optional is set, so this run is "
            "NOT tracked: its metrics are only printed and kept with Ray Train's results",
            stacklevel=3,
        )
        return False

    def _open(
        self, run_name: str, resume: bool, parent_run_id: str | None, refuse_existing: bool
    ) -> None:
        """Find the run to continue (by its run-key tag) or create it, in the experiment."""
        config = self.config
        experiment = self._client.get_experiment_by_name(config.experiment)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
            if tags.EXPERIMENT_KIND not in experiment.tags:  # a kind a user chose stays
                self._client.set_experiment_tag(
                    self.experiment_id, tags.EXPERIMENT_KIND, tags.MODEL_TRAINING
                )
        else:  # a local sqlite store keeps its artifacts beside the database, not in ./mlruns
            self.experiment_id = self._client.create_experiment(
                config.experiment,
                artifact_location=artifact_location(self.tracking_uri),
                tags={tags.EXPERIMENT_KIND: tags.MODEL_TRAINING},
            )
        if resume or refuse_existing:
            found = self.store.named(self.experiment_id, run_name)
            if found and refuse_existing:
                raise ConfigError(
                    f"MLflow experiment '{config.experiment}' already holds a run named "
                    f"'{run_name}' ({found[0].run_id}); resume it or choose another name"
                )
            if found:
                self.run_id, self.resumed = found[0].run_id, True
                self.previous_status = found[0].status
                self._client.update_run(self.run_id, status="RUNNING")
                return
        new = {tags.RUN_KEY: run_name}
        if parent_run_id is not None:  # nested under it in the UI
            new[tags.PARENT_RUN_ID] = parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=run_name, tags=new)
        self.run_id = run.info.run_id

    @property
    def tracked(self) -> bool:
        return self.run_id is not None

    def log_start(
        self, kind: str, params: dict, config_yaml: str, extra_tags: dict | None = None
    ) -> None:
        """What every run records when it starts: its params, its kind, where it came from
        (commit, library versions, cluster shape), `extra_tags`, and its config.yaml."""
        from mlflow.entities import Param, RunTag

        if not self.tracked:
            return
        values = redact({k: "None" if v is None else str(v) for k, v in params.items()})
        start_tags = {**provenance_tags(self.config.note), **tags.kind(kind), **(extra_tags or {})}
        start_tags = redact({k: str(v) for k, v in start_tags.items()})
        if self.resumed:  # MLflow params are write-once: keep the first, note what changed
            record = self.record()
            for key in SOURCE_TAGS:  # the source that started the run stays its source
                first = record.tags.get(key)
                if first is not None and start_tags.get(key, first) != first:
                    start_tags[tags.RESUMED_WITH + key] = start_tags[key]
                    start_tags[key] = first
            logged = record.params
            changed = {k: v for k, v in values.items() if k in logged and logged[k] != v}
            if changed:
                warnings.warn(
                    f"resumed run {self.run_id} with a changed config: {changed}", stacklevel=2
                )
                start_tags.update({tags.RESUMED_WITH + k: v for k, v in changed.items()})
            values = {k: v for k, v in values.items() if k not in logged}
        items = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(items), PARAMS_PER_CALL):
            self._client.log_batch(self.run_id, params=items[start : start + PARAMS_PER_CALL])
        self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in start_tags.items()])
        self.log_text(config_yaml, "config.yaml")
        if not self.resumed:  # the environment it started in
            self.log_text(environment_text(), "environment.txt")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        if not self.tracked:
            return
        timestamp = int(time.time() * 1000)
        self._client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        )

    def log_dataset(self, data: PreparedData, context: str) -> None:
        """The prepared dataset the run reads, as an MLflow dataset input (the UI's Dataset
        column): its name, where it is, the manifest's digest and what it holds. `context`:
        "train" or "eval". Logged again on a resumed run, it is kept once."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        if not self.tracked:
            return
        uri = redact_text(data.uri)
        profile = {
            "digest": data.digest,
            "train_images": data.count("train"),
            "val_images": data.count("val"),
            "classes": len(data.classes),
            "image_size": data.image_size,
            "encoding": data.encoding,
        }
        dataset = Dataset(
            name=data.name,
            digest=data.digest[:DATASET_DIGEST_CHARS],
            source_type=uri.split("://")[0] if "://" in uri else "local",
            source=json.dumps({"uri": uri}),
            profile=json.dumps(profile),
        )
        given = [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])]
        # MLflow adds a dataset it has not seen in two steps: trials starting together race to
        # add the same one, and all but the first get a unique-key violation (PostgreSQL);
        # trying again finds it there and links it.
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(DATASET_ATTEMPTS),
                wait=wait_incrementing(start=0.2, increment=0.2),
                reraise=True,
            ):
                with attempt, failing_fast():
                    self._client.log_inputs(self.run_id, datasets=given)
        except Exception as error:  # noqa: BLE001 - lineage is worth a warning, not a run
            warnings.warn(
                f"MLflow: run {self.run_id}'s dataset input was not logged "
                f"({redact_exception(error, 200)})",
                stacklevel=2,
            )

    def _keep_console(self) -> None:
        """What this command's console showed (driver, and rank 0's and the controller's lines
        that Ray relayed), as the run's `console.log`: `console-2.log` and on for the starts
        of a resumed run."""
        text = logs.copied_console()
        if not text or self._console_kept:
            return
        held = {item.path for item in self._client.list_artifacts(self.run_id)}
        names = ("console.log", *(f"console-{start}.log" for start in range(2, 1000)))
        self.log_text(text, next(name for name in names if name not in held))
        self._console_kept = True

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.tracked:
            self._client.log_text(self.run_id, redact_text(text), artifact_file)

    def record(self) -> RunRecord | None:
        """This run as the store holds it now (None when untracked)."""
        return self.store.run(self.run_id) if self.tracked else None

    def abandon(self) -> None:
        """Leave things as they were found when a start is refused: a resumed run with its
        status, a run just created deleted."""
        if self.tracked and self.resumed:
            self._client.update_run(self.run_id, status=self.previous_status)
        elif self.tracked:
            self._client.delete_run(self.run_id)

    def last_epoch(self) -> int:
        """The last epoch this run logged (0: none yet)."""
        return self.store.last_epoch(self.run_id) if self.tracked else 0

    def history(self, key: str) -> list[tuple[int, float]]:
        """(epoch, value) of every value of metric `key` this run logged."""
        return self.store.history(self.run_id, key) if self.tracked else []

    def system_metrics_target(self) -> SystemMetricsTarget | None:
        """What `system_metrics` in a training worker needs to sample into this run."""
        if not self.tracked or not self.config.system_metrics_interval_s:
            return None
        return SystemMetricsTarget(
            self.tracking_uri, self.run_id, self.config.system_metrics_interval_s
        )

    def step_metrics_target(self) -> StepMetricsTarget | None:
        """What a training worker needs to log its live curves into this run."""
        if not self.tracked:
            return None
        config = self.config
        return StepMetricsTarget(
            self.tracking_uri, self.run_id, config.buffer_dir, config.buffer_max_values
        )

    def set_tags(self, values: dict, run_id: str | None = None) -> None:
        """Tags on this run (or on `run_id`, a run nested under it), secrets masked."""
        from mlflow.entities import RunTag

        if self.tracked:
            values = redact({k: str(v) for k, v in values.items()})
            self._client.log_batch(
                run_id or self.run_id, tags=[RunTag(k, v) for k, v in values.items()]
            )

    def children(self) -> list[RunRecord]:
        """The runs nested under this one (a sweep's trials)."""
        return self.store.children(self.record()) if self.tracked else []

    def close_child(self, run_id: str, status: str, end_tags: dict | None = None) -> None:
        """End a run nested under this one with an honest status (a trial that Tune stopped
        cannot close its own run: its process is gone)."""
        if end_tags:
            self.set_tags(end_tags, run_id)
        self._client.set_terminated(run_id, status=status)

    def log_artifacts(self, folder: str, artifact_path: str) -> None:
        """Files as artifacts (plots: not text, so nothing to redact in them)."""
        if self.tracked:
            self._client.log_artifacts(self.run_id, folder, artifact_path)

    def log_predictor(self, folder, example: bytes, registered_name: str | None, metadata: dict):
        """The predictor saved in `folder` as this run's MLflow model "model" (models.py),
        registered under `registered_name` unless None. Returns MLflow's ModelInfo."""
        return models.log_predictor(
            self.run_id, self.tracking_uri, folder, example, registered_name, metadata
        )

    def promote(
        self, name: str, alias: str, version: str, version_tags: dict, metric: str
    ) -> str | None:
        """Tag a registered model's version; `name@alias` moves to it only when it beats the
        version holding the alias (registry.py). Returns None when it moved, else why not."""
        return registry.promote(self._client, name, alias, version, version_tags, metric)

    def finish(self, status: str = "FINISHED") -> None:
        """Replay what an outage buffered, then close the run, waiting for the server if away.

        Waits at most `tracking.wait_at_end_s` (not at all for a KILLED run: its user pressed
        Ctrl-C to leave); what is still buffered then stays on disk and is replayed by the next
        command that uses this tracking store.
        """
        if not self.tracked:
            return
        buffer = MetricBuffer.for_run(self.config, self.run_id)
        wait_s = 0 if status == "KILLED" else self.config.wait_at_end_s

        def say_waiting(state: RetryCallState) -> None:
            if state.attempt_number == 1:
                log.warning(
                    f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                    f"({redact_exception(state.outcome.exception(), 200)}); waiting up to "
                    f"{wait_s:g} s for it to close run {self.run_id}"
                )

        try:
            for attempt in Retrying(
                stop=stop_after_delay(wait_s),
                wait=wait_fixed(2),
                before_sleep=say_waiting,
                reraise=True,
            ):
                with attempt, failing_fast():
                    replayed = buffer.flush(self._client, self.run_id)
                    self._keep_console()
                    self._client.set_terminated(self.run_id, status=status)
        except Exception as error:  # noqa: BLE001 - an outage, most likely
            warnings.warn(
                f"MLflow at {redacted(self.tracking_uri)} is still unreachable "
                f"({redact_exception(error, 200)}); run {self.run_id} stays open and "
                f"{buffer.count()} values stay in {buffer.path}, replayed by the "
                "next command that uses this tracking store",
                stacklevel=2,
            )
            return
        if replayed or attempt.retry_state.attempt_number > 1:
            log.info(
                f"MLflow: replayed {replayed} buffered metric values; run {self.run_id} is {status}"
            )

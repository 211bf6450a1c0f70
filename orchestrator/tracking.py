"""MLflow: one run per training run, written from exactly one place (this module and its
helpers tracking_buffer.py and tracking_callback.py; tracking_reads.py only reads).

The driver creates the run (params, config artifact, provenance tags) and closes it with an
honest status. Per-epoch metrics reach it through `EpochLogger` (tracking_callback.py), a Ray
Train `UserCallback` that runs in the Train controller process and receives rank 0's report of
every epoch, so no worker ever opens a run of its own; rank 0 only samples its node's system
metrics into it (`system_metrics`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError
from orchestrator.redact import redact, redact_exception, redact_text
from orchestrator.tracking_buffer import MetricBuffer, failing_fast, replay_buffers

if TYPE_CHECKING:  # annotations only; EpochLogger, a Ray Train callback, is imported where made
    from orchestrator.data import PreparedData
    from orchestrator.tracking_callback import EpochLogger

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = (
        None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir
    )
    experiment: str = "alexnet"  # MLflow experiment name
    optional: bool = False  # true: an unreachable tracking server at start warns, trains untracked
    # Metric values the server did not take (an outage) wait here, replayed when it is back
    buffer_dir: str = "~/.cache/alexnet-ray/mlflow-buffer"
    buffer_max_values: int = 1_000_000  # beyond this the oldest buffered values are dropped
    wait_at_end_s: float = 600  # how long a finished run waits for an unreachable server
    # CPU, memory, disk, network (and GPU) of rank 0's node as system/* metrics; 0: off
    system_metrics_interval_s: float = 10
    # the paper's figures of a finished training run as artifacts (orchestrator/figures.py)
    figures: bool = True

    def __post_init__(self):
        if self.buffer_max_values < 1 or self.wait_at_end_s < 0:
            raise ValueError("buffer_max_values: allowed >= 1; wait_at_end_s: allowed >= 0")
        if self.system_metrics_interval_s < 0:
            raise ValueError("system_metrics_interval_s: allowed: 0 (off) or seconds > 0")


def resolve_tracking_uri(config: TrackingConfig) -> str:
    """The tracking URI to use, with a relative sqlite path made absolute.

    Absolute, because the Train controller that logs metrics runs in another process whose
    working directory need not be ours.
    """
    uri = config.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def quiet_client_output() -> None:
    """MLflow's client prints a run's URL when it ends one on a server, with the password a
    tracking URI may hold: not in this process (our own lines name runs, redacted). Nor its
    INFO lines about creating a new sqlite store's tables: not news to a user. Nor a progress
    bar for every artifact it downloads (a config file)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def redacted(uri: str) -> str:
    """`uri` fit to print: without a password (http://user:***@host) or other secrets."""
    return redact_text(uri)


def check_reachable(uri: str) -> str | None:
    """None when the tracking store answers, else why not (a local store always answers)."""
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.tracking import MlflowClient

    try:
        with failing_fast():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any failure means: not usable now
        return redact_exception(error)  # MLflow's message quotes the URI, password and all
    return None


def _artifact_location(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (and serves) its own artifact store
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies under it."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this tracking store, runnable as printed."""
    if not tracking_uri.startswith("sqlite:"):
        return f"open {redacted(tracking_uri)} in a browser"
    mlflow_cli = "mlflow"
    beside_python = Path(sys.executable).parent / "mlflow"
    if shutil.which("mlflow") is None and beside_python.exists():  # e.g. a venv not activated
        mlflow_cli = _shown_path(beside_python)
    store = _shown_path(Path(tracking_uri.removeprefix("sqlite:///")))
    return (
        f"{mlflow_cli} ui --backend-store-uri sqlite:///{store}   # then open http://127.0.0.1:5000"
    )


def git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # e.g. a `ray job submit` working dir, which carries no .git


def provenance_tags() -> dict[str, str]:
    import mlflow
    import ray
    import torch

    return {
        "git_sha": git_sha(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": sys.version.split()[0],
    }


RUN_KEY_TAG = "orchestrator.run_name"  # identifies a resumable run (the Ray Train run name)
# MLflow 3's UI opens an experiment of unknown kind in its GenAI view; ours train models
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DATASET_ATTEMPTS = 4  # adding a dataset two trials add at once fails for one of them
DATASET_DIGEST_CHARS = 16  # MLflow keeps at most 36; the whole digest is in the profile


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
        self.client = MlflowClient(self.tracking_uri)
        self.run_id = None
        self.resumed = False
        self.previous_status = None
        if self._reachable():
            # what an earlier outage left behind
            replay_buffers(self.client, config.buffer_dir, config.buffer_max_values)
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
        experiment = self.client.get_experiment_by_name(config.experiment)
        if experiment is not None:
            self.experiment_id = experiment.experiment_id
            if EXPERIMENT_KIND_TAG not in experiment.tags:  # a kind a user chose stays
                self.client.set_experiment_tag(
                    self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING
                )
        else:  # a local sqlite store keeps its artifacts beside the database, not in ./mlruns
            self.experiment_id = self.client.create_experiment(
                config.experiment,
                artifact_location=_artifact_location(self.tracking_uri),
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING},
            )
        if resume or refuse_existing:
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_name}'"
            )
            if found and refuse_existing:
                raise ConfigError(
                    f"MLflow experiment '{config.experiment}' already holds a run named "
                    f"'{run_name}' ({found[0].info.run_id}); resume it or choose another name"
                )
            if found:
                self.run_id, self.resumed = found[0].info.run_id, True
                self.previous_status = found[0].info.status
                self.client.update_run(self.run_id, status="RUNNING")
                return
        tags = {"mlflow.source.name": "orchestrator/run.py", RUN_KEY_TAG: run_name}
        if parent_run_id is not None:  # nested under it in the UI
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id

    @property
    def tracked(self) -> bool:
        return self.run_id is not None

    def log_start(self, params: dict, tags: dict, config_yaml: str) -> None:
        from mlflow.entities import Param, RunTag

        if not self.tracked:
            return
        values = redact({k: "None" if v is None else str(v) for k, v in params.items()})
        tags = redact({k: str(v) for k, v in tags.items()})
        if self.resumed:  # MLflow params are write-once: keep the first, note what changed
            logged = self.client.get_run(self.run_id).data.params
            changed = {k: v for k, v in values.items() if k in logged and logged[k] != v}
            if changed:
                warnings.warn(
                    f"resumed run {self.run_id} with a changed config: {changed}", stacklevel=2
                )
                tags = {**tags, **{f"resumed_with.{k}": v for k, v in changed.items()}}
            values = {k: v for k, v in values.items() if k not in logged}
        items = [Param(k, v) for k, v in values.items()]
        for start in range(0, len(items), 100):  # the REST API takes at most 100 params a call
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        self.log_text(config_yaml, "config.yaml")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        if not self.tracked:
            return
        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        )

    def log_dataset(self, data: "PreparedData", context: str) -> None:
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
        for attempt in range(1, DATASET_ATTEMPTS + 1):
            try:
                with failing_fast():
                    self.client.log_inputs(self.run_id, datasets=given)
                return
            except Exception as error:  # noqa: BLE001 - lineage is worth a warning, not a run
                # MLflow adds a dataset it has not seen in two steps: trials starting together
                # race to add the same one, and all but the first get a unique-key violation
                # (PostgreSQL); trying again finds it there and links it.
                if attempt == DATASET_ATTEMPTS:
                    warnings.warn(
                        f"MLflow: run {self.run_id}'s dataset input was not logged "
                        f"({redact_exception(error, 200)})",
                        stacklevel=2,
                    )
                    return
                time.sleep(0.2 * attempt)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.tracked:
            self.client.log_text(self.run_id, redact_text(text), artifact_file)

    def epoch_logger(self) -> "EpochLogger":
        from orchestrator.tracking_callback import EpochLogger

        logged = {step for step, _ in self.metric_history("val_top1_error")}
        buffer = MetricBuffer.for_run(self.config, self.run_id)
        restarts = self.recorded_tags().get("restarts", "")
        return EpochLogger(self.tracking_uri, self.run_id, buffer, logged, restarts)

    def recorded_tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags) if self.tracked else {}

    def abandon(self) -> None:
        """Leave a resumed run as it was found (its status), e.g. when the resume is refused."""
        if self.tracked and self.resumed:
            self.client.update_run(self.run_id, status=self.previous_status)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return metric_history(self.client, self.run_id, key) if self.tracked else []

    def system_metrics_target(self) -> SystemMetricsTarget | None:
        """What `system_metrics` in a training worker needs to sample into this run."""
        if not self.tracked or not self.config.system_metrics_interval_s:
            return None
        return SystemMetricsTarget(
            self.tracking_uri, self.run_id, self.config.system_metrics_interval_s
        )

    def set_tags(self, tags: dict, run_id: str | None = None) -> None:
        """Tags on this run (or on `run_id`, a run nested under it), secrets masked."""
        from mlflow.entities import RunTag

        if self.tracked:
            values = redact({k: str(v) for k, v in tags.items()})
            self.client.log_batch(
                run_id or self.run_id, tags=[RunTag(k, v) for k, v in values.items()]
            )

    def child_runs(self) -> list:
        """The runs nested under this one (a sweep's trials)."""
        return self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.run_id}'"
        )

    def close_child(self, run_id: str, status: str, tags: dict | None = None) -> None:
        """End a run nested under this one with an honest status (a trial that Tune stopped
        cannot close its own run: its process is gone)."""
        if tags:
            self.set_tags(tags, run_id)
        self.client.set_terminated(run_id, status=status)

    def final_metrics(self) -> dict[str, float]:
        return dict(self.client.get_run(self.run_id).data.metrics) if self.tracked else {}

    def log_artifacts(self, folder: str, artifact_path: str) -> None:
        """Files as artifacts (plots: not text, so nothing to redact in them)."""
        if self.tracked:
            self.client.log_artifacts(self.run_id, folder, artifact_path)

    def log_model(self, model, example, output, registered_name: str | None, metadata: dict):
        """`model` (a torch module) in MLflow's "pt2" format (torch.export: no pickled code runs
        at load time) on this run, with the signature of `example` -> `output` (numpy arrays),
        registered under `registered_name` unless None. Returns MLflow's ModelInfo."""
        from importlib.metadata import version

        import mlflow
        import mlflow.pytorch
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.tracking_uri)  # run URLs stay unprinted (__init__)
        with mlflow.start_run(run_id=self.run_id):
            return mlflow.pytorch.log_model(
                model,
                name="model",
                signature=infer_signature(example, output),
                input_example=example,
                serialization_format="pt2",
                pip_requirements=[f"{name}=={version(name)}" for name in ("torch", "mlflow")],
                registered_model_name=registered_name,
                metadata=redact(metadata),
            )

    def set_alias(self, name: str, alias: str, version: str, tags: dict) -> None:
        """Point `name@alias` at a registered model's version and tag that version."""
        self.client.set_registered_model_alias(name, alias, version)
        for key, value in redact({k: str(v) for k, v in tags.items()}).items():
            self.client.set_model_version_tag(name, version, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        """Replay what an outage buffered, then close the run, waiting for the server if away.

        Waits at most `tracking.wait_at_end_s`; what is still buffered then stays on disk and
        is replayed by the next command that uses this tracking store.
        """
        if not self.tracked:
            return
        buffer = MetricBuffer.for_run(self.config, self.run_id)
        deadline = time.monotonic() + self.config.wait_at_end_s
        waiting = False
        while True:
            try:
                with failing_fast():
                    replayed = buffer.flush(self.client, self.run_id)
                    self.client.set_terminated(self.run_id, status=status)
                if waiting or replayed:
                    print(
                        f"MLflow: replayed {replayed} buffered metric values; run {self.run_id} "
                        f"is {status}",
                        flush=True,
                    )
                return
            except Exception as error:  # noqa: BLE001 - an outage, most likely
                if time.monotonic() >= deadline:
                    warnings.warn(
                        f"MLflow at {redacted(self.tracking_uri)} is still unreachable "
                        f"({redact_exception(error, 200)}); run {self.run_id} stays open and "
                        f"{buffer.count()} values stay in {buffer.path}, replayed by the "
                        "next command that uses this tracking store",
                        stacklevel=2,
                    )
                    return
                if not waiting:
                    print(
                        f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                        f"({redact_exception(error, 200)}); waiting up to "
                        f"{self.config.wait_at_end_s:g} s for it to close run {self.run_id}",
                        flush=True,
                    )
                    waiting = True
                time.sleep(2)


@dataclass(frozen=True)
class SystemMetricsTarget:
    """The run a training worker samples its node's system metrics into (handed to workers)."""

    tracking_uri: str
    run_id: str
    interval_s: float


@contextlib.contextmanager
def system_metrics(target: SystemMetricsTarget | None):
    """Samples this node's CPU, memory, disk, network and GPU into `target`'s run meanwhile.

    MLflow's `SystemMetricsMonitor`, in a thread; it goes on with the run's step count when a
    run is resumed. It starts beside the training (importing MLflow and asking the server for
    the run's history take seconds the training need not wait for); a monitor that cannot start
    costs a warning. Closing never waits long on an unreachable server.
    """
    if target is None:
        yield
        return
    import threading

    monitors = []

    def start() -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
            # its HTTP retries in an outage, a line each: the driver reports the outage once
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
            monitor = SystemMetricsMonitor(
                target.run_id,
                sampling_interval=target.interval_s,
                resume_logging=True,
                tracking_uri=target.tracking_uri,
            )
            monitor.start()
            monitors.append(monitor)
        except Exception as error:  # noqa: BLE001 - the training goes on without it
            warnings.warn(
                f"system metrics are not sampled: {redact_exception(error)}", stacklevel=1
            )

    def finish() -> None:
        starting.join()
        for monitor in monitors:
            monitor.finish()

    starting = threading.Thread(target=start, daemon=True, name="system-metrics-start")
    starting.start()
    try:
        yield
    finally:
        closing = threading.Thread(target=finish, daemon=True)
        closing.start()
        closing.join(timeout=15)


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

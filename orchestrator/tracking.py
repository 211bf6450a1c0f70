"""MLflow: one run per training run, written from exactly one place.

The driver creates the run (params, config artifact, provenance tags) and closes it with an
honest status. Per-epoch metrics reach it through `EpochLogger`, a Ray Train `UserCallback` that
runs in the Train controller process and receives rank 0's report of every epoch, so no worker
ever opens a run of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import ray.train

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = (
        None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir
    )
    experiment: str = "alexnet"  # MLflow experiment name


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


def _artifact_location(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (and serves) its own artifact store
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def checkpoint_of_run(config: TrackingConfig, uri: str) -> str:
    """`runs:/<run id>` -> the last checkpoint that run recorded (its `last_checkpoint` tag)."""
    from mlflow.tracking import MlflowClient

    run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
    tags = MlflowClient(resolve_tracking_uri(config)).get_run(run_id).data.tags
    if "last_checkpoint" not in tags:
        raise ValueError(f"--model: MLflow run {run_id} recorded no checkpoint")
    return tags["last_checkpoint"].rsplit(" (epoch ", 1)[0]


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies under it."""
    return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this tracking store, runnable as printed."""
    if not tracking_uri.startswith("sqlite:"):
        return f"open {tracking_uri} in a browser"
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
    import torch

    return {
        "git_sha": git_sha(),
        "ray_version": ray.__version__,
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "python_version": sys.version.split()[0],
    }


RUN_KEY_TAG = "orchestrator.run_name"  # identifies a resumable run (the Ray Train run name)


class TrackedRun:
    """The driver's handle on one MLflow run.

    With `resume`, an existing run tagged with the same run name in the experiment is continued
    (a driver restarted with the same name) instead of a second one being created.
    """

    def __init__(self, config: TrackingConfig, run_name: str, resume: bool = False):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(config)
        self.client = MlflowClient(self.tracking_uri)
        experiment = self.client.get_experiment_by_name(config.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # a local sqlite store keeps its artifacts beside the database, not in ./mlruns
            experiment_id = self.client.create_experiment(
                config.experiment, artifact_location=_artifact_location(self.tracking_uri)
            )
        self.experiment_id = experiment_id
        self._mlflow = mlflow
        self.resumed = False
        if resume:
            found = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_name}'"
            )
            if found:
                self.run_id, self.resumed = found[0].info.run_id, True
                self.client.update_run(self.run_id, status="RUNNING")
                return
        run = self.client.create_run(
            experiment_id,
            run_name=run_name,
            tags={"mlflow.source.name": "orchestrator/run.py", RUN_KEY_TAG: run_name},
        )
        self.run_id = run.info.run_id

    def log_start(self, params: dict, tags: dict, config_yaml: str) -> None:
        from mlflow.entities import Param, RunTag

        values = {k: "None" if v is None else str(v) for k, v in params.items()}
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

        timestamp = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), timestamp, step) for k, v in metrics.items()]
        )

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def epoch_logger(self) -> "EpochLogger":
        logged = {step for step, _ in self.metric_history("val_top1_error")}
        return EpochLogger(self.tracking_uri, self.run_id, logged_epochs=logged)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, key)]

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def format_epoch(metrics: dict) -> str:
    return (
        f"epoch {metrics['epoch']:>3}  train loss {metrics['train_loss']:.4f}  "
        f"val top-1 err {metrics['val_top1_error']:.4f}  "
        f"top-5 err {metrics['val_top5_error']:.4f}  "
        f"lr {metrics['lr']:.5f}  {metrics['images_per_second']:.0f} images/s  "
        f"data wait {metrics['data_wait_fraction']:.0%}"
    )


class EpochLogger(ray.train.UserCallback):
    """Logs rank 0's per-epoch report to the MLflow run, with `step=epoch`.

    Runs in the Train controller. A failed write (tracking server away) is kept and retried with
    the next epoch's metrics instead of failing the training run. An epoch reported again (after
    a restart from a checkpoint older than it) keeps the values first logged for it.
    """

    def __init__(self, tracking_uri: str, run_id: str, logged_epochs: set[int] = frozenset()):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.logged_epochs = set(logged_epochs)
        self._client = None
        self._pending: list = []

    def after_report(self, run_context, metrics, checkpoint):
        from mlflow.entities import Metric, RunTag
        from mlflow.tracking import MlflowClient

        report = metrics[0]  # rank 0's; every rank reports the same all-reduced numbers
        epoch = int(report["epoch"])
        if epoch in self.logged_epochs:
            return
        self.logged_epochs.add(epoch)
        timestamp = int(time.time() * 1000)
        self._pending += [
            Metric(key, float(value), timestamp, epoch)
            for key, value in report.items()
            if key != "epoch" and isinstance(value, (int, float))
        ]
        print(format_epoch(report), flush=True)
        try:
            if self._client is None:
                self._client = MlflowClient(self.tracking_uri)
            for start in range(0, len(self._pending), 1000):
                self._client.log_batch(self.run_id, metrics=self._pending[start : start + 1000])
            self._pending = []
            if checkpoint is not None:
                tag = RunTag("last_checkpoint", f"{checkpoint.path} (epoch {epoch})")
                self._client.log_batch(self.run_id, tags=[tag])
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            warnings.warn(
                f"MLflow logging failed ({type(error).__name__}: {error}); "
                f"keeping {len(self._pending)} metric values to retry after the next epoch",
                stacklevel=1,
            )

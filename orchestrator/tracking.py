"""MLflow: one run per training run, written from exactly one place.

The driver creates the run (params, config artifact, provenance tags) and closes it with an
honest status. Per-epoch metrics reach it through `EpochLogger`, a Ray Train `UserCallback` that
runs in the Train controller process and receives rank 0's report of every epoch, so no worker
ever opens a run of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import ray.train

from orchestrator.errors import ConfigError
from orchestrator.redact import redact, redact_text

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


def redacted(uri: str) -> str:
    """`uri` fit to print: without a password (http://user:***@host) or other secrets."""
    return redact_text(uri)


@contextlib.contextmanager
def failing_fast(timeout_s: float = 5):
    """MLflow's REST calls in this block fail at once instead of retrying for minutes.

    Its client retries a refused connection 7 times with exponential backoff by default; that
    would stall training for minutes on every epoch of an outage, and the buffer takes over.
    """
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}  # fmt: skip
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout_s))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_reachable(uri: str) -> str | None:
    """None when the tracking store answers, else why not (a local store always answers)."""
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.tracking import MlflowClient

    try:
        with failing_fast():
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any failure means: not usable now
        return f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    return None


def _artifact_location(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (and serves) its own artifact store
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def checkpoint_of_run(config: TrackingConfig, uri: str) -> str:
    """The checkpoint behind an MLflow URI: `runs:/<run id>` -> the last checkpoint that run
    recorded (its `last_checkpoint` tag); `models:/<name>@<alias>` or `models:/<name>/<version>`
    -> the checkpoint a sweep registered that version from (its `checkpoint` tag)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolve_tracking_uri(config))
    if uri.startswith("models:/"):
        name, _, which = uri.removeprefix("models:/").strip("/").replace("@", "/@").partition("/")
        if which.startswith("@"):
            version = client.get_model_version_by_alias(name, which[1:])
        else:
            version = client.get_model_version(name, which)
        if "checkpoint" not in version.tags:
            raise ConfigError(f"--model: {uri} (version {version.version}) names no checkpoint")
        return version.tags["checkpoint"]
    run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
    tags = client.get_run(run_id).data.tags
    if "last_checkpoint" not in tags:
        raise ConfigError(f"--model: MLflow run {run_id} recorded no checkpoint")
    return tags["last_checkpoint"].rsplit(" (epoch ", 1)[0]


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

        self.config = config
        self.tracking_uri = resolve_tracking_uri(config)
        self.client = MlflowClient(self.tracking_uri)
        self.run_id = None
        self.resumed = False
        problem = check_reachable(self.tracking_uri)
        if problem is not None:
            where = f"the MLflow tracking server at {redacted(self.tracking_uri)}"
            if not config.optional:
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
                stacklevel=2,
            )
            return
        replay_buffers(self.client, config)  # what an earlier outage left behind
        experiment = self.client.get_experiment_by_name(config.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # a local sqlite store keeps its artifacts beside the database, not in ./mlruns
            experiment_id = self.client.create_experiment(
                config.experiment, artifact_location=_artifact_location(self.tracking_uri)
            )
        self.experiment_id = experiment_id
        if resume or refuse_existing:
            found = self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_name}'"
            )
            if found and refuse_existing:
                raise ConfigError(
                    f"MLflow experiment '{config.experiment}' already holds a run named "
                    f"'{run_name}' ({found[0].info.run_id}); resume it or choose another name"
                )
            if found:
                self.run_id, self.resumed = found[0].info.run_id, True
                self.client.update_run(self.run_id, status="RUNNING")
                return
        tags = {"mlflow.source.name": "orchestrator/run.py", RUN_KEY_TAG: run_name}
        if parent_run_id is not None:  # nested under it in the UI
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
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

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.tracked:
            self.client.log_text(self.run_id, redact_text(text), artifact_file)

    def epoch_logger(self) -> "EpochLogger":
        logged = {step for step, _ in self.metric_history("val_top1_error")}
        return EpochLogger(
            self.tracking_uri, self.run_id, MetricBuffer.for_run(self.config, self.run_id), logged
        )

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return metric_history(self.client, self.run_id, key) if self.tracked else []

    def system_metrics_target(self) -> dict | None:
        """What `system_metrics` in a training worker needs to sample into this run."""
        if not self.tracked or not self.config.system_metrics_interval_s:
            return None
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id,
                "interval_s": self.config.system_metrics_interval_s}  # fmt: skip

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
                    print(f"MLflow: replayed {replayed} buffered metric values; run {self.run_id} "
                          f"is {status}", flush=True)  # fmt: skip
                return
            except Exception as error:  # noqa: BLE001 - an outage, most likely
                if time.monotonic() >= deadline:
                    warnings.warn(
                        f"MLflow at {redacted(self.tracking_uri)} is still unreachable "
                        f"({type(error).__name__}); run {self.run_id} stays open and "
                        f"{buffer.count()} values stay in {buffer.path}, replayed by the "
                        "next command that uses this tracking store",
                        stacklevel=2,
                    )
                    return
                if not waiting:
                    print(f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                          f"({type(error).__name__}); waiting up to "
                          f"{self.config.wait_at_end_s:g} s for it to close run {self.run_id}",
                          flush=True)  # fmt: skip
                    waiting = True
                time.sleep(2)


@contextlib.contextmanager
def system_metrics(target: dict | None):
    """Samples this node's CPU, memory, disk, network and GPU into `target`'s run meanwhile.

    MLflow's `SystemMetricsMonitor`, in a thread; it goes on with the run's step count when a
    run is resumed. Closing never waits long on an unreachable server.
    """
    if target is None:
        yield
        return
    import logging
    import threading

    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(
        target["run_id"],
        sampling_interval=target["interval_s"],
        resume_logging=True,
        tracking_uri=target["tracking_uri"],
    )
    monitor.start()
    try:
        yield
    finally:
        closing = threading.Thread(target=monitor.finish, daemon=True)
        closing.start()
        closing.join(timeout=15)


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def tag(key: str, value) -> "RunTag":  # noqa: F821 - mlflow imported lazily
    from mlflow.entities import RunTag

    return RunTag(key, str(value))


class MetricBuffer:
    """Metric values and tags that MLflow has not taken yet, one JSON line each, on disk.

    On disk, so that a restarted driver or Train controller still replays them. Bounded: beyond
    `tracking.buffer_max_values` the oldest values are dropped, with a warning.
    """

    def __init__(self, path: Path, max_values: int):
        self.path = path
        self.max_values = max_values

    @classmethod
    def for_run(cls, config: TrackingConfig, run_id: str | None) -> "MetricBuffer":
        folder = Path(config.buffer_dir).expanduser().resolve()
        return cls(folder / f"{run_id}.jsonl", config.buffer_max_values)

    def count(self) -> int:
        return len(self._read())

    def add(self, metrics: list, tags: dict[str, str] | None = None) -> None:
        lines = [json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp,
                             "step": m.step}) for m in metrics]  # fmt: skip
        lines += [json.dumps({"tag": k, "value": v}) for k, v in (tags or {}).items()]
        held = self._read()
        if len(held) + len(lines) > self.max_values:
            dropped = len(held) + len(lines) - self.max_values
            warnings.warn(
                f"MLflow buffer {self.path} is full ({self.max_values} values): dropping the "
                f"{dropped} oldest (tracking.buffer_max_values)",
                stacklevel=2,
            )
            held = (held + lines)[dropped:]
            self._write(held)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as file:
            file.writelines(line + "\n" for line in lines)

    def flush(self, client, run_id: str) -> int:
        """Log everything held to `run_id`, then empty the file; raises if MLflow fails."""
        from mlflow.entities import Metric, RunTag

        records = [json.loads(line) for line in self._read()]
        if not records:
            return 0
        metrics = [Metric(r["key"], r["value"], r["timestamp"], r["step"])
                   for r in records if "key" in r]  # fmt: skip
        tags = {r["tag"]: r["value"] for r in records if "tag" in r}  # the latest of each
        for start in range(0, len(metrics), 1000):  # the REST API's limit per call
            client.log_batch(run_id, metrics=metrics[start : start + 1000])
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.path.unlink(missing_ok=True)
        return len(metrics)

    def _read(self) -> list[str]:
        try:
            return [line for line in self.path.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text("".join(line + "\n" for line in lines))
        scratch.replace(self.path)


def replay_buffers(client, config: TrackingConfig) -> None:
    """Log what earlier outages left in `tracking.buffer_dir` for runs in this store."""
    folder = Path(config.buffer_dir).expanduser()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        run_id = path.stem
        try:
            with failing_fast():
                client.get_run(run_id)  # another store's run: leave it for that store
                replayed = MetricBuffer(path, config.buffer_max_values).flush(client, run_id)
        except Exception:  # noqa: BLE001 - not this store's run, or not reachable now
            continue
        print(f"MLflow: replayed {replayed} metric values buffered for run {run_id}", flush=True)


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

    Runs in the Train controller. Every epoch's values go to the run's on-disk `MetricBuffer`
    first and leave it once MLflow took them, so a tracking-server outage costs a warning, not
    the training run or its metrics: they are replayed with the first epoch after it is back
    (or by the driver's `finish`). An epoch reported again (after a restart from a checkpoint
    older than it) keeps the values first logged for it.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str | None,
        buffer: MetricBuffer,
        logged_epochs: set[int] = frozenset(),
    ):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.buffer = buffer
        self.logged_epochs = set(logged_epochs)
        self._client = None
        self._outage = False

    def after_report(self, run_context, metrics, checkpoint):
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        report = metrics[0]  # rank 0's; every rank reports the same all-reduced numbers
        epoch = int(report["epoch"])
        if epoch in self.logged_epochs:
            return
        self.logged_epochs.add(epoch)
        print(format_epoch(report), flush=True)
        if self.run_id is None:  # untracked (tracking.optional)
            return
        timestamp = int(time.time() * 1000)
        values = [
            Metric(key, float(value), timestamp, epoch)
            for key, value in report.items()
            if key != "epoch" and isinstance(value, (int, float))
        ]
        tags = {}
        if checkpoint is not None:
            tags["last_checkpoint"] = f"{checkpoint.path} (epoch {epoch})"
        self.buffer.add(values, tags)
        try:
            if self._client is None:
                self._client = MlflowClient(self.tracking_uri)
            with failing_fast():
                replayed = self.buffer.flush(self._client, self.run_id)
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            if not self._outage:
                warnings.warn(
                    f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                    f"({type(error).__name__}); training goes on and the metrics wait in "
                    f"{self.buffer.path}, to be replayed when it is back",
                    stacklevel=1,
                )
                self._outage = True
            else:
                print(f"MLflow still unreachable after epoch {epoch}: {self.buffer.count()} "
                      "values buffered", flush=True)  # fmt: skip
            return
        if self._outage:
            print(f"MLflow is reachable again: replayed {replayed} buffered metric values",
                  flush=True)  # fmt: skip
            self._outage = False

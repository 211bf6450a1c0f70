"""MLflow: one run per training run, written from exactly one place.

The driver creates the run (params, config artifact, provenance tags) and closes it with an
honest status. Per-epoch metrics reach it through `EpochLogger`, a Ray Train `UserCallback` that
runs in the Train controller process and receives rank 0's report of every epoch, so no worker
ever opens a run of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
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

import ray.train

from orchestrator.errors import ConfigError, InputError
from orchestrator.redact import redact, redact_exception, redact_text

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


def quiet_client_output() -> None:
    """MLflow's client prints a run's URL when it ends one on a server, with the password a
    tracking URI may hold: not in this process (our own lines name runs, redacted). Nor its
    INFO lines about creating a new sqlite store's tables: not news to a user."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
        return redact_exception(error)  # MLflow's message quotes the URI, password and all
    return None


def _artifact_location(tracking_uri: str) -> str | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a tracking server chooses (and serves) its own artifact store
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()


def checkpoint_of_run(config: TrackingConfig, uri: str) -> str:
    """The checkpoint behind an MLflow URI: `runs:/<run id>` -> the last checkpoint that run
    recorded (its `last_checkpoint` tag); `models:/<name>@<alias>` or `models:/<name>/<version>`
    -> the checkpoint a sweep registered that version from (its `checkpoint` tag)."""
    from mlflow.exceptions import MlflowException

    client, tracking_uri = _reachable_client(config, InputError, f"--model {uri}")
    try:
        if uri.startswith("models:/"):
            name, _, which = (
                uri.removeprefix("models:/").strip("/").replace("@", "/@").partition("/")
            )
            if which.startswith("@"):
                version = client.get_model_version_by_alias(name, which[1:])
            else:
                version = client.get_model_version(name, which)
            if "checkpoint" not in version.tags:
                raise InputError(f"--model: {uri} (version {version.version}) names no checkpoint")
            return version.tags["checkpoint"]
        run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
        tags = client.get_run(run_id).data.tags
    except MlflowException as error:
        raise InputError(
            f"--model: {uri} is not in the MLflow store at {redacted(tracking_uri)} "
            f"({error.error_code}); allowed: runs:/<run id> of a train run, "
            "models:/<name>@<alias> or models:/<name>/<version>"
        ) from None
    path, _ = last_checkpoint(tags)
    if path is None:
        raise InputError(f"--model: MLflow run {run_id} recorded no checkpoint")
    return path


def _reachable_client(config: TrackingConfig, error: type, field: str):
    """(MlflowClient, tracking URI) for reading, or `error` naming `field` at once when the
    tracking server does not answer (instead of minutes of retries)."""
    from mlflow.tracking import MlflowClient

    quiet_client_output()
    uri = resolve_tracking_uri(config)
    problem = check_reachable(uri)
    if problem is not None:
        raise error(
            f"{field}: cannot reach the MLflow tracking server at {redacted(uri)} "
            f"({redact_text(problem)})"
        )
    return MlflowClient(uri), uri


def last_checkpoint(tags: dict[str, str]) -> tuple[str | None, int]:
    """(path, epoch) of the last checkpoint a run recorded (tags `last_checkpoint` and
    `last_checkpoint_epoch`; runs logged before the epoch had a tag of its own held
    "<path> (epoch N)" in the first)."""
    path = tags.get("last_checkpoint")
    if path is None:
        return None, 0
    if "last_checkpoint_epoch" in tags:
        return path, int(tags["last_checkpoint_epoch"])
    path, _, epoch = path.rpartition(" (epoch ")
    return path, int(epoch.rstrip(")"))


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

        quiet_client_output()
        self.config = config
        self.tracking_uri = resolve_tracking_uri(config)
        self.client = MlflowClient(self.tracking_uri)
        self.run_id = None
        self.resumed = False
        self.previous_status = None
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
                self.previous_status = found[0].info.status
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

    def system_metrics_target(self) -> dict | None:
        """What `system_metrics` in a training worker needs to sample into this run."""
        if not self.tracked or not self.config.system_metrics_interval_s:
            return None
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id,
                "interval_s": self.config.system_metrics_interval_s}  # fmt: skip

    def set_tags(self, tags: dict, run_id: str | None = None) -> None:
        """Tags on this run (or on `run_id`, a run nested under it), secrets masked."""
        from mlflow.entities import RunTag

        if self.tracked:
            values = redact({k: str(v) for k, v in tags.items()})
            self.client.log_batch(run_id or self.run_id,
                                  tags=[RunTag(k, v) for k, v in values.items()])  # fmt: skip

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
                    print(f"MLflow: replayed {replayed} buffered metric values; run {self.run_id} "
                          f"is {status}", flush=True)  # fmt: skip
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
                    print(f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                          f"({redact_exception(error, 200)}); waiting up to "
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


@dataclass(frozen=True)
class SweepRecord:
    """A sweep as MLflow holds it: its parent run, the trial runs nested under it, the paths
    of the parent's plots, and a client to read metric histories with."""

    client: object
    parent: object
    children: list
    plots: list[str]


def read_sweep(config: TrackingConfig, sweep_name: str) -> SweepRecord | None:
    """The sweep named `sweep_name` in the tracking store, or None."""
    client, _ = _reachable_client(config, ConfigError, "tracking.uri")
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(
        experiments, filter_string=f"tags.kind = 'sweep' and tags.sweep = '{sweep_name}'"
    )
    if not parents:
        return None
    parent = parents[0]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    plots = [f"{parent.info.artifact_uri}/{artifact.path}"
             for artifact in client.list_artifacts(parent.info.run_id, "plots")]  # fmt: skip
    return SweepRecord(client, parent, children, plots)


_LINE_MIN_BYTES = len(json.dumps({"tag": "", "value": ""})) + 1  # the shortest line `add` writes
_BATCH_MAX_METRICS = 1000  # the REST API's limit per log_batch call


class MetricBuffer:
    """Metric values and tags that MLflow has not taken yet, one JSON line each, on disk.

    On disk, so that a restarted driver or Train controller still replays them. Bounded: beyond
    `tracking.buffer_max_values` the oldest values are dropped, with a warning.

    Shared by the processes of a node without losing a line: `add` appends to `<run id>.jsonl`,
    and `flush` first claims that file by renaming it to `<run id>.jsonl.<ns>-<pid>.replaying`,
    both under a lock on the folder held for milliseconds; it then logs the claimed lines
    without that lock and deletes them. A replay holds a lock on what it claimed, so a run has one
    replay at a time (its tags keep their order) and the claim of a process that died is taken
    over by the next replay. Lines MLflow did not take go back to `<run id>.jsonl`, ahead of
    those added meanwhile; an unreadable line (a process killed mid-write) is moved aside to
    `<run id>.corrupt`, with a warning. A replay that dies between logging and deleting leaves
    lines that are logged again: MLflow's SQL stores keep an identical metric value once.
    """

    def __init__(self, path: Path, max_values: int):
        self.path = path  # <run id>.jsonl, where new lines are appended
        self.max_values = max_values

    @classmethod
    def for_run(cls, config: TrackingConfig, run_id: str | None) -> "MetricBuffer":
        folder = Path(config.buffer_dir).expanduser().resolve()
        return cls(folder / f"{run_id}.jsonl", config.buffer_max_values)

    def count(self) -> int:
        """Values and tags held: waiting to be replayed, or being replayed now."""
        return sum(_count_lines(path) for path in [self.path, *self._claimed_files()])

    def add(self, metrics: list, tags: dict[str, str] | None = None) -> None:
        """Appends a line per metric value and tag, in one write; raises OSError if it cannot."""
        lines = [json.dumps({"key": m.key, "value": m.value, "timestamp": m.timestamp,
                             "step": m.step}) for m in metrics]  # fmt: skip
        lines += [json.dumps({"tag": k, "value": v}) for k, v in (tags or {}).items()]
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._folder_locked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                # Counted only when the file is big enough to hold max_values lines at all
                if size + len(data) > self.max_values * _LINE_MIN_BYTES:
                    if _count_lines(self.path) + len(lines) > self.max_values:
                        self._drop_oldest(lines)
                        return
                if size and os.pread(fd, 1, size - 1) != b"\n":  # after a cut line: ours apart
                    data = b"\n" + data
                _write_all(fd, data)
            finally:
                os.close(fd)

    def flush(self, client, run_id: str, wait_s: float = 30) -> int:
        """Logs what is held to `run_id` and deletes it; returns the number of metric values.

        Raises if MLflow fails: what it did not take is held again. Waits up to `wait_s` for
        another process's replay of this run to end, then raises TimeoutError.
        """
        from mlflow.entities import Metric, RunTag

        claims = self._claim(wait_s)
        if not claims:
            return 0
        metrics, tag_lines = [], []
        logged, tags_logged = None, False  # None: not read yet, so the claimed files stay
        try:
            records = self._parse([line for _, path in claims for line in _read_lines(path)])
            metrics = [(line, Metric(r["key"], r["value"], r["timestamp"], r["step"]))
                       for line, r in records if "key" in r]  # fmt: skip
            tag_lines = [line for line, r in records if "tag" in r]
            tags = {r["tag"]: r["value"] for _, r in records if "tag" in r}  # the latest of each
            logged = 0
            for start in range(0, len(metrics), _BATCH_MAX_METRICS):
                batch = metrics[start : start + _BATCH_MAX_METRICS]
                client.log_batch(run_id, metrics=[metric for _, metric in batch])
                logged += len(batch)
            if tags:
                client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            tags_logged = True
            return len(metrics)
        finally:
            pending = None
            if logged is not None:  # what MLflow did not take is held again
                pending = [line for line, _ in metrics[logged:]]
                pending += [] if tags_logged else tag_lines
            self._settle(claims, pending)

    def _claim(self, wait_s: float) -> list[tuple[int, Path]]:
        """This run's lines moved out of the appenders' way: [(locked descriptor, file)], oldest
        first. Claims left by a dead process come first; [] when nothing is held."""
        deadline = time.monotonic() + wait_s
        while True:
            claims, busy = [], None
            try:
                with self._folder_locked():
                    for path in self._claimed_files():
                        fd = os.open(path, os.O_RDONLY)
                        claims.append((fd, path))
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        except BlockingIOError:  # a live replay of this run
                            busy = path
                            break
                    else:
                        if self.path.exists():
                            fd = os.open(self.path, os.O_RDONLY)
                            claims.append((fd, self.path))
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no one else has
                            claimed = self.path.with_name(
                                f"{self.path.name}.{time.time_ns():020d}-{os.getpid()}.replaying"
                            )
                            os.rename(self.path, claimed)
                            claims[-1] = (fd, claimed)
                        return claims
            except (FileNotFoundError, NotADirectoryError):
                if claims or self.path.parent.is_dir():
                    _close_all(claims)
                    raise
                return []  # no folder: nothing held
            except BaseException:
                _close_all(claims)
                raise
            _close_all(claims)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"another process is still replaying {busy}")
            time.sleep(0.05)

    def _parse(self, lines: list[str]) -> list[tuple[str, dict]]:
        """(line, record) for each readable line; the others are moved aside, with a warning."""
        records, unreadable = [], []
        for line in lines:
            try:
                record = json.loads(line)
                if "key" in record:
                    record = {
                        "key": str(record["key"]),
                        "value": float(record["value"]),
                        "timestamp": int(record["timestamp"]),
                        "step": int(record["step"]),
                    }
                else:
                    record = {"tag": str(record["tag"]), "value": str(record["value"])}
            except (ValueError, TypeError, KeyError):
                unreadable.append(line)
                continue
            records.append((line, record))
        if unreadable:
            aside = self.path.with_suffix(".corrupt")
            try:
                fd = os.open(aside, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    _write_all(fd, "".join(line + "\n" for line in unreadable).encode())
                finally:
                    os.close(fd)
                where = f"moved aside to {aside}"
            except OSError as error:
                where = f"dropped, as {aside} cannot be written ({redact_exception(error)})"
            warnings.warn(
                f"MLflow buffer {self.path}: {len(unreadable)} unreadable line(s) (a process "
                f"killed mid-write?) {where}; the other {len(records)} are replayed",
                stacklevel=3,
            )
        return records

    def _settle(self, claims: list[tuple[int, Path]], pending: list[str] | None) -> None:
        """Ends a replay: `pending` goes back ahead of what was added meanwhile and the claimed
        files are deleted; with None (a failure before logging) they stay for the next replay."""
        try:
            if pending is not None:
                with self._folder_locked():
                    if pending:
                        self._replace(pending + _read_lines(self.path))
                    for _, path in claims:
                        path.unlink()
        finally:
            _close_all(claims)

    def _drop_oldest(self, lines: list[str]) -> None:
        held = _read_lines(self.path)
        kept = (held + lines)[-self.max_values :]
        warnings.warn(
            f"MLflow buffer {self.path} is full ({self.max_values} values): dropping the "
            f"{len(held) + len(lines) - len(kept)} oldest (tracking.buffer_max_values)",
            stacklevel=3,
        )
        self._replace(kept)

    def _replace(self, lines: list[str]) -> None:
        """The buffer file becomes `lines` (called with the folder locked)."""
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text("".join(line + "\n" for line in lines))
        scratch.replace(self.path)

    def _claimed_files(self) -> list[Path]:
        return sorted(self.path.parent.glob(f"{self.path.name}.*.replaying"))

    @contextlib.contextmanager
    def _folder_locked(self):
        """Excludes the other processes' appends and claims in this folder meanwhile."""
        fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and with it the lock


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")  # garbage bytes: an unreadable line, not a crash
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [line for line in text.split("\n") if line.strip()]


def _count_lines(path: Path) -> int:
    """The lines in `path` without decoding it (0 when it is not there)."""
    count, last = 0, b"\n"
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 20):
                count, last = count + chunk.count(b"\n"), chunk[-1:]
    except OSError:  # not there (or unreadable): this count is for messages and the bound
        return 0
    return count + (last != b"\n")


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _close_all(claims: list[tuple[int, Path]]) -> None:
    for fd, _ in claims:
        os.close(fd)


def replay_buffers(client, config: TrackingConfig) -> None:
    """Log what earlier outages left in `tracking.buffer_dir` for runs in this store.

    That includes the buffers of runs still live in other processes: their lines are claimed
    under a lock (see `MetricBuffer`), so one appended meanwhile is never lost.
    """
    folder = Path(config.buffer_dir).expanduser()
    run_ids = set()
    if folder.is_dir():
        run_ids |= {path.name.removesuffix(".jsonl") for path in folder.glob("*.jsonl")}
        run_ids |= {path.name.split(".jsonl.")[0] for path in folder.glob("*.jsonl.*.replaying")}
    for run_id in sorted(run_ids):
        try:
            with failing_fast():
                client.get_run(run_id)  # another store's run: leave it for that store
                buffer = MetricBuffer(folder / f"{run_id}.jsonl", config.buffer_max_values)
                replayed = buffer.flush(client, run_id, wait_s=0)  # busy: another replays it
        except Exception:  # noqa: BLE001 - not this store's run, or not reachable now
            continue
        if replayed:
            print(
                f"MLflow: replayed {replayed} metric values buffered for run {run_id}", flush=True
            )


def format_epoch(metrics: dict) -> str:
    return (
        f"epoch {metrics['epoch']:>3}  train loss {metrics['train_loss']:.4f}  "
        f"val top-1 err {metrics['val_top1_error']:.4f}  "
        f"top-5 err {metrics['val_top5_error']:.4f}  "
        f"lr {metrics['lr']:.5f}  {metrics['images_per_second']:.0f} images/s  "
        f"data wait {metrics['data_wait_fraction']:.0%}"
    )


# What a resumed worker group adds to its first report (the checkpoint's epoch, again)
RESTART_KEYS = ("epoch", "resumed_from_epoch", "resumed_from")


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
        epoch = int(report["epoch"])
        tags = self._restart_tags(report)
        if epoch in self.logged_epochs:
            if tags and self.run_id is not None:
                self._log([], tags, epoch)
            return
        self.logged_epochs.add(epoch)
        print(format_epoch(report), flush=True)
        if self.run_id is None:  # untracked (tracking.optional)
            return
        timestamp = int(time.time() * 1000)
        values = [
            Metric(key, float(value), timestamp, epoch)
            for key, value in report.items()
            if key not in RESTART_KEYS and isinstance(value, (int, float))
        ]
        if checkpoint is not None:
            tags["last_checkpoint"] = checkpoint.path
            tags["last_checkpoint_epoch"] = str(epoch)
        self._log(values, tags, epoch)

    def _restart_tags(self, report: dict) -> dict[str, str]:
        """Tags that record a restart, when `report` is the first of a resumed worker group:
        which checkpoint it resumed from and which epochs it trains again (MLflow keeps the
        values first logged for those)."""
        if "resumed_from_epoch" not in report:
            return {}
        resumed = int(report["resumed_from_epoch"])
        again = sorted(e for e in self.logged_epochs if e > resumed)
        retrained = ", ".join(str(e) for e in again) or "none"
        where = report.get("resumed_from", "?")
        self.restarts.append(
            f"from the checkpoint of epoch {resumed} ({where}); trained again: {retrained}"
        )
        if again:
            print(f"resumed from the checkpoint of epoch {resumed}: epochs {retrained} are "
                  "trained again (MLflow keeps the values first logged for them)",
                  flush=True)  # fmt: skip
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
                    f"MLflow at {redacted(self.tracking_uri)} is unreachable "
                    f"({redact_exception(error, 200)}); training goes on and {waiting}",
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

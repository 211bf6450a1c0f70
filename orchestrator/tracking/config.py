"""The `tracking` section and where its store is: the tracking URI resolved, shown without
secrets, and the command that opens the MLflow UI on it. Imports no MLflow."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.redact import redact_text

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class TrackingConfig:
    # the MLflow tracking server or store; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    # in the working dir
    uri: str | None = None
    experiment: str = "alexnet"  # MLflow experiment name
    optional: bool = False  # true: an unreachable tracking server at start warns, trains untracked
    # Metric values the server did not take (an outage) wait here, replayed when it is back
    buffer_dir: str = "~/.cache/alexnet-ray/mlflow-buffer"
    buffer_max_values: int = 1_000_000  # beyond this the oldest buffered values are dropped
    wait_at_end_s: float = 600  # how long a finished run waits for an unreachable server
    # CPU, memory, disk, network (and GPU) of every training node as system/* metrics (per node,
    # system/node_<rank>/*, when the workers span several); 0: off
    system_metrics_interval_s: float = 10
    # the paper's figures of a finished training run as artifacts (analysis/figures.py)
    figures: bool = True
    # the runs' description in MLflow's UI (mlflow.note.content); --note TEXT sets it
    note: str = ""
    # `train`: the finished run's model registered under this name; None: logged, not registered
    # (a sweep registers by `sweep.register_model`)
    register_model: str | None = None
    # the alias a new version takes when it beats the version holding it on the same validation
    # data (val_top1_error); otherwise it is registered without it
    register_alias: str = "best"

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


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local sqlite store (not in
    ./mlruns); a tracking server chooses (and serves) its own (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
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

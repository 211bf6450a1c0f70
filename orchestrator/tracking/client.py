"""The door to MLflow's client: every call fails fast instead of retrying for minutes, the
client prints no URLs (which may hold a password), and a store that does not answer is
reported at once, naming the field."""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from orchestrator.common.redact import redact_exception, redact_text
from orchestrator.tracking.config import TrackingConfig, redacted, resolve_tracking_uri

# Two threads importing MLflow at once (a training worker's system-metrics and step-metrics
# threads) deadlock in its protobuf modules (_DeadlockError, then a broken descriptor pool):
# threads import it under this lock.
IMPORTING_MLFLOW = threading.Lock()


@contextlib.contextmanager
def failing_fast(timeout_s: float = 5):
    """MLflow's REST calls in this block fail at once instead of retrying for minutes.

    Its client retries a refused connection 7 times with exponential backoff by default; that
    would stall training for minutes on every epoch of an outage, and the buffer takes over.
    """
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
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


def quiet_client_output() -> None:
    """MLflow's client prints a run's URL when it ends one on a server, with the password a
    tracking URI may hold: not in this process (our own lines name runs, redacted). Nor its
    INFO lines about creating a new sqlite store's tables: not news to a user. Nor a progress
    bar for every artifact it downloads (a config file)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


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


def reachable_client(config: TrackingConfig, error: type, field: str):
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

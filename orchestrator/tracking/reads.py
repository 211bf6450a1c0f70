"""Reading MLflow by what users name: the checkpoint behind a `runs:/` or `models:/` URI, and a
sweep's or a study's runs.

Reads fail at once, naming the field, when the tracking server does not answer (instead of
minutes of the client's retries). Writes go through tracking/run.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.common.errors import ConfigError, InputError
from orchestrator.tracking import tags
from orchestrator.tracking.client import reachable_client
from orchestrator.tracking.config import TrackingConfig, redacted, resolve_tracking_uri
from orchestrator.tracking.records import RunRecord, Store


def checkpoint_of_run(config: TrackingConfig, uri: str) -> str:
    """The checkpoint behind an MLflow URI: `runs:/<run id>` -> the last checkpoint that run
    recorded; `models:/<name>@<alias>` or `models:/<name>/<version>` -> the checkpoint a sweep
    registered that version from (its CHECKPOINT tag)."""
    from mlflow.exceptions import MlflowException

    client, tracking_uri = reachable_client(config, InputError, f"--model {uri}")
    try:
        if uri.startswith("models:/"):
            version = registered_version(client, uri)
            if tags.CHECKPOINT not in version.tags:
                raise InputError(f"--model: {uri} (version {version.version}) names no checkpoint")
            return version.tags[tags.CHECKPOINT]
        run_id = uri.removeprefix("runs:/").strip("/").split("/")[0]
        run = Store(client).run(run_id)
    except MlflowException as error:
        raise InputError(
            f"--model: {uri} is not in the MLflow store at {redacted(tracking_uri)} "
            f"({error.error_code}); allowed: runs:/<run id> of a train run, "
            "models:/<name>@<alias> or models:/<name>/<version>"
        ) from None
    path, _ = run.last_checkpoint
    if path is None:
        raise InputError(f"--model: MLflow run {run_id} recorded no checkpoint")
    return path


def registered_version(client, uri: str):
    """The model version `models:/<name>@<alias>` or `models:/<name>/<version>` names (MLflow's
    ModelVersion); raises MlflowException when there is none."""
    name, _, which = uri.removeprefix("models:/").strip("/").replace("@", "/@").partition("/")
    if which.startswith("@"):
        return client.get_model_version_by_alias(name, which[1:])
    return client.get_model_version(name, which)


def run_named(config: TrackingConfig, name: str) -> RunRecord | None:
    """The run `name` in the config's experiment (the one `train` would continue), or None;
    reads only: a sqlite store that does not exist yet is not created."""
    uri = resolve_tracking_uri(config)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return None
    client, _ = reachable_client(config, ConfigError, "tracking.uri")
    experiment = client.get_experiment_by_name(config.experiment)
    if experiment is None:
        return None
    found = Store(client).named(experiment.experiment_id, name)
    return found[0] if found else None


@dataclass(frozen=True)
class ExperimentRecord:
    """A sweep or a study as MLflow holds it: its parent run, the trial runs nested under it,
    the URIs of the parent's files in a folder (plots, tables), and the store to read more."""

    store: Store
    parent: RunRecord
    children: list[RunRecord]
    files: list[str]


def read_experiment(config: TrackingConfig, kind: str, name: str, folder: str) -> ExperimentRecord:
    """The `kind` (sweep, study) named `name` in the tracking store (`--<kind> name`)."""
    client, uri = reachable_client(config, ConfigError, "tracking.uri")
    store = Store(client)
    parents = store.search(
        store.experiment_ids(), f"tags.{tags.KIND} = '{kind}' and tags.{kind} = '{name}'"
    )
    if not parents:
        raise ConfigError(f"--{kind}: no {kind} '{name}' in the MLflow store at {redacted(uri)}")
    parent = parents[0]
    return ExperimentRecord(
        store, parent, store.children(parent), store.artifact_uris(parent, folder)
    )

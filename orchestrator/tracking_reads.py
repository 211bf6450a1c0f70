"""Reading MLflow: the checkpoint behind a `runs:/` or `models:/` URI, and a sweep's runs.

Reads fail at once, naming the field, when the tracking server does not answer (instead of
minutes of the client's retries). Writes go through orchestrator/tracking.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import ConfigError, InputError
from orchestrator.redact import redact_text
from orchestrator.tracking import (
    TrackingConfig,
    check_reachable,
    quiet_client_output,
    redacted,
    resolve_tracking_uri,
)


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


@dataclass(frozen=True)
class ExperimentRecord:
    """A sweep or a study as MLflow holds it: its parent run, the trial runs nested under it,
    the paths of the parent's files in `folder` (plots, tables), a client to read histories."""

    client: object
    parent: object
    children: list
    files: list[str]


def read_experiment(config: TrackingConfig, kind: str, name: str, folder: str) -> ExperimentRecord:
    """The `kind` (sweep, study) named `name` in the tracking store (`--<kind> name`)."""
    client, uri = _reachable_client(config, ConfigError, "tracking.uri")
    experiments = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(
        experiments, filter_string=f"tags.kind = '{kind}' and tags.{kind} = '{name}'"
    )
    if not parents:
        raise ConfigError(f"--{kind}: no {kind} '{name}' in the MLflow store at {redacted(uri)}")
    parent = parents[0]
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    files = [
        f"{parent.info.artifact_uri}/{artifact.path}"
        for artifact in client.list_artifacts(parent.info.run_id, folder)
    ]
    return ExperimentRecord(client, parent, children, files)

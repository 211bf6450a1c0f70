"""The model registry's aliases: a version takes one (`best`) only when it beats the version
holding it on the same validation data, by the same metric."""

from __future__ import annotations

from orchestrator.common.redact import redact
from orchestrator.tracking import tags


def promote(
    client, name: str, alias: str, version: str, version_tags: dict, metric: str
) -> str | None:
    """Tag a registered model's version, and point `name@alias` at it only when it beats the
    version holding the alias on the same validation data (`tags.DATASET_DIGEST`) by `metric`
    (an error: lower is better). Returns None when the alias moved, else why not."""
    from mlflow.exceptions import MlflowException

    for key, value in redact({k: str(v) for k, v in version_tags.items()}).items():
        client.set_model_version_tag(name, version, key, value)
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except MlflowException:  # no version holds it yet
        holder = None
    why = _why_not_moved(holder, version_tags, metric, alias) if holder else None
    if why is None:
        client.set_registered_model_alias(name, alias, version)
    return why


def _why_not_moved(holder, candidate: dict, metric: str, alias: str) -> str | None:
    """Why `candidate` (a new version's tags) does not take `alias` from `holder` (the version
    holding it), or None when it beats it on the same data and metric."""
    held, digest = holder.tags, str(candidate.get(tags.DATASET_DIGEST))
    if held.get(tags.DATASET_DIGEST) != digest:
        return (
            f"@{alias} stays on version {holder.version}, scored on other validation data "
            f"(dataset digest {held.get(tags.DATASET_DIGEST, 'unknown')}, this one {digest}): "
            "not comparable"
        )
    if metric not in held:
        return f"@{alias} stays on version {holder.version}, which records no {metric}"
    if float(candidate[metric]) < float(held[metric]):
        return None
    return (
        f"@{alias} stays on version {holder.version}: its {metric} {float(held[metric]):.4f} "
        f"is not beaten by {float(candidate[metric]):.4f}"
    )

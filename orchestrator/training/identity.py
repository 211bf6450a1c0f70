"""What makes two trainings the same one: the fields a resumed run must share with its start.

A run resumed by name continues a model from its checkpoint and adds epochs to its MLflow run.
That is only honest when the model, the data, the optimizer with its schedule, the batch and
the seed are those it started with; changing where or how fast it runs (workers, placement,
precision, storage, logging) is fine, and so is `train.epochs` (to train longer; not with the
cosine schedule, whose curve spans the planned epochs). The driver
compares these fields with what the checkpoint and the MLflow run recorded, before training,
and refuses a resume that would mix two trainings unless `train.resume_changed` says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from orchestrator.common.errors import ConfigError
from orchestrator.common.redact import redact_text
from orchestrator.common.yaml_config import flatten
from orchestrator.training.checkpoints import newest_checkpoint

if TYPE_CHECKING:
    from orchestrator.tracking.records import RunRecord
    from orchestrator.tracking.run import TrackedRun
    from orchestrator.training.checkpoints import StoredCheckpoint
    from orchestrator.training.config import TrainingSections, WorkerPlan

log = logging.getLogger(__name__)

# Data fields that change what the model sees (the data itself is named by its prepare key)
DATA_FIELDS = ("flip", "mean_subtraction", "pca_noise_std")


def training_fields(config: TrainingSections, data_key: str) -> dict[str, Any]:
    """{field: value} of everything that defines the training of `config` on the prepared data
    whose manifest key is `data_key` (a digest of its source files and parameters)."""
    model = config.model.resolved()
    fields = {
        **flatten(model, "model."),
        **flatten(config.optim, "optim."),
        **{f"data.{name}": getattr(config.data, name) for name in DATA_FIELDS},
        "data.prepared_key": data_key,
        "train.global_batch_size": config.train.global_batch_size,
        "seed": config.seed,
    }
    if config.optim.schedule.kind == "cosine":  # its curve spans train.epochs: longer changes it
        fields["train.epochs"] = config.train.epochs
    return {key: fields[key] for key in sorted(fields)}


def digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple]:
    """{field: (recorded value, value now)} for every field that differs."""
    keys = sorted(set(recorded) | set(now))
    return {
        key: (recorded.get(key), now.get(key))
        for key in keys
        if json.dumps(recorded.get(key)) != json.dumps(now.get(key))
    }


def describe(changed: dict[str, tuple], limit: int = 6) -> str:
    shown = [f"{key} {old!r} -> {new!r}" for key, (old, new) in list(changed.items())[:limit]]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return "; ".join(shown) + more


def refuse_changed(run_name: str, where: str, changed: dict[str, tuple]) -> ConfigError:
    return ConfigError(
        f"name: resuming '{run_name}' with another training than {where} recorded "
        f"({describe(changed)}); continuing would mix two trainings in one model and one "
        "MLflow run. Choose another name for a new run, or set train.resume_changed: true to "
        "continue with the changed fields on purpose"
    )


def check_resume(plan: WorkerPlan, name: str, run: TrackedRun) -> None:
    """Refuse to continue a run (same name) as another training, or into a history whose
    checkpoints are gone: either would mix two trainings in one model or one MLflow run.

    Compares the training's fields with its newest checkpoint in storage and with its MLflow
    run's; `train.resume_changed: true` lets changed fields through with a printed line (the
    MLflow run then records the new values in its `resumed_with.*` tags).
    """
    stored = newest_checkpoint(plan.run_folder)
    recorded = run.record() if run.resumed else None
    sources = []
    if stored is not None and stored.training_fields:
        sources.append((f"its checkpoint of epoch {stored.epoch}", stored.training_fields))
    if recorded is not None and recorded.training_fields is not None:
        sources.append((f"its MLflow run {run.run_id}", recorded.training_fields))
    try:
        if stored is not None and run.tracked and not run.resumed:
            _refuse_unrecorded(plan, name, stored)
        for where, fields in sources:
            changed = differences(fields, plan.training_fields)
            if not changed:
                continue
            if not plan.train.resume_changed:
                raise refuse_changed(name, where, changed)
            log.warning(
                f"resuming '{name}' with changed training fields (train.resume_changed): "
                f"{describe(changed)}"
            )
        if recorded is not None:
            _check_checkpoints_kept(recorded, stored, plan.run_folder)
    except ConfigError:
        run.abandon()
        raise


def _refuse_unrecorded(plan: WorkerPlan, name: str, stored: StoredCheckpoint) -> None:
    """A new MLflow run finds checkpoints in its folder: another experiment's run of the same
    name, or a run whose tracking store was deleted. Continuing from them would adopt another
    training's model and report none of its history; only `train.resume_unrecorded` does."""
    if plan.train.resume_unrecorded:
        log.warning(
            f"'{name}': a new MLflow run continues from the checkpoint of epoch {stored.epoch} "
            "that no MLflow run records (train.resume_unrecorded)"
        )
        return
    raise ConfigError(
        f"name: {redact_text(plan.run_folder)} holds checkpoints of '{name}' (up to epoch "
        f"{stored.epoch}) that no MLflow run of this name in this experiment records (another "
        "experiment's run of the same name, or a tracking store since deleted); continuing "
        "would adopt another training's model. Choose another name or train.storage_path, or "
        "set train.resume_unrecorded: true to continue from them in a new MLflow run"
    )


def _check_checkpoints_kept(
    recorded: RunRecord, stored: StoredCheckpoint | None, run_folder: str
) -> None:
    """An MLflow run that recorded a checkpoint must find it (or a newer one) in storage."""
    path, epoch = recorded.last_checkpoint
    if path is None:
        return
    if stored is None or stored.epoch < epoch:
        found = f"the newest there is of epoch {stored.epoch}" if stored else "none is there"
        raise ConfigError(
            f"train.storage_path: MLflow run {recorded.run_id} holds epochs up to {epoch} with a "
            f"checkpoint, but {redact_text(run_folder)} has no checkpoint of that epoch "
            f"({found}: deleted, or storage_path changed). Resuming would restart the model "
            "and mix two trainings in one MLflow run: point train.storage_path at its "
            "checkpoints, or choose another name for a new run"
        )

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
from typing import Any

from orchestrator.errors import ConfigError

# Data fields that change what the model sees (the data itself is named by its prepare key)
DATA_FIELDS = ("flip", "mean_subtraction", "pca_noise_std")


def training_fields(config, data_key: str) -> dict[str, Any]:
    """{field: value} of everything that defines the training of `config` on the prepared data
    whose manifest key is `data_key` (a digest of its source files and parameters)."""
    from orchestrator.config import flatten

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

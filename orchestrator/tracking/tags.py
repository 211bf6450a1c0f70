"""The tags this project writes on MLflow runs and registered models: their names, once, and
their values written and read back as typed values (RunRecord reads them: tracking/records.py).

MLflow's UI shows tags as text; where a value is a list or a number, it is written here and
parsed here, nowhere else.
"""

from __future__ import annotations

import json

# MLflow's own
PARENT_RUN_ID = "mlflow.parentRunId"  # nests a run under another in the UI
EXPERIMENT_KIND = "mlflow.experimentKind"  # on experiments: which view the UI opens
MODEL_TRAINING = "custom_model_development"  # (MLflow 3 opens unknown kinds in its GenAI view)

# What a run is and where it belongs
RUN_KEY = "orchestrator.run_name"  # a resumable run's stable name (the Ray Train run name)
KIND = "kind"  # one of KINDS
KINDS = ("train", "trial", "sweep", "study", "evaluate", "prepare")
SWEEP, STUDY = "sweep", "study"  # the sweep (or study) a parent or trial run belongs to
TRIAL_ID, GROUP, SEED_INDEX = "trial_id", "group", "seed_index"  # a trial's place in it
SEARCH_SPACE, SEARCH_ALGORITHM, SCHEDULER = "search_space", "search_algorithm", "scheduler"

# Training state
TRAINING_DIGEST, TRAINING_FIELDS = "training_digest", "training_fields"  # training/identity.py
DATASET_DIGEST = "dataset_digest"  # on a model version: the prepared data it was scored on
RESUMED_WITH = "resumed_with."  # + a param's name: its value in a resume that changed it
LAST_CHECKPOINT, LAST_CHECKPOINT_EPOCH = "last_checkpoint", "last_checkpoint_epoch"
RESUMED_FROM_EPOCH, RESTARTS = "resumed_from_epoch", "restarts"
EARLY_STOPPED, STOPPED_AFTER_EPOCH = "early_stopped", "stopped_after_epoch"  # a trial's end

# A sweep's result, on its parent run; CHECKPOINT also on a registered model's version
BEST_TRIAL, BEST_RUN_ID = "best_trial", "best_run_id"
BEST_CONFIG, BEST_MODEL = "best_config", "best_model"
CHECKPOINT, TRIAL = "checkpoint", "trial"  # a registered version's checkpoint and trial

_RESTART_SEPARATOR = " | "
_RESTARTS_MAX_CHARS = 5000  # MLflow keeps a tag's first 8,000


def kind(value: str) -> dict[str, str]:
    if value not in KINDS:
        raise ValueError(f"run kind: got {value!r}; allowed: {', '.join(KINDS)}")
    return {KIND: value}


def identity(training_digest: str, fields: dict) -> dict[str, str]:
    """The training's identity on its run (compared when it is resumed: training/identity.py)."""
    return {TRAINING_DIGEST: training_digest, TRAINING_FIELDS: json.dumps(fields)}


def last_checkpoint(uri: str, epoch: int) -> dict[str, str]:
    return {LAST_CHECKPOINT: uri, LAST_CHECKPOINT_EPOCH: str(epoch)}


def restarts(entries: list[str], resumed_from_epoch: int) -> dict[str, str]:
    """Every restart of the run so far, one entry each (the newest last)."""
    text = _RESTART_SEPARATOR.join(entries)[-_RESTARTS_MAX_CHARS:]
    return {RESUMED_FROM_EPOCH: str(resumed_from_epoch), RESTARTS: text}


def trial_end(early_stopped: bool, epochs: int) -> dict[str, str]:
    """How a trial ended: stopped early by the scheduler or not, after how many epochs."""
    return {EARLY_STOPPED: str(early_stopped).lower(), STOPPED_AFTER_EPOCH: str(epochs)}


def read_restarts(tags: dict[str, str]) -> tuple[str, ...]:
    return tuple(entry for entry in tags.get(RESTARTS, "").split(_RESTART_SEPARATOR) if entry)


def read_last_checkpoint(tags: dict[str, str]) -> tuple[str | None, int]:
    """(path, epoch) of the last checkpoint a run recorded, (None, 0) if none. Runs logged
    before the epoch had a tag of its own held "<path> (epoch N)" in LAST_CHECKPOINT."""
    path = tags.get(LAST_CHECKPOINT)
    if path is None:
        return None, 0
    if LAST_CHECKPOINT_EPOCH in tags:
        return path, int(tags[LAST_CHECKPOINT_EPOCH])
    path, _, epoch = path.rpartition(" (epoch ")
    return path, int(epoch.rstrip(")"))


def read_training_fields(tags: dict[str, str]) -> dict | None:
    return json.loads(tags[TRAINING_FIELDS]) if TRAINING_FIELDS in tags else None

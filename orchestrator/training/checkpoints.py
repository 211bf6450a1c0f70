"""Checkpoints: writing and restoring them (workers), finding the newest complete one, reading.

A checkpoint is a folder `<storage_path>/<run name>/checkpoint_<time>/` that Ray Train copies
from the workers: `checkpoint.pt` (rank 0: epoch, weights in the single-device layout, optimizer,
schedule, config, classes), `rng-rank<k>.pt` (each rank's RNG state) and `meta.json` (rank 0:
the epoch, the training's identity and the size of every file rank 0 wrote). Ray copies the
files in no particular order, so a folder counts as complete only when `meta.json` is there and
every file it lists has its listed size: a copy cut short by a dying worker never counts.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs
import torch

from orchestrator.common.errors import InputError
from orchestrator.common.redact import redact_text
from orchestrator.common.storage import Location, uri_of
from workloads.alexnet.placement import Placement
from workloads.alexnet.schedule import LearningRateSchedule

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"


@dataclass
class TrainingState:
    """What a checkpoint saves and restores of a worker's training (besides its RNG state)."""

    placement: Placement  # the weights, saved and loaded in the single-device layout
    optimizer: torch.optim.Optimizer
    schedule: LearningRateSchedule


def save_checkpoint(
    folder: Path, rank: int, epoch: int, metrics: dict, state: TrainingState, plan
) -> None:
    """Into the local `folder` that Ray Train uploads: rank 0 the training state, the epoch's
    report and `meta.json`; every rank its own RNG state (dropout draws). `plan`: the run's
    `WorkerPlan` (config, classes, identity)."""
    if rank == 0:
        checkpoint = {
            "epoch": epoch,
            "metrics": {key: float(value) for key, value in metrics.items()},
            "model": state.placement.state_dict(),  # loads into any placement
            "optimizer": state.optimizer.state_dict(),
            "schedule": state.schedule.state_dict(),
            "config": plan.config_yaml,
            "classes": list(plan.classes),
            "data": dict(plan.data),  # the prepared data: {"uri", "key"}
        }
        torch.save(checkpoint, folder / CHECKPOINT_FILE)
        _write_meta(folder, epoch, plan.training_digest, plan.training_fields, metrics)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng-rank{rank}.pt")


def _write_meta(folder: Path, epoch: int, training_digest: str, fields: dict, report: dict) -> None:
    """Rank 0, after writing its files: their sizes, which make the upload count as complete;
    and the epoch's report, which a restart logs if it never reached MLflow."""
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    meta = {
        "epoch": epoch,
        "training_digest": training_digest,
        "training_fields": fields,
        "files": sizes,
        "report": json.loads(json.dumps(report, default=float)),  # (numpy numbers as floats)
    }
    (folder / META_FILE).write_text(json.dumps(meta, sort_keys=True))


def restore_checkpoint(folder: Path, rank: int, state: TrainingState) -> tuple[int, dict]:
    """Load a checkpoint folder into `state` (and this rank's RNG); returns the epoch it ended
    and that epoch's report ({} for a checkpoint written before reports were stored)."""
    saved = torch.load(folder / CHECKPOINT_FILE, weights_only=True, map_location="cpu")
    state.placement.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.schedule.load_state_dict(saved["schedule"])
    rng_file = folder / f"rng-rank{rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return int(saved["epoch"]), saved.get("metrics", {})


@dataclass(frozen=True)
class StoredCheckpoint:
    location: Location  # the checkpoint's folder
    epoch: int
    training_digest: str
    training_fields: dict
    report: dict = field(default_factory=dict)  # the epoch's metrics ({}: written before kept)

    @property
    def uri(self) -> str:
        return self.location.uri


def stored_checkpoints(run_folder: str) -> list[StoredCheckpoint]:
    """The complete checkpoints under a run's folder (a path or URI), oldest epoch first."""
    run = Location.of(run_folder)
    found = []
    for name in run.names():
        if not name.startswith("checkpoint_"):
            continue
        folder = Location(run.fs, run.join(name), run.uri_of(name))
        try:
            meta = folder.read_json(META_FILE)
            files = run.fs.get_file_info([folder.join(f) for f in meta["files"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # no meta.json yet, or a partial one: an incomplete copy
        sizes = [info.size if info.type == pafs.FileType.File else None for info in files]
        if sizes != list(meta["files"].values()):
            continue
        found.append(
            StoredCheckpoint(
                folder,
                int(meta["epoch"]),
                meta.get("training_digest", ""),
                meta.get("training_fields", {}),
                meta.get("report", {}),
            )
        )
    return sorted(found, key=lambda checkpoint: checkpoint.epoch)


def newest_checkpoint(run_folder: str, digest: str | None = None) -> StoredCheckpoint | None:
    """The newest complete checkpoint in `run_folder`; with `digest`, the newest of that
    training (or of one from before checkpoints recorded their training's digest)."""
    found = stored_checkpoints(run_folder)
    if digest is not None:
        found = [stored for stored in found if stored.training_digest in ("", digest)]
    return found[-1] if found else None


def checkpoint_to_resume(plan):
    """(ray.train.Checkpoint, where it is) to resume a worker of `plan` (its WorkerPlan) from,
    or (None, ""): the newest complete one in the run's storage folder, which can be newer than
    the one Ray Train's controller registered (a worker that died right after uploading one: its
    report never reached the controller). One of another training is never loaded: an error
    (unless `train.resume_changed` let the driver continue one on purpose)."""
    import ray.train

    stored = newest_checkpoint(plan.run_folder) if plan.run_folder else None
    foreign = stored is not None and stored.training_digest not in ("", plan.training_digest)
    if foreign and not plan.train.resume_changed:
        raise RuntimeError(
            f"{redact_text(stored.uri)}: a checkpoint of another training (training digest "
            f"{stored.training_digest}, this one's {plan.training_digest}); not loaded"
        )
    if stored is not None:
        location = stored.location
        checkpoint = ray.train.Checkpoint(path=location.path, filesystem=location.fs)
        return checkpoint, redact_text(stored.uri)
    checkpoint = ray.train.get_checkpoint()  # one written before checkpoints had meta.json
    if checkpoint is None:
        return None, ""
    return checkpoint, redact_text(uri_of(checkpoint.filesystem, checkpoint.path))


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's training state: "model" (single-device weights), "config" (YAML), "epoch",
    "classes" (names in label order; empty in checkpoints written before they were kept), "data"
    (the prepared data's "uri" and "key"; absent in checkpoints written before they were kept).

    `path`: a checkpoint folder (as written by `train`) or its checkpoint.pt; a local path or a
    URI (`s3://...`).
    """
    where = Location.of(str(path))
    if where.exists(CHECKPOINT_FILE):
        where = Location(where.fs, where.join(CHECKPOINT_FILE), where.uri_of(CHECKPOINT_FILE))
    elif where.fs.get_file_info(where.path).type != pafs.FileType.File:
        raise InputError(
            f"--model: {redact_text(where.uri)} is not a checkpoint (no {CHECKPOINT_FILE})"
        )
    try:
        state = torch.load(io.BytesIO(where.read_bytes()), weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - not a torch file, truncated, foreign objects
        raise InputError(  # torch's own text advises weights_only=False: not for us
            f"--model: {redact_text(where.uri)} is not a checkpoint written by train (it does "
            f"not load as one: {type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise InputError(
            f"--model: {redact_text(where.uri)} is a torch file but not a checkpoint written by "
            "train"
        )
    return state

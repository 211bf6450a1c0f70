"""Checkpoints in storage: what one holds, when it is complete, the newest one of a run, reading.

A checkpoint is a folder `<storage_path>/<run name>/checkpoint_<time>/` that Ray Train copies
from the workers: `checkpoint.pt` (rank 0: epoch, weights in the single-device layout, optimizer,
schedule, config, classes), `rng-rank<k>.pt` (each rank's RNG state) and `meta.json` (rank 0:
the epoch, the training's identity and the size of every file rank 0 wrote). Ray copies the
files in no particular order, so a folder counts as complete only when `meta.json` is there and
every file it lists has its listed size: a copy cut short by a dying worker never counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from orchestrator.errors import InputError
from orchestrator.storage import Location

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"


def write_meta(folder: Path, epoch: int, training_digest: str, fields: dict) -> None:
    """Rank 0, after writing its files into the local `folder` that Ray Train will upload."""
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    meta = {"epoch": epoch, "training_digest": training_digest, "training_fields": fields,
            "files": sizes}  # fmt: skip
    (folder / META_FILE).write_text(json.dumps(meta, sort_keys=True))


@dataclass(frozen=True)
class StoredCheckpoint:
    location: Location  # the checkpoint's folder
    epoch: int
    training_digest: str
    training_fields: dict

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
        found.append(StoredCheckpoint(folder, int(meta["epoch"]), meta.get("training_digest", ""),
                                      meta.get("training_fields", {})))  # fmt: skip
    return sorted(found, key=lambda checkpoint: checkpoint.epoch)


def newest_checkpoint(run_folder: str) -> StoredCheckpoint | None:
    found = stored_checkpoints(run_folder)
    return found[-1] if found else None


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's training state: "model" (single-device weights), "config" (YAML), "epoch",
    "classes" (names in label order; empty in checkpoints written before they were kept).

    `path`: a checkpoint folder (as written by `train`) or its checkpoint.pt.
    """
    import torch

    path = Path(path).expanduser()
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"--model: {path} is not a checkpoint (no {CHECKPOINT_FILE})")
    try:
        state = torch.load(file, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - not a torch file, truncated, foreign objects
        raise InputError(  # torch's own text advises weights_only=False: not for us
            f"--model: {file} is not a checkpoint written by train (it does not load as one: "
            f"{type(error).__name__})"
        ) from None
    if not isinstance(state, dict) or not {"model", "config", "epoch"} <= set(state):
        raise InputError(f"--model: {file} is a torch file but not a checkpoint written by train")
    return state

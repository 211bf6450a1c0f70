"""`prepare`: decode a raw image tree once into Parquet shards of S x S images, with statistics.

The resize to S and the centre crop are deterministic, so they run once here (a Ray Data job over
CPU workers); every training epoch then reads small S x S images. Output, under `out` (a folder
or any pyarrow filesystem URI):

    manifest.json           written last: counts per class, class map, source, parameters, digest
    classes.json            class index -> class name (sorted-name order of train/)
    stats.npz               training set: per-pixel mean image (S, S, 3) and RGB covariance
                            eigenvalues/eigenvectors, all for pixels in [0, 1]
    rejects.csv             files that could not be read: split, path, reason
    train/shard-00000-of-00012.parquet, ...   rows shuffled across classes
    val/shard-00000-of-00001.parquet, ...

A shard row: `id` (position in the sorted source listing), `label`, `image` (JPEG bytes or raw
uint8 S*S*3), `path` (relative to the source root). Each shard task streams its images through
row groups and returns its statistics as partial sums (exact integers for the mean image), saved
beside it in `_work/`:
the driver merges them one shard at a time, so memory never grows with the number of images, and
an interrupted run redoes only the shards that have no saved result (data/shards.py).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from orchestrator.common.errors import ConfigError
from orchestrator.common.locks import Busy, Lease, exclusive
from orchestrator.common.redact import redact_text
from orchestrator.common.storage import Location
from orchestrator.data.prepared import FORMAT_VERSION, MANIFEST_FILE, Manifest, ShardParams
from orchestrator.data.shards import Progress, images_per_shard, merge, plan_shards, run_shards
from workloads.datasets.image_folder import ImageList, list_image_folder, relative_path
from workloads.datasets.imagenet import list_imagenet
from workloads.datasets.statistics import rgb_statistics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareConfig:
    source: Literal["imagefolder", "imagenet"] = "imagefolder"  # the raw tree's layout
    root: str | None = None  # the raw tree: train/<class>/* and val/ (see workloads/datasets)
    out: str | None = None  # a folder or a pyarrow filesystem URI (s3://..., gs://...)
    image_size: int = 256  # S: short side resized to S, central S x S kept
    encoding: Literal["jpeg", "raw"] = "jpeg"  # raw: uint8 pixels, no decode at training time
    jpeg_quality: int = 90  # jpeg: the quality images are stored at, 1..100
    shard_mb: float = 128.0  # target shard size; small datasets get smaller shards (>= 4/CPU)
    max_reject_fraction: float = 0.001  # fail when more than this fraction is unreadable
    val_labels: str | None = None  # imagenet: LOC_val_solution.csv or the devkit ground truth
    val_mapping: str | None = None  # imagenet: meta.mat or '<id> <wnid>' lines (devkit labels)
    cpus_per_task: float = 1.0  # CPUs each decode-and-write task holds
    seed: int = 0  # shuffles rows across classes

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size: got {self.image_size}; allowed: an integer >= 8")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: got {self.jpeg_quality}; allowed: 1..100")
        if not self.shard_mb > 0:
            raise ValueError(f"shard_mb: got {self.shard_mb}; allowed: a number > 0")
        if not 0 <= self.max_reject_fraction <= 1:
            raise ValueError(f"max_reject_fraction: got {self.max_reject_fraction}; allowed: 0..1")
        if not self.cpus_per_task > 0:
            raise ValueError(f"cpus_per_task: got {self.cpus_per_task}; allowed: a number > 0")

    def shard_params(self) -> ShardParams:
        """What decides the shards' content: a change redoes the preparation."""
        quality = self.jpeg_quality if self.encoding == "jpeg" else None
        return ShardParams(self.image_size, self.encoding, quality, self.seed)


@dataclass(frozen=True)
class PrepareResult:
    out: str
    skipped: bool  # the output was already complete: nothing was done
    images: dict[str, int]  # written, per split
    rejects: int
    total: int  # files seen
    processed: int  # files decoded by this run (the rest were done by an earlier, interrupted one)
    rejects_file: str
    seconds: float
    cpus: float
    manifest: Manifest | None  # None when too many files were rejected

    @property
    def images_per_second(self) -> float:
        """Files processed by this run per second of its wall time (listing and merge included)."""
        return self.processed / self.seconds if self.seconds else 0.0

    @property
    def images_per_second_per_core(self) -> float:
        return self.images_per_second / self.cpus if self.cpus else 0.0

    @property
    def complete(self) -> bool:
        return self.manifest is not None


def list_source(config: PrepareConfig) -> tuple[ImageList, ImageList]:
    """(train, val) of the raw tree; any problem with it is a one-line ConfigError naming the
    folder or file, what was found and what is expected, raised before any Ray work.

    The rules: `train/` holds class folders (names valid UTF-8), every one with at least one
    image file (a class never seen in training would still get an index and an output: remove
    its folder); `val/` exists and holds at least one image, its classes among `train/`'s, any of
    them missing or empty (the class index is the sorted `train/` order either way). Files are
    chosen by suffix; one that cannot be decoded is a reject of `prepare`, not an error here.
    """
    if config.root is None:
        raise ConfigError("prepare.root: required (the raw dataset folder; --root)")
    root = Path(config.root).expanduser()
    if not root.is_dir():
        raise ConfigError(f"prepare.root: got {root}, which is not a folder")
    try:
        if config.source == "imagenet":
            train, val = list_imagenet(root, config.val_labels, config.val_mapping)
        else:
            train = list_image_folder(root, "train", require_every_class=True)
            val = list_image_folder(root, "val", classes=train.classes)
    except (OSError, ValueError) as error:  # the layout's own errors name the file and the rule
        hint = ""
        if config.source == "imagenet" and ("labels file" in str(error) or "mapping" in str(error)):
            hint = " (with --set prepare.val_labels=FILE prepare.val_mapping=FILE)"
        raise ConfigError(f"prepare.root: {error}{hint}") from None
    return train, val


def source_fingerprint(root: Path, splits: dict[str, ImageList]) -> str:
    """A digest of what would be read: every file's relative path, size and label."""
    digest = hashlib.sha256()
    for split, images in splits.items():
        digest.update(f"{split}:{','.join(images.classes)}\n".encode())
        for path, label in zip(images.paths, images.labels):
            digest.update(
                f"{relative_path(path, str(root))}\t{os.path.getsize(path)}\t{label}\n".encode(
                    "utf-8",
                    "surrogateescape",  # names that are not UTF-8: rejected later
                )
            )
    return digest.hexdigest()


def _cluster_cpus() -> float:
    import ray  # here, not at the top: a config check imports this module, and needs no Ray

    return ray.cluster_resources().get("CPU", 1.0)


def _write_statistics(out: Location, image_sum, rgb_outer_sum, count: int) -> None:
    """stats.npz: mean image and RGB eigen-decomposition, pixels in [0, 1]."""
    image_size = image_sum.shape[0]
    rgb_sum = image_sum.sum(axis=(0, 1))  # the per-pixel sums hold the per-channel ones
    eigenvalues, eigenvectors = rgb_statistics(
        rgb_sum / 255.0, rgb_outer_sum / 255.0**2, count * image_size**2
    )
    out.write_arrays(
        {
            "mean_image": (image_sum / (255.0 * count)).astype(np.float32),
            "eigenvalues": eigenvalues,
            "eigenvectors": eigenvectors,
            "count": np.array(count),
        },
        "stats.npz",
    )


def run_prepare(
    config: PrepareConfig,
    default_parent: str | None = None,
    splits: tuple[ImageList, ImageList] | None = None,
) -> PrepareResult:
    """Prepare `config.root` into `config.out`; a no-op when the output is already complete.

    Without `config.out`, the output goes to `<default_parent>/<root name>-<key>`, the key being
    a digest of the source files and the shard parameters. `splits`: `list_source(config)`, when
    the caller has listed the source already.

    The output folder is only ever written when it is new, empty or a `prepare` output, by one
    `prepare` at a time (a lock file); partial work of an interrupted run is reused only when
    it was planned from the same key, else discarded.
    """
    if config.out is None and default_parent is None:
        raise ConfigError("prepare.out: required (a folder or URI for the shards; --out)")
    started = time.monotonic()
    root = Path(config.root or "").expanduser().resolve()
    train, val = splits or list_source(config)
    splits = {"train": train, "val": val}
    out, key = planned_output(config, splits, default_parent)
    manifest = _read_manifest(out)
    if manifest is not None and manifest.key == key:
        return _already_complete(out, manifest, splits)  # complete: nothing to lock
    _refuse_foreign_output(out)
    try:
        with exclusive(out, LOCK_FILE, f"prepare of {root}") as lease:
            return _prepare_locked(config, out, key, root, splits, started, lease)
    except Busy as busy:
        raise ConfigError(
            f"prepare.out: another prepare is writing to {out.uri} ({busy}); wait for it to "
            "finish (its output is then complete and reused), or choose another --out"
        ) from None


def planned_output(
    config: PrepareConfig, splits: dict, default_parent: str | None
) -> tuple[Location, str]:
    """Where `run_prepare` writes `config.root`'s shards (`config.out`, else
    `<default_parent>/<root name>-<key>`), and their key: a digest of the source files and the
    shard parameters."""
    root = Path(config.root or "").expanduser().resolve()
    fingerprint = source_fingerprint(root, splits)
    params = sorted(dataclasses.asdict(config.shard_params()).items())
    key = hashlib.sha256(f"{FORMAT_VERSION}:{fingerprint}:{params}".encode()).hexdigest()
    return Location.of(config.out or f"{default_parent}/{root.name}-{key[:12]}"), key


def complete_output(out: Location, key: str) -> bool:
    """Whether `out` holds the complete prepared dataset of `key`."""
    manifest = _read_manifest(out)
    return manifest is not None and manifest.key == key


LOCK_FILE = ".prepare.lock"
OWN_MARKERS = (MANIFEST_FILE, "_work")  # a complete output, or an interrupted one


def _refuse_foreign_output(out: Location) -> None:
    """Write only into a new or empty folder, or one that `prepare` wrote: never mix with (or
    delete) anything else."""
    names = set(out.names()) - {LOCK_FILE}
    if names and not names & set(OWN_MARKERS):
        shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
        raise ConfigError(
            f"prepare.out: {out.uri} is not empty ({shown}) and is not a prepare output (no "
            "manifest.json or _work/); choose a new or empty folder"
        )


def _prepare_locked(
    config, out: Location, key: str, root: Path, splits: dict, started: float, lease: Lease
):
    train = splits["train"]
    total = sum(len(images) for images in splits.values())
    manifest = _read_manifest(out)
    if manifest is not None:
        if manifest.key == key:  # completed meanwhile by the run that held the lock
            return _already_complete(out, manifest, splits)
        raise ConfigError(
            f"prepare.out: {out.uri} already holds a prepared dataset of another source or "
            "other parameters; choose another --out or delete it"
        )
    lease.check()
    _discard_other_plans(out, key)
    shards, already, cpus = _write_shards(config, out, key, splits, total)
    image_sum, rgb_outer_sum, per_class, images, rejects, digest = merge(
        out, shards, train.classes, config.image_size
    )
    _write_rejects(out, rejects)
    result_args = dict(
        out=out.uri,
        skipped=False,
        images=images,
        rejects=len(rejects),
        total=total,
        processed=total - already,
        rejects_file=out.uri_of("rejects.csv"),
        seconds=time.monotonic() - started,
        cpus=cpus,
    )
    if len(rejects) > config.max_reject_fraction * total:
        return PrepareResult(**result_args, manifest=None)

    _write_statistics(out, image_sum, rgb_outer_sum, images["train"])
    out.write_json(dict(enumerate(train.classes)), "classes.json")
    manifest = Manifest(
        params=config.shard_params(),
        classes=train.classes,
        images=images,
        shards={
            split: [f"{split}/{s.name}.parquet" for s in shards if s.split == split]
            for split in splits
        },
        rejects=len(rejects),
        key=key,
        digest=digest,
        per_class=per_class,
        source={"type": config.source, "root": str(root), "files": total},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    lease.check()  # a writer that lost the lock does not commit
    out.write_json(manifest.to_json(), MANIFEST_FILE)  # the dataset is complete from here on
    out.delete_dir("_work")
    return PrepareResult(**result_args, manifest=manifest)


def _write_shards(config, out: Location, key: str, splits: dict, total: int):
    """Plan the shards and write those an interrupted run did not: (every shard, the files the
    earlier run did, the CPUs this run used)."""
    for folder in ("_work", "train", "val"):
        out.make_dirs(folder)
    per_shard = images_per_shard(config, splits["train"], out, key, _cluster_cpus())
    shards = plan_shards(splits, per_shard, config.seed)
    todo = [s for s in shards if not out.exists("_work", f"{s.split}-{s.name}.json")]
    already = sum(len(s.ids) for s in shards) - sum(len(s.ids) for s in todo)
    cpus = min(_cluster_cpus(), len(todo) * config.cpus_per_task)
    progress = Progress(total, already)
    try:
        if todo:
            run_shards(todo, config, out, progress)
    finally:
        progress.close()
    return shards, already, cpus


def _write_rejects(out: Location, rejects: list) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "path", "reason"])
    writer.writerows(rejects)
    out.write_bytes(buffer.getvalue().encode(), "rejects.csv")


def _read_manifest(out: Location) -> Manifest | None:
    return Manifest.from_json(out.read_json(MANIFEST_FILE)) if out.exists(MANIFEST_FILE) else None


def _already_complete(out: Location, manifest: Manifest, splits: dict) -> PrepareResult:
    return PrepareResult(
        out=out.uri,
        skipped=True,
        images=manifest.images,
        rejects=manifest.rejects,
        total=sum(len(images) for images in splits.values()),
        processed=0,
        rejects_file=out.uri_of("rejects.csv"),
        seconds=0.0,
        cpus=0.0,
        manifest=manifest,
    )


def _discard_other_plans(out: Location, key: str) -> None:
    """Partial work is reused only under the key it was planned with: the source files, the
    shard parameters and the seed decide every shard's content and name."""
    if not out.exists("_work"):
        return
    plan = out.read_json("_work", "plan.json") if out.exists("_work", "plan.json") else {}
    if plan.get("key") == key:
        return
    log.warning(
        f"prepare: {redact_text(out.uri)} holds partial work of an interrupted prepare with "
        "another source or other parameters: discarding it and starting over"
    )
    for folder in ("_work", "train", "val"):
        out.delete_dir(folder)

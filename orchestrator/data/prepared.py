"""A prepared dataset (the output of `prepare`), opened: its manifest, statistics and shards.

manifest.json   written last: what the dataset holds and how it was made (`Manifest`)
stats.npz       the training set's per-pixel mean image and RGB eigen-statistics (`ImageStats`)
train/*.parquet, val/*.parquet   the shards (data/shards.py), read by data/shard_reader.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from orchestrator.common.errors import ConfigError
from orchestrator.common.storage import Location

FORMAT_VERSION = 1  # of the shards and the manifest
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class ShardParams:
    """What decides the shards' content (a change prepares the data anew)."""

    image_size: int  # S: short side resized to S, the central S x S kept
    encoding: str  # jpeg | raw
    jpeg_quality: int | None = None  # None for raw shards
    seed: int = 0  # the shuffle of rows across classes


@dataclass(frozen=True)
class Manifest:
    """manifest.json: a prepared dataset's contents and how it was made. Its presence marks the
    dataset complete."""

    params: ShardParams
    classes: list[str]  # class names in label order (sorted names of train/)
    images: dict[str, int]  # per split, written
    shards: dict[str, list[str]]  # per split, the shard files relative to the dataset's folder
    rejects: int = 0  # files that could not be read (rejects.csv)
    key: str = ""  # a digest of the source files and `params`: the same key, the same shards
    digest: str = ""  # of the shards' contents
    per_class: dict[str, list[int]] = field(default_factory=dict)  # per split, per label
    source: dict = field(default_factory=dict)  # type, root, files (seen)
    format: int = FORMAT_VERSION
    created: str = ""  # UTC, ISO 8601

    @classmethod
    def from_json(cls, raw: dict) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in raw.items() if key in known}
        return cls(**{**values, "params": ShardParams(**raw["params"])})

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ImageStats:
    """Training-set statistics from `prepare`, in [0, 1] pixel units."""

    mean_image: np.ndarray  # (S, S, 3) float32
    eigenvalues: np.ndarray  # (3,) descending
    eigenvectors: np.ndarray  # (3, 3), columns
    count: int


def dataset_name(uri: str) -> str:
    """A prepared dataset's name: its folder's (`data/prepared/synthetic-62a42e876a6d`)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class PreparedData:
    """A complete `prepare` output, opened."""

    uri: str
    manifest: Manifest
    stats: ImageStats

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def image_size(self) -> int:
        return self.manifest.params.image_size

    @property
    def encoding(self) -> str:
        return self.manifest.params.encoding

    def files(self, split: str) -> list[str]:
        return [f"{self.uri}/{name}" for name in self.manifest.shards[split]]

    def count(self, split: str) -> int:
        return self.manifest.images[split]

    @property
    def name(self) -> str:
        return dataset_name(self.uri)

    @property
    def key(self) -> str:
        """What the data was prepared from (source files and parameters): its manifest key, or
        for a manifest without one, where it is."""
        return self.manifest.key or self.uri

    @property
    def digest(self) -> str:
        """What `prepare` wrote, as one hash: the shards' content digest from the manifest (for
        a manifest without one, a digest of the manifest itself)."""
        if self.manifest.digest:
            return self.manifest.digest
        text = json.dumps(self.manifest.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def params(self) -> dict:
        """The data's facts, as a run records them (MLflow params)."""
        return {
            "data.prepared_uri": self.uri,
            "data.num_train_images": self.count("train"),
            "data.num_val_images": self.count("val"),
            "data.num_classes": len(self.classes),
            "data.image_size": self.image_size,
            "data.rejects": self.manifest.rejects,
        }


def open_prepared(uri: str) -> PreparedData:
    location = Location.of(uri)
    if not location.exists(MANIFEST_FILE):
        raise ConfigError(
            f"data.root: {location.uri} holds no complete prepared dataset (no manifest.json); "
            "run `orchestrator/run.py prepare` first, or use data.source: imagefolder"
        )
    stats = location.read_arrays("stats.npz")
    return PreparedData(
        uri=location.uri,
        manifest=Manifest.from_json(location.read_json(MANIFEST_FILE)),
        stats=ImageStats(
            mean_image=stats["mean_image"],
            eigenvalues=stats["eigenvalues"],
            eigenvectors=stats["eigenvectors"],
            count=int(stats["count"]),
        ),
    )

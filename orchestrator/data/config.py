"""The `data` section: where the training data comes from and how it is fed and augmented."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from orchestrator.common.errors import check_custom_resources
from workloads.datasets.synthetic import SyntheticConfig

if TYPE_CHECKING:
    import numpy as np

    from orchestrator.data.prepared import ImageStats


@dataclass(frozen=True)
class DataConfig:
    # what data.root holds: prepared shards, a raw tree (prepared on first use), or the
    # generated demo shapes
    source: Literal["prepared", "imagefolder", "imagenet", "synthetic"] = "prepared"
    root: str | None = None  # prepared: `prepare`'s output; imagefolder/imagenet: the raw tree;
    #                          synthetic: where to generate it (default data/synthetic)
    prepared_root: str | None = None  # where a raw source is prepared (default data/prepared/...)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    flip: bool = True  # random horizontal flips in training
    mean_subtraction: bool = True  # subtract the training set's per-pixel mean image
    pca_noise_std: float = 0.1  # std of the paper's PCA colour noise alphas; 0 turns it off
    decode_rows_per_batch: int = 64  # images read and decoded at a time
    decode_cpus: float = 1.0  # CPUs reserved per Ray Data read/decode task (one per shard file)
    max_cpus: float | None = None  # CPUs Ray Data may hold while training; None: what is free
    # custom Ray resources each read/decode task also needs, e.g. {preprocess: 0.01}: only nodes
    # that offer them decode (see docs/clusters.md)
    resources: dict[str, float] = field(default_factory=dict)
    prefetch_batches: int = 2  # batches each training worker prefetches
    # images each training worker holds and draws its batches from at random (Ray Data's local
    # shuffle buffer), mixing row groups of different shards; 0: batches as the stream comes
    shuffle_rows: int = 1024
    # where JPEG shards are decoded: in the Ray Data read tasks, in the training worker's threads,
    # or on its device (nvJPEG on a GPU); auto: worker when training on CPUs, tasks on GPUs
    # (docs/data.md, "Where decoding runs"). Raw shards have nothing to decode.
    decode: Literal["auto", "tasks", "worker", "device"] = "auto"

    def __post_init__(self):
        if self.pca_noise_std < 0:
            raise ValueError(f"pca_noise_std: got {self.pca_noise_std}; allowed: a number >= 0")
        if not self.decode_cpus > 0:
            raise ValueError(f"decode_cpus: got {self.decode_cpus}; allowed: a number > 0")
        if self.max_cpus is not None and self.max_cpus < self.decode_cpus:
            raise ValueError(
                f"max_cpus: got {self.max_cpus}; allowed: >= decode_cpus ({self.decode_cpus})"
            )
        check_custom_resources("resources", self.resources)
        if self.decode_rows_per_batch < 1 or self.prefetch_batches < 0:
            raise ValueError("decode_rows_per_batch: allowed >= 1; prefetch_batches: allowed >= 0")
        if self.shuffle_rows < 0:
            raise ValueError(f"shuffle_rows: got {self.shuffle_rows}; allowed: an integer >= 0")

    def mean_image(self, stats: ImageStats) -> np.ndarray | None:
        """The per-pixel mean image to subtract (the training set's), or None without
        `mean_subtraction`: the one rule for training, evaluation, figures and exports."""
        return stats.mean_image if self.mean_subtraction else None

"""The Ray Data pipeline: image files -> decoded S x S uint8 -> augmented crops for Ray Train.

1. `read_images`: Ray Data reads the files; CPU tasks decode them, resize the short side to S and
   crop the central S x S (deterministic, so it runs once and the result is materialized).
2. `image_statistics`: the per-pixel mean image and the RGB covariance's eigen-decomposition,
   from mergeable partial sums computed per block (never by collecting images in the driver).
3. `training_view` / `validation_view`: lazy transforms on top of the materialized images, run on
   every pass, so every epoch sees new random crops, flips and colour noise.

The training workers consume the result with `get_dataset_shard(...).iter_torch_batches()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import ray.data

from orchestrator.errors import ConfigError
from workloads.alexnet import transforms as T
from workloads.datasets.image_folder import ImageList, list_image_folder
from workloads.datasets.synthetic import SyntheticConfig, generate

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ROOT = "data/synthetic"


@dataclass(frozen=True)
class DataConfig:
    source: Literal["folder", "synthetic"] = "folder"  # folder: <root>/{train,val}/<class>/*
    root: str | None = None  # folder: the dataset; synthetic: where to write it (data/synthetic)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    image_size: int = 256  # S: short side resized to S, then the central S x S kept
    flip: bool = True  # random horizontal flips in training
    mean_subtraction: bool = True  # subtract the training set's per-pixel mean image
    pca_noise_std: float = 0.1  # std of the paper's PCA colour noise alphas; 0 turns it off
    decode_rows_per_task: int = 256  # images per decode task
    decode_cpus: float = 1.0  # CPUs reserved per decode task
    augment_cpus: float = 0.25  # CPUs reserved per augmentation task (light numpy work)
    prefetch_batches: int = 2  # batches prefetched by each training worker

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"image_size: got {self.image_size}; allowed: an integer >= 8")
        if self.pca_noise_std < 0:
            raise ValueError(f"pca_noise_std: got {self.pca_noise_std}; allowed: a number >= 0")
        for name in ("decode_cpus", "augment_cpus"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: got {getattr(self, name)}; allowed: a number > 0")
        if self.decode_rows_per_task < 1 or self.prefetch_batches < 0:
            raise ValueError("decode_rows_per_task: allowed >= 1; prefetch_batches: allowed >= 0")


@dataclass(frozen=True)
class ImageStats:
    """Training-set statistics, in [0, 1] pixel units."""

    mean_image: np.ndarray  # (S, S, 3) float32
    eigenvalues: np.ndarray  # (3,) descending
    eigenvectors: np.ndarray  # (3, 3), columns
    count: int  # images


@dataclass(frozen=True)
class PreparedData:
    train: ray.data.Dataset  # augmented: {"image": float32 (3, C, C), "label": int64}
    val: ray.data.Dataset  # centre crops, same columns
    classes: list[str]
    stats: ImageStats
    num_train: int
    num_val: int


def dataset_root(config: DataConfig) -> Path:
    """Where the images are; the synthetic dataset is generated there first (once, cached)."""
    if config.source == "synthetic":
        return generate(Path(config.root or DEFAULT_SYNTHETIC_ROOT).resolve(), config.synthetic)
    if config.root is None:
        raise ConfigError("data.root: required when data.source is 'folder' (the dataset folder)")
    root = Path(config.root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"data.root: got {root}, which is not a folder")
    return root


def _decode_batch(batch: dict, image_size: int, class_index: dict[str, int]) -> dict:
    """Binary files -> uint8 (N, S, S, 3) and labels. Unreadable files are skipped with a warning."""
    images, labels = [], []
    for data, path in zip(batch["bytes"], batch["path"]):
        try:
            images.append(T.resize_and_center_crop(T.decode_image(data), image_size))
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the run
            logger.warning("skipping unreadable image %s: %s", path, error)
            continue
        labels.append(class_index[Path(path).parent.name])
    return {
        "image": np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8),
        "label": np.asarray(labels, dtype=np.int64),
    }


def read_images(images: ImageList, config: DataConfig, seed: int) -> ray.data.Dataset:
    """Decode, resize and centre-crop every file once; the result is materialized.

    Files are shuffled once (by `seed`) before reading so that blocks mix classes.
    """
    order = np.random.default_rng(seed).permutation(len(images.paths))
    paths = [images.paths[i] for i in order]
    num_blocks = max(1, -(-len(paths) // config.decode_rows_per_task))
    class_index = {name: i for i, name in enumerate(images.classes)}
    return (
        ray.data.read_binary_files(paths, include_paths=True, override_num_blocks=num_blocks)
        .map_batches(
            _decode_batch,
            batch_size=config.decode_rows_per_task,
            num_cpus=config.decode_cpus,
            fn_kwargs={"image_size": config.image_size, "class_index": class_index},
        )
        .materialize()
    )


def _partial_sums(batch: dict) -> dict:
    """Mergeable sums over one block: per-pixel sum, RGB sum and RGB outer-product sum."""
    images = batch["image"]  # (N, S, S, 3) uint8
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0  # (N*S*S, 3)
    return {
        "image_sum": images.sum(axis=0, dtype=np.float64)[None] / 255.0,  # (1, S, S, 3)
        "rgb_sum": pixels.sum(axis=0)[None],  # (1, 3)
        "rgb_outer_sum": (pixels.T @ pixels)[None],  # (1, 3, 3)
        "count": np.array([len(images)]),
    }


def image_statistics(decoded: ray.data.Dataset) -> ImageStats:
    """Mean image and RGB eigen-decomposition, merged one block's partial sums at a time."""
    total = None
    for partial in decoded.map_batches(_partial_sums, batch_size=None).iter_rows():
        if total is None:
            total = {k: np.asarray(v, dtype=np.float64).copy() for k, v in partial.items()}
        else:
            for k, v in partial.items():
                total[k] += v
    if total is None or total["count"] == 0:
        raise ValueError("no readable training images")
    count = int(total["count"])
    image_size = total["image_sum"].shape[0]
    eigenvalues, eigenvectors = T.rgb_statistics(
        total["rgb_sum"], total["rgb_outer_sum"], count * image_size * image_size
    )
    return ImageStats(
        mean_image=(total["image_sum"] / count).astype(np.float32),
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        count=count,
    )


def _augment_batch(
    batch: dict,
    crop_size: int,
    flip: bool,
    mean_image: np.ndarray | None,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
    pca_noise_std: float,
) -> dict:
    """Random crop + flip, mean subtraction, PCA colour noise; rows shuffled within the batch."""
    rng = np.random.default_rng()  # fresh entropy: every pass draws new augmentations
    images = batch["image"]  # (N, S, S, 3) uint8, read-only
    n, image_size = len(images), images.shape[1]
    crops = T.random_crops(rng, n, image_size, crop_size)
    if not flip:
        crops = T.Crops(crops.tops, crops.lefts, np.zeros(n, dtype=bool), crop_size)
    mean_crops = None if mean_image is None else T.apply_crops(mean_image[None], crops)
    out = T.normalize(T.apply_crops(images, crops), mean_crops)  # (N, 3, C, C) float32
    if pca_noise_std > 0:
        T.add_color_offsets(out, T.pca_color_offsets(rng, n, eigenvalues, eigenvectors, pca_noise_std))
    order = rng.permutation(n)
    return {"image": out[order], "label": batch["label"][order]}


def _center_batch(batch: dict, crop_size: int, mean_image: np.ndarray | None) -> dict:
    images = batch["image"]
    crops = T.center_crops(len(images), images.shape[1], crop_size)
    mean_crops = None if mean_image is None else T.apply_crops(mean_image[None], crops)
    return {"image": T.normalize(T.apply_crops(images, crops), mean_crops), "label": batch["label"]}


def training_view(
    decoded: ray.data.Dataset, stats: ImageStats, config: DataConfig, crop_size: int, seed: int
) -> ray.data.Dataset:
    return decoded.randomize_block_order(seed=seed).map_batches(
        _augment_batch,
        batch_size=None,
        num_cpus=config.augment_cpus,
        fn_kwargs={
            "crop_size": crop_size,
            "flip": config.flip,
            "mean_image": stats.mean_image if config.mean_subtraction else None,
            "eigenvalues": stats.eigenvalues,
            "eigenvectors": stats.eigenvectors,
            "pca_noise_std": config.pca_noise_std,
        },
    )


def validation_view(
    decoded: ray.data.Dataset, stats: ImageStats, config: DataConfig, crop_size: int
) -> ray.data.Dataset:
    return decoded.map_batches(
        _center_batch,
        batch_size=None,
        num_cpus=config.augment_cpus,
        fn_kwargs={
            "crop_size": crop_size,
            "mean_image": stats.mean_image if config.mean_subtraction else None,
        },
    )


def list_splits(root: Path) -> tuple[ImageList, ImageList]:
    """Training and validation files; the class index comes from the training folder."""
    train_list = list_image_folder(root, "train")
    return train_list, list_image_folder(root, "val", classes=train_list.classes)


def build_datasets(
    train_list: ImageList, val_list: ImageList, config: DataConfig, crop_size: int, seed: int
) -> PreparedData:
    """Everything the trainer needs from the data (needs a running Ray)."""
    decoded_train = read_images(train_list, config, seed)
    decoded_val = read_images(val_list, config, seed)
    stats = image_statistics(decoded_train)
    return PreparedData(
        train=training_view(decoded_train, stats, config, crop_size, seed),
        val=validation_view(decoded_val, stats, config, crop_size),
        classes=train_list.classes,
        stats=stats,
        num_train=stats.count,
        num_val=decoded_val.count(),
    )

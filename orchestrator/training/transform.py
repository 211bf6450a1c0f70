"""The augmentation and normalisation a run's config asks for, with its data's statistics: the
one `BatchTransform` training, evaluation, figures and exports all use."""

from __future__ import annotations

from orchestrator.data.config import DataConfig
from orchestrator.data.prepared import PreparedData
from workloads.alexnet.transforms import BatchTransform


def batch_transform(
    config: DataConfig, data: PreparedData, crop_size: int, seed: int
) -> BatchTransform:
    """Random crops, flips and PCA colour noise for training; centre crop and ten crops for
    evaluation; the mean image subtracted (`data.mean_subtraction`)."""
    return BatchTransform(
        crop_size=crop_size,
        mean_image=config.mean_image(data.stats),
        eigenvalues=data.stats.eigenvalues,
        eigenvectors=data.stats.eigenvectors,
        pca_noise_std=config.pca_noise_std,
        flip=config.flip,
        seed=seed,
    )

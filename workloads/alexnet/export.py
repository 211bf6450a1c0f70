"""A trained AlexNet as one self-contained module for serving: uint8 images in, logits out.

The test-time view of `BatchTransform.center` (the centre crop, the training set's mean image
subtracted) is folded into the module, so a registered model needs nothing but images at the
prepared size. Pure torch, so `torch.export` can trace it (MLflow's "pt2" format).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Classifier(nn.Module):
    """uint8 RGB images (N, S, S, 3), S = the prepared image size -> logits (N, classes)."""

    def __init__(self, model: nn.Module, crop_size: int, mean_image: np.ndarray | None):
        super().__init__()
        self.model = model
        self.crop_size = crop_size
        mean = np.zeros((crop_size, crop_size, 3), np.float32) if mean_image is None else mean_image
        self.register_buffer("mean_image", torch.as_tensor(np.asarray(mean, np.float32)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        crop = self.crop_size
        top = (images.shape[1] - crop) // 2
        left = (images.shape[2] - crop) // 2
        window = images[:, top : top + crop, left : left + crop, :].float() * (1 / 255)
        mean = self.mean_image
        if mean.shape[0] != crop:  # the mean image is at the prepared size: cut the same window
            mean = mean[top : top + crop, left : left + crop, :]
        return self.model((window - mean).permute(0, 3, 1, 2))

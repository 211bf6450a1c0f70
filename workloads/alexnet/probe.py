"""What a trained AlexNet has learned, as numbers for the paper's figures (pure torch: no Ray).

- `conv1_kernels`: the first layer's kernels as RGB tiles, one block per tower (Figure 3);
- `features_and_logits`: the last hidden layer's activations (fc7) and the class scores of one
  forward pass (Figure 4 left: the top-5; Figure 4 right: fc7 distances);
- `distances`: Euclidean distances in fc7 space, exact (a training image queried against
  itself is at distance 0);
- `tile_grid`: tiles laid out as one image.
"""

from __future__ import annotations

import numpy as np
import torch

from workloads.alexnet.model import AlexNet


def conv1_kernels(model: AlexNet) -> list[np.ndarray]:
    """conv1's kernels as RGB tiles in [0, 1], one array per tower: [(n, k, k, 3)] (the paper:
    two of 48 11x11 kernels). Each kernel is scaled by its own min and max, as Figure 3 shows
    them. The first half of conv1's outputs feeds tower 1 (conv2 has groups=2)."""
    weight = model.conv_layers()[0].weight.detach().float().cpu()  # (K, 3, k, k)
    tiles = weight.permute(0, 2, 3, 1).numpy()  # (K, k, k, 3)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    high = tiles.max(axis=(1, 2, 3), keepdims=True)
    tiles = (tiles - low) / np.maximum(high - low, 1e-12)
    return np.split(tiles, model.config.towers)


def tile_grid(blocks: list[np.ndarray], columns: int) -> np.ndarray:
    """Blocks of tiles (n, k, k, 3) as one float image on white: `columns` tiles to a row,
    1 px apart, each block starting a new row, a tile's height of space between blocks."""
    k = blocks[0].shape[1]
    rows = [-(-len(block) // columns) for block in blocks]
    height = sum(rows) * (k + 1) + (len(blocks) - 1) * k + 1
    width = min(columns, max(len(block) for block in blocks)) * (k + 1) + 1
    grid = np.ones((height, width, 3), dtype=np.float32)
    top = 1
    for block, block_rows in zip(blocks, rows, strict=True):
        for i, tile in enumerate(block):
            y, x = top + (i // columns) * (k + 1), 1 + (i % columns) * (k + 1)
            grid[y : y + k, x : x + k] = tile
        top += block_rows * (k + 1) + k
    return grid


@torch.no_grad()
def features_and_logits(model: AlexNet, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fc7's activations (B, 4096 * width) and the class scores (B, classes), in eval mode."""
    model.eval()
    features = model.forward_features(inputs)  # (B, 4096w)
    return features, model.classifier[-1](features)  # fc8: (B, classes)


def distances(features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """(B, Q) Euclidean distances between fc7 features (B, D) and queries (Q, D), exact (not
    the matrix-product shortcut, whose cancellation leaves an identical pair at a small positive
    distance)."""
    return torch.cdist(features, queries, compute_mode="donot_use_mm_for_euclid_dist")

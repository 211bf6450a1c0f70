"""Training-set colour statistics from mergeable partial sums (pure numpy)."""

from __future__ import annotations

import numpy as np


def rgb_statistics(
    pixel_sum: np.ndarray, pixel_outer_sum: np.ndarray, pixel_count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the RGB covariance.

    Inputs are mergeable partial sums over pixels in [0, 1] units: sum of x (3,), sum of x x^T
    (3, 3), and the number of pixels.
    """
    mean = pixel_sum / pixel_count
    covariance = pixel_outer_sum / pixel_count - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    return eigenvalues[order].astype(np.float32), eigenvectors[:, order].astype(np.float32)

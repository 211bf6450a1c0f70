"""The paper's augmentation and evaluation views (pure numpy/torch: no Ray).

Images arrive as uint8 (N, S, S, 3) (RGB, HWC) after the deterministic resize-and-centre-crop to
S (256 in the paper; see `workloads.datasets.codec`). Training cuts a random C x C window (224 in
the paper) and flips it left-right at random; evaluation takes the centre crop or the ten crops.
A crop is described by `Crops` (one top/left/flip per image) so the same window can be cut from
the images and from the per-pixel mean image: the paper subtracts the mean of the S x S images
before cropping, and cropping the mean image at the same window gives exactly that, while the
images stay uint8 until `normalize` (which runs on the training device).

Randomness is keyed, not drawn in sequence: the crop, flip and colour noise of image `id` in
`epoch` are a pure function of (seed, epoch, id). Every epoch differs, the same seed repeats
exactly, and neither depends on batch order or on which worker sees the image, which Ray Data's
streaming split does not fix.

Pixel values are in [0, 1] units once normalised; the mean image and the PCA eigenvalues are in
the same units (the published ImageNet eigenvalues are for pixels in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Published ImageNet RGB statistics (pixels in [0, 1]): eigenvalues and eigenvectors (columns).
IMAGENET_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32)
IMAGENET_EIGENVECTORS = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ],
    dtype=np.float32,
)


def keyed_uniforms(seed: int, epoch: int, ids: np.ndarray, count: int) -> np.ndarray:
    """(N, count) uniforms in [0, 1): a pure function of (seed, epoch, id, column).

    SplitMix64 over a key mixing the four; statistically sound for augmentation draws.
    """
    ids = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose
        key = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(epoch) * np.uint64(
            0xD1B54A32D192ED03
        )
        x = ids[:, None] * np.uint64(0xBF58476D1CE4E5B9) ^ key
        x = x ^ (np.arange(count, dtype=np.uint64) * np.uint64(0x94D049BB133111EB))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normals(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from two uniforms (Box-Muller)."""
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class Crops:
    """One crop window per image: top-left corner and whether to flip left-right."""

    tops: np.ndarray  # (N,) int
    lefts: np.ndarray  # (N,) int
    flips: np.ndarray  # (N,) bool
    size: int

    def __len__(self) -> int:
        return len(self.tops)


def random_crops(
    seed: int, epoch: int, ids: np.ndarray, image_size: int, crop_size: int, flip: bool = True
) -> Crops:
    """Uniform crop positions over [0, image_size - crop_size] and a fair coin for the flip."""
    u = keyed_uniforms(seed, epoch, ids, 3)
    span = image_size - crop_size + 1
    return Crops(
        tops=np.minimum((u[:, 0] * span).astype(np.int64), span - 1),
        lefts=np.minimum((u[:, 1] * span).astype(np.int64), span - 1),
        flips=(u[:, 2] < 0.5) & flip,
        size=crop_size,
    )


def center_crops(n: int, image_size: int, crop_size: int) -> Crops:
    offset = (image_size - crop_size) // 2
    return Crops(
        tops=np.full(n, offset),
        lefts=np.full(n, offset),
        flips=np.zeros(n, dtype=bool),
        size=crop_size,
    )


# Order of the ten evaluation views, as torchvision's `ten_crop`: the four corners and the centre
# of the image, then the same five of the mirrored image (whose top-left corner is the mirror of
# the image's top-right corner).
TEN_CROP_VIEWS = (
    "top_left", "top_right", "bottom_left", "bottom_right", "center",
    "mirrored_top_left", "mirrored_top_right", "mirrored_bottom_left", "mirrored_bottom_right",
    "mirrored_center",
)  # fmt: skip


def ten_crops(image_size: int, crop_size: int) -> Crops:
    """The ten views of one image, in `TEN_CROP_VIEWS` order."""
    far, mid = image_size - crop_size, (image_size - crop_size) // 2
    tops = np.array([0, 0, far, far, mid] * 2)
    lefts = np.array([0, far, 0, far, mid] + [far, 0, far, 0, mid])
    flips = np.array([False] * 5 + [True] * 5)
    return Crops(tops=tops, lefts=lefts, flips=flips, size=crop_size)


def apply_crops(images, crops: Crops):
    """Cut crop i from images[i] (or from images[0] for all, if images holds one image).

    images: numpy array or torch tensor (N, H, W, ...) -> (N, C, C, ...), flipped left-right where
    crops.flips. A tensor stays on its device (the gather runs there).
    """
    steps = np.arange(crops.size)
    rows = crops.tops[:, None] + steps  # (N, C)
    cols = np.where(
        crops.flips[:, None], crops.lefts[:, None] + steps[::-1], crops.lefts[:, None] + steps
    )  # (N, C)
    which = np.zeros(len(crops), dtype=np.intp) if len(images) == 1 else np.arange(len(crops))
    index = (which[:, None, None], rows[:, :, None], cols[:, None, :])
    if isinstance(images, torch.Tensor):
        index = tuple(torch.as_tensor(i, device=images.device) for i in index)
    return images[index]


def pca_color_offsets(
    seed: int,
    epoch: int,
    ids: np.ndarray,
    eigenvalues: np.ndarray = IMAGENET_EIGENVALUES,
    eigenvectors: np.ndarray = IMAGENET_EIGENVECTORS,
    std: float = 0.1,
) -> np.ndarray:
    """The paper's PCA colour noise: P @ (alpha * lambda), alpha ~ N(0, std^2), one per image.

    Returns float32 (N, 3) RGB offsets to add to every pixel of each image (in [0, 1] units).
    """
    u = keyed_uniforms(seed, epoch + (1 << 20), ids, 6)  # a stream apart from the crops'
    alphas = std * _normals(u[:, :3], u[:, 3:])  # (N, 3)
    return ((alphas * eigenvalues[None, :]) @ eigenvectors.T).astype(np.float32)


def normalize(
    crops: torch.Tensor,
    mean_crops: torch.Tensor | None = None,
    color_offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 (N, C, C, 3) -> float32 (N, 3, C, C) in [0, 1] units.

    Minus the mean image cut at the same windows (N, C, C, 3) and plus one RGB offset (N, 3) per
    image, on the tensors' device. The result is a channels-last view of NHWC memory.
    """
    out = crops.float().mul_(1 / 255)
    if mean_crops is not None:
        out.sub_(mean_crops)
    if color_offsets is not None:
        out.add_(color_offsets[:, None, None, :])
    return out.permute(0, 3, 1, 2)


class BatchTransform:
    """uint8 batches -> model inputs on the batch's device: the paper's training and test views.

    Holds the training set's mean image (S, S, 3) and RGB eigen-decomposition, in [0, 1] units.
    """

    def __init__(
        self,
        crop_size: int,
        mean_image: np.ndarray | None,  # None: no mean subtraction
        eigenvalues: np.ndarray = IMAGENET_EIGENVALUES,
        eigenvectors: np.ndarray = IMAGENET_EIGENVECTORS,
        pca_noise_std: float = 0.1,  # 0: no colour noise
        flip: bool = True,
        seed: int = 0,
    ):
        self.crop_size = crop_size
        self.eigenvalues, self.eigenvectors = eigenvalues, eigenvectors
        self.pca_noise_std, self.flip, self.seed = pca_noise_std, flip, seed
        self._mean = None if mean_image is None else torch.from_numpy(np.asarray(mean_image))

    def _mean_on(self, device: torch.device) -> torch.Tensor | None:
        if self._mean is not None and self._mean.device != device:
            self._mean = self._mean.to(device)
        return self._mean

    def _views(self, images: torch.Tensor, crops: Crops, offsets=None) -> torch.Tensor:
        mean = self._mean_on(images.device)
        mean_crops = None if mean is None else apply_crops(mean[None], crops)
        return normalize(apply_crops(images, crops), mean_crops, offsets)

    def train(self, images: torch.Tensor, ids, epoch: int) -> torch.Tensor:
        """Random crop + flip + PCA noise - mean: uint8 (N, S, S, 3) -> float (N, 3, C, C)."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)
        size = images.shape[1]
        crops = random_crops(self.seed, epoch, ids, size, self.crop_size, self.flip)
        offsets = None
        if self.pca_noise_std > 0:
            offsets = torch.from_numpy(
                pca_color_offsets(
                    self.seed, epoch, ids, self.eigenvalues, self.eigenvectors, self.pca_noise_std
                )
            ).to(images.device)
        return self._views(images, crops, offsets)

    def center(self, images: torch.Tensor) -> torch.Tensor:
        """The centre crop - mean: uint8 (N, S, S, 3) -> float (N, 3, C, C)."""
        return self._views(images, center_crops(len(images), images.shape[1], self.crop_size))

    def ten_crop(self, images: torch.Tensor) -> torch.Tensor:
        """The ten views - mean: uint8 (N, S, S, 3) -> float (N, 10, 3, C, C)."""
        views = ten_crops(images.shape[1], self.crop_size)
        n = len(images)
        per_view = [
            self._views(
                images,
                Crops(
                    tops=np.full(n, views.tops[v]),
                    lefts=np.full(n, views.lefts[v]),
                    flips=np.full(n, views.flips[v]),
                    size=self.crop_size,
                ),
            )
            for v in range(len(views))
        ]
        return torch.stack(per_view, dim=1)

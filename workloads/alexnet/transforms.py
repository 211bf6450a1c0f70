"""The paper's preprocessing and augmentation, on numpy batches (pure: no Ray).

Images travel as uint8 arrays of shape (N, S, S, 3) (RGB, HWC) after a deterministic
`resize_and_center_crop` to S (256 in the paper). Training crops a random C x C window (224 in the
paper) and flips it horizontally at random; evaluation takes the centre crop or the ten crops.
A crop is described by `Crops` (one top/left/flip per image) so the same window can be cut from
the images and from the per-pixel mean image: the paper subtracts the mean of the S x S images
before cropping, and cropping the mean image at the same window gives exactly that, while the
images stay uint8 until `normalize`.

Pixel values are in [0, 1] units once normalised; the mean image and the PCA eigenvalues are in
the same units (the published ImageNet eigenvalues are for pixels in [0, 1]).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

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


def decode_image(data: bytes) -> Image.Image:
    """Decode any format PIL reads into RGB, with the EXIF orientation applied."""
    with Image.open(io.BytesIO(data)) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")


def resize_and_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to `size` (bilinear, antialiased), crop the central size x size.

    Returns uint8 (size, size, 3). Smaller images are upscaled.
    """
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@dataclass(frozen=True)
class Crops:
    """One crop window per image: top-left corner and whether to flip left-right."""

    tops: np.ndarray  # (N,) int
    lefts: np.ndarray  # (N,) int
    flips: np.ndarray  # (N,) bool
    size: int

    def __len__(self) -> int:
        return len(self.tops)


def random_crops(rng: np.random.Generator, n: int, image_size: int, crop_size: int) -> Crops:
    """Uniform crop positions over [0, image_size - crop_size] and a fair coin for the flip."""
    span = image_size - crop_size + 1
    return Crops(
        tops=rng.integers(0, span, size=n),
        lefts=rng.integers(0, span, size=n),
        flips=rng.random(n) < 0.5,
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


def apply_crops(images: np.ndarray, crops: Crops) -> np.ndarray:
    """Cut crop i from images[i] (or from images[0] for all, if images has one image).

    images: (N, H, W, ...) -> (N, C, C, ...), flipped left-right where crops.flips.
    """
    steps = np.arange(crops.size)
    rows = crops.tops[:, None] + steps  # (N, C)
    cols = np.where(
        crops.flips[:, None], crops.lefts[:, None] + steps[::-1], crops.lefts[:, None] + steps
    )  # (N, C)
    which = np.zeros(len(crops), dtype=np.intp) if len(images) == 1 else np.arange(len(crops))
    return images[which[:, None, None], rows[:, :, None], cols[:, None, :]]


def normalize(crops: np.ndarray, mean_crops: np.ndarray | None = None) -> np.ndarray:
    """uint8 (N, C, C, 3) -> float32 (N, 3, C, C) in [0, 1] units, minus the mean image's crops."""
    out = crops.astype(np.float32) * np.float32(1 / 255)
    if mean_crops is not None:
        out -= mean_crops
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def pca_color_offsets(
    rng: np.random.Generator,
    n: int,
    eigenvalues: np.ndarray = IMAGENET_EIGENVALUES,
    eigenvectors: np.ndarray = IMAGENET_EIGENVECTORS,
    std: float = 0.1,
) -> np.ndarray:
    """The paper's PCA colour noise: P @ (alpha * lambda), alpha ~ N(0, std^2), one per image.

    Returns (N, 3) RGB offsets to add to every pixel of each image (in [0, 1] units).
    """
    alphas = rng.normal(0.0, std, size=(n, 3)).astype(np.float32)
    return (alphas * eigenvalues[None, :]) @ eigenvectors.T


def add_color_offsets(images_chw: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Add an (N, 3) RGB offset to every pixel of float (N, 3, C, C) images, in place."""
    images_chw += offsets[:, :, None, None].astype(images_chw.dtype)
    return images_chw


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

"""A small, learnable image-classification dataset written as real JPEG files.

Each class is a shape drawn in a colour family on a textured background; size, position, hue,
background and aspect ratio vary per image, so the classes are told apart by shape and colour
rather than by any single pixel. Files land in the `train/<class>/`, `val/<class>/` layout that
`image_folder.list_image_folder` reads. Deterministic: image i of class c of a split depends only
on (seed, split, c, i).
"""

from __future__ import annotations

import colorsys
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from workloads.datasets import generated

SHAPES = ("disc", "square", "triangle", "cross", "ring", "stripes", "checker", "diamond")


@dataclass(frozen=True)
class SyntheticConfig:
    num_classes: int = 10  # shapes, each in its own colour family
    train_per_class: int = 200  # training images per class
    val_per_class: int = 50  # validation images per class
    min_side: int = 48  # pixels; each image's sides are drawn from [min_side, max_side]
    max_side: int = 160  # pixels (see min_side)
    jpeg_quality: int = 90  # of the generated JPEG files, 1..100
    seed: int = 0  # the same seed, the same images

    def __post_init__(self):
        if not 2 <= self.num_classes <= 64:
            raise ValueError(f"num_classes: got {self.num_classes}; allowed: 2..64")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ValueError("train_per_class and val_per_class: allowed: integers >= 1")
        if not 16 <= self.min_side <= self.max_side:
            raise ValueError(
                f"min_side/max_side: got {self.min_side}/{self.max_side}; "
                "allowed: 16 <= min_side <= max_side"
            )
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality: got {self.jpeg_quality}; allowed: 1..100")


def class_names(num_classes: int) -> list[str]:
    """'00-disc', '01-square', ...: sorted order equals class index."""
    return [f"{c:02d}-{SHAPES[c % len(SHAPES)]}" for c in range(num_classes)]


def _class_hue(c: int, num_classes: int) -> float:
    # Hues spread evenly round the wheel, so classes that share a shape differ in colour.
    return c / num_classes


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return int(r * 255), int(g * 255), int(b * 255)


def render_image(config: SyntheticConfig, split: str, c: int, i: int) -> Image.Image:
    """Image i of class c; a pure function of (config.seed, split, c, i)."""
    rng = np.random.default_rng([config.seed, 0 if split == "train" else 1, c, i])
    width, height = rng.integers(config.min_side, config.max_side + 1, size=2)
    if not 0.75 <= width / height <= 4 / 3:  # keep aspect ratios photographic
        height = int(np.clip(height, width * 0.75, width * 4 / 3))

    # Background: a dim, unsaturated colour with low-frequency blotches and pixel noise.
    base = np.array(_rgb(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.2, 0.6)), np.float32)
    coarse = rng.normal(0, 18, size=(4, 4, 3)).astype(np.float32)
    blotches = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
            (int(width), int(height)), Image.Resampling.BILINEAR
        ),
        np.float32,
    )
    pixels = base + (blotches - 128) + rng.normal(0, 8, size=(height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))

    # Foreground: the class's shape in the class's colour family.
    hue = _class_hue(c, config.num_classes) + rng.uniform(-0.04, 0.04)
    colour = _rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.75, 1.0))
    side = min(width, height)
    radius = rng.uniform(0.25, 0.42) * side
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    _draw_shape(ImageDraw.Draw(image), SHAPES[c % len(SHAPES)], cx, cy, radius, colour, rng)
    return image


def _draw_shape(draw, shape, cx, cy, r, colour, rng):
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
    elif shape == "cross":
        t = r * 0.35
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r * 0.3)))
    elif shape == "stripes":
        step = max(4, int(r / 2.5))
        for x in range(int(cx - r), int(cx + r), 2 * step):
            draw.rectangle((x, cy - r, x + step - 1, cy + r), fill=colour)
    elif shape == "checker":
        step = max(4, int(r / 2))
        for gy, y in enumerate(range(int(cy - r), int(cy + r), step)):
            for gx, x in enumerate(range(int(cx - r), int(cx + r), step)):
                if (gx + gy) % 2 == 0:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def generate(root: str | Path, config: SyntheticConfig) -> Path:
    """Write the dataset under `root` once; a second call with the same config does nothing.

    The files are written to a temporary folder beside `root` and moved into place at the end, so
    an interrupted run never leaves a half-written dataset that looks complete.
    """
    root = Path(root)
    wanted = asdict(config)
    if not generated.replaceable(root, wanted):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        names = class_names(config.num_classes)
        counts = {"train": config.train_per_class, "val": config.val_per_class}
        for split, per_class in counts.items():
            for c, name in enumerate(names):
                class_dir = staging / split / name
                class_dir.mkdir(parents=True)
                for i in range(per_class):
                    image = render_image(config, split, c, i)
                    image.save(class_dir / f"{name}_{i:05d}.jpg", quality=config.jpeg_quality)
        generated.mark(staging, wanted, classes=names, counts=counts)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root

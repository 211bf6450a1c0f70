"""A small, learnable image-classification dataset written as real JPEG files.

Each class is a shape drawn in a colour family on a textured background; size, position, hue,
background and aspect ratio vary per image, so the classes are told apart by shape and colour
rather than by any single pixel. Files land in the `train/<class>/`, `val/<class>/` layout that
`image_folder.list_image_folder` reads. Deterministic: image i of class c of a split depends only
on (seed, split, c, i).
"""

from __future__ import annotations

import colorsys
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross", "ring", "stripes", "checker", "diamond")
MANIFEST = "synthetic.json"  # marks a folder as written here: the only kind we ever replace
GENERATOR = "alexnet-ray synthetic"


def _read_marker(root: Path) -> dict | None:
    """The marker of a folder this module wrote (its MANIFEST), or None for any other folder."""
    try:
        marker = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(marker, dict) and {"num_classes", "quality"} <= set(marker):
        return {"config": marker}  # a photo corpus marked before GENERATOR existed
    if not isinstance(marker, dict) or "config" not in marker:
        return None
    # Markers written before GENERATOR existed hold exactly these keys
    if marker.get("generator", GENERATOR) != GENERATOR:
        return None
    return marker


def _refuse_foreign(root: Path) -> None:
    """Raise unless `root` is missing or an empty folder: never delete what we did not write."""
    if root.is_dir() and not any(root.iterdir()):
        return
    if root.exists():
        raise ValueError(
            f"{root} is not empty and holds no {MANIFEST}: it is not a dataset generated here, "
            "and generating would replace it; choose another folder (a missing or empty one)"
        )


@dataclass(frozen=True)
class SyntheticConfig:
    num_classes: int = 10
    train_per_class: int = 200
    val_per_class: int = 50
    min_side: int = 48  # pixels; each image's sides are drawn from [min_side, max_side]
    max_side: int = 160
    jpeg_quality: int = 90
    seed: int = 0

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
    marker = _read_marker(root)
    if marker is not None and marker.get("config") == wanted:
        return root
    if marker is None:
        _refuse_foreign(root)
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
        (staging / MANIFEST).write_text(
            json.dumps(
                {"generator": GENERATOR, "config": wanted, "classes": names, "counts": counts},
                indent=2,
            )
        )
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return root


def _pink_noise(rng: np.random.Generator, height: int, width: int, exponent: float) -> np.ndarray:
    """(H, W, 3) noise with a 1/f^exponent amplitude spectrum, channels partly correlated."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = radius**-exponent
    shape = (height, width // 2 + 1)
    shared = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    channels = []
    for _ in range(3):
        own = rng.normal(size=shape) + 1j * rng.normal(size=shape)
        channels.append(np.fft.irfft2((0.8 * shared + 0.6 * own) * amplitude, s=(height, width)))
    noise = np.stack(channels, axis=-1)
    return (noise - noise.mean()) / (noise.std() + 1e-9)


class PhotoSynth:
    """Photograph-like images: natural (1/f) texture, lighting, a few soft-edged objects.

    JPEG sizes at quality 90+ (~100 KB at 500x375) are close to ImageNet's average, so codecs
    and pipelines do realistic work on them; they are not flat colour. Textures come from a small
    bank of 1/f noise tiles made once per seed, so an image costs milliseconds, not an FFT.
    """

    TILE = 640  # pixels; images up to 640 on a side

    def __init__(self, seed: int = 0, bank_size: int = 12):
        rng = np.random.default_rng([seed, 99])
        self.bank = [
            _pink_noise(rng, self.TILE, self.TILE, rng.uniform(0.8, 1.3)).astype(np.float32)
            for _ in range(bank_size)
        ]

    def _texture(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        tile = self.bank[rng.integers(len(self.bank))]
        top = rng.integers(0, self.TILE - height + 1)
        left = rng.integers(0, self.TILE - width + 1)
        patch = tile[top : top + height, left : left + width]
        return patch[:, ::-1] if rng.random() < 0.5 else patch

    def render(self, rng: np.random.Generator, width: int = 500, height: int = 375) -> Image.Image:
        mix = (rng.normal(0, 0.4, (3, 3)) + np.eye(3)).astype(np.float32)
        pixels = self._texture(rng, height, width) @ (mix.T * rng.uniform(25, 50))
        pixels += rng.uniform(70, 180, 3).astype(np.float32)
        ramp = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]  # lighting
        pixels += ramp * rng.uniform(-40, 40, 3).astype(np.float32)
        for _ in range(rng.integers(1, 4)):  # objects with their own texture and colour
            mask = Image.new("L", (width // 4, height // 4), 0)
            cx, cy = rng.uniform(0.2, 0.8) * width / 4, rng.uniform(0.2, 0.8) * height / 4
            rx, ry = rng.uniform(0.08, 0.3) * width / 4, rng.uniform(0.08, 0.3) * height / 4
            ImageDraw.Draw(mask).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            alpha = np.asarray(mask.resize((width, height), Image.Resampling.BILINEAR), np.float32)
            alpha = alpha[..., None] / 255
            texture = self._texture(rng, height, width) * np.float32(rng.uniform(15, 40))
            colour = rng.uniform(20, 235, 3).astype(np.float32)
            pixels = pixels * (1 - alpha) + (colour + texture) * alpha
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_photo_corpus(
    root: str | Path,
    num_classes: int,
    train_per_class: int,
    val_per_class: int = 0,
    seed: int = 0,
    quality: int = 92,
) -> Path:
    """An ILSVRC-like tree of photo-like JPEGs: `{train,val}/n<8 digits>/<wnid>_<i>.JPEG`.

    Sizes vary around ImageNet's (short side 300-420, aspect 1.0-1.5). Written once per
    arguments; used by the benchmarks.
    """
    root = Path(root)
    wanted = {
        "num_classes": num_classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "seed": seed,
        "quality": quality,
    }
    marker = _read_marker(root)
    if marker is not None and marker["config"] == wanted:
        return root
    if marker is None:
        _refuse_foreign(root)
    if root.exists():
        shutil.rmtree(root)
    synth = PhotoSynth(seed)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(num_classes if per_class else 0):
            wnid = f"n{1000000 + c * 7919:08d}"
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng([seed, split == "val", c, i])
                short = int(rng.integers(300, 421))
                long = int(short * rng.uniform(1.0, 1.5))
                width, height = (long, short) if rng.random() < 0.75 else (short, long)
                image = synth.render(rng, width, height)
                image.save(folder / f"{wnid}_{i}.JPEG", quality=quality)
    (root / MANIFEST).write_text(json.dumps({"generator": GENERATOR, "config": wanted}))
    return root

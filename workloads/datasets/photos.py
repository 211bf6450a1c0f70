"""A photograph-like image corpus for the benchmarks: natural (1/f) texture, lighting and
soft-edged objects, in an ILSVRC-like tree of JPEGs of ImageNet's sizes, so that codecs and
pipelines do realistic work on them. Deterministic for a seed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from workloads.datasets import generated


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
    if not generated.replaceable(root, wanted):
        return root
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
    generated.mark(root, wanted)
    return root

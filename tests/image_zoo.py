"""Image files of every awkward kind, written for the tests (real files, real codecs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 30, 30), (30, 30, 220)


def halves(width: int, height: int, first=RED, second=BLUE) -> Image.Image:
    """Left half `first`, right half `second`: shows any rotation or flip."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = first
    pixels[:, width // 2 :] = second
    return Image.fromarray(pixels)


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    """Stored 120 wide x 80 high (red left, blue right) with EXIF orientation 6: shown rotated
    90 degrees clockwise, i.e. 80 wide x 120 high with red on top."""
    image = halves(120, 80)
    exif = image.getexif()
    exif[0x0112] = 6
    return jpeg_bytes(image, exif=exif)


def write_zoo(folder: Path) -> dict[str, bool]:
    """Write one file of each kind into `folder`; returns name -> convertible."""
    folder.mkdir(parents=True, exist_ok=True)
    good = jpeg_bytes(halves(150, 100))
    files = {
        "a_plain.JPEG": (good, True),
        "b_truncated.JPEG": (good[: len(good) // 2], False),
        "c_zero_bytes.JPEG": (b"", False),
        "d_text.JPEG": (b"this is not an image\n" * 20, False),
        "e_png_named_jpeg.JPEG": (_png(halves(150, 100)), True),
        "f_cmyk.JPEG": (jpeg_bytes(halves(150, 100).convert("CMYK")), True),
        "g_grayscale.JPEG": (jpeg_bytes(halves(150, 100).convert("L")), True),
        "h_exif_rotated.JPEG": (exif_rotated_jpeg(), True),
        "i_small_100x80.JPEG": (jpeg_bytes(halves(100, 80)), True),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: convertible for name, (_, convertible) in files.items()}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

"""Image decoding, the paper's resize-and-centre-crop, and encoding (pure: no Ray).

Two decode paths give the same RGB pixels for what both can read:
- plain JPEGs (YCbCr or grayscale, no EXIF rotation) go through libjpeg-turbo via `simplejpeg`,
  which also downscales in the DCT domain (by n/8) while decoding: 2-3x faster than PIL here;
- everything else goes through PIL: PNG (also when named .JPEG), CMYK/YCCK JPEGs, palette and
  alpha images, EXIF-rotated photos.
Unreadable input (truncated, zero-byte, not an image) raises `ValueError` with the reason.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_TAG_ORIENTATION = 0x0112


def decode_image(data: bytes) -> np.ndarray:
    """Any image PIL or libjpeg-turbo reads -> uint8 RGB (H, W, 3), EXIF orientation applied."""
    if not data:
        raise ValueError("empty file")
    if _fast_jpeg_header(data) is not None:
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    return _decode_with_pil(data)


def decode_resize_center_crop(data: bytes, size: int) -> np.ndarray:
    """Decode, resize the short side to `size`, keep the central size x size: uint8 (S, S, 3).

    Images smaller than `size` are upscaled. Plain JPEGs at least twice `size` are decoded at
    1/2, 1/4 or 1/8 scale (in the DCT domain, which low-passes as it shrinks), so the remaining
    resize shrinks by less than 2x.
    """
    if not data:
        raise ValueError("empty file")
    header = _fast_jpeg_header(data)
    if header is not None:
        height, width = header[:2]
        factor = 1  # power-of-two DCT scaling only: the n/8 scales in between decode slower
        while factor < 8 and min(height, width) // (2 * factor) >= size:
            factor *= 2
        pixels = simplejpeg.decode_jpeg(
            data,
            colorspace="RGB",
            min_height=-(-height // factor),
            min_width=-(-width // factor),
        )
    else:
        pixels = _decode_with_pil(data)
    return resize_and_center_crop(pixels, size)


def resize_and_center_crop(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3): short side to `size`, then the central square.

    Bilinear when shrinking by less than 2x or enlarging, area averaging (antialiased) beyond.
    """
    height, width = pixels.shape[:2]
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes (libjpeg-turbo, 4:2:0 like most photographs)."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace="RGB")


def decode_jpeg(data: bytes) -> np.ndarray:
    """A JPEG written by `encode_jpeg` -> uint8 (H, W, 3)."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def _fast_jpeg_header(data: bytes) -> tuple | None:
    """(height, width, colorspace, subsampling) of a JPEG that libjpeg-turbo turns into RGB
    exactly as PIL would, with nothing to rotate; None for anything else."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    try:
        header = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let PIL have its say (and name the problem)
    if header[2] not in ("YCbCr", "Gray"):
        return None  # CMYK/YCCK: PIL handles Adobe's inverted CMYK
    if data.find(b"Exif", 0, 65536) != -1 and _exif_orientation(data) not in (None, 1):
        return None
    return header


def _exif_orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as image:
        return image.getexif().get(_EXIF_TAG_ORIENTATION)


def _decode_with_pil(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            ):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise ValueError("not an image (no format PIL or libjpeg-turbo recognises)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{type(error).__name__}: {error}") from None

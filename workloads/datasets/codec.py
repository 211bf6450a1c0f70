"""Image decoding, the paper's resize-and-centre-crop, and encoding (pure: no Ray).

Two decode paths give the same RGB pixels for what both can read:
- plain JPEGs (YCbCr or grayscale, no EXIF rotation) go through libjpeg-turbo via `simplejpeg`,
  which also downscales in the DCT domain (by n/8) while decoding: 2-3x faster than PIL here;
- everything else goes through PIL: PNG (also when named .JPEG), CMYK/YCCK JPEGs, palette and
  alpha images, EXIF-rotated photos, 16-bit and floating-point images (scaled to 8 bits, see
  `_gray_to_8_bit`).
Unreadable input raises `ValueError` with the reason, whatever went wrong inside the codecs
(truncated, zero-byte, not an image, a decompression bomb, a malformed header, out of memory):
a bad file must cost one reject, never the job. Images of more than `max_pixels()` pixels are
refused before decoding, on both paths.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_TAG_ORIENTATION = 0x0112
_NOT_AN_IMAGE = "not an image (no format PIL or libjpeg-turbo recognises)"
# A long side over MAX_ASPECT_RATIO x the short one is cut to that before the resize (the crop
# keeps 1, the rest spares the interpolation's edges): a 1 x 10^6 strip resizes to 4 S^2 pixels.
MAX_ASPECT_RATIO = 4
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # PIL modes of > 8 bits/pixel


def max_pixels() -> int | None:
    """PIL's decompression-bomb limit, `2 * Image.MAX_IMAGE_PIXELS` (179 M pixels by default;
    None when PIL's check is switched off), applied to the libjpeg-turbo path as well."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def decode_image(data: bytes) -> np.ndarray:
    """Any image PIL or libjpeg-turbo reads -> uint8 RGB (H, W, 3), EXIF orientation applied."""
    if not data:
        raise ValueError("empty file")
    with _errors_as_value_error():
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
    with _errors_as_value_error():
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
    A long side over `MAX_ASPECT_RATIO` times the short one is cut to its central part first.
    """
    height, width = pixels.shape[:2]
    short = min(height, width)
    if short == 0:
        raise ValueError(f"image has no pixels ({width} x {height})")
    if max(height, width) > MAX_ASPECT_RATIO * short:
        keep = MAX_ASPECT_RATIO * short
        if width > height:
            pixels = pixels[:, (width - keep) // 2 :][:, :keep]
        else:
            pixels = pixels[(height - keep) // 2 :][:keep]
        pixels = np.ascontiguousarray(pixels)
        height, width = pixels.shape[:2]
    scale = size / short
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
        pixels = cv2.resize(pixels, (new_w, new_h), interpolation=interpolation)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """uint8 (H, W, 3) RGB -> JPEG bytes (libjpeg-turbo, 4:2:0 like most photographs)."""
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=quality, colorspace="RGB")


def decode_jpeg(data, out: np.ndarray | None = None) -> np.ndarray:
    """A JPEG written by `encode_jpeg` (bytes or any buffer) -> uint8 (H, W, 3), into `out`
    when given (a writable C-contiguous array of that shape)."""
    return simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)


@contextlib.contextmanager
def _errors_as_value_error():
    """Whatever a codec raises on a malformed file (struct.error, SyntaxError, cv2.error,
    DecompressionBombError, MemoryError, ...) -> ValueError naming it; ours pass unchanged."""
    try:
        yield
    except ValueError:
        raise
    except Exception as error:
        raise ValueError(_reason(error)) from None


def _reason(error: Exception) -> str:
    if isinstance(error, UnidentifiedImageError):
        return _NOT_AN_IMAGE
    if isinstance(error, MemoryError):
        return "out of memory while decoding (MemoryError)"
    return f"{type(error).__name__}: {error}"


def _check_size(width: int, height: int) -> None:
    """PIL's decompression-bomb check, for the path that does not open the file with PIL: over
    `max_pixels()` a ValueError, over half of it a DecompressionBombWarning (as PIL warns)."""
    limit, pixels = max_pixels(), width * height
    if limit is None or pixels <= limit // 2:
        return
    declared = f"declares {width} x {height} = {pixels:,} pixels"
    if pixels > limit:
        raise ValueError(
            f"{declared}, over the limit of {limit:,} (a decompression bomb? the limit is "
            "2 x PIL's Image.MAX_IMAGE_PIXELS)"
        )
    warnings.warn(
        f"{declared}, over {limit // 2:,} (PIL's Image.MAX_IMAGE_PIXELS): a decompression bomb?",
        Image.DecompressionBombWarning,
        stacklevel=3,
    )


def _fast_jpeg_header(data: bytes) -> tuple | None:
    """(height, width, colorspace, subsampling) of a JPEG that libjpeg-turbo turns into RGB
    exactly as PIL would, with nothing to rotate; None for anything else. Raises ValueError for
    a JPEG over `max_pixels()`."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    try:
        header = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let PIL have its say (and name the problem)
    _check_size(width=header[1], height=header[0])
    if header[2] not in ("YCbCr", "Gray"):
        return None  # CMYK/YCCK: PIL handles Adobe's inverted CMYK
    if data.find(b"Exif", 0, 65536) != -1 and _exif_orientation(data) not in (None, 1):
        return None
    return header


def _exif_orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as image:  # reads the headers only
        return image.getexif().get(_EXIF_TAG_ORIENTATION)


def _decode_with_pil(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in _HIGH_DEPTH_MODES:
                gray = _gray_to_8_bit(np.asarray(image), image.mode)  # (H, W)
                return np.repeat(gray[..., None], 3, axis=2)
            if image.mode in ("RGBA", "LA", "PA") or (
                image.mode == "P" and "transparency" in image.info
            ):
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as error:  # PIL's own ValueErrors get their type named too
        raise ValueError(_reason(error)) from None


def _gray_to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """One channel of more than 8 bits -> uint8 (PIL's own convert("RGB") clips it at 255).

    - "I;16*" (16-bit gray PNG and TIFF): value >> 8, i.e. floor(value / 256);
    - "I" (32-bit integers: how PIL opens 16-bit PGM, and 32-bit integer TIFFs): taken as
      16-bit data, clipped to 0..65535, then >> 8;
    - "F" (floating point TIFFs): when every finite value lies in 0..1, round(value * 255);
      otherwise taken as 0..255 and rounded; clipped to 0..255 either way (+-inf too), NaN -> 0.
    Colour images of 16 bits per channel need none of this: PIL opens them as 8-bit "RGB" or
    "RGBA", keeping each channel's high byte (the same value >> 8).
    """
    if mode.startswith("I;16"):
        return (values.astype(np.uint16) >> 8).astype(np.uint8)
    if mode == "I":
        return (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        values = values * 255
    return np.rint(np.clip(np.nan_to_num(values, nan=0.0), 0, 255)).astype(np.uint8)

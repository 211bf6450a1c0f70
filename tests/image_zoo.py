"""Image files of every awkward kind, written for the tests (real files, real codecs)."""

from __future__ import annotations

import io
import struct
import zlib
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


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG written chunk by chunk (PIL writes no 16-bit colour PNGs): uint16 pixels make a
    16-bit file, uint8 ones an 8-bit file; (H, W) gray, (H, W, 2) gray + alpha, (H, W, 3) RGB or
    (H, W, 4) RGBA."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    big_endian = np.ascontiguousarray(pixels, ">u2" if bit_depth == 16 else np.uint8)
    rows = big_endian.reshape(height, -1).view(np.uint8)  # (H, W * channels * bytes)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0: none
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes()))
        + _png_chunk(b"IEND", b"")
    )


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed 8-bit gray PNG header claiming width x height, with a single row of data:
    PIL sizes up a decompression bomb from the header alone."""
    one_row = png_bytes(np.zeros((1, 1), np.uint8))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return one_row[:8] + _png_chunk(b"IHDR", header) + one_row[8 + 25 :]  # IHDR chunk: 25 bytes


def jpeg_declaring(width: int, height: int, exif: bool) -> bytes:
    """A real 64 x 48 JPEG (with an EXIF block, orientation 1, when `exif`) whose frame header
    (SOF0) claims width x height: a decompression bomb by its header."""
    image = halves(64, 48)
    if exif:
        tags = image.getexif()
        tags[0x0112] = 1
        data = jpeg_bytes(image, exif=tags)
    else:
        data = jpeg_bytes(image)
    frame = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    return data[: frame + 5] + struct.pack(">HH", height, width) + data[frame + 9 :]


def gradient_16_bit(height: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 (height, 256), uint8 (height, 256)): column c holds 256 c + 255 - c, which is c
    in 8 bits (value >> 8; value / 257 rounded would give c - 1 from c = 128 on)."""
    column = np.arange(256)
    values = np.broadcast_to(256 * column + 255 - column, (height, 256)).astype(np.uint16)
    return values, np.broadcast_to(column, (height, 256)).astype(np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

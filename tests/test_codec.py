"""Decoding every kind of file, and the paper's resize + centre crop."""

import io

import numpy as np
import pytest
from image_zoo import BLUE, RED, exif_rotated_jpeg, halves, jpeg_bytes, write_zoo
from PIL import Image

from workloads.datasets import codec


def _stripes(width, height):
    """Black | white | black columns; the white middle three quarters hold the centre crop."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 8 : 7 * width // 8] = 255
    return pixels


def test_resize_short_side_and_center_crop():
    out = codec.resize_and_center_crop(_stripes(256, 128), 64)  # -> 128 x 64, columns 32..95
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.min() == 255  # only white is left: the crop is central, the black sides cut off
    tall = codec.resize_and_center_crop(
        np.ascontiguousarray(_stripes(256, 128).transpose(1, 0, 2)), 64
    )
    assert tall.min() == 255


def test_small_images_are_upscaled():
    out = codec.resize_and_center_crop(np.full((10, 20, 3), (10, 200, 30), np.uint8), 64)
    assert out.shape == (64, 64, 3)
    assert (out == (10, 200, 30)).all()


def test_fast_jpeg_path_decodes_exactly_like_pil():
    rng = np.random.default_rng(0)
    data = jpeg_bytes(Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)))
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(codec.decode_image(data), reference)


def test_large_jpegs_are_downscaled_while_decoding():
    smooth = np.linspace(0, 255, 1024, dtype=np.float32)
    pixels = np.stack(
        np.broadcast_arrays(smooth[None, :], smooth[:, None], 128 + 0 * smooth[None, :]), -1
    )
    data = jpeg_bytes(Image.fromarray(pixels.astype(np.uint8)))  # 1024 x 1024 gradient
    out = codec.decode_resize_center_crop(data, 128)  # decoded at 1/8 in the DCT domain
    reference = np.asarray(
        Image.fromarray(pixels.astype(np.uint8)).resize((128, 128), Image.Resampling.BILINEAR)
    )
    assert out.shape == (128, 128, 3)
    assert np.abs(out.astype(int) - reference.astype(int)).mean() < 2.0


def test_exif_orientation_is_applied():
    out = codec.decode_image(exif_rotated_jpeg())
    assert out.shape == (120, 80, 3)  # portrait, as shown
    assert np.abs(out[:50].mean(axis=(0, 1)) - RED).max() < 10  # red on top
    assert np.abs(out[-50:].mean(axis=(0, 1)) - BLUE).max() < 10


def test_every_kind_of_file(tmp_path):
    kinds = write_zoo(tmp_path)
    for name, convertible in kinds.items():
        data = (tmp_path / name).read_bytes()
        if not convertible:
            with pytest.raises(ValueError):
                codec.decode_resize_center_crop(data, 64)
            continue
        out = codec.decode_resize_center_crop(data, 64)
        assert out.shape == (64, 64, 3), name
        if name.startswith("g_"):  # grayscale: equal channels
            assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
            continue
        left, right = out[:, :20].mean(axis=(0, 1)), out[:, -20:].mean(axis=(0, 1))
        if name.startswith("h_"):  # rotated: red above blue instead of left of it
            left, right = out[:20].mean(axis=(0, 1)), out[-20:].mean(axis=(0, 1))
        assert np.abs(left - RED).max() < 25, (name, left)  # CMYK comes back with its colours
        assert np.abs(right - BLUE).max() < 25, (name, right)


def test_error_messages_name_the_problem():
    with pytest.raises(ValueError, match="empty file"):
        codec.decode_image(b"")
    good = jpeg_bytes(halves(64, 64))
    with pytest.raises(ValueError, match="(?i)premature end|truncated"):
        codec.decode_image(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not an image"):
        codec.decode_image(b"plain text")


def test_encode_decode_round_trip():
    pixels = np.asarray(halves(64, 64))
    back = codec.decode_jpeg(codec.encode_jpeg(pixels, 95))
    assert back.shape == (64, 64, 3) and np.abs(back.astype(int) - pixels).mean() < 3

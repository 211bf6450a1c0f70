"""Decoding every kind of file, and the paper's resize + centre crop."""

import io
import tracemalloc
import warnings

import numpy as np
import pytest
from image_zoo import (
    BLUE,
    RED,
    exif_rotated_jpeg,
    gradient_16_bit,
    halves,
    jpeg_bytes,
    jpeg_declaring,
    png_bytes,
    png_declaring,
    write_zoo,
)
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


def _decoders(size=64):
    return codec.decode_image, lambda data: codec.decode_resize_center_crop(data, size)


def test_decompression_bombs_are_value_errors_on_every_path():
    """Declared sizes over PIL's limit (2 x 89 M pixels) are refused from the header alone:
    the EXIF look-up of the libjpeg-turbo path included, which opens the file with PIL."""
    for data in (jpeg_declaring(60000, 60000, exif=True), png_declaring(100000, 100000)):
        for decode in _decoders():
            with pytest.raises(ValueError, match="(?i)decompression bomb"):
                decode(data)
    with pytest.raises(ValueError, match="60000 x 60000 = 3,600,000,000 pixels"):
        codec.decode_resize_center_crop(jpeg_declaring(60000, 60000, exif=False), 64)


def test_decompression_bomb_warnings_turned_errors_are_value_errors():
    bombs = [jpeg_declaring(10000, 10000, exif=e) for e in (True, False)]  # 100 M > 89 M pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for data in [*bombs, png_declaring(10000, 10000)]:
            for decode in _decoders():
                with pytest.raises(ValueError, match="DecompressionBombWarning"):
                    decode(data)


def test_malformed_files_of_every_format_raise_only_value_errors():
    """Bytes changed or cut at random in files of each format PIL reads: pixels or ValueError."""
    rng = np.random.default_rng(0)
    files = [exif_rotated_jpeg(), jpeg_bytes(halves(40, 30))]
    for kind in ("PNG", "GIF", "TIFF", "BMP", "WEBP", "ICO", "PPM", "TGA"):
        buffer = io.BytesIO()
        halves(40, 30).convert("P" if kind == "GIF" else "RGB").save(buffer, format=kind)
        files.append(buffer.getvalue())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns about corrupt EXIF blocks
        for good in files:
            for trial in range(60):
                data = bytearray(good[: rng.integers(1, len(good))] if trial % 4 == 0 else good)
                for at in rng.integers(0, min(len(data), 256), rng.integers(1, 4)):
                    data[at] = rng.integers(0, 256)
                try:
                    assert codec.decode_resize_center_crop(bytes(data), 16).shape == (16, 16, 3)
                except ValueError:
                    pass


def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped():
    values, expected = gradient_16_bit()  # (16, 256): column c -> c in 8 bits
    as_rgb = np.repeat(expected[..., None], 3, axis=2)
    np.testing.assert_array_equal(codec.decode_image(png_bytes(values)), as_rgb)  # PIL "I;16"
    crop = codec.decode_resize_center_crop(png_bytes(values), 16)  # no resize: columns 120..135
    np.testing.assert_array_equal(crop, as_rgb[:, 120:136])
    colour = np.stack([values, values // 2, 65535 - values], axis=-1)  # 16-bit RGB: PIL's "RGB"
    np.testing.assert_array_equal(codec.decode_image(png_bytes(colour)), colour >> 8)

    unit = (values / 65535).astype(np.float32)
    tiffs = {
        "I;16": (values, expected),
        "I": (values.astype(np.int32), expected),  # 16-bit data in 32-bit integers
        "F": (unit, np.rint(unit.astype(np.float64) * 255)),  # 0..1 -> 0..255
        "F ": (expected + np.float32(0.3), expected),  # already 0..255
    }
    for mode, (pixels, want) in tiffs.items():
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="TIFF")
        assert Image.open(buffer).mode == mode.strip()
        out = codec.decode_image(buffer.getvalue())
        np.testing.assert_array_equal(out, np.repeat(want[..., None], 3, axis=2), err_msg=mode)


def test_extreme_aspect_ratios_resize_only_their_centre():
    """An 8 x 20000 strip would be resized to 64 x 160000 (31 MB) to keep 64 x 64 of it."""
    strip = np.zeros((8, 20000, 3), np.uint8)
    strip[:, 9998:10002] = RED  # the middle half of the central 8 x 8
    tracemalloc.start()
    try:
        out = codec.resize_and_center_crop(strip, 64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (64, 64, 3) and peak < 2**20
    assert (out[:, 24:40] == RED).all() and (out[:, :8] == 0).all()  # the centre, in the centre
    tall = codec.resize_and_center_crop(np.ascontiguousarray(strip.transpose(1, 0, 2)), 64)
    assert np.abs(tall.astype(int) - out.transpose(1, 0, 2)).max() <= 1  # cv2 rounds x, y alike
    with pytest.raises(ValueError, match="no pixels"):
        codec.resize_and_center_crop(np.zeros((0, 5, 3), np.uint8), 64)


def test_encode_decode_round_trip():
    pixels = np.asarray(halves(64, 64))
    back = codec.decode_jpeg(codec.encode_jpeg(pixels, 95))
    assert back.shape == (64, 64, 3) and np.abs(back.astype(int) - pixels).mean() < 3


def test_a_batch_decoded_on_the_device_path_has_the_cpu_decoders_pixels():
    """`decode_batch` (the `device` decode place; nvJPEG on a GPU) decodes through TorchCodec,
    torchvision's successor, without torchvision's deprecation warning; on the CPU its pixels
    are libjpeg-turbo's, as the CPU decoder (simplejpeg) gives them."""
    import torch
    import torchcodec  # noqa: F401 - a dependency: the path under test

    from workloads.datasets.batch_decode import decode_batch

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(4)]
    jpegs = [codec.encode_jpeg(image, 90) for image in images]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        batch = decode_batch(
            [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs], "cpu"
        )
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (4, 48, 64, 3)
    for decoded, jpeg in zip(batch.numpy(), jpegs):
        reference = codec.decode_jpeg(jpeg).astype(int)
        assert np.abs(decoded.astype(int) - reference).mean() < 1.0

"""The paper's preprocessing and augmentation, exactly."""

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from workloads.alexnet import transforms as T


def _stripes(width, height):
    """Black | white | black columns; the white middle three quarters hold the centre crop."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, width // 8 : 7 * width // 8] = 255
    return Image.fromarray(pixels)


def test_resize_short_side_and_center_crop():
    out = T.resize_and_center_crop(_stripes(256, 128), 64)  # -> 128 x 64, keep columns 32..95
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out.min() == 255  # only white is left: the crop is central, the black sides cut off
    uncropped = np.asarray(_stripes(256, 128).resize((128, 64), Image.Resampling.BILINEAR))
    assert uncropped[:, :8].max() == 0  # (the sides were black after the same resize)
    tall = T.resize_and_center_crop(_stripes(256, 128).transpose(Image.Transpose.ROTATE_90), 64)
    assert tall.min() == 255


def test_small_images_are_upscaled():
    out = T.resize_and_center_crop(Image.new("RGB", (20, 10), (10, 200, 30)), 64)
    assert out.shape == (64, 64, 3)
    assert (out == (10, 200, 30)).all()


def test_decode_applies_exif_orientation_and_converts_to_rgb():
    pixels = np.zeros((10, 30, 3), np.uint8)  # wide image stored with "rotate 90" EXIF
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    decoded = T.decode_image(buffer.getvalue())
    assert decoded.mode == "RGB" and decoded.size == (10, 30)

    gray = io.BytesIO()
    Image.new("L", (8, 8), 77).save(gray, format="PNG")
    assert np.asarray(T.decode_image(gray.getvalue())).shape == (8, 8, 3)

    rgba = io.BytesIO()
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(rgba, format="PNG")  # fully transparent
    assert (np.asarray(T.decode_image(rgba.getvalue())) == 255).all()  # on white


def test_random_crops_cover_every_position_uniformly():
    crops = T.random_crops(np.random.default_rng(0), 20_000, image_size=10, crop_size=7)
    for offsets in (crops.tops, crops.lefts):
        assert offsets.min() == 0 and offsets.max() == 3  # both extremes: 0 .. S - C
        counts = np.bincount(offsets, minlength=4) / len(offsets)
        assert np.allclose(counts, 0.25, atol=0.02)
    assert abs(crops.flips.mean() - 0.5) < 0.02


def test_apply_crops_cuts_and_flips_exactly():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    crops = T.random_crops(rng, 6, 12, 8)
    crops = T.Crops(crops.tops, crops.lefts, np.array([True, False] * 3), 8)
    out = T.apply_crops(images, crops)
    assert out.shape == (6, 8, 8, 3)
    for i in range(6):
        t, l = crops.tops[i], crops.lefts[i]
        expected = images[i, t : t + 8, l : l + 8]
        if crops.flips[i]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out[i], expected)


def test_center_crop():
    images = np.arange(2 * 9 * 9 * 3, dtype=np.uint8).reshape(2, 9, 9, 3)
    out = T.apply_crops(images, T.center_crops(2, 9, 5))
    np.testing.assert_array_equal(out, images[:, 2:7, 2:7])


def test_ten_crops_match_torchvision_order():
    image = np.random.default_rng(2).integers(0, 256, size=(1, 11, 11, 3), dtype=np.uint8)
    ours = T.apply_crops(image, T.ten_crops(11, 7))  # one image, ten views
    chw = torch.from_numpy(image[0]).permute(2, 0, 1)
    theirs = [v.permute(1, 2, 0).numpy() for v in TF.ten_crop(chw, [7, 7])]
    assert len(T.TEN_CROP_VIEWS) == 10
    for view, (name, ours_view, their_view) in enumerate(zip(T.TEN_CROP_VIEWS, ours, theirs)):
        np.testing.assert_array_equal(ours_view, their_view, err_msg=f"view {view} ({name})")
    # torchvision's order: corners tl, tr, bl, br, centre; then the same five flipped.
    np.testing.assert_array_equal(ours[0], image[0, :7, :7])
    np.testing.assert_array_equal(ours[3], image[0, 4:, 4:])
    np.testing.assert_array_equal(ours[5], image[0, :7, 4:][:, ::-1])  # mirrored top-left
    np.testing.assert_array_equal(ours[9], image[0, 2:9, 2:9][:, ::-1])


def test_mean_subtraction_equals_subtracting_before_cropping():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    mean_image = images.astype(np.float32).mean(axis=0) / 255
    crops = T.random_crops(rng, 5, 16, 12)
    out = T.normalize(T.apply_crops(images, crops), T.apply_crops(mean_image[None], crops))
    reference = T.apply_crops(images.astype(np.float32) / 255 - mean_image, crops)
    assert out.shape == (5, 3, 12, 12) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference.transpose(0, 3, 1, 2), atol=1e-6)
    without_mean = T.normalize(T.apply_crops(images, crops))
    np.testing.assert_allclose(without_mean.max(), images.max() / 255, atol=1e-6)


def test_pca_noise_has_the_papers_distribution():
    std = 0.1
    offsets = T.pca_color_offsets(np.random.default_rng(4), 400_000, std=std)
    P, lam = T.IMAGENET_EIGENVECTORS.astype(np.float64), T.IMAGENET_EIGENVALUES.astype(np.float64)
    expected_cov = P @ np.diag((std * lam) ** 2) @ P.T  # Cov[P (alpha * lambda)]
    assert np.abs(offsets.mean(axis=0)).max() < 1e-4
    np.testing.assert_allclose(np.cov(offsets.T), expected_cov, rtol=0.02, atol=1e-7)


def test_pca_noise_is_one_offset_per_image_for_all_pixels():
    images = np.zeros((2, 3, 4, 4), np.float32)
    offsets = np.array([[0.1, -0.2, 0.3], [0.0, 0.5, -0.5]], np.float32)
    T.add_color_offsets(images, offsets)
    np.testing.assert_allclose(images[:, :, 2, 3], offsets)
    assert (images == images[:, :, :1, :1]).all()


def test_rgb_statistics_from_partial_sums():
    pixels = np.random.default_rng(5).random((10_000, 3)) * np.array([1.0, 0.5, 0.2])
    pixels[:, 1] += 0.3 * pixels[:, 0]
    halves = np.array_split(pixels, 2)  # two "blocks", merged
    values, vectors = T.rgb_statistics(
        sum(h.sum(axis=0) for h in halves), sum(h.T @ h for h in halves), len(pixels)
    )
    reference_values = np.sort(np.linalg.eigvalsh(np.cov(pixels.T, bias=True)))[::-1]
    np.testing.assert_allclose(values, reference_values, rtol=1e-4)
    cov = np.cov(pixels.T, bias=True)
    for k in range(3):
        np.testing.assert_allclose(cov @ vectors[:, k], values[k] * vectors[:, k], atol=1e-5)

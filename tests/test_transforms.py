"""The paper's augmentation and test views, exactly; keyed randomness."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from workloads.alexnet import transforms as T
from workloads.datasets.statistics import rgb_statistics


def test_random_crops_cover_every_position_uniformly():
    crops = T.random_crops(seed=0, epoch=0, ids=np.arange(20_000), image_size=10, crop_size=7)
    for offsets in (crops.tops, crops.lefts):
        assert offsets.min() == 0 and offsets.max() == 3  # both extremes: 0 .. S - C
        counts = np.bincount(offsets, minlength=4) / len(offsets)
        assert np.allclose(counts, 0.25, atol=0.02)
    assert abs(crops.flips.mean() - 0.5) < 0.02
    assert not T.random_crops(0, 0, np.arange(100), 10, 7, flip=False).flips.any()


def test_randomness_is_keyed_by_seed_epoch_and_image():
    ids = np.arange(1000)
    first = T.random_crops(seed=3, epoch=1, ids=ids, image_size=256, crop_size=224)
    again = T.random_crops(seed=3, epoch=1, ids=ids, image_size=256, crop_size=224)
    other_epoch = T.random_crops(seed=3, epoch=2, ids=ids, image_size=256, crop_size=224)
    other_seed = T.random_crops(seed=4, epoch=1, ids=ids, image_size=256, crop_size=224)
    np.testing.assert_array_equal(first.tops, again.tops)
    np.testing.assert_array_equal(first.flips, again.flips)
    assert (first.tops != other_epoch.tops).mean() > 0.9
    assert (first.tops != other_seed.tops).mean() > 0.9
    # The same image gets the same crop whatever batch or position it arrives in.
    order = np.random.default_rng(0).permutation(1000)
    shuffled = T.random_crops(seed=3, epoch=1, ids=ids[order], image_size=256, crop_size=224)
    np.testing.assert_array_equal(shuffled.lefts, first.lefts[order])
    offsets = T.pca_color_offsets(3, 1, ids)
    np.testing.assert_array_equal(T.pca_color_offsets(3, 1, ids[order]), offsets[order])


def test_apply_crops_cuts_and_flips_exactly_numpy_and_torch():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 12, 12, 3), dtype=np.uint8)
    crops = T.random_crops(1, 0, np.arange(6), 12, 8)
    crops = T.Crops(crops.tops, crops.lefts, np.array([True, False] * 3), 8)
    out = T.apply_crops(images, crops)
    assert out.shape == (6, 8, 8, 3)
    for i in range(6):
        top, left = crops.tops[i], crops.lefts[i]
        expected = images[i, top : top + 8, left : left + 8]
        if crops.flips[i]:
            expected = expected[:, ::-1]
        np.testing.assert_array_equal(out[i], expected)
    np.testing.assert_array_equal(T.apply_crops(torch.from_numpy(images), crops).numpy(), out)


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
    # torchvision's order: corners tl, tr, bl, br, centre; then the same five of the mirror.
    np.testing.assert_array_equal(ours[0], image[0, :7, :7])
    np.testing.assert_array_equal(ours[3], image[0, 4:, 4:])
    np.testing.assert_array_equal(ours[5], image[0, :7, 4:][:, ::-1])  # mirrored top-left
    np.testing.assert_array_equal(ours[9], image[0, 2:9, 2:9][:, ::-1])


def test_mean_subtraction_equals_subtracting_before_cropping():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    mean_image = (images.astype(np.float32).mean(axis=0) / 255).astype(np.float32)
    crops = T.random_crops(3, 0, np.arange(5), 16, 12)
    out = T.normalize(
        T.apply_crops(torch.from_numpy(images), crops),
        T.apply_crops(torch.from_numpy(mean_image)[None], crops),
    )
    reference = T.apply_crops(images.astype(np.float32) / 255 - mean_image, crops)
    assert out.shape == (5, 3, 12, 12) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference.transpose(0, 3, 1, 2), atol=1e-6)


def test_pca_noise_has_the_papers_distribution():
    std = 0.1
    offsets = T.pca_color_offsets(seed=4, epoch=0, ids=np.arange(400_000), std=std)
    P, lam = T.IMAGENET_EIGENVECTORS.astype(np.float64), T.IMAGENET_EIGENVALUES.astype(np.float64)
    expected_cov = P @ np.diag((std * lam) ** 2) @ P.T  # Cov[P (alpha * lambda)]
    assert np.abs(offsets.mean(axis=0)).max() < 1e-4
    np.testing.assert_allclose(np.cov(offsets.T), expected_cov, rtol=0.02, atol=1e-7)


def test_batch_transform_composes_crop_flip_noise_and_mean():
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 256, size=(8, 20, 20, 3), dtype=np.uint8))
    ids = np.arange(100, 108)
    mean = rng.random((20, 20, 3)).astype(np.float32)
    values, vectors = np.array([0.2, 0.02, 0.004], np.float32), np.eye(3, dtype=np.float32)
    transform = T.BatchTransform(16, mean, values, vectors, pca_noise_std=0.1, seed=9)

    out = transform.train(images, torch.from_numpy(ids), epoch=2)
    crops = T.random_crops(9, 2, ids, 20, 16)
    offsets = T.pca_color_offsets(9, 2, ids, values, vectors, 0.1)
    expected = (
        T.apply_crops(images.numpy() / np.float32(255) - mean, crops) + offsets[:, None, None]
    )
    np.testing.assert_allclose(out.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    assert not torch.equal(out, transform.train(images, torch.from_numpy(ids), epoch=3))

    center = transform.center(images)
    expected = (images.numpy() / np.float32(255) - mean)[:, 2:18, 2:18]
    np.testing.assert_allclose(center.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-6)

    ten = transform.ten_crop(images)  # (N, 10, 3, C, C)
    views = T.ten_crops(20, 16)
    for v in range(10):
        single = T.Crops(views.tops[v : v + 1], views.lefts[v : v + 1], views.flips[v : v + 1], 16)
        for i in range(8):
            expected = T.apply_crops(images.numpy()[i : i + 1] / np.float32(255) - mean, single)[0]
            np.testing.assert_allclose(ten[i, v].numpy(), expected.transpose(2, 0, 1), atol=1e-6)


def test_rgb_statistics_from_partial_sums():
    pixels = np.random.default_rng(5).random((10_000, 3)) * np.array([1.0, 0.5, 0.2])
    pixels[:, 1] += 0.3 * pixels[:, 0]
    halves = np.array_split(pixels, 2)  # two "blocks", merged
    values, vectors = rgb_statistics(
        sum(h.sum(axis=0) for h in halves), sum(h.T @ h for h in halves), len(pixels)
    )
    reference_values = np.sort(np.linalg.eigvalsh(np.cov(pixels.T, bias=True)))[::-1]
    np.testing.assert_allclose(values, reference_values, rtol=1e-4)
    cov = np.cov(pixels.T, bias=True)
    for k in range(3):
        np.testing.assert_allclose(cov @ vectors[:, k], values[k] * vectors[:, k], atol=1e-5)


def test_exported_classifier_equals_the_centre_view_through_the_model():
    from workloads.alexnet.export import Classifier
    from workloads.alexnet.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(input_size=56, width=0.25, stem_stride=2, num_classes=7))
    model.eval()
    rng = np.random.default_rng(0)
    mean = rng.random((64, 64, 3), dtype=np.float32)
    images = torch.from_numpy(rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    transform = T.BatchTransform(crop_size=56, mean_image=mean)
    with torch.no_grad():
        expected = model(transform.center(images))
        served = Classifier(model, 56, mean)(images)
        exported = torch.export.export(Classifier(model, 56, mean), (images,)).module()(images)
    assert served.shape == (3, 7)
    assert torch.equal(served, expected)
    torch.testing.assert_close(exported, expected)


def test_the_predictor_is_the_evaluation_view_through_the_model_and_saves_plain_files(tmp_path):
    """Encoded images and arrays in, the top-k of the centre view (or the ten views' mean
    softmax, as the paper's test scores them) out; saved and loaded back as JSON and tensors
    (`weights_only`), the same answers; too large and unreadable images refused before decoding."""
    import io

    from PIL import Image

    from workloads.alexnet.model import ModelConfig, build_model
    from workloads.alexnet.predictor import ImageTooLarge, Predictor, PredictorSpec
    from workloads.datasets.codec import decode_resize_center_crop

    torch.manual_seed(0)
    config = ModelConfig(input_size=56, width=0.25, stem_stride=2, num_classes=7)
    model = build_model(config).eval()
    rng = np.random.default_rng(0)
    mean = rng.random((64, 64, 3), dtype=np.float32)
    spec = PredictorSpec(config, prepared_size=64, classes=tuple("abcdefg"), top_k=3)
    predictor = Predictor(spec, model.state_dict(), mean)
    pixels = rng.integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    encoded = []
    for image in pixels:
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        encoded.append(png.getvalue())
    prepared = np.stack([predictor.image(item) for item in encoded])
    assert np.array_equal(prepared, np.stack([decode_resize_center_crop(e, 64) for e in encoded]))
    assert np.array_equal(prepared, np.stack([predictor.image(image) for image in pixels]))

    transform = T.BatchTransform(crop_size=56, mean_image=mean)
    with torch.no_grad():
        center = model(transform.center(torch.from_numpy(prepared))).softmax(1)
        views = transform.ten_crop(torch.from_numpy(prepared))  # (3, 10, 3, 56, 56)
        ten = model(views.flatten(0, 1)).softmax(1).view(3, 10, -1).mean(1)
    torch.testing.assert_close(predictor.probabilities(prepared), center)
    labels, probabilities = predictor.top(prepared)
    assert labels == [[spec.classes[i] for i in row] for row in center.topk(3).indices.tolist()]
    loaded = Predictor.load(predictor.save(tmp_path / "predictor")).replace(ten_crop=True)
    torch.testing.assert_close(loaded.probabilities(prepared), ten)

    small = predictor.replace(max_pixels=80 * 100)
    with pytest.raises(ImageTooLarge, match="over the limit of 8,000"):
        small.image(encoded[0])
    with pytest.raises(ValueError, match="not an image"):
        predictor.image(b"not an image at all")
    with pytest.raises(ValueError, match="empty image"):
        predictor.image(b"")

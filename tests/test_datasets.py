"""The image-folder reader and the generated dataset."""

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from workloads.datasets.image_folder import find_classes, is_utf8, list_image_folder, printable
from workloads.datasets.synthetic import SyntheticConfig, class_names, generate


def _write(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def test_class_index_is_sorted_class_name_order(tmp_path):
    for name in ("zebra", "ant", "moth"):
        _write(tmp_path / "train" / name / "b.jpg")
        _write(tmp_path / "train" / name / "a.png")
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    _write(tmp_path / "val" / "moth" / "x.JPEG")

    train = list_image_folder(tmp_path, "train")
    assert train.classes == ["ant", "moth", "zebra"]
    assert [p.rsplit("/", 2)[-2:] for p in train.paths][:2] == [["ant", "a.png"], ["ant", "b.jpg"]]
    assert train.labels == [0, 0, 1, 1, 2, 2]

    val = list_image_folder(tmp_path, "val", classes=train.classes)  # the training index
    assert val.labels == [1] and val.paths[0].endswith("val/moth/x.JPEG")


def test_validation_class_missing_from_training_is_an_error(tmp_path):
    _write(tmp_path / "train" / "ant" / "a.jpg")
    _write(tmp_path / "val" / "bee" / "a.jpg")
    with pytest.raises(ValueError, match="'bee' is not among the training classes"):
        list_image_folder(tmp_path, "val", classes=find_classes(tmp_path))


def test_missing_split_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no 'train' folder"):
        list_image_folder(tmp_path, "train")


def test_training_classes_without_images_are_an_error_when_required(tmp_path):
    _write(tmp_path / "train" / "ant" / "a.jpg")
    (tmp_path / "train" / "bee").mkdir()
    (tmp_path / "train" / "cow").mkdir()
    (tmp_path / "train" / "cow" / "notes.txt").write_text("not an image")
    listed = list_image_folder(tmp_path, "train")
    assert listed.classes == ["ant", "bee", "cow"]
    assert listed.classes_without_images() == ["bee", "cow"]
    with pytest.raises(ValueError, match=r"with no image files: bee, cow \(2 of 3\)"):
        list_image_folder(tmp_path, "train", require_every_class=True)


def test_names_that_are_not_utf8_print_as_escapes():
    name = os.fsdecode(b"/data/bad\xff\xfe.jpg")  # as os.listdir returns it on Linux
    assert not is_utf8(name) and is_utf8("caf\u00e9.jpg")
    assert printable(name) == "/data/bad\\xff\\xfe.jpg"
    assert printable("caf\u00e9.jpg") == "caf\u00e9.jpg"


def _digest(root):
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.jpg")):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_synthetic_dataset_layout_and_determinism(tmp_path):
    config = SyntheticConfig(num_classes=3, train_per_class=4, val_per_class=2, seed=5)
    first = generate(tmp_path / "a", config)
    second = generate(tmp_path / "b", config)
    other_seed = generate(
        tmp_path / "c", SyntheticConfig(num_classes=3, train_per_class=4, val_per_class=2, seed=6)
    )

    train = list_image_folder(first, "train")
    assert train.classes == class_names(3) == ["00-disc", "01-square", "02-triangle"]
    assert len(train) == 12 and len(list_image_folder(first, "val", train.classes)) == 6
    assert _digest(first) == _digest(second) != _digest(other_seed)

    sizes = set()
    for path in train.paths:
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            sizes.add(image.size)
            assert 0.75 <= image.size[0] / image.size[1] <= 4 / 3 + 0.01
    assert len(sizes) > 6  # varied sizes and aspect ratios


def test_synthetic_dataset_is_generated_once(tmp_path):
    config = SyntheticConfig(num_classes=2, train_per_class=2, val_per_class=1)
    root = generate(tmp_path / "d", config)
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")}
    generate(tmp_path / "d", config)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.jpg")} == stamp
    bigger = generate(
        tmp_path / "d", SyntheticConfig(num_classes=2, train_per_class=3, val_per_class=1)
    )
    assert len(list_image_folder(bigger, "train")) == 6  # a new config regenerates


def test_synthetic_classes_differ_in_colour_and_shape():
    """Class means differ far more than images of one class do: the task is learnable."""
    from workloads.datasets.synthetic import render_image

    config = SyntheticConfig(num_classes=4)

    def features(c, i):
        image = np.asarray(render_image(config, "train", c, i).resize((32, 32)), np.float32)
        return image.reshape(-1, 3).max(axis=0)  # the brightest colour: the shape's colour

    means = np.array([np.mean([features(c, i) for i in range(20)], axis=0) for c in range(4)])
    gaps = [np.abs(means[a] - means[b]).max() for a in range(4) for b in range(a + 1, 4)]
    assert min(gaps) > 40

"""Sources that must cost one reject or one clear error, never a failed job or a traceback.

Runs without Ray: `write_shard` (one shard task's work) and `list_source` are called directly.
"""

import csv
import io
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from image_zoo import gradient_16_bit, halves, jpeg_bytes, jpeg_declaring, png_bytes
from PIL import Image
from scipy.io import savemat

from orchestrator.common.errors import ConfigError
from orchestrator.data.prepare import PrepareConfig, list_source
from orchestrator.data.shards import Shard, write_shard


def _write_bytes_named(folder, name: bytes, data: bytes) -> str:
    """Writes `folder/name`, names as raw bytes (maybe not UTF-8); returns the path as a str, as
    `os.listdir` would give it (surrogate escapes for the bytes that are not UTF-8)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as handle:
        handle.write(data)
    return os.fsdecode(path)


def test_write_shard_rejects_bad_names_and_bad_files_and_keeps_the_rest(tmp_path):
    root, folder = tmp_path / "source", tmp_path / "source" / "train" / "cat"
    good = jpeg_bytes(halves(80, 60))
    files = {
        b"a_good.jpg": good,
        b"bad\xff.jpg": good,  # a fine image under a name that is not UTF-8
        b"c_bomb.jpg": jpeg_declaring(60000, 60000, exif=True),
        b"d_truncated.jpg": good[: len(good) // 2],
        b"e_16_bit.png": png_bytes(gradient_16_bit(64)[0]),  # 64 x 256, 16-bit gray
    }
    try:
        paths = [_write_bytes_named(folder, name, data) for name, data in files.items()]
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    shard = Shard("train", 0, 1, ids=list(range(5)), paths=paths, labels=[0] * 5)
    out = tmp_path / "out"
    for split_folder in ("_work", "train"):  # as run_prepare makes them
        (out / split_folder).mkdir(parents=True)
    result = write_shard(shard, str(out), str(root), image_size=32, encoding="raw", quality=90)

    rejects = dict(result["rejects"])
    names = {os.path.basename(path): reason for path, reason in rejects.items()}
    assert names.keys() == {"bad\\xff.jpg", "c_bomb.jpg", "d_truncated.jpg"}
    assert names["bad\\xff.jpg"] == "file name is not valid UTF-8"
    assert str(folder / "bad\\xff.jpg") in rejects  # the full path, printable
    assert "decompression bomb" in names["c_bomb.jpg"]
    assert result["images"] == 2 and result["per_class"] == {"0": 2}

    buffer = io.StringIO()  # rejects.csv is written from these, as UTF-8
    csv.writer(buffer).writerows(("train", path, reason) for path, reason in result["rejects"])
    buffer.getvalue().encode("utf-8")
    saved = json.loads((out / "_work" / f"train-{shard.name}.json").read_text(encoding="utf-8"))
    assert saved["rejects"] == [list(pair) for pair in result["rejects"]]

    rows = pq.read_table(out / "train" / f"{shard.name}.parquet").to_pylist()
    assert [row["path"] for row in rows] == ["train/cat/a_good.jpg", "train/cat/e_16_bit.png"]
    gray = np.frombuffer(rows[1]["image"], np.uint8).reshape(32, 32, 3)
    assert 100 < gray.mean() < 156 and (gray == 255).mean() < 0.05  # not saturated


def _image(path, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def _tree(root, files):
    for name in files:
        if name.endswith("/"):
            (root / name).mkdir(parents=True, exist_ok=True)
        elif name.endswith(".txt"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("not an image")
        else:
            _image(root / name)


@pytest.mark.parametrize(
    "files, message",
    [
        (["val/a/1.jpg"], r"no 'train' folder in .*expected .*/train/<class>/"),
        (["train/", "val/a/1.jpg"], r"train has no class folders"),
        (["train/a/notes.txt", "val/a/1.jpg"], r"no image files under .*/train/<class>/"),
        (["train/a/1.jpg", "train/b/", "train/c/x.txt"], r"no image files: b, c \(2 of 3\)"),
        (["train/a/1.jpg"], r"no 'val' folder in .*expected .*/val/<class>/"),
        (["train/a/1.jpg", "val/"], r"no image files under .*/val/<class>/"),
        (["train/a/1.jpg", "val/b/1.jpg"], r"'b' is not among the training classes \(1: a\)"),
    ],
    ids=[
        "no-train",
        "no-train-classes",
        "no-train-images",
        "empty-train-classes",
        "no-val",
        "empty-val",
        "val-class-not-in-train",
    ],
)
def test_bad_image_folders_are_one_line_config_errors(tmp_path, files, message):
    _tree(tmp_path, files)
    with pytest.raises(ConfigError, match=message) as error:
        list_source(PrepareConfig(root=str(tmp_path)))
    assert str(error.value).startswith("prepare.root: ") and "\n" not in str(error.value)


def test_validation_classes_may_be_missing_or_empty(tmp_path):
    _tree(tmp_path, ["train/a/1.jpg", "train/b/1.jpg", "train/c/1.jpg", "val/b/1.jpg", "val/c/"])
    train, val = list_source(PrepareConfig(root=str(tmp_path)))
    assert train.classes == val.classes == ["a", "b", "c"] and val.labels == [1]


def test_class_folder_names_that_are_not_utf8_are_config_errors(tmp_path):
    _tree(tmp_path, ["train/a/1.jpg", "val/a/1.jpg"])
    try:
        class_folder = os.path.join(os.fsencode(tmp_path), b"train", b"b\xff")
        _write_bytes_named(class_folder, b"1.jpg", jpeg_bytes(halves(8, 8)))
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    with pytest.raises(ConfigError, match=r"must be valid UTF-8.*rename b\\xff"):
        list_source(PrepareConfig(root=str(tmp_path)))


WNIDS = ["n01440764", "n01443537"]


@pytest.fixture
def flat_imagenet(tmp_path):
    root = tmp_path / "ILSVRC2012"
    _tree(root, [f"train/{w}/{w}_0.JPEG" for w in WNIDS])
    _tree(root, [f"val/ILSVRC2012_val_0000000{i}.JPEG" for i in (1, 2)])
    return root


def test_imagenet_layout_errors_are_config_errors(flat_imagenet):
    root = flat_imagenet
    config = PrepareConfig(source="imagenet", root=str(root))
    with pytest.raises(ConfigError, match="LOC_val_solution.csv or .*prepare.val_labels"):
        list_source(config)

    (root / "ILSVRC2012_validation_ground_truth.txt").write_text("449\n450\n")
    (root / "meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(ConfigError, match="meta.mat: not the devkit's meta.mat"):
        list_source(config)

    synsets = np.zeros(2, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    synsets[0], synsets[1] = (449, WNIDS[0]), (450, WNIDS[1])
    savemat(root / "meta.mat", {"synsets": synsets})
    train, val = list_source(config)
    assert val.labels == [0, 1]
    (root / "ILSVRC2012_validation_ground_truth.txt").write_text("449\n7\n")
    with pytest.raises(ConfigError, match=r"ground_truth.txt:2: got '7'; allowed: an ILSVRC2012"):
        list_source(config)

    (root / "ILSVRC2012_validation_ground_truth.txt").unlink()
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,\n"
    )
    with pytest.raises(
        ConfigError, match=r"LOC_val_solution.csv:2: ILSVRC2012_val_00000001 has no"
    ):
        list_source(config)

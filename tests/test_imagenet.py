"""ILSVRC-2012's three validation layouts give the same (file, class) pairs."""

import csv
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from workloads.datasets.imagenet import list_imagenet, list_validation, read_devkit_mapping

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: class index 0, 1, 2
DEVKIT_IDS = {"n01440764": 449, "n01443537": 450, "n01484850": 442}  # not sorted-wnid order
VAL_LABELS = ["n01484850", "n01440764", "n01443537", "n01484850", "n01440764"]


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path, format="JPEG")


@pytest.fixture
def ilsvrc(tmp_path):
    root = tmp_path / "ILSVRC2012"
    for wnid in WNIDS:
        for i in range(2):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG")
    names = [f"ILSVRC2012_val_{i:08d}" for i in range(1, len(VAL_LABELS) + 1)]
    for name in names:
        _image(root / "val" / f"{name}.JPEG")
    return root, names


def _pairs(images):
    return [
        (p.rsplit("/", 1)[-1], images.classes[label])
        for p, label in zip(images.paths, images.labels)
    ]


def test_three_validation_layouts_agree(ilsvrc, tmp_path):
    root, names = ilsvrc
    expected = sorted((f"{n}.JPEG", w) for n, w in zip(names, VAL_LABELS))

    # (a) flat files + LOC_val_solution.csv (Kaggle), rows in any order
    with open(root / "LOC_val_solution.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ImageId", "PredictionString"])
        for name, wnid in reversed(list(zip(names, VAL_LABELS))):
            writer.writerow([name, f"{wnid} 10 20 30 40 {wnid} 1 2 3 4"])
    train, val_a = list_imagenet(root)
    assert train.classes == WNIDS and len(train) == 6
    (root / "LOC_val_solution.csv").unlink()

    # (b) flat files + the devkit's ground truth (devkit ids) + meta.mat
    devkit = root / "devkit" / "data"
    devkit.mkdir(parents=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "\n".join(str(DEVKIT_IDS[w]) for w in VAL_LABELS) + "\n"
    )
    synsets = np.zeros(4, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, (wnid, ident) in enumerate(DEVKIT_IDS.items()):
        synsets[i] = (ident, wnid, 0)
    synsets[3] = (1001, "n00001740", 5)  # an inner node of the hierarchy, ignored
    savemat(devkit / "meta.mat", {"synsets": synsets})
    _, val_b = list_imagenet(root)
    mapping_txt = tmp_path / "mapping.txt"
    mapping_txt.write_text(
        "".join(f"{i} {w}\n" for i, w in read_devkit_mapping(devkit / "meta.mat").items())
    )
    val_b_txt = list_validation(root, WNIDS, mapping_file=str(mapping_txt))
    shutil.rmtree(root / "devkit")

    # (c) val/<wnid>/ folders
    for name, wnid in zip(names, VAL_LABELS):
        (root / "val" / wnid).mkdir(exist_ok=True)
        (root / "val" / f"{name}.JPEG").rename(root / "val" / wnid / f"{name}.JPEG")
    _, val_c = list_imagenet(root)

    assert sorted(_pairs(val_a)) == expected
    assert sorted(_pairs(val_b)) == expected
    assert sorted(_pairs(val_b_txt)) == expected
    assert sorted(_pairs(val_c)) == expected
    assert val_a.labels[val_a.paths.index(str(root / "val" / "ILSVRC2012_val_00000001.JPEG"))] == 2


def test_flat_validation_without_labels_says_what_is_missing(ilsvrc):
    root, _ = ilsvrc
    with pytest.raises(
        FileNotFoundError, match="LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt"
    ):
        list_imagenet(root)
    (root / "ILSVRC2012_validation_ground_truth.txt").write_text("449\n" * 5)
    with pytest.raises(FileNotFoundError, match="mapping"):
        list_imagenet(root)


def test_devkit_mapping_from_text_names_bad_lines(tmp_path):
    bad = tmp_path / "mapping.txt"
    bad.write_text("1 n01440764\nnonsense\n")
    with pytest.raises(ValueError, match="mapping.txt:2"):
        read_devkit_mapping(bad)

"""ILSVRC-2012 as it comes: `train/<wnid>/*.JPEG` and one of three validation layouts.

Validation, whichever is there (looked for in this order):
(c) `val/<wnid>/*.JPEG` folders (e.g. after the usual `valprep.sh`);
(a) flat `val/*.JPEG` with `LOC_val_solution.csv` (Kaggle): the class is the first token of each
    row's `PredictionString`;
(b) flat `val/*.JPEG` with the devkit's `ILSVRC2012_validation_ground_truth.txt`: one ILSVRC2012_ID
    (1..1000, the devkit's order, *not* sorted-wnid order) per line for the files in name order,
    plus the id -> wnid mapping, read from the devkit's `meta.mat` (with scipy) or from a text file
    of `<ILSVRC2012_ID> <wnid>` lines. To make that text file from meta.mat:
    `python -c "from workloads.datasets.imagenet import read_devkit_mapping as r; \
    [print(i, w) for i, w in sorted(r('meta.mat').items())]" > ILSVRC2012_mapping.txt`

Label files are looked for in the dataset root, its parent, and `<root>/devkit/data`, or given
explicitly. Class index = position of the wnid in sorted order of the training classes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from workloads.datasets.image_folder import ImageList, find_classes, image_files, list_image_folder

LOC_SOLUTION = "LOC_val_solution.csv"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META_MAT = "meta.mat"
MAPPING_TXT = "ILSVRC2012_mapping.txt"


def _existing(path: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _find(root: Path, name: str) -> Path | None:
    """`name` in the dataset root, its parent or the devkit's folders."""
    for folder in (root, root.parent, root / "devkit" / "data", root / "devkit"):
        if (folder / name).is_file():
            return folder / name
    return None


def read_devkit_mapping(path: str | Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid, from the devkit's meta.mat or a `<id> <wnid>` text file.

    Raises ValueError naming the file for anything unreadable in it.
    """
    path = Path(path)
    if path.suffix == ".mat":
        from scipy.io import loadmat

        try:
            synsets = loadmat(str(path), squeeze_me=True)["synsets"]
            return {
                int(s["ILSVRC2012_ID"]): str(s["WNID"])
                for s in synsets
                if int(s["ILSVRC2012_ID"]) <= 1000  # the rest are the hierarchy's inner nodes
            }
        except Exception as error:  # scipy raises many types for a file that is not meta.mat
            raise ValueError(
                f"{path}: not the devkit's meta.mat (a 'synsets' table with ILSVRC2012_ID and "
                f"WNID): {type(error).__name__}: {error}"
            ) from None
    mapping = {}
    for number, line in enumerate(_read_lines(path), 1):
        if line.strip():
            try:
                ident, wnid = line.split()
                mapping[int(ident)] = wnid
            except ValueError:
                raise ValueError(f"{path}:{number}: expected '<ILSVRC2012_ID> <wnid>'") from None
    return mapping


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (not UTF-8)") from None


def _flat_files(val_dir: Path) -> list[Path]:
    return [Path(path) for path in image_files(val_dir)]


def _labelled(pairs: list[tuple[Path, str]], classes: list[str], source: Path) -> ImageList:
    index = {wnid: i for i, wnid in enumerate(classes)}
    unknown = sorted({wnid for _, wnid in pairs if wnid not in index})
    if unknown:
        raise ValueError(f"{source}: classes not among the training classes: {unknown[:5]}")
    return ImageList(
        paths=[str(p) for p, _ in pairs],
        labels=[index[wnid] for _, wnid in pairs],
        classes=list(classes),
    )


def list_validation(
    root: str | Path,
    classes: list[str],
    labels_file: str | None = None,
    mapping_file: str | None = None,
) -> ImageList:
    """The validation split in whichever layout is present (see the module docstring)."""
    root = Path(root)
    val_dir = root / "val"
    if not val_dir.is_dir():
        raise FileNotFoundError(
            f"no 'val' folder in {root} (expected {val_dir}/ holding the validation images, "
            "flat or in <wnid>/ folders)"
        )
    if any(p.is_dir() for p in val_dir.iterdir()) and labels_file is None:
        return list_image_folder(root, "val", classes=classes)  # layout (c)

    files = _flat_files(val_dir)
    if labels_file is not None:
        explicit = _existing(labels_file)
        solution, truth = (explicit, None) if explicit.suffix == ".csv" else (None, explicit)
    else:
        solution, truth = _find(root, LOC_SOLUTION), _find(root, GROUND_TRUTH)
    if solution is not None:
        return _from_solution_csv(solution, files, classes)  # layout (a)
    if truth is None:
        raise FileNotFoundError(
            f"{val_dir} holds files, not class folders, and no {LOC_SOLUTION} or {GROUND_TRUTH} "
            f"was found in {root}, its parent or {root}/devkit/data: pass the labels file"
        )
    if mapping_file is not None:
        mapping_path = _existing(mapping_file)
    else:
        mapping_path = _find(root, META_MAT) or _find(root, MAPPING_TXT)
    if mapping_path is None:
        raise FileNotFoundError(
            f"{truth} holds devkit ids: the id -> wnid mapping ({META_MAT} or {MAPPING_TXT}) "
            "was not found; pass it"
        )
    mapping = read_devkit_mapping(mapping_path)
    ids = []
    for number, line in enumerate(_read_lines(truth), 1):
        if line.strip():
            if not line.strip().isdigit() or int(line) not in mapping:
                raise ValueError(
                    f"{truth}:{number}: got {line.strip()!r}; allowed: an ILSVRC2012_ID of "
                    f"{mapping_path} (1..1000)"
                )
            ids.append(int(line))
    if len(ids) != len(files):
        raise ValueError(f"{truth} has {len(ids)} labels for {len(files)} files in {val_dir}")
    return _labelled([(p, mapping[i]) for p, i in zip(files, ids)], classes, truth)  # layout (b)


def _from_solution_csv(solution: Path, files: list[Path], classes: list[str]) -> ImageList:
    by_stem = {p.stem: p for p in files}
    pairs = []
    with open(solution, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.DictReader(handle)
        if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
            raise ValueError(
                f"{solution}: got columns {reader.fieldnames}; expected ImageId,PredictionString"
            )
        for number, row in enumerate(reader, 2):
            path = by_stem.get(row["ImageId"])
            if path is None:
                raise FileNotFoundError(f"{solution}: {row['ImageId']} has no file in val/")
            prediction = (row["PredictionString"] or "").split()  # "n01751748 x y x y ..."
            if not prediction:
                raise ValueError(f"{solution}:{number}: {row['ImageId']} has no class")
            pairs.append((path, prediction[0]))
    return _labelled(sorted(pairs), classes, solution)


def list_imagenet(
    root: str | Path, labels_file: str | None = None, mapping_file: str | None = None
) -> tuple[ImageList, ImageList]:
    """(train, val) of an ILSVRC-style tree; the class count comes from `train/`, every class of
    which must hold images."""
    classes = find_classes(root, "train")
    train = list_image_folder(root, "train", classes=classes, require_every_class=True)
    return train, list_validation(root, classes, labels_file, mapping_file)

"""The on-disk layout `<root>/<split>/<class>/<image>`; class index = sorted class-name order."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class ImageList:
    """Files of one split with their labels, and the class names in index order."""

    paths: list[str]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def classes_without_images(self) -> list[str]:
        """Class names that no file of this split is labelled with, in index order."""
        present = set(self.labels)
        return [name for index, name in enumerate(self.classes) if index not in present]


def printable(path: str) -> str:
    """`path` as valid UTF-8 text. On Linux a file name is bytes; those that are not UTF-8 reach
    Python as surrogate escapes (b'bad\\xff.jpg' -> 'bad\\udcff.jpg'), which cannot be encoded
    (into Parquet, CSV, JSON for humans): they are shown as the escape `\\xff` instead."""
    try:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name produced
        return path.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8(name: str) -> bool:
    """Whether `name` (a str from the file system) was valid UTF-8 on disk."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def image_files(folder: Path) -> list[str]:
    """The image files directly in `folder` (by suffix, `IMAGE_SUFFIXES`), as absolute paths
    under `folder` resolved once, sorted by name. (A file that is a symlink keeps its name in the
    tree. One `resolve()` per file, a few system calls each, took 60 us: 80 s for ImageNet.)"""
    folder = folder.resolve()
    with os.scandir(folder) as entries:
        names = sorted(
            entry.name
            for entry in entries
            if os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file()
        )
    return [os.path.join(folder, name) for name in names]


def relative_path(path: str, root: str) -> str:
    """`path` relative to `root` (both absolute, resolved): `os.path.relpath`, without its
    per-call normalisation when `path` lies under `root`, as listed paths do."""
    prefix = root.rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, root)


def find_classes(root: str | Path, split: str = "train") -> list[str]:
    """Sorted class folder names of `<root>/<split>`; a name that is not UTF-8 is an error."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no '{split}' folder in {root} (expected {split_dir}/<class>/...)")
    classes = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class folders (expected {split_dir}/<class>/)")
    bad = [printable(name) for name in classes if not is_utf8(name)]
    if bad:
        raise ValueError(
            f"{printable(str(split_dir))}: class folder names must be valid UTF-8 (they name the "
            f"classes in the output); rename {', '.join(bad[:5])}"
        )
    return classes


def list_image_folder(
    root: str | Path,
    split: str,
    classes: list[str] | None = None,
    require_every_class: bool = False,
) -> ImageList:
    """Every image file under `<root>/<split>/<class>/`, sorted by (class, file name).

    `classes` fixes the class index (pass the training split's classes when listing validation);
    a validation class folder that is not among them is an error, a missing or empty one is
    allowed. `require_every_class` (the training split): a class with no image files is an
    error, since the model would get an output for a class it never sees. Files are chosen by
    suffix (`IMAGE_SUFFIXES`).
    """
    split_dir = Path(root) / split
    classes = classes if classes is not None else find_classes(root, split)
    index = {name: i for i, name in enumerate(classes)}
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no '{split}' folder in {root} (expected {split_dir}/<class>/...)")
    paths, labels = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        if class_dir.name not in index:
            known = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
            raise ValueError(
                f"{printable(str(class_dir))}: class '{printable(class_dir.name)}' is not among "
                f"the training classes ({len(classes)}: {known}); each needs a train/ folder too"
            )
        files = image_files(class_dir)
        paths += files
        labels += [index[class_dir.name]] * len(files)
    if not paths:
        suffixes = " ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no image files under {split_dir}/<class>/ (suffixes: {suffixes})")
    images = ImageList(paths=paths, labels=labels, classes=list(classes))
    empty = images.classes_without_images()
    if require_every_class and empty:
        raise ValueError(
            f"{printable(str(split_dir))}: class folders with no image files: "
            f"{', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''} ({len(empty)} of "
            f"{len(classes)}); every training class needs images: add some or remove the folder"
        )
    return images

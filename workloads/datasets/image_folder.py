"""The on-disk layout `<root>/<split>/<class>/<image>`; class index = sorted class-name order."""

from __future__ import annotations

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


def find_classes(root: str | Path, split: str = "train") -> list[str]:
    """Sorted class folder names of `<root>/<split>`."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no '{split}' folder in {root} (expected {split_dir}/<class>/...)")
    classes = sorted(
        p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not classes:
        raise FileNotFoundError(f"{split_dir} has no class folders")
    return classes


def list_image_folder(root: str | Path, split: str, classes: list[str] | None = None) -> ImageList:
    """Every image file under `<root>/<split>/<class>/`, sorted by (class, file name).

    `classes` fixes the class index (pass the training split's classes when listing validation);
    a validation class folder that is not among them is an error, a missing one is allowed.
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
            raise ValueError(
                f"{class_dir}: class '{class_dir.name}' is not among the training classes"
            )
        for path in sorted(class_dir.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(path.resolve()))
                labels.append(index[class_dir.name])
    if not paths:
        raise FileNotFoundError(f"no image files under {split_dir}/<class>/")
    return ImageList(paths=paths, labels=labels, classes=list(classes))

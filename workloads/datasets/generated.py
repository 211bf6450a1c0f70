"""Folders of generated images (the demo's shapes, the benchmarks' photo corpus) carry a marker
file: the only folders a generator ever replaces; any other non-empty folder is refused."""

from __future__ import annotations

import json
from pathlib import Path

MANIFEST = "synthetic.json"  # marks a folder as generated here
GENERATOR = "alexnet-ray synthetic"


def replaceable(root: Path, wanted: dict) -> bool:
    """False when `root` already holds what a generator with settings `wanted` writes (nothing
    to do); True when it may write there: `root` is missing, empty, or generated here with other
    settings. Raises ValueError for a folder of someone else's."""
    marker = _read_marker(root)
    if marker is not None and marker.get("config") == wanted:
        return False
    if marker is None:
        _refuse_foreign(root)
    return True


def mark(root: Path, wanted: dict, **facts) -> None:
    """Mark `root` as generated with settings `wanted` (and `facts`, for a reader)."""
    marker = {"generator": GENERATOR, "config": wanted, **facts}
    (root / MANIFEST).write_text(json.dumps(marker, indent=2))


def _read_marker(root: Path) -> dict | None:
    """The marker of a folder generated here (its MANIFEST), or None for any other folder."""
    try:
        marker = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(marker, dict) and {"num_classes", "quality"} <= set(marker):
        return {"config": marker}  # a photo corpus marked before GENERATOR existed
    if not isinstance(marker, dict) or "config" not in marker:
        return None
    # Markers written before GENERATOR existed hold exactly these keys
    if marker.get("generator", GENERATOR) != GENERATOR:
        return None
    return marker


def _refuse_foreign(root: Path) -> None:
    """Raise unless `root` is missing or an empty folder: never delete what we did not write."""
    if root.is_dir() and not any(root.iterdir()):
        return
    if root.exists():
        raise ValueError(
            f"{root} is not empty and holds no {MANIFEST}: it is not a dataset generated here, "
            "and generating would replace it; choose another folder (a missing or empty one)"
        )

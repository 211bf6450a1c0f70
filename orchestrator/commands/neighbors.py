"""`neighbors`: the training images nearest to your own images in a trained model's fc7 space
(the paper's Figure 4, right), searched with Ray Data over the prepared training shards."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import add_model, add_overrides
from orchestrator.common.errors import InputError

MAX_NEIGHBORS = 50  # per image: a row of the drawing, and the images read back for it
MAX_DRAWN = 16  # images (rows) in the --out drawing


def add_arguments(parser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files (any format prepare reads)",
    )
    add_model(parser)
    parser.add_argument(
        "--count", type=int, default=5, help=f"neighbours per image (1..{MAX_NEIGHBORS}, default 5)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="also draw the images and their neighbours into this PNG",
    )
    add_overrides(parser)


def run(args) -> None:
    search(args.model, args.images, args.count, args.out, args.overrides)


def search(
    model_uri: str, images: list[Path], count: int, out: Path | None, overrides: list[str]
) -> list:
    """Print (and with `out` draw, for the first MAX_DRAWN images) the `count` training images
    nearest to each of `images`; returns them (a list of `scoring.Neighbor` per image, without
    their pixels), nearest first."""
    if not 1 <= count <= MAX_NEIGHBORS:
        raise InputError(f"--count: got {count}; allowed: 1..{MAX_NEIGHBORS}")
    for path in images:
        if not path.is_file():
            raise InputError(f"IMAGE: {path} is not a file")
    import dataclasses

    import numpy as np

    from orchestrator.analysis.figures import save_neighbors
    from orchestrator.analysis.scoring import nearest_training_images
    from orchestrator.analysis.trained import open_trained
    from orchestrator.common.redact import redact_text

    trained = open_trained(model_uri, overrides)
    classes = trained.data.classes
    found, drawn = [], ([], [], [])  # drawn: pixels, titles, neighbours of the first images
    for files, pixels, probabilities, neighbors in nearest_training_images(trained, images, count):
        for path, image, p, nearest in zip(files, pixels, probabilities, neighbors, strict=True):
            title = _print(path, p, nearest, classes)
            if out is not None and len(drawn[0]) < MAX_DRAWN:
                for rows, value in zip(drawn, (image, title, nearest)):
                    rows.append(value)
            found.append([dataclasses.replace(n, image=None) for n in nearest])
    if out is not None:
        title = f"nearest training images in fc7 space ({redact_text(trained.uri)})"
        save_neighbors(np.stack(drawn[0]), drawn[1], drawn[2], classes, title, out)
        more = (
            f" (the first {MAX_DRAWN} of {len(images)} images)" if len(images) > MAX_DRAWN else ""
        )
        print(f"drawn into {out}{more}")
    return found


def _print(path: Path, probabilities, neighbors: list, classes: list[str]) -> str:
    """The image's prediction and its neighbours, printed; returns its title in the drawing."""
    predicted = int(probabilities.argmax())
    print(
        f"{path}: predicted {classes[predicted]} ({float(probabilities[predicted]):.2f}); "
        "nearest training images in fc7 space:"
    )
    for rank, neighbor in enumerate(neighbors, start=1):
        print(
            f"  {rank}. distance {neighbor.distance:8.4f}  {classes[neighbor.label]:<16} "
            f"{neighbor.path}"
        )
    return f"{path.name}: {classes[predicted]}"

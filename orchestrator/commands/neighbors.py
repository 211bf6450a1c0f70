"""`neighbors`: the training images nearest to your own images in a trained model's fc7 space
(the paper's Figure 4, right), searched with Ray Data over the prepared training shards."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import add_model, add_overrides
from orchestrator.common.errors import InputError


def add_arguments(parser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files (any format prepare reads)",
    )
    add_model(parser)
    parser.add_argument("--count", type=int, default=5, help="neighbours per image (default 5)")
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
    """Print (and with `out` draw) the `count` training images nearest to each of `images`;
    returns them (a list of `scoring.Neighbor` per image), nearest first."""
    if count < 1:
        raise InputError(f"--count: got {count}; allowed: an integer >= 1")
    for path in images:
        if not path.is_file():
            raise InputError(f"IMAGE: {path} is not a file")
    from orchestrator.analysis.figures import save_neighbors
    from orchestrator.analysis.scoring import nearest_training_images
    from orchestrator.analysis.trained import open_trained
    from orchestrator.common.redact import redact_text

    trained = open_trained(model_uri, overrides)
    pixels, probabilities, found = nearest_training_images(trained, images, count)
    classes = trained.data.classes
    titles = []
    for path, p, neighbors in zip(images, probabilities, found, strict=True):
        predicted = int(p.argmax())
        titles.append(f"{path.name}: {classes[predicted]}")
        print(
            f"{path}: predicted {classes[predicted]} ({float(p[predicted]):.2f}); nearest "
            f"training images in fc7 space:"
        )
        for rank, neighbor in enumerate(neighbors, start=1):
            print(
                f"  {rank}. distance {neighbor.distance:8.4f}  {classes[neighbor.label]:<16} "
                f"{neighbor.path}"
            )
    if out is not None:
        title = f"nearest training images in fc7 space ({redact_text(trained.uri)})"
        save_neighbors(pixels, titles, found, classes, title, out)
        print(f"drawn into {out}")
    return found

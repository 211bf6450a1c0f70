"""`neighbors`: the training images nearest to your own images in a trained model's fc7 space
(the paper's Figure 4, right), searched with Ray Data over the prepared training shards."""

from __future__ import annotations

from pathlib import Path

from orchestrator.commands import add_overrides
from orchestrator.errors import InputError
from orchestrator.trained import MODEL_HELP, open_trained


def add_arguments(parser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="image files (any format prepare reads)",
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
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
    returns them (a list of `figures.Neighbor` per image), nearest first."""
    if count < 1:
        raise InputError(f"--count: got {count}; allowed: an integer >= 1")
    for path in images:
        if not path.is_file():
            raise InputError(f"IMAGE: {path} is not a file")
    import numpy as np

    from orchestrator import figures

    trained = open_trained(model_uri, overrides)
    scoring = figures.scoring_for(trained)
    pixels = np.stack([figures.prepared_like_training(path, trained.data) for path in images])
    features, probabilities = figures.features_of(scoring.model(), scoring.transform, pixels)
    found, _ = figures.score(scoring, features.numpy(), k=count, confusion=False)
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
        plt = figures.pyplot()
        title = f"nearest training images in fc7 space ({trained.uri})"
        figure = figures.draw_neighbors(plt, pixels, titles, found, classes, title)
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(out, dpi=100)
        plt.close(figure)
        print(f"drawn into {out}")
    return found

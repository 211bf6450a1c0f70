"""The paper's figures for a trained model (Krizhevsky et al. 2012, Figures 3 and 4).

- `conv1_kernels.png`: the first layer's kernels, one block per tower (Figure 3);
- `predictions.png`: eight validation images with their top-5 predictions, the true class's
  bar in red (Figure 4, left);
- `neighbors.png`: six validation images and, for each, the five training images nearest in
  fc7 space (Figure 4, right), searched over the training shards (analysis/scoring.py);
- `confusion_matrix.png` and `.csv`: the validation set's, centre crop.

Training logs them as artifacts of its MLflow run under `figures/` (`tracking.figures`); the
`figures` command writes them for any checkpoint or registered model. `make_figures` computes
the numbers (`Figures`, what the tests check), `write_figures` draws them.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orchestrator.analysis.scoring import Neighbor, Scoring, features_of, score, scoring_for
from orchestrator.analysis.trained import Trained
from orchestrator.common.errors import InputError
from orchestrator.common.plots import pyplot
from orchestrator.common.redact import redact_exception
from orchestrator.data.shard_reader import first_images
from orchestrator.tracking.run import TrackedRun
from workloads.alexnet import probe

log = logging.getLogger(__name__)

PREDICTED_IMAGES = 8  # Figure 4, left
QUERY_IMAGES = 6  # Figure 4, right: six query images, each with its nearest training images
TOP_K = 5
KERNEL_COLUMNS = 16  # Figure 3 shows 96 kernels as 6 rows of 16, 48 per tower
FILES = (
    "conv1_kernels.png",
    "predictions.png",
    "neighbors.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
)


@dataclass
class Figures:
    classes: list[str]
    epoch: int
    kernels: list[np.ndarray]  # per tower (n, k, k, 3) in [0, 1]
    images: dict  # the first PREDICTED_IMAGES validation rows: image, label, id
    top_probabilities: np.ndarray  # (PREDICTED_IMAGES, TOP_K), highest first
    top_classes: np.ndarray  # (PREDICTED_IMAGES, TOP_K)
    neighbors: list[list[Neighbor]]  # per query image (the first QUERY_IMAGES of `images`)
    confusion: np.ndarray  # (classes, classes) counts: row = true class, column = predicted


def make_figures(scoring: Scoring, epoch: int) -> Figures:
    """The four figures' numbers: kernels, top-5 of 8 validation images, the 5 nearest
    training images of the first 6 of them, and the validation confusion matrix."""
    images = first_images(scoring.data, "val", PREDICTED_IMAGES)
    if not len(images.get("id", ())):
        raise InputError(f"data.root: {scoring.data.uri} has no validation images")
    model = scoring.model()
    features, probabilities = features_of(model, scoring.transform, images["image"])
    top = probabilities.topk(min(TOP_K, probabilities.shape[1]), dim=1)
    neighbors, confusion = score(scoring, features[:QUERY_IMAGES].numpy())
    return Figures(
        classes=list(scoring.data.classes),
        epoch=epoch,
        kernels=probe.conv1_kernels(model),
        images=images,
        top_probabilities=top.values.numpy(),
        top_classes=top.indices.numpy(),
        neighbors=neighbors,
        confusion=confusion,
    )


def write_figures(figures: Figures, folder: Path) -> list[Path]:
    """The PNGs (and the confusion matrix as CSV) into `folder`; returns their paths."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    for name, draw in (
        ("conv1_kernels.png", _draw_kernels),
        ("predictions.png", _draw_predictions),
        ("neighbors.png", _draw_neighbors),
        ("confusion_matrix.png", _draw_confusion),
    ):
        figure = draw(plt, figures)
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
    rows = [["true \\ predicted", *figures.classes]]
    rows += [[name, *map(str, counts)] for name, counts in zip(figures.classes, figures.confusion)]
    (folder / "confusion_matrix.csv").write_text("".join(",".join(r) + "\n" for r in rows))
    return [folder / name for name in FILES]


def _draw_kernels(plt, figures: Figures):
    grid = probe.tile_grid(figures.kernels, KERNEL_COLUMNS)
    height, width = grid.shape[:2]
    figure, axes = plt.subplots(figsize=(8, 8 * height / width + 0.6))
    axes.imshow(grid, interpolation="nearest")
    axes.axis("off")
    count, k = sum(len(block) for block in figures.kernels), figures.kernels[0].shape[1]
    towers = ", tower 1 above, tower 2 below" if len(figures.kernels) == 2 else ""
    axes.set_title(f"conv1: {count} kernels of {k}x{k}x3 (epoch {figures.epoch}){towers}")
    figure.tight_layout()
    return figure


def _draw_predictions(plt, figures: Figures):
    columns = 4
    rows = -(-len(figures.images["id"]) // columns)
    figure, axes = plt.subplots(
        2 * rows,
        columns,
        figsize=(3 * columns, 4.2 * rows),
        gridspec_kw={"height_ratios": [3, 1.5] * rows},
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, label) in enumerate(zip(figures.images["image"], figures.images["label"])):
        top, bars = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        top.imshow(image)
        top.set_title(figures.classes[label], fontsize=9)
        names = [figures.classes[c] for c in figures.top_classes[i]]
        colors = ["tab:red" if c == label else "tab:blue" for c in figures.top_classes[i]]
        bars.axis("on")
        bars.barh(range(len(names)), figures.top_probabilities[i], color=colors)
        bars.set_yticks(range(len(names)), names, fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    figure.suptitle(
        f"top-5 predictions, validation images (epoch {figures.epoch}); the true class in red"
    )
    figure.tight_layout()
    return figure


def _draw_neighbors(plt, figures: Figures):
    titles = [f"val: {figures.classes[label]}" for label in figures.images["label"]]
    title = f"nearest training images in fc7 space (epoch {figures.epoch})"
    return draw_neighbors(
        plt, figures.images["image"], titles, figures.neighbors, figures.classes, title
    )


def draw_neighbors(
    plt, images, titles: list[str], neighbors: list[list[Neighbor]], classes: list[str], title: str
):
    """A row per query image: the image, then its neighbours with class and distance."""
    rows, columns = len(neighbors), 1 + max(len(found) for found in neighbors)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, found in enumerate(neighbors):
        axes[row, 0].imshow(images[row])
        axes[row, 0].set_title(titles[row], fontsize=8)
        for column, neighbor in enumerate(found, start=1):
            axes[row, column].imshow(neighbor.image)
            axes[row, column].set_title(
                f"{classes[neighbor.label]}\nd={neighbor.distance:.3g}", fontsize=7
            )
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _draw_confusion(plt, figures: Figures):
    confusion, classes = figures.confusion, figures.classes
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = min(12, 3 + 0.4 * len(classes))
    figure, axes = plt.subplots(figsize=(size + 1, size))
    shown = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(shown, ax=axes, label="fraction of the true class")
    if len(classes) <= 30:
        axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        axes.set_yticks(range(len(classes)), classes, fontsize=7)
    if len(classes) <= 15:
        for (i, j), count in np.ndenumerate(confusion):
            if count:
                axes.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    error = 1 - np.trace(confusion) / max(confusion.sum(), 1)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(
        f"validation confusion matrix, centre crop (epoch {figures.epoch}): top-1 error {error:.3f}"
    )
    figure.tight_layout()
    return figure


def log_figures(run: TrackedRun, trained: Trained) -> None:
    """The figures of a trained model, as artifacts of `run` under `figures/`. A failure costs
    a warning, never the run: the training is done, the figures are extra."""
    started = time.perf_counter()
    try:
        made = make_figures(scoring_for(trained), trained.epoch)
        with tempfile.TemporaryDirectory() as folder:
            write_figures(made, Path(folder))
            run.log_artifacts(folder, "figures")
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"figures: not made ({redact_exception(error, 300)})", stacklevel=2)
        return
    log.info(
        f"figures: conv1 kernels, top-5 predictions, fc7 nearest neighbours and the confusion "
        f"matrix of epoch {made.epoch} are in MLflow run {run.run_id} under figures/ "
        f"({time.perf_counter() - started:.1f} s)"
    )


def save_neighbors(
    images, titles: list[str], neighbors, classes: list[str], title: str, out: Path
) -> None:
    """`draw_neighbors` into the PNG file `out`."""
    plt = pyplot()
    figure = draw_neighbors(plt, images, titles, neighbors, classes, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)

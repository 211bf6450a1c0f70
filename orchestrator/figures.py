"""The paper's figures for a trained model (Krizhevsky et al. 2012, Figures 3 and 4), and the
nearest training images of any image.

- `conv1_kernels.png`: the first layer's kernels, one block per tower (Figure 3);
- `predictions.png`: eight validation images with their top-5 predictions, the true class's
  bar in red (Figure 4, left);
- `neighbors.png`: six validation images and, for each, the five training images nearest in
  fc7 space (Euclidean distance of the last hidden layer's activations; Figure 4, right),
  searched with Ray Data over the training shards;
- `confusion_matrix.png` and `.csv`: the validation set's, centre crop.

Training logs them as artifacts of its MLflow run under `figures/` (`tracking.figures`); the
`figures` command writes them for any checkpoint or registered model; `neighbors` searches the
training set for a user's own images. `make_figures` computes the numbers (`Figures`, what the
tests check), `write_figures` draws them.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import ray.data
import torch

from orchestrator import data as data_pipeline
from orchestrator.data import DataConfig, PreparedData
from orchestrator.errors import InputError
from orchestrator.redact import redact_exception
from workloads.alexnet import probe
from workloads.alexnet.config import ModelConfig
from workloads.alexnet.model import build_model
from workloads.alexnet.transforms import BatchTransform
from workloads.datasets import codec

PREDICTED_IMAGES = 8  # Figure 4, left
QUERY_IMAGES = 6  # Figure 4, right: six query images ...
NEIGHBORS = 5  # ... and five training images each
TOP_K = 5
KERNEL_COLUMNS = 16  # Figure 3 shows 96 kernels as 6 rows of 16, 48 per tower
SCORE_BATCH = 512  # images per forward pass in the scoring tasks
SCORED_HERE_UP_TO = 5000  # images: a pass over no more is scored in this process, without Ray
FILES = (
    "conv1_kernels.png",
    "predictions.png",
    "neighbors.png",
    "confusion_matrix.png",
    "confusion_matrix.csv",
)


@dataclass(frozen=True)
class Scoring:
    """A trained model and what scoring its data with Ray Data needs."""

    model_config: ModelConfig  # with num_classes resolved
    weights: dict  # single-device state dict
    transform: BatchTransform  # the run's evaluation view (centre crop minus the mean image)
    data: PreparedData
    data_config: DataConfig  # decode settings of the read tasks
    tasks: int  # scoring tasks at once, each with `cpus_per_task` CPUs or one GPU
    cpus_per_task: float
    gpus_per_task: float

    def model(self):
        return _loaded(self.model_config, self.weights)


def _loaded(model_config: ModelConfig, weights: dict):
    """The AlexNet of `model_config` with `weights`, on the CPU, in eval mode."""
    model = build_model(model_config)
    model.load_state_dict(weights)
    return model.eval()


def scoring(
    model_config: ModelConfig,
    weights: dict,
    transform: BatchTransform,
    data: PreparedData,
    data_config: DataConfig,
    train_config,
) -> Scoring:
    """Scoring on the resources of the run's own workers (`train_config`), as far as this
    cluster has them: a task per GPU where there are GPUs; else a task per worker, or one for
    all of them when they had less than a CPU each (measured: one process with 1.5 CPUs scored
    the demo's images in half the time of two with 0.75 each)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), resources.get("CPU", 1)
    if gpus and train_config.use_gpu is not False:
        return Scoring(
            model_config,
            weights,
            transform,
            data,
            data_config,
            tasks=min(gpus, train_config.num_workers),
            cpus_per_task=1,
            gpus_per_task=1,
        )
    free = max(cpus - data_config.decode_cpus, 0.5)  # the read tasks keep their share
    workers, per_worker = train_config.num_workers, train_config.cpus_per_worker
    if per_worker < 1:
        tasks, per_task = 1, min(workers * per_worker, free)
    else:
        per_task = min(per_worker, free)
        tasks = max(1, min(workers, int(free // per_task)))
    return Scoring(model_config, weights, transform, data, data_config, tasks, per_task, 0)


@dataclass(frozen=True)
class Neighbor:
    distance: float
    id: int
    label: int
    path: str  # the training file's path in the prepared source
    image: np.ndarray  # uint8 (S, S, 3), as prepared


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


class _Scorer:
    """Decoded images -> per image its shard (an index into `files`), id, label, predicted
    class and fc7 distance to each query."""

    def __init__(self, model_config, weights, transform, files, queries, threads=None):
        if threads is not None:  # a Ray task's CPUs; None: the process's own setting
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _loaded(model_config, weights).to(self.device)
        self.transform = transform
        self.shard_of = {uri: i for i, uri in enumerate(files)}
        self.queries = torch.tensor(queries, device=self.device)  # (Q, D)

    def __call__(self, batch: dict) -> dict:
        images = torch.tensor(batch["image"], device=self.device)  # (B, S, S, 3), a copy
        features, logits = probe.features_and_logits(self.model, self.transform.center(images))
        return {
            "shard": np.array([self.shard_of[uri] for uri in batch["file"]], dtype=np.int32),
            "id": batch["id"],
            "label": batch["label"],
            "predicted": logits.argmax(dim=1).cpu().numpy(),
            "distance": probe.distances(features, self.queries).cpu().numpy(),  # (B, Q)
        }


_SCORERS: dict[str, _Scorer] = {}  # in a Ray worker process: the scorer of the current pass


def _score_batch(batch: dict, held: list) -> dict:
    """A Ray Data task: one batch through the scorer held by reference (`held`: [ObjectRef]),
    built once per worker process and pass. (Tasks, not an actor pool: Ray's core worker
    prints an error line for every restartable actor whose arguments are in the object store,
    and Ray Data's are, and Ray 2.64 leaves no way to make them unrestartable.)"""
    key = held[0].hex()
    if key not in _SCORERS:
        _SCORERS.clear()
        _SCORERS[key] = _Scorer(*ray.get(held[0]))
    return _SCORERS[key](batch)


class _Nearest:
    """The k rows nearest to each query seen so far: (distance, shard, id, label) each (Q, k)."""

    def __init__(self, queries: int, k: int):
        self.k = k
        self.distance = np.full((queries, 0), np.inf)
        self.shard = self.id = self.label = np.zeros((queries, 0), dtype=np.int64)

    def add(self, distance: np.ndarray, shard, ids, label) -> None:
        """One batch: distances (B, Q) of rows with these shards, ids and labels (B,)."""
        shape = distance.T.shape  # (Q, B)
        merged = [
            np.concatenate([mine, np.broadcast_to(new, shape)], axis=1)
            for mine, new in (
                (self.distance, distance.T),
                (self.shard, shard[None]),
                (self.id, ids[None]),
                (self.label, label[None]),
            )
        ]
        keep = np.argsort(merged[0], axis=1, kind="stable")[:, : self.k]  # (Q, k)
        self.distance, self.shard, self.id, self.label = (
            np.take_along_axis(values, keep, axis=1) for values in merged
        )


def score(scoring: Scoring, queries: np.ndarray, k: int = NEIGHBORS, confusion: bool = True):
    """One pass of the model over the training shards (and the validation shards when
    `confusion`): (the `k` training images nearest to each query (fc7 features (Q, D)), nearest
    first, as `Neighbor`s; the validation confusion matrix or None). Ray Data tasks score the
    batches; up to SCORED_HERE_UP_TO images, this process does, with the same scorer."""
    data = scoring.data
    files = data.files("train") + data.files("val")
    images = data.count("train") + (data.count("val") if confusion else 0)
    scorer_args = (scoring.model_config, scoring.weights, scoring.transform, files, queries)
    if images <= SCORED_HERE_UP_TO:  # Ray Data's start-up (~10 s) would cost more than the pass
        scorer = _Scorer(*scorer_args)  # with this process's torch threads as they are
        read = files if confusion else data.files("train")
        scored = (scorer(batch) for batch in data_pipeline.batches_here(data, read, SCORE_BATCH))
    else:
        scored = _scored_with_ray(scoring, scorer_args, confusion)
    classes, train_files = len(data.classes), len(data.files("train"))
    counts = np.zeros((classes, classes), dtype=np.int64)
    nearest = _Nearest(len(queries), k)
    for batch in scored:
        training = batch["shard"] < train_files
        nearest.add(
            batch["distance"][training],
            batch["shard"][training],
            batch["id"][training],
            batch["label"][training],
        )
        np.add.at(counts, (batch["label"][~training], batch["predicted"][~training]), 1)
    return _neighbors(data, files, nearest), counts if confusion else None


def _scored_with_ray(scoring: Scoring, scorer_args: tuple, confusion: bool):
    """The scored batches of a Ray Data pass over the training (and validation) shards."""
    data, config = scoring.data, scoring.data_config
    stream = data_pipeline.decoded_stream(data, "train", config, seed=None, with_files=True)
    if confusion:
        stream = stream.union(
            data_pipeline.decoded_stream(data, "val", config, seed=None, with_files=True)
        )
    threads = max(1, round(scoring.cpus_per_task))
    scored = stream.map_batches(
        _score_batch,
        fn_kwargs={"held": [ray.put((*scorer_args, threads))]},
        batch_size=SCORE_BATCH,
        compute=ray.data.TaskPoolStrategy(size=scoring.tasks),
        num_cpus=scoring.cpus_per_task,
        num_gpus=scoring.gpus_per_task,
    )
    return scored.iter_batches(batch_size=None)


def _neighbors(data: PreparedData, files: list[str], nearest: _Nearest) -> list[list[Neighbor]]:
    """The found rows' images and source paths, read back from their shards."""
    rows = {}
    for shard in np.unique(nearest.shard):
        found = data_pipeline.read_rows(data, files[shard], set(nearest.id[nearest.shard == shard]))
        for i, row_id in enumerate(found["id"]):
            rows[(int(shard), int(row_id))] = (found["path"][i], found["image"][i])
    return [
        [
            Neighbor(float(d), int(i), int(label), *rows[(int(shard), int(i))])
            for d, shard, i, label in zip(
                *(
                    values[q]
                    for values in (nearest.distance, nearest.shard, nearest.id, nearest.label)
                ),
                strict=True,
            )
        ]
        for q in range(len(nearest.distance))
    ]


def scoring_for(trained) -> Scoring:
    """Scoring a model opened by `orchestrator.trained.open_trained`."""
    config = trained.config
    return scoring(
        config.model,
        trained.state["model"],
        trained.transform(),
        trained.data,
        config.data,
        config.train,
    )


def features_of(model, transform: BatchTransform, images: np.ndarray):
    """(fc7 features (N, D), class probabilities (N, classes)) of uint8 images (N, S, S, 3)."""
    inputs = transform.center(torch.from_numpy(np.ascontiguousarray(images)))
    features, logits = probe.features_and_logits(model, inputs)
    return features, logits.softmax(dim=1)


def make_figures(scoring: Scoring, epoch: int) -> Figures:
    """The four figures' numbers: kernels, top-5 of 8 validation images, the 5 nearest
    training images of the first 6 of them, and the validation confusion matrix."""
    images = data_pipeline.first_images(scoring.data, "val", PREDICTED_IMAGES)
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


def prepared_like_training(path: Path, data: PreparedData) -> np.ndarray:
    """A user's image as `prepare` stored the training images: uint8 (S, S, 3) after the same
    decode, resize and centre crop (and JPEG round trip, for JPEG shards)."""
    try:
        pixels = codec.decode_resize_center_crop(path.read_bytes(), data.image_size)
    except ValueError as error:
        raise InputError(f"image: {path} cannot be read as an image ({error})") from None
    if data.encoding == "jpeg":
        quality = data.manifest["params"]["jpeg_quality"]
        pixels = codec.decode_jpeg(codec.encode_jpeg(pixels, quality))
    return pixels


def pyplot():
    """matplotlib's pyplot, drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def log_for_run(job, run) -> None:
    """The figures of a finished training run's last checkpoint, into its MLflow run."""
    from orchestrator.checkpoints import newest_checkpoint, read_checkpoint

    stored = newest_checkpoint(job.plan.run_folder)
    if stored is not None:
        log_figures(run, read_checkpoint(stored.uri), job.data)


def log_figures(run, state: dict, data: PreparedData) -> None:
    """The figures of a checkpoint (`checkpoints.read_checkpoint`'s state) on `data`, as
    artifacts of `run` (a `tracking.TrackedRun`) under `figures/`. A failure costs a warning,
    never the run: the training is done, the figures are extra."""
    from orchestrator.config import load_config_text
    from orchestrator.trained import Trained

    started = time.perf_counter()
    try:
        config = load_config_text(state["config"], source="the checkpoint's config")
        trained = Trained(uri="", state=state, config=config, data=data)
        made = make_figures(scoring_for(trained), trained.epoch)
        with tempfile.TemporaryDirectory() as folder:
            write_figures(made, Path(folder))
            run.log_artifacts(folder, "figures")
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"figures: not made ({redact_exception(error, 300)})", stacklevel=2)
        return
    print(
        f"figures: conv1 kernels, top-5 predictions, fc7 nearest neighbours and the confusion "
        f"matrix of epoch {made.epoch} are in MLflow run {run.run_id} under figures/ "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )

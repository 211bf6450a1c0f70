"""A trained model's pass over a prepared dataset: every image's prediction and fc7 features,
the training images nearest to some queries in fc7 space (Euclidean distance of the last hidden
layer's activations: the paper's Figure 4, right) and the validation confusion matrix. Ray Data
tasks score the batches of a large dataset; a small one is scored in this process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import ray.data
import torch

from orchestrator.analysis.trained import Trained, evaluation_device, load_model
from orchestrator.common.errors import InputError
from orchestrator.data.config import DataConfig
from orchestrator.data.prepared import PreparedData
from orchestrator.data.shard_reader import batches_here, read_rows
from orchestrator.data.streams import decoded_stream
from workloads.alexnet import probe
from workloads.alexnet.config import ModelConfig
from workloads.alexnet.transforms import BatchTransform
from workloads.datasets import codec

NEIGHBORS = 5  # training images per query (Figure 4, right: five)
QUERIES_PER_PASS = 64  # a user's images scored in one pass over the training set (and held)
SCORE_BATCH = 512  # images per forward pass in the scoring tasks
SCORED_HERE_UP_TO = 5000  # images: a pass over no more is scored in this process, without Ray


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
        return load_model(self.model_config, self.weights)


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
    image: np.ndarray | None  # uint8 (S, S, 3), as prepared; None once it is not needed


class _Scorer:
    """Decoded images -> per image its shard (an index into `files`), id, label, predicted
    class and fc7 distance to each query."""

    def __init__(self, model_config, weights, transform, files, queries, threads=None):
        if threads is not None:  # a Ray task's CPUs; None: the process's own setting
            torch.set_num_threads(threads)
        self.device = evaluation_device()
        self.model = load_model(model_config, weights).to(self.device)
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
        scored = (scorer(batch) for batch in batches_here(data, read, SCORE_BATCH))
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
    stream = decoded_stream(data, "train", config, seed=None, with_files=True)
    if confusion:
        stream = stream.union(decoded_stream(data, "val", config, seed=None, with_files=True))
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
        found = read_rows(data, files[shard], set(nearest.id[nearest.shard == shard]))
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


def scoring_for(trained: Trained) -> Scoring:
    """Scoring a trained model on its data, with its run's resources."""
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


def prepared_like_training(path: Path, data: PreparedData) -> np.ndarray:
    """A user's image as `prepare` stored the training images: uint8 (S, S, 3) after the same
    decode, resize and centre crop (and JPEG round trip, for JPEG shards)."""
    try:
        pixels = codec.decode_resize_center_crop(path.read_bytes(), data.image_size)
    except ValueError as error:
        raise InputError(f"image: {path} cannot be read as an image ({error})") from None
    if data.encoding == "jpeg":
        quality = data.manifest.params.jpeg_quality
        pixels = codec.decode_jpeg(codec.encode_jpeg(pixels, quality))
    return pixels


def nearest_training_images(trained: Trained, images: list[Path], count: int) -> Iterator:
    """The `count` training images nearest in fc7 space to each of a user's image files, nearest
    first, QUERIES_PER_PASS files at a time (one pass over the training shards each): memory does
    not grow with the number of files. Yields, per group: (its files, their pixels as the
    training images were prepared, uint8 (N, S, S, 3), class probabilities (N, classes), the
    neighbours of each)."""
    scoring = scoring_for(trained)
    model = scoring.model()
    for start in range(0, len(images), QUERIES_PER_PASS):
        files = images[start : start + QUERIES_PER_PASS]
        pixels = np.stack([prepared_like_training(path, trained.data) for path in files])
        features, probabilities = features_of(model, scoring.transform, pixels)
        found, _ = score(scoring, features.numpy(), k=count, confusion=False)
        yield files, pixels, probabilities, found

"""`predict`: a model's top-k for every image of a folder or bucket, or of a prepared dataset's
split, with Ray Data.

Ray Data lists and reads the files (`read_binary_files`, by image suffix, in subfolders too),
or reads and decodes the split's shards as training does (`decoded_stream`);
a pool of actors, each holding the model (on a GPU when the cluster has them), decodes and
predicts a batch at a time; the driver streams the rows into one Parquet file (and a CSV on
request): `path` (relative to the input folder), `labels` (top-k, best first) and
`probabilities`. A file that is not a readable image is a row of `rejects.csv` (path, reason),
never the job's end. The output folder's files are written under temporary names and moved
into place at the end; an output folder that already holds predictions is refused unless
`--overwrite` replaces them: two runs' rows are never mixed.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from orchestrator.analysis.trained import evaluation_device
from orchestrator.common.errors import InputError
from orchestrator.common.ray_cluster import ensure_ray
from orchestrator.common.redact import redact_text
from orchestrator.common.storage import Location
from orchestrator.config.serve import PredictConfig
from orchestrator.data.config import DataConfig
from orchestrator.data.prepared import PreparedData
from orchestrator.data.streams import decoded_stream
from orchestrator.serving.model import OpenedModel
from workloads.alexnet.predictor import Predictor
from workloads.datasets.image_folder import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

PREDICTIONS, PREDICTIONS_CSV, REJECTS = "predictions.parquet", "predictions.csv", "rejects.csv"
OUTPUTS = (PREDICTIONS, PREDICTIONS_CSV, REJECTS)
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("labels", pa.list_(pa.string())),
        ("probabilities", pa.list_(pa.float32())),
    ]
)
PROGRESS_EVERY_S = 10


@dataclass(frozen=True)
class Predicted:
    out: str  # the output folder
    images: int  # rows of predictions.parquet
    rejected: int  # rows of rejects.csv
    seconds: float

    @property
    def images_per_second(self) -> float:
        return (self.images + self.rejected) / max(self.seconds, 1e-9)


class PredictBatch:
    """A Ray Data actor holding the model: a batch of files -> rows of top-k, or of rejects."""

    def __init__(self, spec_json: str, weights: bytes, root: str):
        # tensors only, no code; on the actor's GPU when Ray gave it one
        self.predictor = Predictor.loads(spec_json, weights, evaluation_device())
        self.root = root.rstrip("/") + "/" if root else ""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        paths = [p.removeprefix(self.root) for p in batch["path"]]
        images, good, errors = [], [], [""] * len(paths)
        # files' bytes, or a prepared split's decoded images (uint8 (S, S, 3))
        for i, data in enumerate(batch["bytes"] if "bytes" in batch else batch["image"]):
            try:
                images.append(self.predictor.image(data))
                good.append(i)
            except ValueError as error:  # not an image, truncated, too large: a reject
                errors[i] = str(error)
        labels, probabilities = self.predictor.top(np.stack(images) if images else [])
        row_labels, row_probabilities = [[] for _ in paths], [[] for _ in paths]
        for i, top, values in zip(good, labels, probabilities):
            row_labels[i], row_probabilities[i] = top, [float(v) for v in values]
        return {
            "path": paths,
            "labels": row_labels,
            "probabilities": row_probabilities,
            "error": errors,
        }


def predict_folder(
    model: OpenedModel,
    source: str,
    out: str,
    config: PredictConfig,
    write_csv: bool,
    overwrite: bool,
) -> Predicted:
    """The top-k of every image file under `source` (a folder: path or URI) into `out`."""
    inputs = Location.of(source)
    if not inputs.exists():
        raise InputError(f"--input: {redact_text(source)} does not exist")
    output = _output(out, overwrite)
    ensure_ray()
    dataset = ray.data.read_binary_files(
        inputs.path,
        filesystem=inputs.fs,
        include_paths=True,
        file_extensions=sorted({suffix.lstrip(".") for suffix in IMAGE_SUFFIXES}),
    )
    return _predict(model, dataset, inputs.path, output, config, write_csv)


def predict_split(
    model: OpenedModel,
    data: PreparedData,
    split: str,
    out: str,
    config: PredictConfig,
    data_config: DataConfig,
    write_csv: bool,
    overwrite: bool,
) -> Predicted:
    """The top-k of every image of a prepared dataset's `split`, decoded by Ray Data's read
    tasks as training reads them; `path` is each image's source file, as `prepare` listed it."""
    if split not in data.manifest.shards:
        allowed = ", ".join(sorted(data.manifest.shards))
        raise InputError(f"--split: got {split!r}; allowed: {allowed}")
    output = _output(out, overwrite)
    ensure_ray()
    dataset = decoded_stream(data, split, data_config, seed=None, with_paths=True)
    return _predict(model, dataset, "", output, config, write_csv)


def _output(out: str, overwrite: bool) -> Location:
    """The output folder, refused when it already holds predictions (unless `overwrite`)."""
    output = Location.of(out)
    held = [name for name in OUTPUTS if output.exists(name)]
    if held and not overwrite:
        raise InputError(
            f"--out: {redact_text(out)} already holds {', '.join(held)} of an earlier predict; "
            "choose another folder, or pass --overwrite to replace them"
        )
    return output


def _predict(
    model: OpenedModel,
    dataset: ray.data.Dataset,
    root: str,
    output: Location,
    config: PredictConfig,
    write_csv: bool,
) -> Predicted:
    """Rows of `dataset` ("path" and "bytes" or "image") -> the model's actors -> the files."""
    started = time.perf_counter()
    gpus = config.num_gpus_per_actor
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    spec_json, weights = model.predictor.dump()
    rows = dataset.map_batches(
        PredictBatch,
        fn_constructor_args=(spec_json, weights, root),
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.num_actors),
        num_cpus=config.num_cpus_per_actor,
        num_gpus=gpus,
    )
    output.make_dirs()
    images, rejects = _write(rows, output, write_csv)
    for name in OUTPUTS:  # what an earlier run left that this one did not write again
        if output.exists(name) and name not in _written(write_csv):
            output.fs.delete_file(output.join(name))
    return Predicted(output.uri, images, rejects, time.perf_counter() - started)


def _written(write_csv: bool) -> tuple[str, ...]:
    return (PREDICTIONS, REJECTS, PREDICTIONS_CSV) if write_csv else (PREDICTIONS, REJECTS)


def _write(rows: ray.data.Dataset, output: Location, write_csv: bool) -> tuple[int, int]:
    """Stream the rows into the output files (temporary names, moved into place at the end);
    returns (images predicted, files rejected)."""
    rejects, csv_text, count = [], io.StringIO(), 0
    table_csv = csv.writer(csv_text)
    table_csv.writerow(["path", "labels", "probabilities"])
    temporary = output.join(PREDICTIONS + ".tmp")
    last_said = time.monotonic()
    with (
        output.fs.open_output_stream(temporary) as stream,
        pq.ParquetWriter(stream, SCHEMA) as writer,
    ):
        for batch in rows.iter_batches(batch_format="pyarrow", batch_size=None):
            errors = batch.column("error").to_pylist()
            keep = [i for i, error in enumerate(errors) if not error]
            paths = batch.column("path").to_pylist()
            rejects += [(paths[i], error) for i, error in enumerate(errors) if error]
            good = batch.take(keep).select(["path", "labels", "probabilities"]).cast(SCHEMA)
            writer.write_table(good)
            count += good.num_rows
            if write_csv:
                for path, labels, values in zip(
                    *(good.column(c).to_pylist() for c in SCHEMA.names)
                ):
                    table_csv.writerow(
                        [path, " ".join(labels), " ".join(f"{v:.6f}" for v in values)]
                    )
            if time.monotonic() - last_said > PROGRESS_EVERY_S:
                log.info(f"predict: {count:,} images predicted, {len(rejects):,} rejected so far")
                last_said = time.monotonic()
    output.fs.move(temporary, output.join(PREDICTIONS))
    rejects_text = io.StringIO()
    csv.writer(rejects_text).writerows([("path", "reason"), *sorted(rejects)])
    output.write_bytes(rejects_text.getvalue().encode(), REJECTS)
    if write_csv:
        output.write_bytes(csv_text.getvalue().encode(), PREDICTIONS_CSV)
    return count, len(rejects)

"""The shards of a prepared dataset: how many images a shard holds and which, writing one (a Ray
Data task), running the shard tasks with their progress, and merging the results they saved.

A shard task decodes, resizes, crops and encodes its images into one Parquet file, streaming
them through row groups, and saves its statistics beside it in `_work/` as partial sums (exact
integers for the mean image) with a small JSON that marks it done: an interrupted `prepare`
redoes only the shards without one, and the driver merges them one shard at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.common.storage import Location
from workloads.datasets import codec
from workloads.datasets.image_folder import ImageList, is_utf8, printable, relative_path

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 128
SHARD_SCHEMA = pa.schema(
    [("id", pa.int64()), ("label", pa.int64()), ("image", pa.binary()), ("path", pa.string())]
)


def images_per_shard(config, train: ImageList, out: Location, key: str, cpus: float) -> int:
    """~`shard_mb` per shard, and at least 4 shards per concurrent task on `cpus` CPUs (so the
    last ones end close together); saved in `_work/plan.json`, so a resumed run cuts the same
    shards. `config`: the run's PrepareConfig."""
    plan_file = ("_work", "plan.json")
    if out.exists(*plan_file) and out.read_json(*plan_file).get("key") == key:
        return out.read_json(*plan_file)["images_per_shard"]
    by_size = config.shard_mb * 2**20 / _bytes_per_image(config, train.paths)
    by_parallelism = math.ceil(len(train) / (4 * max(1.0, cpus) / config.cpus_per_task))
    images_per_shard = max(1, int(min(by_size, by_parallelism)))
    out.write_json({"key": key, "images_per_shard": images_per_shard}, *plan_file)
    return images_per_shard


def _bytes_per_image(config, paths: list[str]) -> float:
    """Expected stored size of one image: exact for raw, from a small encoded sample for JPEG."""
    if config.encoding == "raw":
        return config.image_size**2 * 3
    sample = np.random.default_rng(config.seed).choice(len(paths), min(16, len(paths)), False)
    sizes = []
    for i in sample:
        try:
            pixels = codec.decode_resize_center_crop(Path(paths[i]).read_bytes(), config.image_size)
            sizes.append(len(codec.encode_jpeg(pixels, config.jpeg_quality)))
        except (OSError, ValueError):
            continue
    return float(np.mean(sizes)) if sizes else config.image_size**2 * 3 / 8


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    of: int
    ids: list[int]
    paths: list[str]
    labels: list[int]

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}-of-{self.of:05d}"


def plan_shards(splits: dict[str, ImageList], images_per_shard: int, seed: int) -> list[Shard]:
    """Each split shuffled once (by `seed`) across classes, then cut into equal shards."""
    shards = []
    for split_number, (split, images) in enumerate(splits.items()):
        order = np.random.default_rng([seed, split_number]).permutation(len(images))
        count = max(1, math.ceil(len(images) / images_per_shard))
        for index, chunk in enumerate(np.array_split(order, count)):
            shards.append(
                Shard(
                    split=split,
                    index=index,
                    of=count,
                    ids=[int(i) for i in chunk],
                    paths=[images.paths[i] for i in chunk],
                    labels=[images.labels[i] for i in chunk],
                )
            )
    return shards


class _ShardSums:
    """A shard's statistics as exact partial sums: per-pixel sums (exact up to 16 M images) and
    the sum over pixels of x x^T (x the RGB values 0..255)."""

    def __init__(self, image_size: int):
        self.image_sum = np.zeros((image_size, image_size, 3), np.uint32)
        # a row group's sum (128 x 255 < 2^16): half the memory traffic of adding to image_sum
        self.group_sum = np.zeros_like(self.image_sum, np.uint16)
        self.rgb_outer_sum = np.zeros((3, 3), np.float64)
        self.planes = np.empty((3, image_size * image_size), np.float32)  # R, G, B of an image

    def add(self, pixels: np.ndarray) -> None:
        np.add(self.group_sum, pixels, out=self.group_sum)
        # x x^T summed over the pixels: OpenCV splits the colour planes into this reused float32
        # buffer, then 6 dot products (float32 sums: ~1e-5 relative). 0.1 ms at 256 px, where
        # strided numpy planes took 0.4: fresh 256 KB arrays fault their pages in every time
        for channel, plane in enumerate(cv2.split(pixels)):
            self.planes[channel] = plane.reshape(-1)
        for i in range(3):
            for j in range(i, 3):
                moment = float(np.dot(self.planes[i], self.planes[j]))
                self.rgb_outer_sum[i, j] += moment
                if i != j:
                    self.rgb_outer_sum[j, i] += moment

    def end_group(self) -> None:
        self.image_sum += self.group_sum
        self.group_sum[:] = 0


def write_shard(
    shard: Shard, out_uri: str, root: str, image_size: int, encoding: str, quality: int
) -> dict:
    """Decode, resize, crop, encode and write one shard; save its statistics beside it.

    Runs as a Ray Data task. Memory: one row group of encoded images at a time. A file that
    cannot become a row (unreadable, not an image, a decompression bomb, a name that is not
    UTF-8) is a reject `(path, reason)`, both valid UTF-8 text, never an exception.
    """
    out = Location.of(out_uri)
    sums = _ShardSums(image_size)
    per_class: dict[int, int] = {}
    rejects: list[tuple[str, str]] = []
    digest = hashlib.sha256()
    rows: dict[str, list] = {name: [] for name in SHARD_SCHEMA.names}
    final = out.join(shard.split, f"{shard.name}.parquet")
    temporary = out.join("_work", f"{shard.split}-{shard.name}.parquet.tmp")
    # JPEG bytes do not compress
    compression = {"image": "NONE", "path": "SNAPPY", "id": "SNAPPY", "label": "SNAPPY"}
    with (
        out.fs.open_output_stream(temporary) as stream,
        pq.ParquetWriter(stream, SHARD_SCHEMA, compression=compression) as writer,
    ):
        for image_id, path, label in zip(shard.ids, shard.paths, shard.labels):
            pixels, reject = _decode(path, image_size)
            if reject is not None:
                rejects.append(reject)
                continue
            sums.add(pixels)
            per_class[label] = per_class.get(label, 0) + 1
            data = codec.encode_jpeg(pixels, quality) if encoding == "jpeg" else pixels.tobytes()
            digest.update(f"{image_id}:{label}:".encode() + hashlib.sha256(data).digest())
            rows["id"].append(image_id)
            rows["label"].append(label)
            rows["image"].append(data)
            rows["path"].append(relative_path(path, root))
            if len(rows["id"]) == ROW_GROUP_ROWS:
                writer.write_table(pa.table(rows, schema=SHARD_SCHEMA))
                rows = {name: [] for name in SHARD_SCHEMA.names}
                sums.end_group()
        if rows["id"]:
            writer.write_table(pa.table(rows, schema=SHARD_SCHEMA))
        sums.end_group()
    out.fs.move(temporary, final)
    out.write_arrays(
        {"image_sum": sums.image_sum.astype(np.int64), "rgb_outer_sum": sums.rgb_outer_sum},
        "_work",
        f"{shard.split}-{shard.name}.npz",
    )
    result = {
        "split": shard.split,
        "name": shard.name,
        "images": len(shard.ids) - len(rejects),
        "per_class": {str(k): v for k, v in sorted(per_class.items())},
        "rejects": rejects,
        "digest": digest.hexdigest(),
    }
    out.write_json(result, "_work", f"{shard.split}-{shard.name}.json")  # marks the shard done
    return result


def _decode(path: str, image_size: int) -> tuple[np.ndarray | None, tuple[str, str] | None]:
    """(uint8 (S, S, 3) pixels, None), or (None, (path, reason)) for a file that cannot be one."""
    if not is_utf8(path):  # Parquet, CSV and MLflow hold UTF-8 text only
        return None, (printable(path), "file name is not valid UTF-8")
    try:
        with open(path, "rb") as handle:
            return codec.decode_resize_center_crop(handle.read(), image_size), None
    except (OSError, ValueError) as error:
        return None, (path, printable(str(error)[:300]) or type(error).__name__)
    except Exception as error:  # no malformed file may fail the job: a reject, named
        reason = f"unexpected {type(error).__name__} while decoding: {error}"
        return None, (path, printable(reason[:300]))


def _write_shard_batch(batch: dict, **kwargs) -> dict:
    """Ray Data adapter: a batch of one shard description -> one row of summary."""
    shard = Shard(
        split=str(batch["split"][0]),
        index=int(batch["index"][0]),
        of=int(batch["of"][0]),
        ids=[int(i) for i in batch["ids"][0]],
        paths=[str(p) for p in batch["paths"][0]],
        labels=[int(i) for i in batch["labels"][0]],
    )
    result = write_shard(shard, **kwargs)
    return {
        "split": [shard.split],
        "images": [result["images"]],
        "rejects": [len(result["rejects"])],
    }


class Progress:
    """A progress bar on a terminal, a line per finished shard otherwise."""

    def __init__(self, total: int, already: int):
        self.total, self.done, self.started = total, already, time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=already, unit="img", desc="prepare")

    def update(self, split: str, images: int, rejects: int, shards_left: int) -> None:
        self.done += images + rejects
        if self.bar is not None:
            self.bar.update(images + rejects)
            return
        rate = self.done / max(time.monotonic() - self.started, 1e-9)
        log.info(
            f"prepare: {self.done}/{self.total} files ({split} shard done, {rejects} rejected), "
            f"{rate:.0f} files/s, {shards_left} shards left"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_shards(todo: list[Shard], config, out: Location, progress) -> None:
    """Write the shards `todo` (a Ray Data job); `progress.update` after each. `config`: the
    run's PrepareConfig."""
    import ray.data

    items = [dataclasses.asdict(shard) for shard in todo]
    shards = ray.data.from_items(items, override_num_blocks=len(items))
    shards.context.op_resource_reservation_enabled = False  # the shard writes get every CPU
    results = shards.map_batches(
        _write_shard_batch,
        batch_size=1,
        num_cpus=config.cpus_per_task,
        fn_kwargs={
            "out_uri": out.uri,
            "root": str(Path(config.root).expanduser().resolve()),
            "image_size": config.image_size,
            "encoding": config.encoding,
            "quality": config.jpeg_quality,
        },
    )
    left = len(todo)
    for row in results.iter_rows():
        left -= 1
        progress.update(row["split"], int(row["images"]), int(row["rejects"]), left)


def merge(out: Location, shards: list[Shard], classes: list[str], image_size: int):
    """Merge the saved per-shard results, one shard at a time."""
    image_sum = np.zeros((image_size, image_size, 3), np.int64)
    rgb_outer_sum = np.zeros((3, 3), np.float64)
    per_class = {"train": [0] * len(classes), "val": [0] * len(classes)}
    images = {"train": 0, "val": 0}
    rejects, digests = [], hashlib.sha256()
    for shard in shards:
        result = out.read_json("_work", f"{shard.split}-{shard.name}.json")
        images[shard.split] += result["images"]
        for label, count in result["per_class"].items():
            per_class[shard.split][int(label)] += count
        rejects += [(shard.split, path, reason) for path, reason in result["rejects"]]
        digests.update(result["digest"].encode())
        if shard.split == "train":
            sums = out.read_arrays("_work", f"{shard.split}-{shard.name}.npz")
            image_sum += sums["image_sum"]
            rgb_outer_sum += sums["rgb_outer_sum"]
    return image_sum, rgb_outer_sum, per_class, images, rejects, digests.hexdigest()

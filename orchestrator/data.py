"""The training-time data: prepared Parquet shards -> Ray Data decode -> uint8 batches.

Ray Data reads the shards (a new file order every epoch, reproducible from the seed). Where their
S x S JPEGs are decoded is `data.decode`: in the read tasks (`tasks`, which then stream uint8
(N, S, S, 3) pixels), or by the training worker from the streamed JPEG bytes (`worker`: a thread
pool; `device`: torchvision on the training device, nvJPEG on a GPU; see orchestrator/feed.py).
Raw shards hold the pixels: nothing is decoded, the bytes stream as they are stored and become a
torch batch without a copy per image. The random crop, flip,
PCA colour noise and mean subtraction run on the training worker's device from those uint8
batches (`workloads.alexnet.transforms.BatchTransform`), keyed by (seed, epoch, image id): new
every epoch, identical for the same seed, whatever the batch order.

A raw image tree (`imagefolder`, `imagenet`) or the generated dataset (`synthetic`) is prepared
into shards on first use (see orchestrator/prepare.py) and reused afterwards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.errors import ConfigError, check_custom_resources
from orchestrator.prepare import PrepareConfig, PrepareResult, list_source, run_prepare
from orchestrator.storage import Location, open_input_file
from workloads.datasets import codec
from workloads.datasets.synthetic import SyntheticConfig, generate

if TYPE_CHECKING:  # Ray is imported where it is used: a config check needs none of it
    import ray.data

DEFAULT_SYNTHETIC_ROOT = "data/synthetic"
DEFAULT_PREPARED_PARENT = "data/prepared"
STORED_BLOCK_BYTES = 16 << 20  # the read tasks' blocks of undecoded rows: whole row groups


@dataclass(frozen=True)
class DataConfig:
    source: Literal["prepared", "imagefolder", "imagenet", "synthetic"] = "prepared"
    root: str | None = None  # prepared: `prepare`'s output; imagefolder/imagenet: the raw tree;
    #                          synthetic: where to generate it (default data/synthetic)
    prepared_root: str | None = None  # where a raw source is prepared (default data/prepared/...)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    flip: bool = True  # random horizontal flips in training
    mean_subtraction: bool = True  # subtract the training set's per-pixel mean image
    pca_noise_std: float = 0.1  # std of the paper's PCA colour noise alphas; 0 turns it off
    decode_rows_per_batch: int = 64  # images read and decoded at a time
    decode_cpus: float = 1.0  # CPUs reserved per Ray Data read/decode task (one per shard file)
    max_cpus: float | None = None  # CPUs Ray Data may hold while training; None: what is free
    # custom Ray resources each read/decode task also needs, e.g. {preprocess: 0.01}: only nodes
    # that offer them decode (see cluster/README.md)
    resources: dict[str, float] = field(default_factory=dict)
    prefetch_batches: int = 2  # batches each training worker prefetches
    # images each training worker holds and draws its batches from at random (Ray Data's local
    # shuffle buffer), mixing row groups of different shards; 0: batches as the stream comes
    shuffle_rows: int = 1024
    # where JPEG shards are decoded: in the Ray Data read tasks, in the training worker's threads,
    # or on its device (nvJPEG on a GPU); auto: worker when training on CPUs, tasks on GPUs
    # (README, "Where decoding runs"). Raw shards have nothing to decode.
    decode: Literal["auto", "tasks", "worker", "device"] = "auto"

    def __post_init__(self):
        if self.pca_noise_std < 0:
            raise ValueError(f"pca_noise_std: got {self.pca_noise_std}; allowed: a number >= 0")
        if not self.decode_cpus > 0:
            raise ValueError(f"decode_cpus: got {self.decode_cpus}; allowed: a number > 0")
        if self.max_cpus is not None and self.max_cpus < self.decode_cpus:
            raise ValueError(
                f"max_cpus: got {self.max_cpus}; allowed: >= decode_cpus ({self.decode_cpus})"
            )
        check_custom_resources("resources", self.resources)
        if self.decode_rows_per_batch < 1 or self.prefetch_batches < 0:
            raise ValueError("decode_rows_per_batch: allowed >= 1; prefetch_batches: allowed >= 0")
        if self.shuffle_rows < 0:
            raise ValueError(f"shuffle_rows: got {self.shuffle_rows}; allowed: an integer >= 0")


@dataclass(frozen=True)
class ImageStats:
    """Training-set statistics from `prepare`, in [0, 1] pixel units."""

    mean_image: np.ndarray  # (S, S, 3) float32
    eigenvalues: np.ndarray  # (3,) descending
    eigenvectors: np.ndarray  # (3, 3), columns
    count: int


@dataclass(frozen=True)
class PreparedData:
    """A complete `prepare` output, opened."""

    uri: str
    manifest: dict
    stats: ImageStats

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def image_size(self) -> int:
        return self.manifest["params"]["image_size"]

    @property
    def encoding(self) -> str:
        return self.manifest["params"]["encoding"]

    def files(self, split: str) -> list[str]:
        return [f"{self.uri}/{name}" for name in self.manifest["shards"][split]]

    def count(self, split: str) -> int:
        return self.manifest["images"][split]

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def digest(self) -> str:
        """What `prepare` wrote, as one hash: the shards' content digest from the manifest (for
        a manifest without one, a digest of the manifest itself)."""
        if self.manifest.get("digest"):
            return self.manifest["digest"]
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()


def open_prepared(uri: str) -> PreparedData:
    location = Location.of(uri)
    if not location.exists("manifest.json"):
        raise ConfigError(
            f"data.root: {location.uri} holds no complete prepared dataset (no manifest.json); "
            "run `orchestrator/run.py prepare` first, or use data.source: imagefolder"
        )
    stats = location.read_arrays("stats.npz")
    return PreparedData(
        uri=location.uri,
        manifest=location.read_json("manifest.json"),
        stats=ImageStats(
            mean_image=stats["mean_image"],
            eigenvalues=stats["eigenvalues"],
            eigenvectors=stats["eigenvectors"],
            count=int(stats["count"]),
        ),
    )


def raw_source(config: DataConfig, prepare: PrepareConfig) -> PrepareConfig | None:
    """The `prepare` job a raw source needs before training (None for a prepared source).

    Generates the synthetic dataset first (once). Needs no Ray, so bad paths fail early.
    """
    if config.source == "prepared":
        if config.root is None:
            raise ConfigError("data.root: required (the output of `prepare`, or set data.source)")
        return None
    if config.source == "synthetic":
        try:
            root = generate(Path(config.root or DEFAULT_SYNTHETIC_ROOT).resolve(), config.synthetic)
        except ValueError as error:  # a folder of the user's: never overwritten
            raise ConfigError(f"data.root (data.source: synthetic): {error}") from None
        source = "imagefolder"
    else:
        if config.root is None:
            raise ConfigError(f"data.root: required when data.source is '{config.source}'")
        root, source = Path(config.root).expanduser().resolve(), config.source
    return dataclasses.replace(prepare, source=source, root=str(root), out=config.prepared_root)


def prepare_source(prepare: PrepareConfig, splits) -> PrepareResult:
    """Run (or find already done) the preparation of a raw source; needs a running Ray."""
    return run_prepare(prepare, default_parent=DEFAULT_PREPARED_PARENT, splits=splits)


def _read_shards(
    batch: dict,
    encoding: str,
    image_size: int,
    rows_per_batch: int,
    shuffle: bool,
    with_files: bool = False,
    decode: bool = True,
) -> Iterator[dict | pa.Table]:
    """Shard files -> batches of {"image": uint8 (N, S, S, 3), "label", "id"} (and "file", the
    shard's URI, `with_files`), streamed; `decode=False`: Arrow tables of the stored "image"
    bytes, "label" and "id", untouched (the consumer decodes: orchestrator/feed.py).

    Reads one Parquet row group (128 images) at a time and decodes it `rows_per_batch` rows at a
    time. When training, each shard's row groups are read in a new random order and the rows
    of each group permuted, every pass (batch composition only: augmentation is keyed by image
    id); the training iterator's shuffle buffer then mixes groups of different shards.
    """
    for uri in batch["file"]:
        with open_input_file(str(uri)) as handle:
            shard = pq.ParquetFile(handle)
            rng = np.random.default_rng()
            groups = shard.num_row_groups
            stored, stored_bytes = [], 0
            for group in rng.permutation(groups) if shuffle else range(groups):
                table = shard.read_row_group(int(group), columns=["id", "label", "image"])
                if not decode:  # (raw rows are not permuted: a copy of 25 MB per group)
                    stored.append(
                        table
                        if encoding == "raw" or not shuffle
                        else table.take(rng.permutation(table.num_rows))
                    )
                    stored_bytes += table.nbytes
                    if stored_bytes >= STORED_BLOCK_BYTES:
                        yield pa.concat_tables(stored)
                        stored, stored_bytes = [], 0
                    continue
                if shuffle:
                    table = table.take(rng.permutation(table.num_rows))
                for start in range(0, table.num_rows, rows_per_batch):
                    decoded = _decoded(table.slice(start, rows_per_batch), encoding, image_size)
                    if with_files:
                        decoded["file"] = np.full(len(decoded["id"]), str(uri), dtype=object)
                    yield decoded
            if stored:
                yield pa.concat_tables(stored)


def _decoded(table, encoding: str, image_size: int) -> dict:
    if encoding == "raw":
        images = stored_pixels(table.column("image"), image_size)
    else:
        images = np.empty((table.num_rows, image_size, image_size, 3), np.uint8)
        for i, data in enumerate(table.column("image").to_pylist()):
            codec.decode_jpeg(data, out=images[i])
    decoded = {
        "image": images,
        "label": table.column("label").to_numpy(),
        "id": table.column("id").to_numpy(),
    }
    if "path" in table.column_names:
        decoded["path"] = np.array(table.column("path").to_pylist(), dtype=object)
    return decoded


def stored_values(column) -> tuple[np.ndarray, np.ndarray]:
    """A binary Arrow column -> (all its bytes as one uint8 array, N + 1 offsets into it), both
    views of the Arrow buffers (no copy when the column is one chunk)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offset_type = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], offset_type)[array.offset :]
    offsets = offsets[: len(array) + 1]
    values = np.frombuffer(array.buffers()[2], np.uint8) if len(array) else np.empty(0, np.uint8)
    return values, offsets


def stored_pixels(column, image_size: int) -> np.ndarray:
    """The "image" column of raw shards -> uint8 (N, S, S, 3), a view of the Arrow buffer: no
    Python work per image, no copy."""
    values, offsets = stored_values(column)
    count, size = len(offsets) - 1, image_size * image_size * 3
    if offsets[-1] - offsets[0] != count * size:
        raise ValueError(f"raw shard rows are not {image_size} x {image_size} x 3 bytes each")
    return values[offsets[0] : offsets[-1]].reshape(count, image_size, image_size, 3)


def batches_here(data: PreparedData, files: list[str], rows: int) -> Iterator[dict]:
    """Decoded batches of `rows` rows of shards `files` (of `data`) in their stored order, with
    "file", as `decoded_stream(..., with_files=True)` gives them, read in this process."""
    return _read_shards(
        {"file": files},
        data.encoding,
        data.image_size,
        rows_per_batch=rows,
        shuffle=False,
        with_files=True,
    )


def first_images(data: PreparedData, split: str, count: int) -> dict:
    """The first `count` rows of a split in its stored order, as `decoded_stream` gives them,
    read here without Ray."""
    batches, rows = [], 0
    for batch in batches_here(data, data.files(split), count):
        batches.append(batch)
        rows += len(batch["id"])
        if rows >= count:
            break
    if not batches:
        return {}
    return {key: np.concatenate([b[key] for b in batches])[:count] for key in batches[0]}


def read_rows(data: PreparedData, uri: str, ids) -> dict:
    """The rows of shard `uri` whose id is in `ids`, decoded, with their source "path". Only
    the row groups that hold them are read (ids are scattered: a shard's rows are shuffled)."""
    import pyarrow.compute as pc

    wanted = pa.array(list(ids), type=pa.int64())
    with open_input_file(uri) as handle:
        shard = pq.ParquetFile(handle)
        groups = [
            group
            for group in range(shard.num_row_groups)
            if pc.any(
                pc.is_in(shard.read_row_group(group, columns=["id"]).column("id"), wanted)
            ).as_py()
        ]
        table = shard.read_row_groups(groups, columns=["id", "label", "image", "path"])
    return _decoded(
        table.filter(pc.is_in(table.column("id"), wanted)), data.encoding, data.image_size
    )


def shuffle_options(rows: int, seed: int, epoch: int, rank: int = 0) -> dict:
    """The shuffle buffer of a training epoch's batch iterator (`data.shuffle_rows` images;
    `iter_torch_batches(**shuffle_options(...))`): it draws differently every epoch and rank,
    the same way for the same seed. (The rows reach it in an order Ray Data's parallel reads
    decide, so a batch's images are not the same from run to run; each image's crop, flip and
    colour noise are: they are keyed by its id.)"""
    if not rows:
        return {}
    (draws,) = np.random.SeedSequence([seed, epoch, rank]).generate_state(1)
    return {"local_shuffle_buffer_size": rows, "local_shuffle_seed": int(draws)}


def decoded_stream(
    data: PreparedData, split: str, config: DataConfig, seed: int | None, with_files: bool = False
) -> ray.data.Dataset:
    """{"image": uint8 (S, S, 3), "label", "id"} rows of one split (and "file", the shard's URI,
    `with_files`), decoded by the read tasks, one read task per shard (`split_stream`)."""
    return split_stream(data, split, config, seed, decode=True, with_files=with_files)


def split_stream(
    data: PreparedData,
    split: str,
    config: DataConfig,
    seed: int | None,
    decode: bool,
    with_files: bool = False,
) -> ray.data.Dataset:
    """The rows of one split, one read task per shard: decoded to {"image": uint8 (S, S, 3),
    "label", "id"} by the read tasks (`decode`), or as stored ("image": JPEG bytes or raw pixels),
    for the training worker to turn into a batch (orchestrator/feed.py).

    `seed`: a new shard order every epoch (reproducible from the seed), and each shard's row
    groups read in a new order, their rows permuted (`_read_shards`); None reads in order
    (validation).
    """
    import ray.data

    files = data.files(split)
    shards = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
    if seed is not None:
        shards = shards.randomize_block_order(
            seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True)
        )  # a new order on every pass (epoch), the same sequence for the same seed
    stream = shards.map_batches(
        _read_shards,
        batch_size=1,
        num_cpus=config.decode_cpus,
        resources=config.resources or None,
        fn_kwargs={
            "encoding": data.encoding,
            "image_size": data.image_size,
            "rows_per_batch": config.decode_rows_per_batch,
            "shuffle": seed is not None,
            "with_files": with_files,
            "decode": decode,
        },
    )
    return let_decode_use_every_cpu(stream)


def let_decode_use_every_cpu(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """Turn off Ray Data's per-operator resource reservation for this dataset.

    The reservation keeps part of the CPUs for operators that barely need any (the file list,
    the block shuffle), which leaves the decode, the one heavy operator, with about half the
    CPUs: measured here, 1.3-1.5k images/s with it and 2.0-2.5k without, on 2 CPUs.
    """
    dataset.context.op_resource_reservation_enabled = False
    return dataset


def report_prepare(result: PrepareResult) -> None:
    if result.skipped:
        print(
            f"prepared data: {result.out} (already complete: {result.images['train']} training "
            f"/ {result.images['val']} validation images)",
            flush=True,
        )
        return
    resumed = result.total - result.processed
    earlier = f"; {resumed} done by an earlier run" if resumed else ""
    print(
        f"prepare: {sum(result.images.values())} images ({result.images['train']} train, "
        f"{result.images['val']} val) in {result.out}; {result.rejects} rejected (see "
        f"{result.rejects_file}). This run: {result.processed} files in {result.seconds:.1f} s, "
        f"{result.images_per_second:.0f} images/s, {result.images_per_second_per_core:.0f} "
        f"images/s per CPU core ({result.cpus:g} cores){earlier}",
        flush=True,
    )


def check_rejects(result: PrepareResult, config: PrepareConfig) -> None:
    if not result.complete:
        raise ConfigError(
            f"prepare: {result.rejects} of {result.total} files could not be read "
            f"({result.rejects / result.total:.2%}), more than prepare.max_reject_fraction "
            f"({config.max_reject_fraction:g}); they are listed in {result.rejects_file}"
        )


def open_data(config: DataConfig, prepare: PrepareConfig, check=None) -> PreparedData:
    """The prepared data `config` names, preparing a raw source first (once). Starts Ray.

    Bad paths fail before Ray starts, and so does `check(data)` on prepared data (a raw source
    is checked once it is prepared).
    """
    from orchestrator import cluster

    raw = raw_source(config, prepare)
    if raw is None:
        data = open_prepared(config.root)
        if check is not None:
            check(data)
        cluster.ensure_ray()
        return data
    splits = list_source(raw)
    cluster.ensure_ray()
    result = prepare_source(raw, splits)
    report_prepare(result)
    check_rejects(result, raw)
    data = open_prepared(result.out)
    if check is not None:
        check(data)
    return data

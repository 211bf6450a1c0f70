"""The training-time data: prepared Parquet shards -> Ray Data -> rows for the training workers.

Ray Data reads the shards (a new file order every epoch, reproducible from the seed) in read
tasks (data/shard_reader.py). Where their S x S JPEGs are decoded is `data.decode`: in the read
tasks (`tasks`, which then stream uint8 (N, S, S, 3) pixels), or by the training worker from the
streamed JPEG bytes (`worker`: a thread pool; `device`: torchvision on the training device,
nvJPEG on a GPU; see data/feed.py). Raw shards hold the pixels: nothing is decoded, the bytes
stream as they are stored and become a torch batch without a copy per image. The random crop,
flip, PCA colour noise and mean subtraction run on the training worker's device from those uint8
batches (`workloads.alexnet.transforms.BatchTransform`), keyed by (seed, epoch, image id): new
every epoch, identical for the same seed, whatever the batch order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from orchestrator.data.config import DataConfig
from orchestrator.data.prepared import PreparedData
from orchestrator.data.shard_reader import read_shards

if TYPE_CHECKING:  # Ray is imported where it is used: a config check needs none of it
    import ray.data


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
    data: PreparedData,
    split: str,
    config: DataConfig,
    seed: int | None,
    with_files: bool = False,
    with_paths: bool = False,
) -> ray.data.Dataset:
    """{"image": uint8 (S, S, 3), "label", "id"} rows of one split (and "file", the shard's URI,
    `with_files`; "path", the image's source file, `with_paths`), decoded by the read tasks, one
    read task per shard (`split_stream`)."""
    return split_stream(
        data, split, config, seed, decode=True, with_files=with_files, with_paths=with_paths
    )


def split_stream(
    data: PreparedData,
    split: str,
    config: DataConfig,
    seed: int | None,
    decode: bool,
    with_files: bool = False,
    with_paths: bool = False,
) -> ray.data.Dataset:
    """The rows of one split, one read task per shard: decoded to {"image": uint8 (S, S, 3),
    "label", "id"} by the read tasks (`decode`), or as stored ("image": JPEG bytes or raw pixels),
    for the training worker to turn into a batch (data/feed.py).

    `seed`: a new shard order every epoch (reproducible from the seed), and each shard's row
    groups read in a new order, their rows permuted (`shard_reader.read_shards`); None reads
    in order (validation).
    """
    import ray.data

    files = data.files(split)
    shards = ray.data.from_items([{"file": f} for f in files], override_num_blocks=len(files))
    if seed is not None:
        shards = shards.randomize_block_order(
            seed=ray.data.RandomSeedConfig(seed=seed, reseed_after_execution=True)
        )  # a new order on every pass (epoch), the same sequence for the same seed
    stream = shards.map_batches(
        read_shards,
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
            "with_paths": with_paths,
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

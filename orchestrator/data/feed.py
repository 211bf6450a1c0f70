"""The training worker's end of the stream: uint8 image batches on its device, decoded where
`data.decode` says.

- `tasks`: the Ray Data read tasks decoded the JPEGs; the batches arrive as uint8 pixels.
- `worker`: the stream carries the JPEG bytes (~5x smaller than the pixels at 256 px); this
  process decodes each batch with libjpeg-turbo in a thread pool (the codec releases the GIL),
  straight into the batch's (pinned, on a GPU) memory, one batch ahead of the training step.
- `device`: the stream carries the JPEG bytes; torchvision decodes each batch on the training
  device (nvJPEG, batched, on a GPU; libjpeg-turbo on a CPU).
- raw shards (`prepare.encoding: raw`) have nothing to decode: the stored bytes become the batch
  tensor as they are (a view of the Arrow buffer, no Python work per image), wherever
  `data.decode` points; without a shuffle buffer (validation, `data.shuffle_rows: 0`) they are
  copied once into reused batch memory instead of Ray Data's batching.
All four give the same uint8 pixels for the same image (tested), so training does not depend on
the choice; the speed does (docs/data.md, "Where decoding runs").
"""

from __future__ import annotations

import sys
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from orchestrator.data.config import DataConfig
from orchestrator.data.shard_reader import stored_pixels, stored_values
from workloads.datasets import codec
from workloads.datasets.batch_decode import decode_batch


def decode_place(config: DataConfig, encoding: str, use_gpu: bool) -> str:
    """Where this run decodes: "stored" for raw shards (nothing to decode), else `data.decode`,
    whose `auto` is `worker` on CPU workers (measured faster) and `tasks` on GPU workers (the
    only place that uses other nodes' cores; docs/data.md, "Where decoding runs")."""
    if encoding == "raw":
        return "stored"
    if config.decode != "auto":
        return config.decode
    return "tasks" if use_gpu else "worker"


# decode threads of the `worker` place per CPU of the training worker. More threads than CPUs:
# the decode's share of the CPUs grows against Ray Data's threads in the same process (and the
# read tasks), whose polling costs time, not images. Measured on 2 CPUs, 16,000-image epochs:
# 2 threads 1,700-2,300 images/s, 4 threads 2,700-3,000, 6 threads 2,550-3,200 (a DataLoader
# with 2 workers 2,150-2,500).
THREADS_PER_CPU = 3


def decode_threads(cpus: float) -> int:
    """Decode threads of the `worker` place for a training worker of `cpus` CPUs."""
    return max(1, round(THREADS_PER_CPU * cpus))


@dataclass(frozen=True)
class Feed:
    """How a training worker turns its dataset shard into batches (picklable: in WorkerPlan)."""

    place: str  # tasks | worker | device | stored (decode_place)
    image_size: int
    threads: int = 1  # decode threads of the `worker` place (decode_threads)

    def batches(
        self,
        shard,
        batch_size: int,
        device: torch.device,
        prefetch_batches: int,
        pin_memory: bool = False,
        drop_last: bool = False,
        shuffle: dict | None = None,
    ) -> Iterator[dict]:
        """{"image": uint8 (N, S, S, 3), "label", "id"} torch batches on `device`, from a Ray
        Data iterator (a Train dataset shard) or dataset of `split_stream` rows."""
        options = dict(
            batch_size=batch_size,
            drop_last=drop_last,
            prefetch_batches=prefetch_batches,
            **(shuffle or {}),
        )
        if self.place == "tasks":
            yield from shard.iter_torch_batches(device=device, pin_memory=pin_memory, **options)
            return
        pinned = pin_memory and device.type == "cuda"
        if self.place == "stored" and not shuffle:
            yield from self._stored_batches(
                shard, batch_size, device, prefetch_batches, pinned, drop_last
            )
            return
        tables = shard.iter_batches(batch_format="pyarrow", **options)
        if self.place != "worker":
            for table in tables:
                yield self._batch(table, device, pinned, pool=None)
            return
        buffers = _Buffers()
        with ThreadPoolExecutor(self.threads) as pool, ThreadPoolExecutor(1) as ahead:
            pending: deque = deque()  # the next batch decodes while this one trains
            for table in tables:
                pending.append(ahead.submit(self._batch, table, device, pinned, pool, buffers))
                if len(pending) > 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def _batch(self, table, device: torch.device, pinned: bool, pool, buffers=None) -> dict:
        labels = _read_only_tensor(table.column("label").to_numpy())
        ids = _read_only_tensor(table.column("id").to_numpy())
        if table.num_rows == 0:  # (an empty shard's batch: nothing to decode)
            size = self.image_size
            images = torch.empty((0, size, size, 3), dtype=torch.uint8)
        elif self.place == "device":
            images = decode_on(device, table.column("image"))
        elif self.place == "stored":
            images = _read_only_tensor(stored_pixels(table.column("image"), self.image_size))
        else:
            images = self._decode_in_threads(table.column("image"), pool, pinned, buffers)
        return {
            "image": images.to(device, non_blocking=pinned),
            "label": labels.to(device, non_blocking=pinned),
            "id": ids,
        }

    def _stored_batches(
        self,
        shard,
        batch_size: int,
        device: torch.device,
        prefetch_batches: int,
        pinned: bool,
        drop_last: bool,
    ) -> Iterator[dict]:
        """Raw rows in stream order: Ray Data's blocks as they come, each image copied once into
        a reused batch array. (Ray's batcher concatenates blocks into fresh memory for every
        batch: the consumer spent ~80 us per 256 px image there, ~45 here.)"""
        size, buffers = self.image_size, _Buffers()
        shape = (batch_size, size, size, 3)
        images, labels, ids, filled = None, [], [], 0  # the batch being filled
        blocks = shard.iter_batches(
            batch_format="pyarrow", batch_size=None, prefetch_batches=prefetch_batches
        )
        for block in blocks:
            for rows in block.to_batches():  # (the columns of a record batch are one chunk each)
                pixels = stored_pixels(rows.column("image"), size)
                row_labels, row_ids = rows.column("label").to_numpy(), rows.column("id").to_numpy()
                start = 0
                while start < len(pixels):
                    if images is None:
                        images = _batch_memory(shape, pinned, buffers)
                    count = min(batch_size - filled, len(pixels) - start)
                    images.numpy()[filled : filled + count] = pixels[start : start + count]
                    labels.append(row_labels[start : start + count])
                    ids.append(row_ids[start : start + count])
                    filled, start = filled + count, start + count
                    if filled == batch_size:
                        yield self._batch_of(images, labels, ids, device, pinned)
                        images, labels, ids, filled = None, [], [], 0
        if filled and not drop_last:
            yield self._batch_of(images[:filled], labels, ids, device, pinned)

    @staticmethod
    def _batch_of(
        images: torch.Tensor, labels: list, ids: list, device: torch.device, pinned: bool
    ) -> dict:
        return {
            "image": images.to(device, non_blocking=pinned),
            "label": torch.from_numpy(np.concatenate(labels)).to(device, non_blocking=pinned),
            "id": torch.from_numpy(np.concatenate(ids)),
        }

    def _decode_in_threads(
        self, column, pool: ThreadPoolExecutor, pinned: bool, buffers: _Buffers
    ) -> torch.Tensor:
        values, offsets = stored_values(column)
        count, size = len(offsets) - 1, self.image_size
        images = _batch_memory((count, size, size, 3), pinned, buffers)
        pixels = images.numpy()

        def decode(rows: range) -> None:
            for i in rows:
                codec.decode_jpeg(values[offsets[i] : offsets[i + 1]], out=pixels[i])

        chunk = -(-count // self.threads)
        list(pool.map(decode, [range(i, min(i + chunk, count)) for i in range(0, count, chunk)]))
        return images


def _batch_memory(shape: tuple, pinned: bool, buffers: _Buffers) -> torch.Tensor:
    """A uint8 batch tensor to write the images into: page-locked for a copy to the GPU (torch
    caches pinned memory, safe with copies in flight), else one of `buffers`."""
    if pinned:
        return torch.empty(shape, dtype=torch.uint8, pin_memory=True)
    return torch.from_numpy(buffers.take(shape))


class _Buffers:
    """uint8 batch arrays to decode into, each used again once nothing refers to it any more
    (no tensor made from it is alive). A fresh 50 MB array per batch costs its page faults on
    first write: ~0.13 ms per 256 px image measured here, a sixth of the decode itself."""

    KEEP = 6  # arrays kept; beyond that, a batch gets a fresh one

    def __init__(self):
        self.arrays: list[np.ndarray] = []

    def take(self, shape: tuple) -> np.ndarray:
        for array in self.arrays:
            # references: the list, this loop's name, getrefcount's argument; a tensor from
            # torch.from_numpy holds one more for as long as it (or a view of it) lives
            if array.shape == shape and sys.getrefcount(array) == 3:
                return array
        array = np.empty(shape, np.uint8)
        if len(self.arrays) < self.KEEP:
            self.arrays.append(array)
        return array


def decode_on(device: torch.device, column) -> torch.Tensor:
    """A binary Arrow column of JPEGs -> uint8 (N, S, S, 3) on `device`, decoded there in one
    batch (nvJPEG on a GPU)."""
    values, offsets = stored_values(column)
    data = _read_only_tensor(values)
    return decode_batch(
        [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)], device
    )


def _read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor viewing a read-only Arrow buffer (from the object store) without copying it;
    nothing writes to a batch's tensors (the transforms and the loss make new ones)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)

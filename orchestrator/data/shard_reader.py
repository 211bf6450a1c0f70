"""Reading prepared shards: a Ray Data task's rows, and the few rows a driver reads itself.

Ray Data's read tasks run `read_shards` (data/streams.py builds the streams): this module and
what it imports are all a task loads, so it imports no torch (tests/test_pipeline.py).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.common.storage import open_input_file
from orchestrator.data.prepared import PreparedData
from workloads.datasets import codec

STORED_BLOCK_BYTES = 16 << 20  # the read tasks' blocks of undecoded rows: whole row groups


def read_shards(
    batch: dict,
    encoding: str,
    image_size: int,
    rows_per_batch: int,
    shuffle: bool,
    with_files: bool = False,
    decode: bool = True,
    with_paths: bool = False,
) -> Iterator[dict | pa.Table]:
    """Shard files -> batches of {"image": uint8 (N, S, S, 3), "label", "id"} (and "file", the
    shard's URI, `with_files`; "path", each image's source file, `with_paths`), streamed;
    `decode=False`: Arrow tables of the stored "image" bytes, "label" and "id", untouched (the
    consumer decodes: data/feed.py).

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
                columns = ["id", "label", "image", *(["path"] if with_paths else [])]
                table = shard.read_row_group(int(group), columns=columns)
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
                    rows = table.slice(start, rows_per_batch)
                    decoded = _decoded(rows, encoding, image_size)
                    if with_paths:
                        decoded["path"] = np.asarray(rows.column("path").to_pylist(), dtype=object)
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
    return read_shards(
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

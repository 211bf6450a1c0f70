"""The Ray Data stream the workers read, on the shared Ray instance: its randomness and its order.
(`run.py train` end to end, Ray Data -> Ray Train workers -> MLflow: test_fault_tolerance.py.)"""

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from orchestrator.data.config import DataConfig
from orchestrator.data.feed import Feed, decode_place
from orchestrator.data.prepared import open_prepared
from orchestrator.data.shard_reader import read_shards
from orchestrator.data.streams import decoded_stream, shuffle_options, split_stream
from orchestrator.tracking.metrics import EPOCH_METRICS, SWEEP_METRICS
from workloads.alexnet import transforms as T

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prepared(tiny_prepared):
    return open_prepared(tiny_prepared)


def _epoch(stream, transform, epoch):
    """One pass: {image id: model input} and the order the ids arrived in."""
    views, order = {}, []
    for batch in stream.iter_torch_batches(batch_size=50):
        inputs = transform.train(batch["image"], batch["id"], epoch)
        for image_id, view in zip(batch["id"].tolist(), inputs):
            views[image_id] = view
            order.append(image_id)
    return views, order


def test_stream_gives_new_crops_every_epoch_and_the_same_for_the_same_seed(prepared):
    assert prepared.count("train") == 400 and prepared.image_size == 64
    config = DataConfig(source="prepared", root=prepared.uri)
    stream = decoded_stream(prepared, "train", config, seed=0)
    transform = T.BatchTransform(
        56,
        prepared.stats.mean_image,
        prepared.stats.eigenvalues,
        prepared.stats.eigenvectors,
        seed=0,
    )
    epoch1, order1 = _epoch(stream, transform, epoch=1)
    epoch2, order2 = _epoch(stream, transform, epoch=2)
    assert sorted(order1) == sorted(order2) == list(range(400))  # every image once per epoch
    assert order1 != order2  # shard order and batch composition change every epoch
    same = sum(torch.equal(epoch1[i], epoch2[i]) for i in range(400))
    assert same < 20  # new crops/flips/colour noise (a few may coincide)

    again = decoded_stream(prepared, "train", config, seed=0)
    stats = prepared.stats
    same_seed = T.BatchTransform(
        56, stats.mean_image, stats.eigenvalues, stats.eigenvectors, seed=0
    )
    repeat, _ = _epoch(again, same_seed, epoch=1)
    assert all(torch.equal(epoch1[i], repeat[i]) for i in range(400))  # same seed: identical


def test_a_shard_is_read_in_a_new_order_every_pass_and_in_order_for_validation(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = np.arange(40)
    images = [np.full((2, 2, 3), i, np.uint8).tobytes() for i in ids]
    shard = tmp_path / "shard.parquet"
    pq.write_table(
        pa.table({"id": ids, "label": ids % 5, "image": images}), shard, row_group_size=10
    )  # four row groups

    def read(shuffle: bool) -> list[int]:
        batches = read_shards({"file": [str(shard)]}, "raw", 2, 4, shuffle)
        rows = [
            (int(i), int(image[0, 0, 0])) for b in batches for i, image in zip(b["id"], b["image"])
        ]
        assert all(i == pixel for i, pixel in rows)  # each image stays with its id
        return [i for i, _ in rows]

    assert read(shuffle=False) == list(range(40))
    first, second = read(shuffle=True), read(shuffle=True)
    assert sorted(first) == sorted(second) == list(range(40)) and first != second
    groups = [i // 10 for i in first[::10]]  # whole row groups, in a new order...
    assert sorted(groups) == [0, 1, 2, 3] and all(
        i // 10 == groups[k // 10] for k, i in enumerate(first)
    )
    assert first[:10] != sorted(first[:10]) or first[10:20] != sorted(first[10:20])  # ...permuted


def _pairs_in_batches(stream, config, epoch: int, batch_size: int = 32) -> set:
    """The pairs of images that shared a training batch in one epoch, batches made as a worker
    makes them (its shuffle buffer included)."""
    pairs, shuffle = set(), shuffle_options(config.shuffle_rows, seed=0, epoch=epoch)
    for batch in stream.iter_batches(batch_size=batch_size, drop_last=True, **shuffle):
        ids = sorted(batch["id"].tolist())
        pairs.update((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    return pairs


def test_every_epoch_mixes_the_batches_anew(prepared):
    """Two images that shared a batch share one again in the next epoch about as often as
    chance has it (reading shards in the order `prepare` wrote them, they mostly did)."""
    config = DataConfig(source="prepared", root=prepared.uri)
    stream = decoded_stream(prepared, "train", config, seed=0)
    first, second = (_pairs_in_batches(stream, config, epoch) for epoch in (1, 2))
    again = len(first & second) / len(first)
    chance = (32 - 1) / (400 - 1)  # the chance of one given image to be in another's batch
    assert again < 2 * chance, (again, chance)


def test_validation_stream_is_complete_and_in_order(prepared):
    config = DataConfig(source="prepared", root=prepared.uri)
    batch = decoded_stream(prepared, "val", config, seed=None).take_batch(1000)
    assert batch["image"].shape == (100, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert sorted(batch["id"].tolist()) == list(range(100))
    assert np.bincount(batch["label"]).tolist() == [20] * 5


def test_decode_tasks_import_no_torch():
    """Every Ray Data decode task imports the module of `read_shards` in its worker: torch there
    would add seconds to each new worker process (the first epoch's data wait)."""
    task_module = read_shards.__module__
    command = [sys.executable, "-X", "importtime", "-c", f"import {task_module}"]
    imported = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in imported.stderr.splitlines()}
    assert {task_module, "workloads.datasets.codec"} <= modules  # what a task runs
    assert "torch" not in modules


def test_sweep_metrics_are_reported_every_epoch():
    assert set(SWEEP_METRICS) <= set(EPOCH_METRICS)


def _fed(prepared, place: str, shuffle_rows: int = 128) -> dict:
    """{image id: (digest of its uint8 pixels, label)} of one training epoch fed by `place`,
    every batch held until the end (a batch's memory must not be reused while it is alive)."""
    config = DataConfig(source="prepared", root=prepared.uri)
    stream = split_stream(prepared, "train", config, seed=0, decode=place == "tasks")
    batches = list(
        Feed(place, prepared.image_size, threads=2).batches(
            stream,
            64,
            torch.device("cpu"),
            prefetch_batches=1,
            shuffle=shuffle_options(shuffle_rows, seed=0, epoch=1),
        )
    )
    assert [len(batch["id"]) for batch in batches] == [64] * 6 + [16]  # 400 images
    seen = {}
    for batch in batches:
        images = batch["image"]
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (64, 64, 3)
        for image_id, image, label in zip(batch["id"].tolist(), images, batch["label"].tolist()):
            seen[image_id] = (hashlib.sha1(image.contiguous().numpy()).hexdigest(), label)
    return seen


def _stored_decoded(prepared, folder):
    """The prepared JPEG dataset with its images stored as the pixels they decode to
    (`prepare.encoding: raw`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workloads.datasets import codec

    for split in ("train", "val"):
        for name, uri in zip(prepared.manifest.shards[split], prepared.files(split)):
            table = pq.read_table(uri)
            pixels = [codec.decode_jpeg(b).tobytes() for b in table.column("image").to_pylist()]
            column = table.schema.get_field_index("image")
            table = table.set_column(column, "image", pa.array(pixels, pa.binary()))
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / name, row_group_size=128, compression="NONE")
    params = dataclasses.replace(prepared.manifest.params, encoding="raw")
    manifest = dataclasses.replace(prepared.manifest, params=params)
    return dataclasses.replace(prepared, uri=str(folder), manifest=manifest)


def test_every_decode_place_feeds_the_same_pixels(prepared, tmp_path):
    """data.decode moves the JPEG decode (Ray Data tasks, the training worker's threads, its
    device) and raw shards skip it: each must give every image's exact pixels and label, so
    training does not depend on the choice (the demo's accuracy with each: docs/data.md)."""
    config = DataConfig()
    assert decode_place(config, "jpeg", use_gpu=False) == "worker"  # auto, measured: docs/data.md
    assert decode_place(config, "jpeg", use_gpu=True) == "tasks"
    assert decode_place(dataclasses.replace(config, decode="device"), "raw", True) == "stored"
    expected = _fed(prepared, "tasks")
    assert sorted(expected) == list(range(400))
    assert len({digest for digest, _ in expected.values()}) == 400
    for place in ("worker", "device"):
        assert _fed(prepared, place) == expected, place
    raw = _stored_decoded(prepared, tmp_path)
    assert _fed(raw, "stored") == expected
    assert _fed(raw, "stored", shuffle_rows=0) == expected  # copied into reused batch memory

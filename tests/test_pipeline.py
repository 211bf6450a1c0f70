"""The Ray Data stream the workers read, on the shared Ray instance: its randomness and its order.
(`run.py train` end to end, Ray Data -> Ray Train workers -> MLflow: test_fault_tolerance.py.)"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

from orchestrator import data as pipeline
from orchestrator.metrics import EPOCH_METRICS, SWEEP_METRICS
from workloads.alexnet import transforms as T

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def prepared(tiny_prepared):
    return pipeline.open_prepared(tiny_prepared)


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
    config = pipeline.DataConfig(source="prepared", root=prepared.uri)
    stream = pipeline.decoded_stream(prepared, "train", config, seed=0)
    transform = T.BatchTransform(56, prepared.stats.mean_image, prepared.stats.eigenvalues,
                                 prepared.stats.eigenvectors, seed=0)  # fmt: skip
    epoch1, order1 = _epoch(stream, transform, epoch=1)
    epoch2, order2 = _epoch(stream, transform, epoch=2)
    assert sorted(order1) == sorted(order2) == list(range(400))  # every image once per epoch
    assert order1 != order2  # shard order and batch composition change every epoch
    same = sum(torch.equal(epoch1[i], epoch2[i]) for i in range(400))
    assert same < 20  # new crops/flips/colour noise (a few may coincide)

    again = pipeline.decoded_stream(prepared, "train", config, seed=0)
    stats = prepared.stats
    same_seed = T.BatchTransform(
        56, stats.mean_image, stats.eigenvalues, stats.eigenvectors, seed=0
    )
    repeat, _ = _epoch(again, same_seed, epoch=1)
    assert all(torch.equal(epoch1[i], repeat[i]) for i in range(400))  # same seed: identical


def test_validation_stream_is_complete_and_in_order(prepared):
    config = pipeline.DataConfig(source="prepared", root=prepared.uri)
    batch = pipeline.decoded_stream(prepared, "val", config, seed=None).take_batch(1000)
    assert batch["image"].shape == (100, 64, 64, 3) and batch["image"].dtype == np.uint8
    assert sorted(batch["id"].tolist()) == list(range(100))
    assert np.bincount(batch["label"]).tolist() == [20] * 5


def test_decode_tasks_import_no_torch():
    """Every Ray Data decode task imports orchestrator.data in its worker: torch there would add
    seconds to each new worker process (the first epoch's data wait)."""
    command = [sys.executable, "-X", "importtime", "-c", "import orchestrator.data"]
    imported = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in imported.stderr.splitlines()}
    assert {"orchestrator.data", "workloads.datasets.codec"} <= modules  # what a task runs
    assert "torch" not in modules


def test_sweep_metrics_are_reported_every_epoch():
    assert set(SWEEP_METRICS) <= set(EPOCH_METRICS)

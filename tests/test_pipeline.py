"""Through the real code path: Ray Data -> Ray Train workers -> MLflow, on a shared Ray instance."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT
from mlflow.tracking import MlflowClient

from orchestrator import data as pipeline
from orchestrator.metrics import EPOCH_METRICS, SWEEP_METRICS, TEN_CROP_METRICS
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
    assert "ray.data" in modules and "torch" not in modules


def test_sweep_metrics_are_reported_every_epoch():
    assert set(SWEEP_METRICS) <= set(EPOCH_METRICS)


def test_cli_train_learns_logs_one_run_and_survives_a_tracking_outage(
    ray_cluster, tiny_dataset, tiny_train_args, tmp_path, start_cli, mlflow_server
):
    """`orchestrator/run.py train` as a plain script, on the session's Ray instance, tracked by a
    real MLflow server that goes away for two epochs: the run learns, and MLflow ends up with
    every epoch once (buffered on disk meanwhile). (`evaluate` on a run: test_fault_tolerance.)"""
    _, synthetic = tiny_dataset
    epochs = 5
    args = tiny_train_args(
        f"train.epochs={epochs}", "train.ten_crop=true", "optim.lr=0.02",
        f"tracking.uri={mlflow_server.uri}", "tracking.experiment=pytest", "name=tiny-e2e",
        f"data.prepared_root={tmp_path / 'prepared'}",  # prepared on first use, here
    )  # fmt: skip
    log = tmp_path / "train.log"
    process = start_cli(*args, env={"RAY_ADDRESS": ray_cluster}, log=log)
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 300
    while True:  # until epoch 1 is in MLflow, then take the server away
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "epoch 1 was not logged within 300 s"
        experiment = client.get_experiment_by_name("pytest")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and client.get_metric_history(runs[0].info.run_id, "val_top1_error"):
            break
        time.sleep(0.5)
    mlflow_server.stop()
    while "MLflow still unreachable after epoch" not in log.read_text():  # a second epoch
        assert process.poll() is None, "the run died in the outage: " + log.read_text()[-3000:]
        assert time.monotonic() < deadline + 300, "no two epochs ended in the outage"
        time.sleep(0.5)
    mlflow_server.start()
    assert process.wait(timeout=400) == 0, log.read_text()[-3000:]

    printed = log.read_text()  # the project's own lines, not Ray's chatter
    assert printed.count("training goes on and") == 1  # warned once, then a line per epoch
    assert "to be replayed when it is back" in printed
    assert list((tmp_path / "mlflow-buffer").glob("*.jsonl*")) == []  # replayed, then removed
    assert f"open {mlflow_server.uri} in a browser" in printed
    coloured_prefix = "\x1b[36m("
    noise = ("TrainingReport", "PreemptionWatcher", "DeprecationWarning", "Progress bars",
             "execution of Dataset", coloured_prefix)  # fmt: skip
    assert [line for line in printed.splitlines() if any(n in line for n in noise)] == []

    (run,) = client.search_runs([experiment.experiment_id])  # one run, never one per worker
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-e2e"
    params = run.data.params
    assert params["model.variant"] == "paper" and params["model.towers"] == "2"
    assert params["model.num_classes"] == "5" and params["data.num_train_images"] == "400"
    assert params["data.image_size"] == "64" and params["data.rejects"] == "0"
    assert params["optim.lr"] == "0.02" and params["train.num_workers"] == "2"
    for tag in ("git_sha", "ray_version", "torch_version", "mlflow_version", "cluster_cpus"):
        assert run.data.tags[tag]
    assert run.data.tags["last_checkpoint_epoch"] == str(epochs)

    config_path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    logged = yaml.safe_load(open(config_path))
    assert logged["train"]["epochs"] == epochs and logged["model"]["num_classes"] == 5

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    for key in EPOCH_METRICS:  # the names the metrics module promises, every epoch, once
        assert sorted(step for step, _ in history(key)) == list(range(1, epochs + 1)), key
    logged = {key for key in run.data.metrics if not key.startswith("system/")}  # rank 0's node
    assert logged == {*EPOCH_METRICS, *TEN_CROP_METRICS}  # and nothing else
    ten_crop = dict(history("val_top1_error_10crop"))
    assert list(ten_crop) == [epochs] and ten_crop[epochs] < 0.4, ten_crop  # the paper's test
    val_error = dict(history("val_top1_error"))
    train_loss = dict(history("train_loss"))
    chance = 1 - 1 / synthetic.num_classes  # 0.8
    assert val_error[epochs] < chance / 2, json.dumps(val_error)  # learned, well below chance
    assert train_loss[epochs] < train_loss[1]
    assert dict(history("lr"))[1] == pytest.approx(0.02 * 32 / 128)  # linear scaling
    assert all(v > 0 for _, v in history("images_per_second"))

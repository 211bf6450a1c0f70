"""Through the real code path: Ray Data -> Ray Train workers -> MLflow, on a shared Ray instance."""

import json

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator import data as pipeline
from workloads.alexnet import transforms as T

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def decoded(ray_cluster, tiny_dataset):
    root, _ = tiny_dataset
    config = pipeline.DataConfig(source="folder", root=str(root), image_size=64)
    train_list, val_list = pipeline.list_splits(root)
    return pipeline.read_images(train_list, config, seed=0), train_list, config


def test_decode_keeps_every_image_with_its_label(decoded):
    dataset, train_list, _ = decoded
    rows = dataset.take_all()
    assert len(rows) == len(train_list) == 400
    assert rows[0]["image"].shape == (64, 64, 3) and rows[0]["image"].dtype == np.uint8
    assert sorted(int(r["label"]) for r in rows) == sorted(train_list.labels)


def test_statistics_from_partial_sums_match_numpy(decoded):
    dataset, train_list, config = decoded
    stats = pipeline.image_statistics(dataset)
    images = np.stack([r["image"] for r in dataset.take_all()]).astype(np.float64) / 255
    assert stats.count == 400
    np.testing.assert_allclose(stats.mean_image, images.mean(axis=0), atol=1e-5)
    pixels = images.reshape(-1, 3)
    reference = np.sort(np.linalg.eigvalsh(np.cov(pixels.T, bias=True)))[::-1]
    np.testing.assert_allclose(stats.eigenvalues, reference, rtol=1e-3)


def test_training_view_draws_new_augmentations_every_pass(decoded):
    dataset, _, config = decoded
    stats = pipeline.image_statistics(dataset)
    view = pipeline.training_view(dataset, stats, config, crop_size=56, seed=0)
    passes = [view.take_batch(400) for _ in range(2)]
    for batch in passes:
        assert batch["image"].shape == (400, 3, 56, 56) and batch["image"].dtype == np.float32
        assert abs(batch["image"].mean()) < 0.05  # mean subtracted
    assert sorted(passes[0]["label"]) == sorted(passes[1]["label"])
    assert not np.allclose(np.sort(passes[0]["image"].ravel()), np.sort(passes[1]["image"].ravel()))


def test_cli_train_learns_and_logs_one_mlflow_run(ray_cluster, tiny_dataset, tmp_path, run_cli):
    """`orchestrator/run.py train` as a plain script, on the session's Ray instance."""
    root, synthetic = tiny_dataset
    db = tmp_path / "mlflow.db"
    result = run_cli(
        "train",
        "--config", "configs/demo.yaml",
        "--set", f"data.root={root}",
        "--set", f"data.synthetic.num_classes={synthetic.num_classes}",
        "--set", f"data.synthetic.train_per_class={synthetic.train_per_class}",
        "--set", f"data.synthetic.val_per_class={synthetic.val_per_class}",
        "--set", f"data.synthetic.seed={synthetic.seed}",
        "--set", "train.epochs=3",
        "--set", "train.global_batch_size=32",
        "--set", "optim.lr=0.04",
        "--set", f"tracking.uri=sqlite:///{db}",
        "--set", "tracking.experiment=pytest",
        "--set", "name=tiny-e2e",
        env={"RAY_ADDRESS": ray_cluster},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("pytest")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # one run for the whole training run, never one per worker
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-e2e"

    params = run.data.params
    assert params["model.variant"] == "paper" and params["model.towers"] == "2"
    assert params["model.num_classes"] == "5" and params["data.num_train_images"] == "400"
    assert params["optim.lr"] == "0.04" and params["train.num_workers"] == "2"
    for tag in ("git_sha", "ray_version", "torch_version", "mlflow_version", "cluster_cpus"):
        assert run.data.tags[tag]

    config_path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    logged = yaml.safe_load(open(config_path))
    assert logged["train"]["epochs"] == 3 and logged["model"]["num_classes"] == 5

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    for key in ("train_loss", "train_top1_error", "val_top1_error", "val_top5_error", "lr",
                "images_per_second", "data_wait_fraction"):  # fmt: skip
        assert sorted(step for step, _ in history(key)) == [1, 2, 3], key
    val_error = dict(history("val_top1_error"))
    train_loss = dict(history("train_loss"))
    chance = 1 - 1 / synthetic.num_classes  # 0.8
    assert val_error[3] < chance / 2, json.dumps(val_error)  # learned, well below chance
    assert train_loss[3] < train_loss[1]
    assert dict(history("lr"))[1] == pytest.approx(0.04 * 32 / 128)  # linear scaling
    assert all(v > 0 for _, v in history("images_per_second"))

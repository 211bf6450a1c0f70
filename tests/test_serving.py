"""The model leaves the lab: a trained run's logged model served by Ray Serve (`serve`) and by
`mlflow models serve`, run over a folder by Ray Data (`predict`), and exported to ONNX; each
answer checked against the model's own forward pass in this process (the `evaluate` path)."""

from __future__ import annotations

import base64
import os
import signal
import struct
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from conftest import free_port

MODEL_NAME = "pytest-served"
VALIDATION_FILES = 16
TRAINING_EPOCHS = 4


@pytest.fixture(scope="module")
def served(tiny_dataset, tiny_prepared, tmp_path_factory):
    """The demo model trained on `tiny_dataset` for a few epochs in this process (the steps a
    `train` worker runs), its checkpoint logged to MLflow as a finished run logs its model and
    registered as pytest-served@best: the tracking URI, run id, and validation files with the
    model's own top-5 for each (the forward pass `evaluate` makes, in this process). (A `train`
    run logs its model through the same function: test_fault_tolerance.py checks it.)"""
    from orchestrator.analysis.export import Registration, log_trained_model
    from orchestrator.analysis.trained import Trained
    from orchestrator.common.paths import CONFIGS
    from orchestrator.common.yaml_config import to_yaml
    from orchestrator.config.experiment import load_config
    from orchestrator.data.prepared import open_prepared
    from orchestrator.tracking.config import TrackingConfig
    from orchestrator.tracking.run import TrackedRun
    from orchestrator.training.checkpoints import read_checkpoint
    from orchestrator.training.transform import batch_transform
    from workloads.alexnet.engine import build_optimizer, train_step
    from workloads.alexnet.model import build_model
    from workloads.datasets.codec import decode_resize_center_crop

    root, _ = tiny_dataset
    folder = tmp_path_factory.mktemp("served")
    data = open_prepared(tiny_prepared)
    overrides = ["data.source=prepared", f"data.root={tiny_prepared}", "model.num_classes=5"]
    config = load_config(CONFIGS / "demo.yaml", overrides)
    files = sorted((root / "train").glob("*/*"))
    images = torch.from_numpy(
        np.stack([decode_resize_center_crop(f.read_bytes(), 64) for f in files])
    )
    labels = torch.tensor([data.classes.index(f.parent.name) for f in files])
    torch.manual_seed(0)
    model = build_model(config.model)
    optimizer = build_optimizer(model, config.optim, 32)
    transform = batch_transform(config.data, data, config.model.input_size, seed=0)
    for epoch in range(TRAINING_EPOCHS):
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(32):
            views = transform.train(images[batch], batch.numpy(), epoch).contiguous()
            train_step(model, optimizer, views, labels[batch])
    checkpoint = folder / "checkpoint.pt"
    state = {"epoch": TRAINING_EPOCHS, "model": model.state_dict(), "config": to_yaml(config)}
    torch.save({**state, "classes": data.classes}, checkpoint)

    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    run = TrackedRun(TrackingConfig(uri=tracking_uri, experiment="pytest-serving"), "served")
    trained = Trained.of(str(checkpoint), read_checkpoint(str(checkpoint)), data)
    registration = Registration(MODEL_NAME, "best", "val_top1_error", 0.5)
    message = log_trained_model(run, trained, registration, {"run": "served"})
    run.finish("FINISHED")
    assert f"registered as models:/{MODEL_NAME}@best (version 1)" in message

    files = sorted((root / "val").glob("*/*"))[:: 100 // VALIDATION_FILES][:VALIDATION_FILES]
    images = np.stack([decode_resize_center_crop(f.read_bytes(), 64) for f in files])
    with torch.no_grad():
        logits = trained.model()(trained.transform().center(torch.from_numpy(images)))
    top = logits.softmax(1).topk(5, dim=1)
    return {
        "tracking_uri": tracking_uri,
        "run_id": run.run_id,
        "files": files,
        "images": images,
        "logits": logits,
        "top5": [[data.classes[i] for i in row] for row in top.indices.tolist()],
        "top5_probabilities": top.values.numpy(),
        "folder": folder,
    }


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with almost no data behind it (what a
    decompression bomb looks like until it is decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


def _wait_until_answering(process, url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server ended before it answered"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _replica_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return [a.pid for a in actors if a.class_name.startswith("ServeReplica:alexnet:classifier")]


@pytest.mark.ray
def test_serve_ranks_as_the_model_refuses_bad_bodies_and_outlives_a_killed_replica(
    served, ray_cluster, start_cli, run_cli, tmp_path
):
    port = free_port()

    def serve(port: int, *settings: str) -> list[str]:
        return ["serve", "--model", f"models:/{MODEL_NAME}@best"] + [
            part
            for setting in (f"tracking.uri={served['tracking_uri']}", f"serve.port={port}")
            + settings
            for part in ("--set", setting)
        ]

    process = start_cli(
        *serve(port, "serve.num_cpus_per_replica=0.5", "serve.max_request_bytes=2000000"),
        env={"RAY_ADDRESS": ray_cluster},
        log=tmp_path / "serve.log",
    )
    base = f"http://127.0.0.1:{port}"
    _wait_until_answering(process, f"{base}/healthz")
    health = requests.get(f"{base}/healthz", timeout=10).json()
    assert health["model"]["version"] == "1" and health["model"]["run_id"] == served["run_id"]
    # A second `serve` on the same Ray (Ray Serve is one per cluster) once took over the first's
    # application, and listened nowhere it said: refused now, the first left as it was
    second = run_cli(*serve(free_port()), env={"RAY_ADDRESS": ray_cluster}, timeout=120)
    assert second.returncode == 2 and "Ray Serve already runs on this Ray" in second.stderr
    assert requests.get(f"{base}/healthz", timeout=10).json()["model"]["version"] == "1"

    # Real JPEGs, raw and as a form's file: the model's own top-5, in order
    for file, top5, probabilities in zip(
        served["files"], served["top5"], served["top5_probabilities"]
    ):
        raw = requests.post(
            f"{base}/predict",
            data=file.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
            timeout=30,
        )
        assert raw.status_code == 200, raw.text
        predictions = raw.json()["predictions"]
        assert [p["label"] for p in predictions] == top5
        np.testing.assert_allclose(
            [p["probability"] for p in predictions], probabilities, rtol=1e-4, atol=1e-6
        )
    form = requests.post(
        f"{base}/predict", files={"image": served["files"][0].open("rb")}, timeout=30
    )
    assert [p["label"] for p in form.json()["predictions"]] == served["top5"][0]

    # Bad bodies: a 4xx with a JSON error each, and the server answers on
    bad = {
        "not an image": (b"these are not pixels", "image/jpeg", 400),
        "empty": (b"", "image/png", 400),
        "a bomb": (_png_declaring(100_000, 100_000), "image/png", 413),
        "too long": (b"\xff" * 3_000_000, "application/octet-stream", 413),
        "a wrong type": (b'{"image": 1}', "application/json", 415),
    }
    for what, (body, kind, status) in bad.items():
        answer = requests.post(
            f"{base}/predict", data=body, headers={"Content-Type": kind}, timeout=30
        )
        assert answer.status_code == status, (what, answer.status_code, answer.text)
        assert answer.json()["error"], what
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200, what

    # A replica SIGKILLed under load: Ray Serve starts another; no request hangs, and every
    # request after the recovery is answered
    (first,) = _replica_pids()
    image = served["files"][1].read_bytes()

    def ask(_) -> int:
        try:
            return requests.post(
                f"{base}/predict", data=image, headers={"Content-Type": "image/jpeg"}, timeout=60
            ).status_code
        except requests.ConnectionError:
            return -1

    with ThreadPoolExecutor(8) as pool:
        during = pool.map(ask, range(64))
        time.sleep(0.5)
        os.kill(first, signal.SIGKILL)
        answered = list(during)  # each within its timeout: a hang would raise ReadTimeout
    assert len(answered) == 64
    deadline = time.monotonic() + 120
    while not (pids := _replica_pids()) or pids == [first]:
        assert time.monotonic() < deadline, "no new replica within 120 s"
        time.sleep(0.5)
    _wait_until_answering(process, f"{base}/healthz")
    deadline = time.monotonic() + 60
    while ask(0) != 200:
        assert time.monotonic() < deadline, "the new replica never answered"
        time.sleep(0.5)
    after = [ask(i) for i in range(8)]
    assert after == [200] * 8

    # Ctrl-C takes the application down
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=120) == 130
    assert "stopped serving" in (tmp_path / "serve.log").read_text()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=5)


def test_mlflow_models_serve_answers_the_logged_model_with_the_same_top_1(served, start_cli):
    """`mlflow models serve` on the run's model (MLflow's own scoring server): base64 JPEGs in
    MLflow's JSON, the model's own top-1. The model carries its signature, pinned requirements,
    classes and data digest."""
    import subprocess

    import mlflow

    model_uri = f"runs:/{served['run_id']}/model"
    mlflow.set_tracking_uri(served["tracking_uri"])
    info = mlflow.models.get_model_info(model_uri)
    assert [spec.name for spec in info.signature.inputs] == ["image"]
    assert {spec.name for spec in info.signature.outputs} == {"labels", "probabilities"}
    assert info.metadata["dataset_digest"] and info.metadata["epoch"] == TRAINING_EPOCHS
    requirements = mlflow.pyfunc.get_model_dependencies(model_uri)
    pinned = Path(requirements).read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in pinned

    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    server = subprocess.Popen(
        [f"{bin_dir}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": served["tracking_uri"],
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_until_answering(server, f"http://127.0.0.1:{port}/ping", timeout=120)
        encoded = [base64.b64encode(f.read_bytes()).decode() for f in served["files"][:4]]
        body = {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [p["labels"][0] for p in predictions] == [t[0] for t in served["top5"][:4]]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.ray
def test_predict_writes_each_good_file_once_and_lists_the_broken(
    served, ray_cluster, tiny_dataset, tiny_prepared, run_cli, tmp_path
):
    import pyarrow.parquet as pq

    images = tmp_path / "photos"
    (images / "more").mkdir(parents=True)
    good = {}
    for i, file in enumerate(served["files"]):
        name = f"more/{file.name}" if i % 2 else file.name
        (images / name).write_bytes(file.read_bytes())
        good[name] = served["top5"][i]
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    (images / "empty.png").write_bytes(b"")
    (images / "cut.jpg").write_bytes(served["files"][0].read_bytes()[:300])
    (images / "notes.txt").write_text("not an image file name: not read")
    out = tmp_path / "predicted"
    args = ["predict", "--model", f"runs:/{served['run_id']}", "--input", str(images)]
    args += ["--out", str(out), "--set", f"tracking.uri={served['tracking_uri']}"]
    args += ["--set", "predict.batch_size=5", "--set", "predict.num_cpus_per_actor=0.5"]
    env = {"RAY_ADDRESS": ray_cluster}

    first = run_cli(*args, "--csv", env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert f"predicted {len(good)} images" in first.stdout
    table = pq.read_table(out / "predictions.parquet").to_pylist()
    assert sorted(row["path"] for row in table) == sorted(good)  # each good file once
    for row in table:
        assert row["labels"] == good[row["path"]]  # the model's own top-5, joined by path
        assert row["probabilities"] == sorted(row["probabilities"], reverse=True)
    rejects = (out / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "path,reason"
    assert sorted(line.split(",")[0] for line in rejects[1:]) == [
        "broken.jpg",
        "cut.jpg",
        "empty.png",
    ]
    assert len((out / "predictions.csv").read_text().splitlines()) == len(good) + 1

    # Into the same output again (in this process, on the session's Ray): refused, nothing
    # mixed; replaced with --overwrite, and without --csv the old CSV goes too
    from orchestrator.common.errors import InputError
    from orchestrator.config.serve import InferenceConfig, PredictConfig
    from orchestrator.serving.batch import predict_folder
    from orchestrator.serving.model import open_model

    model = open_model(_local_model(served), InferenceConfig())
    settings = PredictConfig(batch_size=5, num_cpus_per_actor=0.5)
    with pytest.raises(InputError, match="already holds predictions.parquet"):
        predict_folder(model, str(images), str(out), settings, False, False)
    assert pq.read_table(out / "predictions.parquet").num_rows == len(good)
    replaced = predict_folder(model, str(images), str(out), settings, False, True)
    assert (replaced.images, replaced.rejected) == (len(good), 3)
    assert pq.read_table(out / "predictions.parquet").num_rows == len(good)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.parquet", "rejects.csv"]

    # A prepared dataset's split, decoded as training reads it: every image once, by its path
    from orchestrator.config.experiment import load_config
    from orchestrator.data.prepared import open_prepared
    from orchestrator.serving.batch import predict_split

    root, _ = tiny_dataset
    data = open_prepared(tiny_prepared)
    split = tmp_path / "val-predicted"
    done = predict_split(model, data, "val", str(split), settings, load_config().data, False, False)
    assert (done.images, done.rejected) == (data.count("val"), 0)
    paths = pq.read_table(split / "predictions.parquet").column("path").to_pylist()
    assert sorted(paths) == sorted(str(f.relative_to(root)) for f in (root / "val").glob("*/*"))
    with pytest.raises(InputError, match="--split: got 'test'; allowed: train, val"):
        predict_split(model, data, "test", str(split), settings, load_config().data, False, True)


def _local_model(served) -> str:
    """The run's logged model, downloaded: a folder `--model` takes as it is."""
    import mlflow

    mlflow.set_tracking_uri(served["tracking_uri"])
    return mlflow.artifacts.download_artifacts(
        f"runs:/{served['run_id']}/model", dst_path=str(served["folder"] / "downloaded")
    )


def test_onnx_and_pt2_exports_give_torchs_logits(served, run_cli, tmp_path):
    import onnxruntime

    onnx_file = tmp_path / "alexnet.onnx"
    exported = run_cli(
        "export",
        "--model",
        f"runs:/{served['run_id']}",
        "--format",
        "onnx",
        "--out",
        str(onnx_file),
        "--set",
        f"tracking.uri={served['tracking_uri']}",
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "ONNX Runtime's logits equal torch's on 16 images" in exported.stdout
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    images = served["images"]  # 16 validation images, prepared as the server prepares them
    assert len(images) == VALIDATION_FILES
    (logits,) = session.run(["logits"], {"images": images})
    np.testing.assert_allclose(logits, served["logits"].numpy(), atol=1e-4, rtol=0)

    from orchestrator.analysis.export import export
    from orchestrator.config.serve import InferenceConfig
    from orchestrator.serving.model import open_model

    os.environ["MLFLOW_TRACKING_URI"] = served["tracking_uri"]
    try:
        model = open_model(f"models:/{MODEL_NAME}/1", InferenceConfig())
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    export(model.predictor, "pt2", tmp_path / "alexnet.pt2")
    program = torch.export.load(tmp_path / "alexnet.pt2")
    with torch.no_grad():
        pt2_logits = program.module()(torch.from_numpy(images))
    torch.testing.assert_close(pt2_logits, served["logits"], atol=1e-5, rtol=0)
    assert str(model.facts["version"]) == "1" and model.facts["epoch"] == TRAINING_EPOCHS

    # Ray Serve's own config files build the same application (import_path ...service:app)
    from ray.serve import Application

    from orchestrator.serving.service import app

    overrides = [f"tracking.uri={served['tracking_uri']}", "serve.max_replicas=3"]
    assert isinstance(app({"model": f"models:/{MODEL_NAME}@best", "set": overrides}), Application)
    with pytest.raises(ValueError, match="args.model: missing"):
        app({"set": overrides})

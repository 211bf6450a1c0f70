"""MLflow tracking against a real `mlflow server`: fail fast at start, survive an outage mid-run,
buffer on disk (bounded) and replay."""

import time
import warnings
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator.errors import ConfigError
from orchestrator.tracking import MetricBuffer, TrackedRun, TrackingConfig

DEAD_URI = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_unreachable_server_fails_fast_unless_tracking_is_optional(tmp_path, capsys):
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"tracking.uri: cannot reach .*127.0.0.1:9.*optional"):
        TrackedRun(TrackingConfig(uri=DEAD_URI), "nowhere")
    assert time.monotonic() - started < 20  # no minutes of retries

    with pytest.warns(UserWarning, match="NOT tracked"):
        run = TrackedRun(TrackingConfig(uri=DEAD_URI, optional=True), "nowhere")
    assert not run.tracked
    run.log_start({"a": 1}, {}, "a: 1\n")  # all no-ops
    run.finish()
    logger = run.epoch_logger()
    report = {"epoch": 1, "train_loss": 1.0, "val_top1_error": 0.5, "val_top5_error": 0.1,
              "lr": 0.01, "images_per_second": 10.0, "data_wait_fraction": 0.0}  # fmt: skip
    logger.after_report(None, [report], None)
    assert "epoch   1" in capsys.readouterr().out  # still printed


def test_buffer_is_bounded_and_replays_into_the_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("buffer")).info.run_id
    buffer = MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", max_values=5)
    buffer.add([Metric("loss", 1.0 / step, 1000 + step, step) for step in (1, 2, 3)])
    with pytest.warns(UserWarning, match="dropping the 3 oldest"):
        buffer.add([Metric("loss", 1.0 / step, 1000 + step, step) for step in (4, 5, 6, 7)],
                   {"last_checkpoint": "epoch 7"})  # fmt: skip
    assert buffer.count() == 5  # steps 4-7 and the tag; steps 1-3 were dropped
    assert buffer.flush(client, run_id) == 4
    assert not buffer.path.exists()
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == [4, 5, 6, 7]
    assert client.get_run(run_id).data.tags["last_checkpoint"] == "epoch 7"


def test_epoch_logger_buffers_while_the_server_is_away(tmp_path, mlflow_server):
    config = TrackingConfig(uri=mlflow_server.uri, experiment="away",
                            buffer_dir=str(tmp_path / "buffer"))  # fmt: skip
    run = TrackedRun(config, "away")
    logger = run.epoch_logger()

    def report(epoch):
        values = {"train_loss": 1.0 / epoch, "val_top1_error": 0.5, "val_top5_error": 0.1,
                  "lr": 0.01, "images_per_second": 10.0, "data_wait_fraction": 0.0}  # fmt: skip
        logger.after_report(None, [{"epoch": epoch, **values}], None)

    report(1)
    mlflow_server.stop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report(2)
        report(3)
    assert sum("unreachable" in str(w.message) for w in caught) == 1  # warned once per outage
    assert MetricBuffer.for_run(config, run.run_id).count() == 12  # 2 epochs x 6 metrics
    mlflow_server.start()
    report(4)
    assert not MetricBuffer.for_run(config, run.run_id).path.exists()
    run.finish()
    client = MlflowClient(mlflow_server.uri)
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [1, 2, 3, 4]
    assert client.get_run(run.run_id).info.status == "FINISHED"


@pytest.mark.ray
def test_training_survives_a_tracking_server_outage(
    ray_cluster, tiny_train_args, tmp_path, start_cli, mlflow_server
):
    epochs = 5
    args = tiny_train_args(
        f"train.epochs={epochs}", "train.log_every_n_steps=0", "tracking.experiment=outage",
        f"tracking.uri={mlflow_server.uri}", "name=outage",
    )  # fmt: skip
    log = tmp_path / "train.log"
    process = start_cli(*args, env={"RAY_ADDRESS": ray_cluster}, log=log)
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "epoch 1 was not logged within 300 s"
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and client.get_metric_history(runs[0].info.run_id, "val_top1_error"):
            break
        time.sleep(0.5)
    run_id = runs[0].info.run_id

    mlflow_server.stop()
    time.sleep(30)
    assert process.poll() is None, "the run died in the outage: " + log.read_text()[-3000:]
    mlflow_server.start()
    assert process.wait(timeout=400) == 0, log.read_text()[-3000:]

    output = log.read_text()
    assert "is unreachable" in output and "to be replayed when it is back" in output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_top1_error", "val_top5_error", "lr"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)  # every epoch, once
    assert run.data.tags["last_checkpoint"].endswith(f"(epoch {epochs})")


def test_secrets_are_masked_in_params_tags_and_config_dumps(tmp_path, monkeypatch):
    from orchestrator.config import load_config, to_yaml
    from orchestrator.redact import redact

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d6c")
    tree = {
        "tracking": {"uri": "https://alice:hunter2-pass@mlflow.example.com"},
        "storage": {"api_key": "abc123", "password": "", "bucket": "s3://data?X-Amz-Signature=f00d"},
        "notes": "pulled with tok-9f8e7d6c",
        "keep_checkpoints": 2,
    }  # fmt: skip
    assert redact(tree) == {
        "tracking": {"uri": "https://alice:***@mlflow.example.com"},
        "storage": {"api_key": "***", "password": "", "bucket": "s3://data?X-Amz-Signature=***"},
        "notes": "pulled with ***",
        "keep_checkpoints": 2,
    }  # fmt: skip
    config = load_config(None, ["tracking.uri=https://alice:hunter2-pass@mlflow.example.com"])
    dump = to_yaml(config)
    assert "hunter2" not in dump and "alice:***@mlflow.example.com" in dump
    assert "hunter2" in to_yaml(config, redact_secrets=False)  # for a sweep's own trials only


def test_basic_auth_server_with_credentials_from_the_environment(tmp_path, monkeypatch, capsys):
    from conftest import MlflowServer

    password = "admin-password-0123"
    server = MlflowServer(tmp_path / "auth-server", basic_auth_password=password)
    server.folder.mkdir()
    server.start()
    try:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        config = TrackingConfig(uri=server.uri, experiment="auth",
                                buffer_dir=str(tmp_path / "buffer"))  # fmt: skip
        with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
            TrackedRun(config, "no-credentials")

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        run = TrackedRun(config, "with-credentials")
        run.log_start(
            params={"tracking.uri": f"http://admin:{password}@127.0.0.1:{server.port}",
                    "storage.secret_key": "s3cr3t-value", "optim.lr": 0.01},
            tags={"note": f"password {password}"},
            config_yaml=f"tracking:\n  uri: http://admin:{password}@127.0.0.1\n",
        )  # fmt: skip
        run.log_metrics({"val_top1_error": 0.5}, step=1)
        run.finish()

        client = MlflowClient(server.uri)
        logged = client.get_run(run.run_id)
        assert logged.info.status == "FINISHED" and logged.data.metrics["val_top1_error"] == 0.5
        assert logged.data.params["storage.secret_key"] == "***"
        assert logged.data.params["optim.lr"] == "0.01"
        text = str(logged.data.params) + str(logged.data.tags)
        local = tmp_path / "downloaded"
        text += (Path(client.download_artifacts(run.run_id, "config.yaml", str(local)))).read_text()
        assert password not in text and "s3cr3t" not in text
        assert password not in capsys.readouterr().out
    finally:
        server.stop()

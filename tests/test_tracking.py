"""MLflow tracking: fail fast at start, buffer on disk (bounded) and replay, basic auth against a
real `mlflow server`, redaction, dataset lineage. (A training run through an outage:
test_fault_tolerance.py.)"""

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import ray.train
from conftest import REPO_ROOT
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from orchestrator.common.errors import ConfigError
from orchestrator.data.prepared import Manifest, PreparedData, ShardParams
from orchestrator.tracking.buffer import MetricBuffer, replay_buffers
from orchestrator.tracking.callback import EpochLogger, epoch_logger
from orchestrator.tracking.config import TrackingConfig
from orchestrator.tracking.metrics import EpochMetrics
from orchestrator.tracking.run import TrackedRun

DEAD_URI = "http://127.0.0.1:9"  # the discard port: nothing listens there


def test_unreachable_server_fails_fast_unless_tracking_is_optional(tmp_path, capsys, caplog):
    with pytest.raises(ConfigError, match=r"tracking.uri: cannot reach .*127.0.0.1:9.*optional"):
        TrackedRun(TrackingConfig(uri=DEAD_URI), "nowhere")
    # No minutes of retries: MLflow's client (urllib3) logs each retry it makes
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]

    with pytest.warns(UserWarning, match="NOT tracked"):
        run = TrackedRun(TrackingConfig(uri=DEAD_URI, optional=True), "nowhere")
    assert not run.tracked
    run.log_start("train", {"a": 1}, "a: 1\n")  # all no-ops
    run.finish()
    logger = epoch_logger(run)
    logger.after_report(None, [epoch_report(1)], None)
    assert "epoch   1" in capsys.readouterr().out  # still printed


def test_buffer_is_bounded_and_replays_into_the_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("buffer")).info.run_id
    buffer = MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", max_values=5)
    buffer.add([Metric("loss", 1.0 / step, 1000 + step, step) for step in (1, 2, 3)])
    with pytest.warns(UserWarning, match="dropping the 3 oldest"):
        buffer.add(
            [Metric("loss", 1.0 / step, 1000 + step, step) for step in (4, 5, 6, 7)],
            {"last_checkpoint": "epoch 7"},
        )
    assert buffer.count() == 5  # steps 4-7 and the tag; steps 1-3 were dropped
    assert buffer.flush(client, run_id) == 4
    assert not buffer.path.exists()
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert steps == [4, 5, 6, 7]
    assert client.get_run(run_id).data.tags["last_checkpoint"] == "epoch 7"


def test_secrets_are_masked_in_params_tags_and_config_dumps(tmp_path, monkeypatch):
    from orchestrator.common.redact import redact
    from orchestrator.common.yaml_config import to_yaml
    from orchestrator.config.experiment import load_config

    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-9f8e7d6c")
    tree = {
        "tracking": {"uri": "https://alice:hunter2-pass@mlflow.example.com"},
        "storage": {
            "api_key": "abc123",
            "password": "",
            "bucket": "s3://data?X-Amz-Signature=f00d",
        },
        "notes": "pulled with tok-9f8e7d6c",
        "keep_checkpoints": 2,
    }
    assert redact(tree) == {
        "tracking": {"uri": "https://alice:***@mlflow.example.com"},
        "storage": {"api_key": "***", "password": "", "bucket": "s3://data?X-Amz-Signature=***"},
        "notes": "pulled with ***",
        "keep_checkpoints": 2,
    }
    config = load_config(None, ["tracking.uri=https://alice:hunter2-pass@mlflow.example.com"])
    dump = to_yaml(config)
    assert "hunter2" not in dump and "alice:***@mlflow.example.com" in dump
    assert "hunter2" in to_yaml(config, redact_secrets=False)  # for a sweep's own trials only


def test_a_run_names_its_prepared_dataset_once_and_its_experiment_trains_models(tmp_path):
    manifest = Manifest(
        digest="ab12" * 16,
        classes=["cat", "dog", "eel"],
        images={"train": 30, "val": 6},
        shards={"train": [], "val": []},
        params=ShardParams(image_size=64, encoding="jpeg"),
    )
    data = PreparedData(uri="s3://bucket/prepared/pets-0a1b", manifest=manifest, stats=None)
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="lineage")
    for _ in range(2):  # a resumed run logs it again
        run = TrackedRun(config, "pets", resume=True)
        run.log_dataset(data, "train")
    run.finish()

    client = MlflowClient(config.uri)
    (given,) = client.get_run(run.run_id).inputs.dataset_inputs  # kept once
    assert given.dataset.name == "pets-0a1b" and given.dataset.digest == "ab12" * 4
    assert json.loads(given.dataset.source) == {"uri": "s3://bucket/prepared/pets-0a1b"}
    assert given.dataset.source_type == "s3"
    assert json.loads(given.dataset.profile) == {
        "digest": "ab12" * 16,
        "train_images": 30,
        "val_images": 6,
        "classes": 3,
        "image_size": 64,
        "encoding": "jpeg",
    }
    assert [(tag.key, tag.value) for tag in given.tags] == [("mlflow.data.context", "train")]
    # Not opened in MLflow's GenAI view: experiments it makes, and older ones of ours, are
    # tagged as model training; a kind a user set stays
    client.create_experiment("older")
    client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    for name in ("older", "chosen"):
        TrackedRun(TrackingConfig(uri=config.uri, experiment=name), "r").finish()
    kinds = {
        name: client.get_experiment_by_name(name).tags["mlflow.experimentKind"]
        for name in ("lineage", "older", "chosen")
    }
    assert kinds == {
        "lineage": "custom_model_development",
        "older": "custom_model_development",
        "chosen": "genai_development",
    }


def test_basic_auth_server_with_credentials_from_the_environment(tmp_path, monkeypatch, capsys):
    from conftest import MlflowServer

    password = "admin-password-0123"
    server = MlflowServer(tmp_path / "auth-server", basic_auth_password=password)
    server.folder.mkdir()
    server.start()
    try:
        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        config = TrackingConfig(
            uri=server.uri, experiment="auth", buffer_dir=str(tmp_path / "buffer")
        )
        with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
            TrackedRun(config, "no-credentials")

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        run = TrackedRun(config, "with-credentials")
        run.log_start(
            "train",
            params={
                "tracking.uri": f"http://admin:{password}@127.0.0.1:{server.port}",
                "storage.secret_key": "s3cr3t-value",
                "optim.lr": 0.01,
            },
            config_yaml=f"tracking:\n  uri: http://admin:{password}@127.0.0.1\n",
            extra_tags={"note": f"password {password}"},
        )
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
        assert password not in "".join(capsys.readouterr())
    finally:
        server.stop()


def test_a_password_in_the_tracking_uri_is_never_printed(tmp_path):
    uri = "http://alice:s3cret@127.0.0.1:9"  # MLflow's own exception quotes it whole
    config = TrackingConfig(uri=uri, buffer_dir=str(tmp_path / "buffer"))
    with pytest.raises(ConfigError, match="cannot reach") as raised:
        TrackedRun(config, "nowhere")
    assert "s3cret" not in str(raised.value) and "alice:***@127.0.0.1:9" in str(raised.value)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrackedRun(TrackingConfig(uri=uri, optional=True), "nowhere")
    messages = [str(w.message) for w in caught]
    assert any("NOT tracked" in m for m in messages)
    assert not any("s3cret" in m for m in messages), messages


def sqlite_run(tmp_path) -> tuple[MlflowClient, str, str]:
    """A real local MLflow store with one run: (client, tracking URI, run id)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return client, uri, client.create_run(client.create_experiment("buffer")).info.run_id


def epoch_report(epoch: int) -> dict:
    """What rank 0 reports for an epoch (made up numbers)."""
    return EpochMetrics(
        epoch=epoch,
        train_loss=1.0 / epoch,
        train_top1_error=0.6,
        val_loss=1.2,
        val_top1_error=0.5,
        val_top5_error=0.1,
        lr=0.01,
        lr_drops=0,
        images_per_second=10.0,
        data_wait_fraction=0.0,
        epoch_seconds=1.0,
    ).as_report()


APPENDER = """
import sys, time
from pathlib import Path
from mlflow.entities import Metric
from orchestrator.tracking.buffer import MetricBuffer

buffer = MetricBuffer(Path(sys.argv[1]), max_values=1_000_000)
for step in range(int(sys.argv[3])):
    buffer.add([Metric(sys.argv[2], float(step), 1000 + step, step)])
    time.sleep(0.002)  # spread the appends over many replays
"""


def test_no_buffered_value_is_lost_while_processes_append_and_replay(tmp_path):
    client, uri, run_id = sqlite_run(tmp_path)
    config = TrackingConfig(uri=uri, buffer_dir=str(tmp_path / "buffer"))
    buffer = MetricBuffer.for_run(config, run_id)
    values_per_appender = 500
    appenders = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(buffer.path), key, str(values_per_appender)],
            cwd=REPO_ROOT,
        )
        for key in ("a", "b")
    ]
    said = []  # what the replays logged (INFO, to the buffer module's logger)
    logger, handler = logging.getLogger("orchestrator.tracking.buffer"), logging.Handler()
    handler.emit = said.append
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        while any(p.poll() is None for p in appenders):
            replay_buffers(client, config.buffer_dir, config.buffer_max_values)  # races the appends
            time.sleep(0.005)
    finally:
        for process in appenders:
            process.wait(timeout=60)
        logger.removeHandler(handler)
        logger.level = level
    assert [p.returncode for p in appenders] == [0, 0]
    racing_replays = sum("MLflow: replayed" in record.getMessage() for record in said)
    replay_buffers(
        client, config.buffer_dir, config.buffer_max_values
    )  # what was appended after the last racing replay
    for key in ("a", "b"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(values_per_appender)), (key, len(steps))  # each exactly once
    assert list(buffer.path.parent.iterdir()) == []  # nothing left behind
    assert racing_replays >= 5  # the replays did race the appends


def test_a_corrupt_line_is_moved_aside_and_the_rest_replayed(tmp_path):
    client, _, run_id = sqlite_run(tmp_path)
    buffer = MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", max_values=100)
    buffer.add([Metric("loss", 1.0, 1001, 1)])
    with open(buffer.path, "a") as file:
        file.write("[1, 2]\n")  # JSON, but no record
        file.write('{"key": "lo')  # a process killed mid-write
    buffer.add([Metric("loss", 0.5, 1002, 2)], {"last_checkpoint": "epoch 2"})
    aside = buffer.path.with_suffix(".corrupt")
    with pytest.warns(UserWarning, match=rf"2 unreadable line.*{aside}"):
        assert buffer.flush(client, run_id) == 2
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    assert client.get_run(run_id).data.tags["last_checkpoint"] == "epoch 2"
    assert aside.read_text() == '[1, 2]\n{"key": "lo\n'
    assert sorted(p.name for p in buffer.path.parent.iterdir()) == [aside.name]
    assert buffer.flush(client, run_id) == 0  # no permanent failure


class FailingAfter:
    """`client`, whose log_batch fails (an outage) after `calls` calls."""

    def __init__(self, client, calls: int):
        self.client, self.calls = client, calls

    def log_batch(self, *args, **kwargs):
        if self.calls == 0:
            raise ConnectionError("the tracking server went away")
        self.calls -= 1
        return self.client.log_batch(*args, **kwargs)


def test_a_failed_replay_holds_the_rest_again_ahead_of_new_values(tmp_path):
    client, _, run_id = sqlite_run(tmp_path)
    buffer = MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", max_values=10_000)
    buffer.add(
        [Metric("loss", float(step), 1000 + step, step) for step in range(2500)],
        {"last_checkpoint": "epoch 2499"},
    )
    with pytest.raises(ConnectionError):
        buffer.flush(FailingAfter(client, calls=1), run_id)  # 1000 of 2500 values taken
    assert buffer.count() == 1500 + 1  # the rest, and the tag
    buffer.add([Metric("loss", 2500.0, 3500, 2500)])
    assert buffer.path.read_text().splitlines()[0].endswith('"step": 1000}')  # the oldest first
    assert buffer.flush(client, run_id) == 1501
    steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(2501))
    assert client.get_run(run_id).data.tags["last_checkpoint"] == "epoch 2499"
    assert list(buffer.path.parent.iterdir()) == []


def test_a_replay_of_a_dead_process_is_taken_over_and_a_live_one_waited_for(tmp_path):
    client, _, run_id = sqlite_run(tmp_path)
    buffer = MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", max_values=100)
    buffer.add([Metric("loss", float(step), 1000 + step, step) for step in (1, 2)])
    claimed = buffer.path.with_name(f"{buffer.path.name}.00000000000000000001-4242.replaying")
    buffer.path.rename(claimed)  # as a replay that was killed after claiming leaves it
    buffer.add([Metric("loss", 3.0, 1003, 3)])
    assert buffer.count() == 3

    live = os.open(claimed, os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)  # ... but now as a replay still running holds it
    try:
        with pytest.raises(TimeoutError, match="another process"):
            buffer.flush(client, run_id, wait_s=0)
        replay_buffers(client, str(buffer.path.parent), 100)  # skips it
        assert buffer.count() == 3 and client.get_metric_history(run_id, "loss") == []
    finally:
        os.close(live)
    assert buffer.flush(client, run_id) == 3
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    assert list(buffer.path.parent.iterdir()) == []


def test_appending_does_not_rewrite_the_buffer_file(tmp_path):
    buffer = MetricBuffer(tmp_path / "buffer" / "run.jsonl", max_values=1000)
    buffer.add([Metric("loss", 1.0, 1001, 1)])
    before = buffer.path.stat()
    buffer.add([Metric("loss", 0.5, 1002, 2)])
    after = buffer.path.stat()
    assert (after.st_ino, after.st_size > before.st_size) == (before.st_ino, True)
    assert buffer.count() == 2


def test_an_unwritable_buffer_folder_costs_a_warning_not_the_training(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    buffer_dir = tmp_path / "afile" / "buffer"  # under a regular file: not even root creates it
    client, uri, _ = sqlite_run(tmp_path)
    run = TrackedRun(TrackingConfig(uri=uri, buffer_dir=str(buffer_dir)), "no-buffer")
    logger = epoch_logger(run)
    checkpoint = ray.train.Checkpoint("/results/checkpoint_000001")  # as Ray Train reports it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.after_report(None, [epoch_report(1)], None)
        logger.after_report(None, [epoch_report(2)], checkpoint)
        run.finish()
    messages = [str(w.message) for w in caught]
    assert sum("cannot write the MLflow buffer" in m for m in messages) == 1, messages
    assert [m.step for m in client.get_metric_history(run.run_id, "train_loss")] == [1, 2]
    logged = client.get_run(run.run_id)
    assert logged.data.tags["last_checkpoint"] == "/results/checkpoint_000001"
    assert logged.data.tags["last_checkpoint_epoch"] == "2"
    assert logged.info.status == "FINISHED"

    # The tracking server away as well: the values are only printed, the training goes on
    logger = EpochLogger(DEAD_URI, run.run_id, MetricBuffer(buffer_dir / "run.jsonl", 100))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.after_report(None, [epoch_report(3)], None)
        logger.after_report(None, [epoch_report(4)], None)
    messages = [str(w.message) for w in caught]
    assert sum("cannot write the MLflow buffer" in m for m in messages) == 1, messages
    assert sum("is unreachable" in m for m in messages) == 1, messages
    assert "epoch   4" in capsys.readouterr().out


def test_step_metrics_keep_the_first_values_of_a_step_trained_again(tmp_path):
    """A worker group restarted from a checkpoint trains some steps again: the run's live curves
    keep each step once, with the values first logged for it, and go on after it."""
    from orchestrator.tracking.steps import TRAIN_LOSS, StepLogger, StepMetricsTarget

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("steps")).info.run_id
    target = StepMetricsTarget(uri, run_id, str(tmp_path / "buffer"), 1000)
    first = StepLogger(target)
    for step in (4, 8, 12):
        first.log(step, {TRAIN_LOSS: 1.0})
    first.close()
    again = StepLogger(target)  # restarted from the checkpoint of step 4
    for step in (8, 12, 16):
        again.log(step, {TRAIN_LOSS: 2.0})
    again.close()
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, TRAIN_LOSS))
    assert history == [(4, 1.0), (8, 1.0), (12, 1.0), (16, 2.0)]
    assert MetricBuffer(tmp_path / "buffer" / f"{run_id}.jsonl", 1000).count() == 0


def test_every_training_node_samples_its_system_metrics_under_its_own_name(tmp_path):
    """The first worker of each node samples it: one node keeps MLflow's `system/<metric>`
    names, several get MLflow's per-node `system/node_<rank>/<metric>`."""
    from orchestrator.tracking.system_metrics import (
        SystemMetricsTarget,
        sampling_node,
        system_metrics,
    )

    # 4 workers on one node; then 4 on 2 nodes (2 each): local rank 0 of each node samples
    assert [sampling_node(rank, 0, 4, 4) for rank in range(4)] == [(True, None)] + [
        (False, None)
    ] * 3
    assert sampling_node(0, 1, 4, 2) == (True, "node_1")
    assert sampling_node(1, 1, 4, 2) == (False, "node_1")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("nodes")).info.run_id
    with system_metrics(SystemMetricsTarget(uri, run_id, 0.5), "node_1"):
        time.sleep(4)
    metrics = client.get_run(run_id).data.metrics
    assert "system/node_1/cpu_utilization_percentage" in metrics, sorted(metrics)
    assert not [key for key in metrics if key.startswith("system/cpu")]


def test_a_new_run_keeps_the_environment_it_started_in(tmp_path):
    """Every installed package at its version (as `pip freeze`), the platform and the CUDA of
    the torch build, as the run's environment.txt; the GPU facts as tags where there are any."""
    from importlib import metadata

    import torch

    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="env")
    run = TrackedRun(config, "env")
    run.log_start("train", {"seed": 0}, "seed: 0\n")
    run.finish()
    client = MlflowClient(config.uri)
    text = open(client.download_artifacts(run.run_id, "environment.txt", str(tmp_path))).read()
    packages = text.split("packages:\n")[1].splitlines()
    assert f"torch=={metadata.version('torch')}" in packages and "ray==2.60.0" in packages
    assert "alexnet-ray==0.1.0" in packages and len(packages) > 100
    assert text.startswith(f"python {sys.version.split()[0]} on ")
    tags = client.get_run(run.run_id).data.tags
    assert tags.get("torch_cuda") == torch.version.cuda  # None: a CPU build, and no tag


def test_the_alias_moves_only_to_a_version_that_beats_its_holder_on_the_same_data(tmp_path):
    """`@best` once moved to each new sweep's winner, even a worse one. Now a version takes it
    only by beating the version holding it on the same validation data and metric."""
    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="registry")
    run = TrackedRun(config, "sweep")
    client = MlflowClient(config.uri)
    client.create_registered_model("pets")

    def register(error: float, digest: str = "d1") -> tuple[str, str | None]:
        source = f"{client.get_run(run.run_id).info.artifact_uri}/model"
        version = str(client.create_model_version("pets", source, run.run_id).version)
        version_tags = {"dataset_digest": digest, "val_top1_error": error}
        return version, run.promote("pets", "best", version, version_tags, "val_top1_error")

    def holder() -> str:
        return str(client.get_model_version_by_alias("pets", "best").version)

    assert register(0.30) == ("1", None) and holder() == "1"  # the first takes it
    version, why = register(0.40)  # worse
    assert holder() == "1" and why == (
        "@best stays on version 1: its val_top1_error 0.3000 is not beaten by 0.4000"
    )
    assert client.get_model_version("pets", version).tags["val_top1_error"] == "0.4"  # tagged
    assert register(0.30)[1] is not None and holder() == "1"  # a tie does not move it
    version, why = register(0.01, digest="d2")  # better, on other data: not comparable
    assert holder() == "1" and "scored on other validation data" in why
    version, why = register(0.20)  # better on the same data
    assert why is None and holder() == version

"""Faults in one training run, through the real code path (`orchestrator/run.py train` as a
plain script, as a user runs it): its MLflow server goes away for two epochs, a Ray Train worker
is killed in the middle of an epoch, then the driver is stopped with Ctrl-C (exit 130, the run
KILLED) and started again with the same name. The run trains on from its newest checkpoint,
its loss goes on from where it was, it learns, and MLflow holds one run with every epoch's
metrics once (buffered on disk during the outage), every step point once, and the restarts in
its tags. The run uses the hybrid layout (the paper's two towers in
each worker, both on the CPU here, DDP across the two workers), so its checkpoints also show the
single-device layout; its data is prepared from the raw tree on first use, its checkpoints go to
an S3 bucket (moto's server), and `evaluate` reads the last one back from there. (A lost node:
test_multinode.py.)"""

import json
import os
import re
import signal
import subprocess

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, S3_BUCKET, load_into_plain_alexnet, wait_for
from mlflow.tracking import MlflowClient

from orchestrator.analysis.figures import FILES as FIGURE_FILES
from orchestrator.tracking.metrics import EPOCH_METRICS, TEN_CROP_METRICS
from orchestrator.tracking.steps import STEP_METRICS
from orchestrator.training.checkpoints import newest_checkpoint

pytestmark = pytest.mark.ray
# 1 logged; 2 and 3 in the outage; a worker killed in 4; Ctrl-C once it trains again. Many
# epochs are planned, so that Ray Train's abort (seconds, in which the workers train on) ends
# before they do; started again, the run trains one epoch past its newest checkpoint.
PLANNED = 40
STEP_LINE = re.compile(
    r"RayTrainWorker pid=(\d+)\S*\s+epoch (\d+) step (\d+): running train loss ([\d.]+)"
)
NOISE = (
    "TrainingReport",
    "PreemptionWatcher",
    "DeprecationWarning",
    "Progress bars",
    "execution of Dataset",
    "\x1b[36m(",  # Ray's chatter; a coloured prefix
    "Retrying (Retry(",
)  # an HTTP client's, in the outage


def _runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name("faults")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _logged_epochs(client: MlflowClient) -> list[int]:
    runs = _runs(client)
    if not runs:
        return []
    return [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_top1_error")]


def _step_losses(text: str) -> list[tuple[int, int, int, float]]:
    """(worker pid, epoch, step, running loss) of every progress line, in order."""
    return [(int(p), int(e), int(s), float(v)) for p, e, s, v in STEP_LINE.findall(text)]


def test_outage_killed_worker_and_interrupted_driver_cost_no_epoch_and_the_run_learns(
    ray_cluster, tiny_dataset, tiny_train_args, tmp_path, start_cli, run_cli, mlflow_server
):
    _, synthetic = tiny_dataset
    results = f"s3://{S3_BUCKET}/{tmp_path.name}/results"
    settings = [
        "train.log_every_n_steps=3",
        "optim.lr=0.02",
        f"tracking.uri={mlflow_server.uri}",
        "tracking.experiment=faults",
        "name=faults",
        "train.parallel=hybrid",
        "train.num_workers=2",
        "train.ten_crop=true",
        f"data.prepared_root={tmp_path / 'prepared'}",  # prepared on first use, here
        f"train.storage_path={results}",
        "model.width=0.125",  # checkpoints of 8 MB: moto keeps them in RAM
    ]
    args = tiny_train_args(*settings, f"train.epochs={PLANNED}")
    env = {"RAY_ADDRESS": ray_cluster}
    client = MlflowClient(mlflow_server.uri)
    first_log = tmp_path / "first.log"
    first = start_cli(*args, env=env, log=first_log)

    # 1. The MLflow server goes away once epoch 1 is in it, for two epochs.
    wait_for(first, lambda: 1 in _logged_epochs(client), "epoch 1 in MLflow")
    mlflow_server.stop()
    wait_for(
        first,
        lambda: "MLflow still unreachable after epoch" in first_log.read_text(),
        "two epochs in the outage",
    )

    # 2. SIGKILL the rank-0 worker in the middle of epoch 4 (its step-3 line is out), before
    # epoch 4 ended (the driver prints every epoch's line, outage or not).
    def mid_epoch_4():
        return [line for line in _step_losses(first_log.read_text()) if line[1:3] == (4, 3)]

    ((worker, _, _, loss_before),) = wait_for(first, mid_epoch_4, "epoch 4 step 3")
    os.kill(worker, signal.SIGKILL)
    assert "epoch   4  train loss" not in first_log.read_text()  # it died inside epoch 4
    mlflow_server.start()

    # The new worker group resumes from the epoch-3 checkpoint and its loss goes on from there.
    wait_for(
        first,
        lambda: "resumed from the checkpoint of epoch 3" in first_log.read_text(),
        "resume after the killed worker",
    )

    def resumed_step_3():
        lines = [line for line in _step_losses(first_log.read_text()) if line[1:3] == (4, 3)]
        return lines[1:]

    (_, _, _, loss_after), *_ = wait_for(first, resumed_step_3, "epoch 4 step 3 again")
    fresh = [line[3] for line in _step_losses(first_log.read_text()) if line[1:3] == (1, 3)][0]
    assert abs(loss_after - loss_before) < abs(loss_after - fresh), (fresh, loss_before, loss_after)

    # 3. Then Ctrl-C the driver (SIGINT, as a terminal sends it), the server back: exit 130 with
    # one line, no traceback, the run KILLED (the epochs buffered in the outage replayed as it
    # closed). Started again with the same name (one epoch past its newest checkpoint:
    # train.epochs may change on a resume), it goes on from that checkpoint in the same run.
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=180) == 130, first_log.read_text()[-3000:]
    interrupted = first_log.read_text()
    assert "run 'faults' interrupted: its MLflow run is KILLED, its checkpoints kept" in interrupted
    assert not [line for line in interrupted.splitlines() if line.startswith("Traceback")]
    assert [run.info.status for run in _runs(client)] == ["KILLED"]
    assert set(_logged_epochs(client)) >= {1, 2, 3}  # the outage's, replayed
    kept = newest_checkpoint(f"{results}/faults")
    assert 3 <= kept.epoch < PLANNED
    final = kept.epoch + 1
    second_log = tmp_path / "second.log"
    second = start_cli(
        *tiny_train_args(*settings, f"train.epochs={final}"), env=env, log=second_log
    )
    assert second.wait(timeout=400) == 0, second_log.read_text()[-3000:]
    printed, second_output = first_log.read_text(), second_log.read_text()
    assert "('faults', resumed)" in second_output
    assert "hybrid split: tower 0 on cpu, tower 1 on cpu" in second_output
    resumed_at = int(re.search(r"resumed from the checkpoint of epoch (\d+)", second_output)[1])
    assert resumed_at == kept.epoch

    # The outage cost one warning, then a line per epoch; the buffer was replayed and removed.
    # The console holds the project's own lines, not Ray's chatter.
    assert printed.count("training goes on and") == 1
    assert "to be replayed when it is back" in printed
    assert list((tmp_path / "mlflow-buffer").glob("*.jsonl*")) == []
    assert f"open {mlflow_server.uri} in a browser" in second_output
    lines = (printed + second_output).splitlines()
    assert [line for line in lines if any(noise in line for noise in NOISE)] == []

    (run,) = _runs(client)  # one run, never one per worker or per restart
    assert run.info.status == "FINISHED" and run.info.run_name == "faults"
    params = run.data.params
    assert params["model.variant"] == "paper" and params["model.towers"] == "2"
    assert params["model.num_classes"] == "5" and params["data.num_train_images"] == "400"
    assert params["data.image_size"] == "64" and params["data.rejects"] == "0"
    assert params["optim.lr"] == "0.02" and params["train.num_workers"] == "2"
    assert params["train.parallel"] == "hybrid"
    for tag in ("mlflow.user", "ray_version", "torch_version", "mlflow_version", "cluster_cpus"):
        assert run.data.tags[tag]
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True)
    assert run.data.tags["mlflow.source.git.commit"] == head.stdout.decode().strip()
    assert run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["mlflow.source.name"].endswith("orchestrator/run.py")
    # The data it read, as MLflow's Dataset column shows it: the prepared folder, once though
    # the run started three times, with the digest `prepare` wrote in its manifest
    digest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["digest"]
    (given,) = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert (given.dataset.name, given.dataset.digest) == ("prepared", digest[:16])
    # The paper's figures of the last epoch's checkpoint, made once the training finished (not
    # at the killed starts); the confusion matrix's error is the last epoch's val top-1 error
    figures = {f.path: f for f in client.list_artifacts(run.info.run_id, "figures")}
    assert sorted(figures) == [f"figures/{name}" for name in sorted(FIGURE_FILES)]
    assert "figures: conv1 kernels, top-5 predictions, fc7 nearest neighbours" in second_output
    matrix = client.download_artifacts(
        run.info.run_id, "figures/confusion_matrix.csv", str(tmp_path)
    )
    counts = np.loadtxt(matrix, delimiter=",", skiprows=1, usecols=range(1, 6))
    figure_error = 1 - np.trace(counts) / counts.sum()
    # The run's servable model: its last checkpoint, logged once the training finished
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert model.source_run_id == run.info.run_id and model.name == "model"
    assert model.tags["epoch"] == str(final) and model.tags["run"] == "faults"
    assert model.tags["checkpoint"] == run.data.tags["last_checkpoint"]
    assert second_output.count(f"model (epoch {final}): runs:/{run.info.run_id}/model") == 1
    config_path = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    logged = yaml.safe_load(open(config_path))
    assert logged["train"]["epochs"] == final and logged["model"]["num_classes"] == 5

    def history(key):
        return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]

    for key in EPOCH_METRICS:  # the names the metrics module promises, every epoch, once
        assert sorted(step for step, _ in history(key)) == list(range(1, final + 1)), key
    logged = {key for key in run.data.metrics if not key.startswith("system/")}  # rank 0's node
    assert logged == {*EPOCH_METRICS, *TEN_CROP_METRICS, *STEP_METRICS}  # and nothing else
    # The live curves: a point every 3 steps on the global step axis (12 steps an epoch), each
    # step once, though epochs 2-3 were logged in the outage, a part of epoch 4 was trained
    # again after the killed worker and a part of epoch 5 after the killed driver
    every_third = [
        12 * (epoch - 1) + step for epoch in range(1, final + 1) for step in (3, 6, 9, 12)
    ]
    for key in STEP_METRICS:
        assert sorted(step for step, _ in history(key)) == every_third, key
    assert dict(history("step/lr"))[3] == pytest.approx(0.02 * 32 / 128)
    ten_crop = dict(history("val_top1_error_10crop"))
    assert list(ten_crop) == [final] and ten_crop[final] < 0.4, ten_crop  # the paper's test
    val_error, train_loss = dict(history("val_top1_error")), dict(history("train_loss"))
    chance = 1 - 1 / synthetic.num_classes  # 0.8
    assert val_error[final] < chance / 2, json.dumps(val_error)  # learned, well below chance
    assert train_loss[final] < train_loss[1]
    assert dict(history("lr"))[1] == pytest.approx(0.02 * 32 / 128)  # linear scaling
    assert counts.sum() == 100 and figure_error == pytest.approx(val_error[final], abs=1 / 100)

    load_into_plain_alexnet(f"{results}/faults")
    tags = run.data.tags
    assert tags["last_checkpoint_epoch"] == str(final)
    assert tags["last_checkpoint"].startswith(f"{results}/faults/checkpoint_")  # a full URI
    assert tags["resumed_from_epoch"] == str(resumed_at)
    restarts = tags["restarts"]
    assert "from the checkpoint of epoch 3" in restarts  # the killed worker
    assert f"from the checkpoint of epoch {resumed_at}" in restarts  # the restarted driver
    # Nothing was trained twice: the newest checkpoint is never older than what MLflow holds
    assert restarts.count("trained again: none") == restarts.count("from the checkpoint of") == 2

    # Each start's console (the driver's lines, and those Ray relayed from rank 0 and the
    # Train controller) is an artifact of the run
    consoles = {a.path for a in client.list_artifacts(run.info.run_id)} & {
        "console.log",
        "console-2.log",
    }
    assert consoles == {"console.log", "console-2.log"}
    first_console, second_console = (
        open(client.download_artifacts(run.info.run_id, name, str(tmp_path))).read()
        for name in ("console.log", "console-2.log")
    )
    assert "MLflow run " in first_console and "epoch 4 step 3: running train loss" in first_console
    assert "epoch   3  train loss" in first_console  # the controller's
    assert "('faults', resumed)" in second_console
    assert f"resumed from the checkpoint of epoch {resumed_at}" in second_console

    # `evaluate` on the run reads its last checkpoint back from the bucket and scores as the
    # last epoch did, centre crop and ten-crop (MLflow records it as a run of its own).
    evaluated = run_cli(
        "evaluate",
        "--model",
        f"runs:/{run.info.run_id}",
        "--ten-crop",
        "--set",
        f"tracking.uri={mlflow_server.uri}",
        env={"RAY_ADDRESS": ray_cluster},
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    (evaluation,) = client.search_runs([run.info.experiment_id], "tags.kind = 'evaluate'")
    assert evaluation.data.params["epoch"] == str(final)
    (scored,) = client.get_run(evaluation.info.run_id).inputs.dataset_inputs
    assert scored.dataset.digest == given.dataset.digest and scored.tags[0].value == "eval"
    one_image = 1 / 100 + 1e-9  # other batch sizes may round a borderline logit the other way
    for key in ("val_top1_error", "val_top1_error_10crop"):
        (trained,) = [value for step, value in history(key) if step == final]
        assert evaluation.data.metrics[key] == pytest.approx(trained, abs=one_image), key

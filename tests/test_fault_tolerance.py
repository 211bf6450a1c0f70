"""Faults in one training run, through the real code path: a Ray Train worker killed in the
middle of an epoch, then the driver killed and started again. The run finishes every planned
epoch from its newest checkpoint, its loss goes on from where it was, and MLflow holds one run
with every epoch's metrics once and the restarts in its tags. The run uses the hybrid layout
(the paper's two towers in each worker, both on the CPU here, DDP across the two workers), so
its checkpoints also show the single-device layout. Its data and its checkpoints are in an S3
bucket (moto's server), as on a cluster; `evaluate` reads the last checkpoint back from there.
(A lost node: test_multinode.py.)"""

import os
import re
import signal
import time

import pytest
from conftest import S3_BUCKET, load_into_plain_alexnet
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.ray
EPOCHS = 4
STEP_LINE = re.compile(
    r"RayTrainWorker pid=(\d+)\S*\s+epoch (\d+) step (\d+): running train loss ([\d.]+)"
)


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("faults")
    return client, (client.search_runs([experiment.experiment_id]) if experiment else [])


def _logged_epochs(tmp_path) -> list[int]:
    try:
        client, runs = _runs(tmp_path)
    except Exception:  # noqa: BLE001 - the database may not exist yet
        return []
    if not runs:
        return []
    return [m.step for m in client.get_metric_history(runs[0].info.run_id, "val_top1_error")]


def _wait_for(process, condition, what, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {what}"
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s")


def _step_losses(text: str) -> list[tuple[int, int, int, float]]:
    """(worker pid, epoch, step, running loss) of every progress line, in order."""
    return [(int(p), int(e), int(s), float(v)) for p, e, s, v in STEP_LINE.findall(text)]


def test_killed_worker_then_killed_driver_resume_from_the_newest_checkpoint(
    ray_cluster, tiny_prepared_s3, tiny_train_args, tmp_path, start_cli, run_cli
):
    results = f"s3://{S3_BUCKET}/{tmp_path.name}/results"
    args = tiny_train_args(
        f"train.epochs={EPOCHS}", "train.log_every_n_steps=3", "tracking.experiment=faults",
        "name=faults", "train.parallel=hybrid", "train.num_workers=2",
        "data.source=prepared", f"data.root={tiny_prepared_s3}", f"train.storage_path={results}",
        "model.width=0.125", "train.ten_crop=true",  # checkpoints of 8 MB: moto keeps them in RAM
    )  # fmt: skip
    env = {"RAY_ADDRESS": ray_cluster}
    first_log = tmp_path / "first.log"
    first = start_cli(*args, env=env, log=first_log)

    # 1. SIGKILL the rank-0 worker in the middle of epoch 3 (its step-3 line is out).
    def mid_epoch_3():
        return [line for line in _step_losses(first_log.read_text()) if line[1:3] == (3, 3)]

    (worker, _, _, loss_before), = _wait_for(first, mid_epoch_3, "epoch 3 step 3")  # fmt: skip
    os.kill(worker, signal.SIGKILL)
    assert 3 not in _logged_epochs(tmp_path)  # it really died inside epoch 3

    # The new worker group resumes from the epoch-2 checkpoint and its loss goes on from there.
    _wait_for(first, lambda: "resumed from the checkpoint of epoch 2" in first_log.read_text(),
              "resume after the killed worker")  # fmt: skip

    def resumed_step_3():
        lines = [line for line in _step_losses(first_log.read_text()) if line[1:3] == (3, 3)]
        return lines[1:]

    (_, _, _, loss_after), *_ = _wait_for(first, resumed_step_3, "epoch 3 step 3 again")
    fresh = [line[3] for line in _step_losses(first_log.read_text()) if line[1:3] == (1, 3)][0]
    assert abs(loss_after - loss_before) < abs(loss_after - fresh), (fresh, loss_before, loss_after)

    # 2. Then kill the driver (and everything it started) once epoch 3 is in MLflow, and start
    # it again with the same name: it goes on from the epoch-3 checkpoint in the same run.
    _wait_for(first, lambda: 3 in _logged_epochs(tmp_path), "epoch 3 in MLflow")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second_log = tmp_path / "second.log"
    second = start_cli(*args, env=env, log=second_log)
    assert second.wait(timeout=400) == 0, second_log.read_text()[-3000:]
    second_output = second_log.read_text()
    assert "('faults', resumed)" in second_output
    assert "hybrid split: tower 0 on cpu, tower 1 on cpu" in second_output
    resumed_at = int(re.search(r"resumed from the checkpoint of epoch (\d+)", second_output)[1])
    assert resumed_at >= 3

    client, runs = _runs(tmp_path)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_top1_error", "lr", "images_per_second"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)  # each epoch once
    assert run.data.params["train.parallel"] == "hybrid"
    load_into_plain_alexnet(f"{results}/faults")
    tags = run.data.tags
    assert tags["last_checkpoint_epoch"] == str(EPOCHS)
    assert tags["last_checkpoint"].startswith(f"{results}/faults/checkpoint_")  # a full URI
    assert tags["resumed_from_epoch"] == str(resumed_at)
    restarts = tags["restarts"]
    assert "from the checkpoint of epoch 2" in restarts  # the killed worker
    assert f"from the checkpoint of epoch {resumed_at}" in restarts  # the restarted driver
    # Nothing was trained twice: the newest checkpoint is never older than what MLflow holds
    assert restarts.count("trained again: none") == restarts.count("from the checkpoint of") == 2

    # `evaluate` on the run reads its last checkpoint back from the bucket and scores as the
    # last epoch did, centre crop and ten-crop (MLflow records it as a run of its own).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    evaluated = run_cli("evaluate", "--model", f"runs:/{run.info.run_id}", "--ten-crop",
                        "--set", f"tracking.uri={uri}",
                        env={"RAY_ADDRESS": ray_cluster})  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    (evaluation,) = client.search_runs([run.info.experiment_id], "tags.kind = 'evaluate'")
    assert evaluation.data.params["epoch"] == str(EPOCHS)
    one_image = 1 / 100 + 1e-9  # other batch sizes may round a borderline logit the other way
    for key in ("val_top1_error", "val_top1_error_10crop"):
        (trained,) = [m.value for m in client.get_metric_history(run.info.run_id, key)
                      if m.step == EPOCHS]  # fmt: skip
        assert evaluation.data.metrics[key] == pytest.approx(trained, abs=one_image), key

"""A killed driver, started again: the run finishes every planned epoch from its last
checkpoint, and MLflow holds one run with every epoch's metrics once. (A lost worker, on a lost
node, is tested in test_multinode.py.)"""

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.ray
EPOCHS = 4


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


def _wait_for_epoch(process, tmp_path, epoch, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        if epoch in _logged_epochs(tmp_path):
            return
        time.sleep(0.3)
    raise AssertionError(f"epoch {epoch} was not logged within {timeout} s")


def _assert_one_complete_run(tmp_path):
    client, runs = _runs(tmp_path)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_top1_error", "lr", "images_per_second"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), (key, steps)  # each epoch once
    assert run.data.tags["last_checkpoint"].endswith(f"(epoch {EPOCHS})")


def _train_args(tiny_train_args, name):
    return tiny_train_args(
        f"train.epochs={EPOCHS}", "train.log_every_n_steps=0", "tracking.experiment=faults",
        f"name={name}",
    )  # fmt: skip


def test_restarted_driver_resumes_the_same_run(ray_cluster, tiny_train_args, tmp_path, start_cli):
    args = _train_args(tiny_train_args, "driver-fault")
    first = start_cli(*args, env={"RAY_ADDRESS": ray_cluster}, log=tmp_path / "first.log")
    _wait_for_epoch(first, tmp_path, 2)
    os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started
    first.wait()
    done_before = max(_logged_epochs(tmp_path))
    assert done_before < EPOCHS

    log = tmp_path / "second.log"
    second = start_cli(*args, env={"RAY_ADDRESS": ray_cluster}, log=log)
    assert second.wait(timeout=400) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "resumed" in output and "resumed from the checkpoint of epoch" in output
    _assert_one_complete_run(tmp_path)

"""Ctrl-C on a training run: SIGINT to its driver, as a terminal sends it. One line and exit 130,
no traceback, the MLflow run KILLED; the same command again (the same `name`) goes on from the
run's newest checkpoint, in the same MLflow run. (Sweeps and studies: test_sweep.py and
test_study.py.)"""

import re
import signal

import pytest
from conftest import wait_for
from mlflow.tracking import MlflowClient

from orchestrator.tracking.steps import TRAIN_LOSS
from orchestrator.training.checkpoints import newest_checkpoint

pytestmark = pytest.mark.ray


def _run(client: MlflowClient):
    experiment = client.get_experiment_by_name("alexnet-demo")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return runs[0] if runs else None


def _epochs(client: MlflowClient, run) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "val_top1_error")]


def test_ctrl_c_kills_the_run_and_the_same_name_resumes_it(
    ray_cluster, tiny_train_args, tmp_path, start_cli, run_cli
):
    # Many epochs planned: Ray Train takes seconds to abort, in which the workers train on
    settings = ["name=interrupted", "tracking.figures=false", "train.log_every_n_steps=4"]
    env = {"RAY_ADDRESS": ray_cluster}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    log = tmp_path / "interrupted.log"
    driver = start_cli(*tiny_train_args(*settings, "train.epochs=40"), env=env, log=log)
    wait_for(driver, lambda: _run(client) and _epochs(client, _run(client)), "epoch 1 in MLflow")
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=180) == 130, log.read_text()[-4000:]
    printed = log.read_text()
    assert "run 'interrupted' interrupted: its MLflow run is KILLED" in printed
    assert not [line for line in printed.splitlines() if line.startswith("Traceback")]
    run = _run(client)
    assert run.info.status == "KILLED"
    kept = newest_checkpoint(str(tmp_path / "results" / "interrupted"))
    assert kept is not None and kept.epoch < 40

    # Again, one epoch past its newest checkpoint (train.epochs may change on a resume)
    again = run_cli(*tiny_train_args(*settings, f"train.epochs={kept.epoch + 1}"), env=env)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-4000:]
    assert "('interrupted', resumed)" in output
    assert re.search(rf"resumed from the checkpoint of epoch {kept.epoch} ", output), output
    resumed = client.get_run(run.info.run_id)  # the same MLflow run, now finished
    assert resumed.info.status == "FINISHED"
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [
        run.info.run_id
    ]
    assert sorted(_epochs(client, resumed)) == list(range(1, kept.epoch + 2))  # each once
    steps = [m.step for m in client.get_metric_history(run.info.run_id, TRAIN_LOSS)]
    assert len(steps) == len(set(steps)) > kept.epoch + 1  # live curves: more points than epochs

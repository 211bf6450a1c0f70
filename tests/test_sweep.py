"""Sweeps through the real code path: search spaces sampled by Ray Tune (TPE, grid), and a killed
sweep resumed with every trial in MLflow exactly once, its data, trials and checkpoints in an S3
bucket (moto's server). (The 4-trial ASHA sweep runs as a Ray job in test_cluster.py.)"""

import os
import re
import signal
import time

import pytest
from conftest import S3_BUCKET
from mlflow.tracking import MlflowClient

from orchestrator.config import SWEEP_CONFIG, load_config
from orchestrator.errors import ConfigError

pytestmark = pytest.mark.ray


def test_sweep_space_is_validated_before_ray():
    with pytest.raises(ConfigError, match="allowed: 0 < low < high"):
        load_config(SWEEP_CONFIG, ["sweep.space={optim.lr: {loguniform: [0, 0.1]}}"])
    with pytest.raises(ConfigError, match="cannot be searched on a grid"):
        load_config(SWEEP_CONFIG, ["sweep.search=grid"])
    with pytest.raises(ConfigError, match="allowed: one of grid, choice, uniform, loguniform"):
        load_config(SWEEP_CONFIG, ["sweep.space={model.dropout: {normal: [0.5, 0.1]}}"])


@pytest.mark.parametrize("search", ["tpe", "grid"])
def test_searches_sample_the_yaml_space(ray_cluster, tmp_path, search):
    import ray.tune as tune

    from orchestrator.search import SweepConfig, param_space, search_algorithm

    if search == "tpe":
        space = {"optim.lr": {"loguniform": (0.001, 0.1)}, "model.dropout": {"uniform": (0.2, 0.7)},
                 "optim.weight_decay": {"choice": (0.0, 0.0005)}}  # fmt: skip
    else:
        space = {
            "optim.lr": {"grid": (0.01, 0.02, 0.04)},
            "optim.weight_decay": {"choice": (0.0, 5e-4)},
        }
    spec = SweepConfig(search=search, space=space, num_samples=4 if search == "tpe" else 1)

    def trial(config):
        tune.report({"val_top1_error": abs(config["optim.lr"] - 0.01)})

    results = tune.Tuner(
        trial,
        param_space=param_space(space, search),
        tune_config=tune.TuneConfig(
            metric="val_top1_error",
            mode="min",
            num_samples=spec.num_samples,
            search_alg=search_algorithm(spec),
        ),  # fmt: skip
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    ).fit()
    configs = [r.config for r in results]
    if search == "tpe":
        assert type(search_algorithm(spec)).__name__ == "OptunaSearch" and len(configs) == 4
        assert all(
            0.001 <= c["optim.lr"] <= 0.1 and 0.2 <= c["model.dropout"] <= 0.7 for c in configs
        )
        assert all(c["optim.weight_decay"] in (0.0, 0.0005) for c in configs)
    else:  # every combination once
        pairs = sorted((c["optim.lr"], c["optim.weight_decay"]) for c in configs)
        assert pairs == sorted((lr, wd) for lr in (0.01, 0.02, 0.04) for wd in (0.0, 5e-4))


def sweep_runs(tracking_uri: str, experiment_name: str):
    """(client, parent runs, trial runs) of a sweep's experiment."""
    client = MlflowClient(tracking_uri)
    try:
        experiment = client.get_experiment_by_name(experiment_name)
    except Exception:  # noqa: BLE001 - the database may not exist yet
        return client, [], []
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    return client, parents, children


def _epochs(client, run) -> list[tuple[int, int]]:
    """(epoch, timestamp) of each val_top1_error value logged to the run."""
    return [(m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id,
                                                                     "val_top1_error")]  # fmt: skip


def test_killed_sweep_resumes_without_running_anything_twice(
    ray_cluster, tiny_prepared_s3, tiny_train_args, tmp_path, start_cli
):
    """ASHA over 2 trials of 2 epochs; the driver killed while the first trial is in the middle
    of its second epoch; `--resume` trains nothing twice and keeps one MLflow run per trial."""
    results = f"s3://{S3_BUCKET}/{tmp_path.name}/results"
    sets = tiny_train_args(
        "train.epochs=2", "sweep.num_samples=2", "sweep.scheduler=asha",
        "sweep.name=pytest-resume", "tracking.experiment=resume", "model.width=0.125",
        "data.source=prepared", f"data.root={tiny_prepared_s3}", f"train.storage_path={results}",
    )[3:]  # fmt: skip
    args = ["sweep", "--config", "configs/sweep.yaml", *sets]
    env = {"RAY_ADDRESS": ray_cluster}
    first = start_cli(*args, env=env, log=tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while True:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial finished an epoch within 300 s"
        client, parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
        logged = {c.info.run_id: _epochs(client, c) for c in children}
        if any(logged.values()):
            break
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep's driver and everything it started
    first.wait()
    _, parents, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    logged = {c.info.run_id: _epochs(client, c) for c in children}
    # The first trial to end epoch 1 leads its ASHA rung, so it was training epoch 2
    midway = [run_id for run_id, epochs in logged.items() if [e for e, _ in epochs] == [1]]
    assert midway, logged
    trials_before = {c.data.tags["trial_id"]: c.info.run_id for c in children}
    assert len(parents) == 1

    log = tmp_path / "second.log"
    second = start_cli(*args, "--resume", env=env, log=log)
    assert second.wait(timeout=500) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert f"resuming sweep 'pytest-resume' from {results}/sweeps/pytest-resume" in output
    # The trial stopped midway goes on from its newest checkpoint: epoch 1's, or epoch 2's when
    # the kill came between that checkpoint's upload and its report reaching MLflow
    assert re.search(r"resumed from the checkpoint of epoch [12] ", output)

    client, parents_after, children = sweep_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    trials_after = {c.data.tags["trial_id"]: c.info.run_id for c in children}
    assert len(children) == len(trials_after) == 2  # one run per trial, no duplicates
    assert trials_after.items() >= trials_before.items()  # each trial kept its run
    for child in children:
        assert child.info.status == "FINISHED"
        epochs = _epochs(client, child)
        steps = [step for step, _ in epochs]
        assert steps in ([1], [1, 2]), steps  # each epoch once (ASHA may stop after epoch 1)
        assert (child.data.tags.get("early_stopped") == "true") == (steps == [1])
        assert child.data.tags["last_checkpoint"].startswith(f"{results}/sweeps/pytest-resume/")
        before = logged.get(child.info.run_id, [])
        assert epochs[: len(before)] == before  # what was logged before the kill: not retrained

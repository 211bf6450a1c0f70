"""A Ray Tune sweep through the real code path: trials are TorchTrainer runs, nested in MLflow."""

import os
import signal
import time

import mlflow
import numpy as np
import pytest
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


def _sweep_runs(tmp_path, experiment_name):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = client.get_experiment_by_name(experiment_name)
    except Exception:  # noqa: BLE001 - the database may not exist yet
        return client, [], []
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("kind") == "trial"]
    assert len(parents) + len(children) == len(runs)  # nothing else in the experiment
    return client, parents, children


def _epochs(client, run) -> list[tuple[int, int]]:
    """(epoch, timestamp) of each val_top1_error value logged to the run."""
    return [(m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id,
                                                                     "val_top1_error")]  # fmt: skip


def test_asha_sweep_makes_one_parent_and_one_child_run_per_trial(
    ray_cluster, tiny_train_args, tmp_path, run_cli
):
    sets = tiny_train_args(
        "train.epochs=2", "sweep.num_samples=4", "sweep.name=pytest-sweep",
        "sweep.register_model=pytest-alexnet", "tracking.system_metrics_interval_s=1",
    )[3:]  # fmt: skip
    result = run_cli("sweep", "--config", "configs/sweep.yaml", *sets,
                     env={"RAY_ADDRESS": ray_cluster})  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client, parents, children = _sweep_runs(tmp_path, "alexnet-sweeps")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert (
        parent.data.tags["scheduler"] == "asha" and parent.data.tags["search_algorithm"] == "random"
    )
    assert "optim.lr" in parent.data.tags["search_space"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "plots"}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/learning_curves.png" in plots and "plots/val_top1_error_vs_optim.lr.png" in plots

    best = min(children, key=lambda r: r.data.metrics["val_top1_error"])
    assert parent.data.metrics["best_val_top1_error"] == best.data.metrics["val_top1_error"]
    assert parent.data.tags["best_run_id"] == best.info.run_id
    lrs = set()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested
        assert child.info.status == "FINISHED"
        lrs.add(child.data.params["optim.lr"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_top1_error")]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 2
        early = child.data.tags.get("early_stopped") == "true"
        assert early == (len(steps) < 2)  # ASHA's stops are tagged, and only they
    assert len(lrs) == 4  # every trial drew its own learning rate
    assert any("system/cpu_utilization_percentage" in c.data.metrics for c in children)

    # The best trial's model, registered under an alias, serves uint8 images at the prepared size
    version = client.get_model_version_by_alias("pytest-alexnet", "best")
    assert version.run_id == parent.info.run_id and version.tags["trial"] == parent.data.tags[
        "best_trial"]  # fmt: skip
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/pytest-alexnet@best")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert model.predict(images).shape == (3, 5)  # 5 classes in tiny_dataset

    report = run_cli("report", "--sweep", "pytest-sweep",
                     "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    lines = report.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("trial "))) :]
    errors = [float(line.split()[4]) for line in table[1:5]]
    assert errors == sorted(errors)  # best first
    assert sum("plot: " in line for line in lines) == 4


def test_killed_sweep_resumes_without_running_anything_twice(
    ray_cluster, tiny_train_args, tmp_path, start_cli
):
    sets = tiny_train_args(
        "train.epochs=2", "sweep.num_samples=3", "sweep.scheduler=fifo",
        "sweep.name=pytest-resume", "tracking.experiment=resume",
    )[3:]  # fmt: skip
    args = ["sweep", "--config", "configs/sweep.yaml", *sets]
    env = {"RAY_ADDRESS": ray_cluster}
    first = start_cli(*args, env=env, log=tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while True:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no trial finished within 300 s"
        client, parents, children = _sweep_runs(tmp_path, "resume")
        finished = {c.info.run_id: _epochs(client, c) for c in children}
        finished = {run_id: epochs for run_id, epochs in finished.items() if len(epochs) == 2}
        if finished:
            break
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # the sweep's driver and everything it started
    first.wait()
    _, parents, children = _sweep_runs(tmp_path, "resume")
    trials_before = {c.data.tags["trial_id"]: c.info.run_id for c in children}
    assert len(finished) < 3 and len(parents) == 1

    log = tmp_path / "second.log"
    second = start_cli(*args, "--resume", env=env, log=log)
    assert second.wait(timeout=500) == 0, log.read_text()[-3000:]
    assert "resuming sweep 'pytest-resume'" in log.read_text()

    client, parents_after, children = _sweep_runs(tmp_path, "resume")
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    trials_after = {c.data.tags["trial_id"]: c.info.run_id for c in children}
    assert len(children) == len(trials_after) == 3  # one run per trial, no duplicates
    assert trials_after.items() >= trials_before.items()  # each trial kept its run
    for child in children:
        assert child.info.status == "FINISHED"
        epochs = _epochs(client, child)
        assert [step for step, _ in epochs] == [1, 2]  # each epoch once
        if child.info.run_id in finished:
            assert epochs == finished[child.info.run_id]  # not trained again

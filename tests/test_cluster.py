"""Jobs end to end on a real local head (cluster/local.py: Ray with token auth and an MLflow
server, both on 127.0.0.1): `ray job submit` of `train` and of a 4-trial ASHA sweep, tracked
into the head's server."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import free_port
from mlflow.tracking import MlflowClient
from test_sweep import sweep_runs

from orchestrator.config import REPO_ROOT

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_head(tmp_path_factory):
    state = tmp_path_factory.mktemp("head")
    ports = {"--ray-port": free_port(), "--dashboard-port": free_port(),
             "--mlflow-port": free_port()}  # fmt: skip
    command = [sys.executable, "cluster/local.py", "start", "--state-dir", str(state),
               "--num-cpus", "2", *(str(x) for item in ports.items() for x in item)]  # fmt: skip
    started = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['--mlflow-port']}" in started.stdout
    head = json.loads((state / "head.json").read_text())
    yield {
        "jobs": f"http://127.0.0.1:{ports['--dashboard-port']}",
        "mlflow": f"http://127.0.0.1:{ports['--mlflow-port']}",
        "pids": head["pids"],
    }
    stop = [sys.executable, "cluster/local.py", "stop", "--state-dir", str(state)]
    stopped = subprocess.run(stop, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    for pid in head["pids"].values():  # exactly what start started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def submit(head: dict, *run_args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit ... -- python orchestrator/run.py ARGS`, as cluster/README.md says."""
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", head["jobs"],
               "--working-dir", ".", "--runtime-env", "cluster/runtime_env.yaml", "--",
               "python", "orchestrator/run.py", *run_args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_AUTH_MODE"] = "token"
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _sets(tiny_prepared, tmp_path, *overrides) -> list[str]:
    settings = [
        "data.source=prepared", f"data.root={tiny_prepared}",
        f"train.storage_path={tmp_path / 'results'}", "train.global_batch_size=32",
        f"tracking.buffer_dir={tmp_path / 'mlflow-buffer'}", *overrides,
    ]  # fmt: skip
    return [part for setting in settings for part in ("--set", setting)]


def test_train_job_tracks_into_the_heads_mlflow_server(local_head, tiny_prepared, tmp_path):
    sets = _sets(tiny_prepared, tmp_path, "train.epochs=2", "tracking.experiment=jobs")
    result = submit(local_head, "train", "--config", "configs/demo.yaml", *sets)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in output, output[-4000:]
    assert "epoch   1  train loss" in output and "epoch   2  train loss" in output  # progress
    client = MlflowClient(local_head["mlflow"])  # no MLFLOW_TRACKING_URI was given to the job
    (run,) = client.search_runs([client.get_experiment_by_name("jobs").experiment_id])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1_error")]
    assert steps == [1, 2]
    assert run.data.tags["cluster_cpus"] == "2"  # the head's, not this machine's test cluster


def test_sweep_job_asha_four_trials_nested_in_mlflow(
    local_head, ray_cluster, tiny_prepared, tmp_path, run_cli
):
    """The issue's sweep: 4 trials, 2 at a time, ASHA; 1 parent and 4 child runs in MLflow."""
    result = submit(local_head, "sweep", "--config", "configs/sweep.yaml",
                    *_sets(tiny_prepared, tmp_path, "train.epochs=2", "sweep.num_samples=4",
                           "sweep.name=pytest-sweep", "sweep.register_model=pytest-alexnet",
                           "tracking.system_metrics_interval_s=1"))  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in output, output[-4000:]

    client, parents, children = sweep_runs(local_head["mlflow"], "alexnet-sweeps")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["scheduler"] == "asha" and tags["search_algorithm"] == "random"
    assert "optim.lr" in tags["search_space"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "plots"}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/learning_curves.png" in plots and "plots/val_top1_error_vs_optim.lr.png" in plots

    lowest = min(child.data.metrics["val_top1_error"] for child in children)
    (best,) = [child for child in children if child.info.run_id == tags["best_run_id"]]
    assert parent.data.metrics["best_val_top1_error"] == lowest  # (trials may tie)
    assert best.data.metrics["val_top1_error"] == lowest
    lrs = set()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested
        assert child.info.status == "FINISHED"
        assert child.data.tags["git_sha"] and child.data.tags["cluster_cpus"] == "2"
        lrs.add(child.data.params["optim.lr"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_top1_error")]
        assert steps == list(range(1, len(steps) + 1)) and 1 <= len(steps) <= 2
        early = child.data.tags.get("early_stopped") == "true"
        assert early == (len(steps) < 2)  # ASHA's stops are tagged, and only they
    assert len(lrs) == 4  # every trial drew its own learning rate
    assert any("system/cpu_utilization_percentage" in c.data.metrics for c in children)

    # The best trial's model, registered under an alias, serves uint8 images at the prepared size
    version = client.get_model_version_by_alias("pytest-alexnet", "best")
    assert version.run_id == parent.info.run_id and version.tags["trial"] == tags["best_trial"]
    mlflow.set_tracking_uri(local_head["mlflow"])
    model = mlflow.pyfunc.load_model("models:/pytest-alexnet@best")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    assert model.predict(images).shape == (3, 5)  # 5 classes in tiny_dataset

    report = run_cli("report", "--sweep", "pytest-sweep", "--set",
                     f"tracking.uri={local_head['mlflow']}")  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    lines = report.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("trial "))) :]
    errors = [float(line.split()[4]) for line in table[1:5]]
    assert errors == sorted(errors)  # best first
    assert sum("plot: " in line for line in lines) == 4

    # `evaluate` takes the registered model: the checkpoint it came from scores as that trial did
    evaluated = run_cli("evaluate", "--model", "models:/pytest-alexnet@best",
                        "--set", f"tracking.uri={local_head['mlflow']}",
                        env={"RAY_ADDRESS": ray_cluster})  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    (line,) = [x for x in evaluated.stdout.splitlines() if x.split()[:1] == ["val_top1_error"]]
    assert float(line.split()[1]) == pytest.approx(best.data.metrics["val_top1_error"], abs=0.011)

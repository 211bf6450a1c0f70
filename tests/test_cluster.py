"""Jobs end to end on a real local head (cluster/local.py: Ray with token auth and an MLflow
server, both on 127.0.0.1): `ray job submit` of a 4-trial ASHA sweep tracked into the head's
server, then of `report` on it with the head's default tracking URI."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from conftest import free_port
from test_sweep import sweep_runs

from orchestrator.config import REPO_ROOT

pytestmark = pytest.mark.ray
# Credentials that must never be printed or stored: in the tracking URI the jobs get (the head's
# server ignores them), in the environment of every process on the head, in a config value.
URI_SECRET = "uri-pass-" + os.urandom(6).hex()
ENV_SECRET = "env-key-" + os.urandom(6).hex()


@pytest.fixture(scope="module")
def local_head(tmp_path_factory):
    state = tmp_path_factory.mktemp("head")
    ports = {"--ray-port": free_port(), "--dashboard-port": free_port(),
             "--mlflow-port": free_port()}  # fmt: skip
    command = [sys.executable, "cluster/local.py", "start", "--state-dir", str(state),
               "--num-cpus", "2", *(str(x) for item in ports.items() for x in item)]  # fmt: skip
    env = {**os.environ, "PYTEST_SERVICE_SECRET_KEY": ENV_SECRET}  # inherited by every job
    started = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                             env=env)  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['--mlflow-port']}" in started.stdout
    head = json.loads((state / "head.json").read_text())
    mlflow_port = ports["--mlflow-port"]
    yield {
        "jobs": f"http://127.0.0.1:{ports['--dashboard-port']}",
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
        "mlflow_with_password": f"http://pytest:{URI_SECRET}@127.0.0.1:{mlflow_port}",
        "pids": head["pids"],
        "state": state,
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


def test_sweep_job_asha_four_trials_nested_in_mlflow(
    local_head, ray_cluster, tiny_prepared, tmp_path, run_cli
):
    """The issue's sweep: 4 trials, 2 at a time, ASHA; 1 parent and 4 child runs in MLflow."""
    # The password goes in a config file, not on the command line: Ray writes a job's command
    # line at the top of its log, as typed
    config = {"base": str(REPO_ROOT / "configs" / "sweep.yaml"),  # all but the password
              "tracking": {"uri": local_head["mlflow_with_password"]}}  # fmt: skip
    secret_config = tmp_path / "sweep-with-password.yaml"
    secret_config.write_text(yaml.safe_dump(config))
    result = submit(local_head, "sweep", "--config", str(secret_config),
                    *_sets(tiny_prepared, tmp_path, "train.epochs=2", "sweep.num_samples=4",
                           "sweep.name=pytest-sweep", "sweep.register_model=pytest-alexnet",
                           "tracking.system_metrics_interval_s=1"))  # fmt: skip
    output = result.stdout + result.stderr
    printed = [output]
    assert result.returncode == 0 and "succeeded" in output, output[-4000:]
    assert ENV_SECRET not in output  # every process of the job has it in its environment
    assert "epoch   1  train loss" in output  # the trials' progress reaches the job's log

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

    # `report` as a job, given no tracking URI: the head's server is every job's default
    report = submit(local_head, "report", "--sweep", "pytest-sweep", timeout=180)
    output = report.stdout + report.stderr
    assert report.returncode == 0 and "succeeded" in output, output[-3000:]
    printed.append(output)
    lines = report.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("trial "))) :]
    errors = [float(line.split()[4]) for line in table[1:5]]
    assert errors == sorted(errors)  # best first
    assert sum("plot: " in line for line in lines) == 4

    # `evaluate` takes the registered model: the checkpoint it came from scores as that trial did
    evaluated = run_cli("evaluate", "--model", "models:/pytest-alexnet@best",
                        "--set", f"tracking.uri={local_head['mlflow_with_password']}",
                        env={"RAY_ADDRESS": ray_cluster,
                             "PYTEST_SERVICE_SECRET_KEY": ENV_SECRET})  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    printed += [evaluated.stdout, evaluated.stderr]
    (line,) = [x for x in evaluated.stdout.splitlines() if x.split()[:1] == ["val_top1_error"]]
    assert float(line.split()[1]) == pytest.approx(best.data.metrics["val_top1_error"], abs=0.011)

    # No secret anywhere: what the commands printed (the jobs' logs included), Ray's own logs
    # of both clusters, and the whole MLflow store (its database and every artifact's bytes).
    stores = [local_head["state"], Path(tempfile.gettempdir()) / "ray"]
    secrets = (URI_SECRET, ENV_SECRET)
    assert (_around(secrets, printed), _files_holding(secrets, stores)) == ([], [])
    assert (local_head["state"] / "mlflow.db").exists()
    assert any((local_head["state"] / "mlartifacts").rglob("MLmodel"))  # artifacts were searched


def _around(secrets: tuple[str, ...], texts: list[str]) -> list[str]:
    """Each place a secret appears in `texts`, with the 150 characters before it."""
    return [text[max(0, i - 150) : i + 20] for text in texts for secret in secrets
            for i in [m.start() for m in re.finditer(re.escape(secret), text)]]  # fmt: skip


def _files_holding(secrets: tuple[str, ...], folders: list[Path]) -> list[str]:
    needles = [secret.encode() for secret in secrets]
    hits = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:
                    continue  # a socket or a file that went away
                hits += [str(path) for needle in needles if needle in data]
    return hits

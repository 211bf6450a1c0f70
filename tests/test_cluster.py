"""Jobs end to end on a real local head (cluster/local.py: Ray with token auth and an MLflow
server, both on 127.0.0.1, the server's runs in PostgreSQL and its artifacts in an S3 bucket):
`ray job submit` of a 3-trial ASHA sweep on data and storage in the bucket, its driver killed
after a trial finished and the sweep resubmitted with `--resume`; then `report` as a job with the
head's default tracking URI, and `evaluate` of the registered model."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import psycopg
import pytest
import yaml
from conftest import S3_BUCKET, free_port
from mlflow.tracking import MlflowClient
from PIL import Image

from orchestrator.common.paths import CONFIGS, REPO_ROOT

pytestmark = pytest.mark.ray
# Credentials that must never be printed or stored: in the tracking URI the jobs get (the head's
# server ignores them), in the environment of every process on the head, in a config value.
URI_SECRET = "uri-pass-" + os.urandom(6).hex()
ENV_SECRET = "env-key-" + os.urandom(6).hex()
ARTIFACTS = f"s3://{S3_BUCKET}/mlartifacts"


@pytest.fixture(scope="module")
def local_head(tmp_path_factory, postgres_server, s3_server):
    state = tmp_path_factory.mktemp("head")
    ports = {
        "--ray-port": free_port(),
        "--dashboard-port": free_port(),
        "--mlflow-port": free_port(),
    }
    command = [
        sys.executable,
        "cluster/local.py",
        "start",
        "--state-dir",
        str(state),
        "--num-cpus",
        "2",
        *(str(x) for item in ports.items() for x in item),
        "--artifacts-destination",
        ARTIFACTS,
    ]
    env = {
        **os.environ,
        "PYTEST_SERVICE_SECRET_KEY": ENV_SECRET,  # inherited by every job
        "MLFLOW_BACKEND_STORE_URI": postgres_server[0],  # the password: never on a command line
    }
    started = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{ports['--mlflow-port']}" in started.stdout
    assert "(backend postgresql://mlflow:***@127.0.0.1:" in started.stdout
    head = json.loads((state / "head.json").read_text())
    mlflow_port = ports["--mlflow-port"]
    yield {
        "jobs": f"http://127.0.0.1:{ports['--dashboard-port']}",
        "mlflow": f"http://127.0.0.1:{mlflow_port}",
        "mlflow_with_password": f"http://pytest:{URI_SECRET}@127.0.0.1:{mlflow_port}",
        "pids": head["pids"],
        "state": state,
        "printed": [started.stdout, started.stderr],
    }
    started_processes = [psutil.Process(pid) for pid in head["pids"].values()]
    family = started_processes + [
        child for process in started_processes for child in process.children(recursive=True)
    ]
    stop = [sys.executable, "cluster/local.py", "stop", "--state-dir", str(state)]
    stopped = subprocess.run(stop, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert stopped.returncode == 0, stopped.stderr
    for pid in head["pids"].values():  # exactly what start started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    _, alive = psutil.wait_procs(family, timeout=10)  # and every process they started
    assert alive == [], [(p.pid, p.name()) for p in alive]


def ray_command(head: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job ARGS --address <the head>`, as a client with the token would run it."""
    command = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        args[0],
        "--address",
        head["jobs"],
        *args[1:],
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_AUTH_MODE"] = "token"
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def submit(head: dict, *run_args: str, options=(), timeout=600) -> subprocess.CompletedProcess:
    """`alexnet-ray submit ... -- ARGS`: the job, from this checkout, carrying its commit."""
    command = [str(Path(sys.executable).parent / "alexnet-ray"), "submit"]
    command += ["--address", head["jobs"], *options, "--", *run_args]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_AUTH_MODE"] = "token"
    return subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def ray_job_submit(head: dict, *run_args: str, timeout=600) -> subprocess.CompletedProcess:
    """`ray job submit ... -- python orchestrator/run.py ARGS`, Ray's own way."""
    return ray_command(
        head,
        "submit",
        "--working-dir",
        ".",
        "--runtime-env",
        "cluster/runtime_env.yaml",
        "--",
        "python",
        "orchestrator/run.py",
        *run_args,
        timeout=timeout,
    )


def _sets(data: str, storage: str, tmp_path, *overrides) -> list[str]:
    settings = [
        "data.source=prepared",
        f"data.root={data}",
        f"train.storage_path={storage}",
        "train.global_batch_size=32",
        f"tracking.buffer_dir={tmp_path / 'mlflow-buffer'}",
        "tracking.figures=false",  # each trial's: made and checked in test_fault_tolerance.py
        "data.decode=device",  # the third place (worker: the default, test_fault_tolerance.py;
        #                        tasks: test_multinode.py), trained and scored here
        *overrides,
    ]
    return [part for setting in settings for part in ("--set", setting)]


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


def _histories(client, runs) -> dict[str, list[tuple[int, int]]]:
    """Each run's (epoch, timestamp) of every val_top1_error it logged, by run id."""
    return {
        run.info.run_id: [
            (m.step, m.timestamp)
            for m in client.get_metric_history(run.info.run_id, "val_top1_error")
        ]
        for run in runs
    }


def _kill_driver_after_a_trial_finished(head: dict, timeout: float = 400):
    """Waits for a trial's MLflow run to finish, then SIGKILLs the sweep job's driver (the
    `python orchestrator/run.py sweep` process under the head), as a crash would end it.
    Returns (the parent run, the trial runs, their histories) as they were at the kill."""
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no trial finished within {timeout:g} s"
        _, _, children = sweep_runs(head["mlflow"], "alexnet-sweeps")
        if any(child.info.status == "FINISHED" for child in children):
            break
        time.sleep(0.5)
    ray_head = psutil.Process(head["pids"]["ray"])
    (driver,) = [p for p in ray_head.children(recursive=True) if _is_driver(p)]
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    client, parents, children = sweep_runs(head["mlflow"], "alexnet-sweeps")
    assert len(parents) == 1
    return parents[0], children, _histories(client, children)


def _is_driver(process: psutil.Process) -> bool:
    try:
        return process.name().startswith("python") and "orchestrator/run.py" in process.cmdline()
    except psutil.Error:  # gone, or a zombie
        return False


def test_killed_sweep_job_resumes_on_postgres_and_s3_and_registers_its_best_model(
    local_head, postgres_server, ray_cluster, tiny_prepared_s3, tmp_path, run_cli
):
    """The issue's sweep: 3 trials, 2 at a time, ASHA, data and Tune state in the bucket, killed
    after a trial finished and resumed: 1 parent and 3 child runs in PostgreSQL, nothing trained
    twice, the best trial's model registered with its artifacts in the bucket."""
    # The password goes in a config file, not on the command line: Ray writes a job's command
    # line at the top of its log, as typed
    config = {
        "base": str(CONFIGS / "sweep.yaml"),  # all but the password
        "tracking": {"uri": local_head["mlflow_with_password"]},
    }
    secret_config = tmp_path / "sweep-with-password.yaml"
    secret_config.write_text(yaml.safe_dump(config))
    storage = f"s3://{S3_BUCKET}/{tmp_path.name}/results"
    args = [
        "sweep",
        "--config",
        str(secret_config),
        *_sets(
            tiny_prepared_s3,
            storage,
            tmp_path,
            "train.epochs=2",
            "sweep.num_samples=3",
            "sweep.name=pytest-sweep",
            "sweep.register_model=pytest-alexnet",
            "model.width=0.125",
            "tracking.system_metrics_interval_s=1",
        ),
    ]
    args += ["--note", "the cluster test"]
    first = submit(local_head, *args, options=["--no-wait", "--submission-id", "pytest-sweep-1"])
    assert first.returncode == 0, first.stdout + first.stderr
    parent, children, before = _kill_driver_after_a_trial_finished(local_head)
    finished = {c.info.run_id for c in children if c.info.status == "FINISHED"}
    killed_log = ray_command(local_head, "logs", "pytest-sweep-1")
    printed = [first.stdout, first.stderr, killed_log.stdout, killed_log.stderr]
    assert "epoch   1  train loss" in killed_log.stdout  # trials' progress reaches the job's log

    resubmitted = time.time() * 1000  # MLflow's timestamps: ms
    result = submit(local_head, *args, "--resume")
    output = result.stdout + result.stderr
    printed.append(output)
    assert result.returncode == 0 and "succeeded" in output, output[-4000:]
    assert f"resuming sweep 'pytest-sweep' from {storage}/sweeps/pytest-sweep" in output
    assert ENV_SECRET not in output  # every process of the job has it in its environment

    client, parents, children = sweep_runs(local_head["mlflow"], "alexnet-sweeps")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # the same parent, resumed
    tags = parents[0].data.tags
    assert parents[0].info.status == "FINISHED"
    # Every run names the commit the jobs were submitted from, though their upload has no .git
    head_commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    for run in [*parents, *children]:
        assert run.data.tags["mlflow.source.git.commit"] == head_commit, run.data.tags
        assert run.data.tags["mlflow.source.type"] == "JOB"
        assert run.data.tags["mlflow.note.content"] == "the cluster test"
    assert tags["scheduler"] == "asha" and tags["search_algorithm"] == "random"
    assert "optim.lr" in tags["search_space"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"trials.csv", "plots"}
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/learning_curves.png" in plots and "plots/val_top1_error_vs_optim.lr.png" in plots

    # One run per trial, each epoch logged once; what was logged before the kill is kept as it
    # was (a finished trial did not run again), every trial's run finished
    assert len(children) == len({c.data.tags["trial_id"] for c in children}) == 3
    after = _histories(client, children)
    assert after.keys() >= before.keys()
    lrs = set()
    for child in children:
        run_id = child.info.run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id  # nested
        assert child.info.status == "FINISHED", (child.data.tags, output[-6000:])
        assert child.data.tags["cluster_cpus"] == "2"
        assert child.data.tags["last_checkpoint"].startswith(f"{storage}/sweeps/pytest-sweep/")
        lrs.add(child.data.params["optim.lr"])
        steps = [step for step, _ in after[run_id]]
        assert steps in ([1], [1, 2]), steps
        early = child.data.tags.get("early_stopped") == "true"
        assert early == (steps == [1])  # ASHA's stops are tagged, and only they
        assert after[run_id][: len(before.get(run_id, []))] == before.get(run_id, [])
        assert run_id not in finished or after[run_id] == before[run_id]
    assert len(lrs) == 3  # every trial drew its own learning rate
    # A trial that had logged epoch 1 before the kill and logs epoch 2 in the resumed job went on
    # from its checkpoint. (Which trials do depends on the timing: a trial's processes outlive
    # the killed driver by a moment, and may finish the epoch they were in.)
    went_on = [
        run_id
        for run_id, epochs in after.items()
        if before.get(run_id) and any(timestamp > resubmitted for _, timestamp in epochs)
    ]
    if went_on:
        assert re.search(r"resumed from the checkpoint of epoch [12] ", output), output[-4000:]
    assert any("system/cpu_utilization_percentage" in c.data.metrics for c in children)

    with psycopg.connect(postgres_server[0]) as db:  # the server's store is PostgreSQL
        params = db.execute("SELECT COUNT(DISTINCT run_uuid) FROM params WHERE key = 'optim.lr'")
        metrics = db.execute(
            "SELECT COUNT(DISTINCT run_uuid) FROM metrics WHERE key = 'val_top1_error' AND step > 0"
        )
        assert (params.fetchone()[0], metrics.fetchone()[0]) == (3, 3)

    lowest = min(child.data.metrics["val_top1_error"] for child in children)
    (best,) = [child for child in children if child.info.run_id == tags["best_run_id"]]
    assert parents[0].data.metrics["best_val_top1_error"] == lowest  # (trials may tie)
    assert best.data.metrics["val_top1_error"] == lowest

    # The best trial's model, registered under an alias, its files in the bucket, answers
    # encoded images (and uint8 arrays) with the top 5 of tiny_dataset's 5 classes
    version = client.get_model_version_by_alias("pytest-alexnet", "best")
    assert version.run_id == parent.info.run_id and version.tags["trial"] == tags["best_trial"]
    mlflow.set_tracking_uri(local_head["mlflow"])
    model = mlflow.pyfunc.load_model("models:/pytest-alexnet@best")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    encoded = []
    for image in images:
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG")
        encoded.append(png.getvalue())
    answered = model.predict(pd.DataFrame({"image": encoded}))
    assert len(answered) == 3 and all(len(set(labels)) == 5 for labels in answered["labels"])
    from_arrays = model.unwrap_python_model().predict(None, images)
    assert from_arrays["labels"].tolist() == answered["labels"].tolist()
    stored = _bucket_objects("")  # the artifacts, the sweep's Tune state, its trials
    assert any(key.startswith("mlartifacts/") and key.endswith("/MLmodel") for key in stored)
    assert any(key.startswith("mlartifacts/") and key.endswith("/trials.csv") for key in stored)
    assert not (local_head["state"] / "mlartifacts").exists()  # nothing beside the bucket

    # `report` as a job, given no tracking URI: the head's server is every job's default
    report = ray_job_submit(local_head, "report", "--sweep", "pytest-sweep", timeout=180)
    output = report.stdout + report.stderr
    assert report.returncode == 0 and "succeeded" in output, output[-3000:]
    printed.append(output)
    lines = report.stdout.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("trial "))) :]
    errors = [float(line.split()[4]) for line in table[1:4]]
    assert errors == sorted(errors)  # best first
    assert sum("plot: " in line for line in lines) == 4

    # `evaluate` takes the registered model: the checkpoint it came from scores as that trial did
    evaluated = run_cli(
        "evaluate",
        "--model",
        "models:/pytest-alexnet@best",
        "--set",
        f"tracking.uri={local_head['mlflow_with_password']}",
        env={"RAY_ADDRESS": ray_cluster, "PYTEST_SERVICE_SECRET_KEY": ENV_SECRET},
    )
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    printed += [evaluated.stdout, evaluated.stderr, *local_head["printed"]]
    (line,) = [x for x in evaluated.stdout.splitlines() if x.split()[:1] == ["val_top1_error"]]
    evaluated_error = float(line.split()[1])
    assert evaluated_error == pytest.approx(best.data.metrics["val_top1_error"], abs=0.011)

    # No secret anywhere: what the commands printed (the jobs' logs included), Ray's own logs
    # of both clusters, the whole MLflow store (PostgreSQL's files, every artifact's bytes in
    # the bucket) and the head's state folder (the server's log).
    secrets = (URI_SECRET, ENV_SECRET, postgres_server[1], os.environ["AWS_SECRET_ACCESS_KEY"])
    stores = [local_head["state"], Path(tempfile.gettempdir()) / "ray", postgres_server[2]]
    assert (_around(secrets, printed), _files_holding(secrets, stores)) == ([], [])
    assert [key for key, data in stored.items() if any(s.encode() in data for s in secrets)] == []


def _bucket_objects(prefix: str) -> dict[str, bytes]:
    """Every object in the test bucket under `prefix`: key -> bytes."""
    import boto3

    s3 = boto3.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET, Prefix=prefix)
    keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    return {key: s3.get_object(Bucket=S3_BUCKET, Key=key)["Body"].read() for key in keys}


def _around(secrets: tuple[str, ...], texts: list[str]) -> list[str]:
    """Each place a secret appears in `texts`, with the 150 characters before it."""
    return [
        text[max(0, i - 150) : i + 20]
        for text in texts
        for secret in secrets
        for i in [m.start() for m in re.finditer(re.escape(secret), text)]
    ]


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

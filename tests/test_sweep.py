"""Sweeps' search spaces: validated before Ray, sampled by Ray Tune (TPE, grid); a sweep stopped
by Ctrl-C and resumed beside a training, on the machine's one local Ray. The 3-trial ASHA sweep,
killed and resumed, runs as a Ray job in test_cluster.py."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import experiment_args, experiment_runs, interrupt_after_an_epoch, wait_for
from mlflow.tracking import MlflowClient

from orchestrator.common import processes
from orchestrator.common.errors import ConfigError
from orchestrator.common.paths import SWEEP_CONFIG
from orchestrator.config.experiment import load_config

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

    from orchestrator.config.sweep import SweepConfig
    from orchestrator.experiments.search import param_space, search_algorithm

    if search == "tpe":
        space = {
            "optim.lr": {"loguniform": (0.001, 0.1)},
            "model.dropout": {"uniform": (0.2, 0.7)},
            "optim.weight_decay": {"choice": (0.0, 0.0005)},
        }
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
        ),
        run_config=tune.RunConfig(name="shared", storage_path=str(tmp_path / "sweeps"), verbose=0),
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
    _another_kind_of_experiment_is_refused(tmp_path)


def _another_kind_of_experiment_is_refused(storage):
    """A sweep and a study share `<train.storage_path>/sweeps/<name>`: a study named like the
    sweep that saved its state there (here, the Tune run above, whose trials ran `trial`) is
    refused before any MLflow run or Ray work, naming both (it once restored the sweep's state
    and failed with a traceback)."""
    from orchestrator.common.paths import STUDY_CONFIG
    from orchestrator.experiments import tuning
    from orchestrator.experiments.study import run_study_trial

    assert tuning.saved_trainable(str(storage / "sweeps" / "shared")) == "trial"
    assert tuning.saved_trainable(str(storage / "sweeps" / "elsewhere")) is None
    config = load_config(STUDY_CONFIG, [f"train.storage_path={storage}"])
    for resume in (False, True):
        with pytest.raises(ConfigError, match="its trials run trial, a study's run run_study_t"):
            tuning.open_parent(config, "shared", "study", resume, run_study_trial)


def test_resume_runs_a_failed_trial_again(ray_cluster, tmp_path):
    """`--resume` goes on with the trials that failed, not only the unfinished ones (a trial
    that failed once used to stay out of the results for good)."""
    import ray.tune as tune

    from orchestrator.experiments import tuning
    from orchestrator.experiments.trials import CloseTrialRuns

    attempts = tmp_path / "attempts"
    attempts.mkdir()

    def flaky(config):
        (attempts / str(len(list(attempts.iterdir())))).touch()
        if len(list(attempts.iterdir())) == 1:
            raise RuntimeError("the first attempt fails")
        tune.report({"val_top1_error": 0.5})

    where = tuning.ExperimentFolders(str(tmp_path / "sweeps"), "flaky")
    tune_config = tune.TuneConfig(metric="val_top1_error", mode="min")
    callback = CloseTrialRuns("no-parent-run", epochs=1)  # no open sweep: closes nothing
    (failed,) = tuning.make_tuner("sweep", where, flaky, {}, tune_config, False, callback).fit()
    assert failed.error is not None
    (again,) = tuning.make_tuner("sweep", where, flaky, {}, tune_config, True, callback).fit()
    assert again.error is None and again.metrics["val_top1_error"] == 0.5
    assert len(list(attempts.iterdir())) == 2


def test_the_state_api_check_asks_the_cluster_this_process_joined(ray_cluster, monkeypatch):
    """It once asked whichever local Ray started last (Ray's auto-detection), and with two on
    the machine failed for the wrong one; now it asks the joined cluster's own dashboard."""
    from orchestrator.common import ray_cluster as cluster
    from orchestrator.experiments import tuning

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cluster.dashboard_url().startswith("http://127.0.0.1:")
    tuning.require_state_api()  # no error: the session's Ray serves it


def test_ctrl_c_on_a_sweep_summarises_nothing_and_resumed_beside_a_training_it_shares_ray(
    ray_cluster, tiny_prepared, tmp_path, start_cli, capsys
):
    """Ctrl-C once made Tune return as if done: the sweep summarised its half-trained trial,
    closed it FINISHED and early-stopped, registered its 1-epoch model as @best and exited 0,
    and --resume then never trained it. Now: exit 130, nothing kept as a result; a --resume
    with a changed seed is refused (it would pair two trainings in one table); the plain one
    trains the trial on from its checkpoint, every epoch once, and @best is its last epoch's.

    That resume runs beside a CLI training, both without RAY_ADDRESS: a sweep started while a
    training ran once started a second local Ray, both planning every CPU of the machine for
    themselves. Now the second joins the Ray the first started (`_side_by_side`)."""
    from orchestrator.run import main
    from orchestrator.training.checkpoints import read_checkpoint

    args = experiment_args(
        "sweep",
        "configs/sweep.yaml",
        tiny_prepared,
        tmp_path,
        "train.epochs=4",  # (its first takes longest: the Ctrl-C lands in the second or third)
        "sweep.name=ctrl-c",
        "sweep.num_samples=1",  # (ASHA: a lone trial is never stopped)
        "sweep.max_concurrent_trials=1",
        "sweep.space={optim.lr: {choice: [0.02]}}",
        "sweep.register_model=pytest-ctrl-c",
    )
    # A start that fails before any trial (its data not there yet) leaves no parent run in the
    # way: the same command, the data there, then runs (below) instead of being refused
    missing = tmp_path / "not-there-yet"
    assert main([*args, "--set", f"data.root={missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    store = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert experiment_runs(store, "alexnet-sweeps") == ([], [])
    env = {"RAY_ADDRESS": ray_cluster}
    client, _ = interrupt_after_an_epoch(start_cli, args, env, tmp_path, "alexnet-sweeps")

    capsys.readouterr()  # (refused before any trial: in this process, on the session's Ray)
    assert main([*args, "--resume", "--set", "seed=3"]) == 2
    assert "started as another experiment than this one (seed 0 -> 3)" in capsys.readouterr().err
    (parent,), _ = experiment_runs(client, "alexnet-sweeps")
    assert parent.info.status == "KILLED"  # as it was found

    training = experiment_args(  # 1 worker of 0.75 CPU: the trial's 0.7 fits beside it
        "train",
        "configs/demo.yaml",
        tiny_prepared,
        tmp_path,
        "train.epochs=2",
        "train.num_workers=1",
        "name=beside",
    )
    printed = _side_by_side(start_cli, tmp_path, {"train": training, "sweep": [*args, "--resume"]})
    assert "resumed from the checkpoint of epoch " in printed["sweep"]
    assert "TensorBoard" not in printed["sweep"]  # none here to offer
    (parent,), (trial,) = experiment_runs(client, "alexnet-sweeps")
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert trial.data.tags["early_stopped"] == "false"
    history = client.get_metric_history(trial.info.run_id, "val_top1_error")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    best = client.get_model_version_by_alias("pytest-ctrl-c", "best")
    assert int(best.version) == 1 and read_checkpoint(best.tags["checkpoint"])["epoch"] == 4
    (trained,) = client.search_runs([client.get_experiment_by_name("alexnet-demo").experiment_id])
    assert trained.info.run_name == "beside" and trained.info.status == "FINISHED"


# Samples a Ray's CPUs (all of them; those requested by running tasks, actors and placement
# groups) and the drivers connected to it, every 0.3 s, as JSON lines.
POLLER = """
import json, sys, time
import ray
from ray.util.state import list_jobs

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
with open(sys.argv[2], "a") as out:  # sys.argv[3]: its dashboard (State API)
    while True:
        total = ray.cluster_resources().get("CPU", 0)
        used = total - ray.available_resources().get("CPU", 0)
        jobs = list_jobs(sys.argv[3], filters=[("status", "=", "RUNNING")])
        drivers = [int(job.driver_info.pid) for job in jobs if job.driver_info]
        out.write(json.dumps({"total": total, "used": used, "drivers": drivers}) + "\\n")
        out.flush()
        time.sleep(0.3)
"""


def _side_by_side(start_cli, tmp_path, commands: dict[str, list[str]]) -> dict[str, str]:
    """Runs `commands` ({name: run.py arguments}, a training's 0.75 CPU and a trial's 0.7) at
    once, without RAY_ADDRESS, and checks that they shared one local Ray: both finish; Ray's
    state, read while both run, shows both drivers on it at once, training together, its CPU
    requests never past the machine's CPUs; the one that came second says it joined; the
    last one out stopped it. Returns what each printed."""
    home = tmp_path / "home"  # (the machine's local Ray: this test's own)
    env = {"ALEXNET_RAY_HOME": str(home), "RAY_ADDRESS": ""}  # (not the session's Ray)
    logs = {name: tmp_path / f"{name}.log" for name in commands}
    drivers = {name: start_cli(*args, env=env, log=logs[name]) for name, args in commands.items()}
    first = next(iter(drivers.values()))
    marker = home / "local-ray" / socket.gethostname() / "head.json"
    wait_for(first, lambda: marker.exists() and marker.stat().st_size, "the local Ray")
    head = json.loads(marker.read_text())
    samples = tmp_path / "samples.jsonl"
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, head["address"], str(samples), head["dashboard"]],
        env={**os.environ, "RAY_AUTH_MODE": "token"},
        stdout=open(tmp_path / "poller.log", "w"),  # noqa: SIM115 - lives with it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:  # until one of them ends (a driver still joined would hold the head's stop back)
        deadline = time.monotonic() + 400
        while all(d.poll() is None for d in drivers.values()) and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        os.killpg(poller.pid, signal.SIGKILL)
        poller.wait()
    for name, driver in drivers.items():
        assert driver.wait(timeout=400) == 0, logs[name].read_text()[-4000:]

    seen = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    both = [s for s in seen if {d.pid for d in drivers.values()} <= set(s["drivers"])]
    assert both, f"never both drivers on the one Ray: {seen[:5]}"
    assert max(s["used"] for s in both) >= 0.75 + 0.7  # they trained on it at once
    assert all(0 <= s["used"] <= s["total"] <= os.cpu_count() for s in seen), seen
    printed = {name: log.read_text() for name, log in logs.items()}
    assert (
        sum("started a local Ray for this machine's commands" in p for p in printed.values()) == 1
    )
    assert sum("joining the machine's local Ray" in p for p in printed.values()) == 1
    for output in printed.values():  # (the session's Ray runs beside: Ray Train's placement
        # group cleaner once asked "the" Ray on the machine and failed; Tune missed its files)
        assert "Found multiple active Ray instances" not in output
        assert "Traceback" not in output and "Failed to fetch metrics" not in output
    assert not marker.exists()  # the last one out stopped the Ray
    assert processes.until(lambda: not processes.alive(head["pid"]), 10, 0.2)
    return printed


def test_a_trial_is_called_early_stopped_only_under_a_scheduler_that_stops_trials(tmp_path):
    """Under fifo (nothing stops a trial) a trial that ended short was once tagged early-stopped
    (an interrupted one, closed as if done); only ASHA's are now."""
    from orchestrator.experiments.trials import close_trial_run
    from orchestrator.tracking.config import TrackingConfig
    from orchestrator.tracking.run import TrackedRun

    config = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", buffer_dir=str(tmp_path))
    parent = TrackedRun(config, "sweep-short")
    trial = TrackedRun(config, "short", parent_run_id=parent.run_id)
    trial.log_metrics({"val_top1_error": 0.5}, step=1)
    for stops_early, tagged in ((False, "false"), (True, "true")):
        close_trial_run(parent, trial.run_id, 4, failed=False, stops_early=stops_early)
        assert trial.record().tags["early_stopped"] == tagged


def test_a_dry_run_of_a_sweep_and_of_a_study_prints_their_plans_and_does_nothing(
    ray_cluster, tiny_prepared, tmp_path, capsys
):
    """`sweep --dry-run` and `study --dry-run`: their trials and each one's share of the
    cluster, the data, where Tune's state goes and whether it is new; nothing tracked, stored,
    prepared or trained."""
    from orchestrator.run import main

    sweep = experiment_args("sweep", "configs/sweep.yaml", tiny_prepared, tmp_path)
    assert main([*sweep, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "plan of sweep 'lr-wd-dropout' (--dry-run: nothing is prepared, tracked or" in printed
    assert (
        "trials: 8 (random search, asha scheduler), 2 at a time; each 1 x 0.7 CPU and up to "
        in (printed)
    )
    assert "(400 training / 100 validation images of 64 px, 5 classes)" in printed
    assert "batch 32 per worker (32 global), 12 steps per epoch, 4 epochs" in printed
    assert f"{tmp_path / 'results' / 'sweeps' / 'lr-wd-dropout'}: a new Tune experiment" in printed
    assert "MLflow: a new parent run, experiment 'alexnet-sweeps'" in printed

    study = experiment_args("study", "configs/paper-ablations.yaml", tiny_prepared, tmp_path)
    assert main([*study, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "trials: 14 (7 groups x 2 seeds), 2 at a time" in printed
    assert "sweeps/paper-ablations: a new Tune experiment" in printed
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()

"""Sweeps' search spaces: validated before Ray, sampled by Ray Tune (TPE, grid); a sweep stopped
by Ctrl-C and resumed. The 3-trial ASHA sweep, killed and resumed, runs as a Ray job in
test_cluster.py."""

import pytest
from conftest import experiment_args, experiment_runs, interrupt_after_an_epoch
from mlflow.tracking import MlflowClient

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


def test_ctrl_c_on_a_sweep_summarises_nothing_and_resume_trains_the_trial_to_its_end(
    ray_cluster, tiny_prepared, tmp_path, start_cli, run_cli, capsys
):
    """Ctrl-C once made Tune return as if done: the sweep summarised its half-trained trial,
    closed it FINISHED and early-stopped, registered its 1-epoch model as @best and exited 0,
    and --resume then never trained it. Now: exit 130, nothing kept as a result; a --resume
    with a changed seed is refused (it would pair two trainings in one table); the plain one
    trains the trial on from its checkpoint, every epoch once, and @best is its last epoch's."""
    from orchestrator.run import main
    from orchestrator.training.checkpoints import read_checkpoint

    args = experiment_args(
        "sweep",
        "configs/sweep.yaml",
        tiny_prepared,
        tmp_path,
        "train.epochs=4",  # (its first takes longest: the Ctrl-C lands in the second or third)
        "sweep.name=ctrl-c",
        "sweep.scheduler=fifo",
        "sweep.num_samples=1",
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

    resumed = run_cli(*args, "--resume", env=env)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    assert "resumed from the checkpoint of epoch " in resumed.stdout + resumed.stderr
    assert "TensorBoard" not in resumed.stdout + resumed.stderr  # none here to offer
    (parent,), (trial,) = experiment_runs(client, "alexnet-sweeps")
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert trial.data.tags["early_stopped"] == "false"
    history = client.get_metric_history(trial.info.run_id, "val_top1_error")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    best = client.get_model_version_by_alias("pytest-ctrl-c", "best")
    assert int(best.version) == 1 and read_checkpoint(best.tags["checkpoint"])["epoch"] == 4


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

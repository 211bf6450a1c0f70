"""A run resumed by name must be the same training, with its checkpoints: otherwise refused
(naming what differs), unless train.resume_changed says so; the MLflow run is left as found."""

import dataclasses
import json
from pathlib import Path

import pytest

from orchestrator.common.errors import ConfigError
from orchestrator.common.paths import DEMO_CONFIG
from orchestrator.config.experiment import load_config
from orchestrator.tracking.config import TrackingConfig
from orchestrator.tracking.run import TrackedRun
from orchestrator.training import identity, launch
from orchestrator.training.checkpoints import newest_checkpoint
from orchestrator.training.config import WorkerPlan


def _job(tmp_path, *overrides):
    config = load_config(DEMO_CONFIG, ["name=same", "model.num_classes=10", *overrides])
    fields = identity.training_fields(config, data_key="prepared-key-1")
    plan = WorkerPlan(
        model=config.model,
        optim=config.optim,
        train=config.train,
        transform=None,
        steps_per_epoch=1,
        prefetch_batches=1,
        shuffle_rows=0,
        pin_memory=False,
        feed=None,
        seed=0,
        config_yaml="",
        training_digest=identity.digest(fields),
        training_fields=fields,
        run_folder=str(tmp_path / "results" / "same"),
    )
    return launch.TrainingJob(config, data=None, use_gpu=False, plan=plan, datasets={})


def _check_resume(job, run):
    identity.check_resume(job.plan, job.config.name, run)


def _store_checkpoint(job, epoch: int, name: str, complete: bool = True, report=None):
    folder = Path(job.plan.run_folder) / name
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x" * 100)
    files = {"checkpoint.pt": 100 if complete else 200}  # a copy cut short: sizes differ
    meta = {
        "epoch": epoch,
        "training_digest": job.plan.training_digest,
        "training_fields": job.plan.training_fields,
        "files": files,
    }
    if report is not None:
        meta["report"] = report
    (folder / "meta.json").write_text(json.dumps(meta))


def _tracked(tmp_path, job, last_checkpoint_epoch=None):
    config = TrackingConfig(
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        experiment="resume",
        buffer_dir=str(tmp_path / "buffer"),
    )
    run = TrackedRun(config, "same", resume=True)
    tags = dict(job.identity_tags)
    if last_checkpoint_epoch is not None:
        tags["last_checkpoint"] = "/somewhere"
        tags["last_checkpoint_epoch"] = last_checkpoint_epoch
    run.log_start("train", params={}, config_yaml="", extra_tags=tags)
    run.finish("FINISHED")
    return TrackedRun(config, "same", resume=True)


def test_newest_complete_checkpoint_wins(tmp_path):
    job = _job(tmp_path)
    _store_checkpoint(job, 1, "checkpoint_a")
    _store_checkpoint(job, 3, "checkpoint_b")
    _store_checkpoint(job, 4, "checkpoint_c", complete=False)  # never counts
    (tmp_path / "results" / "same" / "checkpoint_d").mkdir()  # no meta.json yet
    assert newest_checkpoint(job.plan.run_folder).epoch == 3


def test_resume_with_changed_fields_is_refused_unless_asked_for(tmp_path, capsys):
    first = _job(tmp_path)
    _store_checkpoint(first, 2, "checkpoint_a")
    changed = _job(tmp_path, "optim.lr=0.02", "model.dropout=0.3", "train.epochs=9")
    with pytest.raises(ConfigError) as error:
        _check_resume(changed, _tracked(tmp_path, first, 2))
    message = str(error.value)
    assert "resuming 'same' with another training than its checkpoint of epoch 2" in message
    assert "model.dropout 0.5 -> 0.3; optim.lr 0.01 -> 0.02" in message  # not train.epochs
    assert "train.resume_changed: true" in message

    again = _tracked(tmp_path, first, 2)
    allowed = _job(tmp_path, "optim.lr=0.02", "model.dropout=0.3", "train.resume_changed=true")
    _check_resume(allowed, again)
    assert "with changed training fields (train.resume_changed)" in capsys.readouterr().err

    longer = _job(tmp_path, "train.epochs=9", "train.num_workers=1", "data.decode_cpus=0.5")
    _check_resume(longer, _tracked(tmp_path, first, 2))  # same training, more epochs
    cosine = identity.training_fields(_job(tmp_path, "optim.schedule.kind=cosine").config, "k")
    longer_cosine = _job(tmp_path, "optim.schedule.kind=cosine", "train.epochs=9").config
    changed = identity.differences(cosine, identity.training_fields(longer_cosine, "k"))
    assert changed == {"train.epochs": (5, 9)}  # the cosine curve spans the planned epochs


def test_other_data_is_another_training(tmp_path):
    first = _job(tmp_path)
    _store_checkpoint(first, 1, "checkpoint_a")
    fields = identity.training_fields(first.config, data_key="prepared-key-2")
    other = dataclasses.replace(first, plan=dataclasses.replace(first.plan, training_fields=fields))
    with pytest.raises(ConfigError, match="data.prepared_key 'prepared-key-1' -> 'prepared-key-2'"):
        _check_resume(other, _tracked(tmp_path, first, 1))


def test_a_history_whose_checkpoints_are_gone_is_refused_and_left_as_found(tmp_path):
    job = _job(tmp_path)
    run = _tracked(tmp_path, job, last_checkpoint_epoch=3)  # MLflow: epochs up to 3
    with pytest.raises(ConfigError) as error:
        _check_resume(job, run)  # the storage holds no checkpoint
    assert "holds epochs up to 3 with a checkpoint" in str(error.value)
    assert "none is there: deleted, or storage_path changed" in str(error.value)
    assert run.record().status == "FINISHED"  # not left RUNNING


def test_checkpoint_location_and_epoch_are_separate_tags():
    from orchestrator.tracking.tags import read_last_checkpoint as last_checkpoint

    tags = {"last_checkpoint": "s3://b/results/r/checkpoint_1", "last_checkpoint_epoch": "4"}
    assert last_checkpoint(tags) == ("s3://b/results/r/checkpoint_1", 4)
    old_format = {"last_checkpoint": "/r/checkpoint_1 (epoch 2)"}  # runs logged before
    assert last_checkpoint(old_format) == ("/r/checkpoint_1", 2)
    assert last_checkpoint({}) == (None, 0)


def test_a_new_run_does_not_adopt_checkpoints_that_no_mlflow_run_records(tmp_path, capsys):
    """The same `name` in another MLflow experiment (or after deleting mlflow.db) once
    "resumed" from the other training's checkpoint in the shared folder, trained nothing and
    showed its history. A new MLflow run now refuses such a folder (and deletes the run it just
    made), unless train.resume_unrecorded asks to continue from it."""
    job = _job(tmp_path)
    _store_checkpoint(job, 2, "checkpoint_a")
    config = TrackingConfig(
        uri=f"sqlite:///{tmp_path / 'other.db'}", experiment="other", buffer_dir=str(tmp_path)
    )
    new = TrackedRun(config, "same", resume=True)
    assert not new.resumed
    with pytest.raises(ConfigError) as error:
        _check_resume(job, new)
    assert "holds checkpoints of 'same' (up to epoch 2) that no MLflow run of this name" in str(
        error.value
    )
    assert new.store.search([new.experiment_id], "") == []  # the refused run is gone

    asked = _job(tmp_path, "train.resume_unrecorded=true")
    _check_resume(asked, TrackedRun(config, "same", resume=True))
    assert "continues from the checkpoint of epoch 2 that no MLflow run records" in (
        capsys.readouterr().err  # a warning: diagnostics go to stderr
    )


def test_a_restarted_worker_never_loads_a_checkpoint_of_another_training(tmp_path):
    """A worker group restarted by Ray Train took the newest checkpoint in its folder whatever
    training wrote it, and so did the figures. Now the checkpoint must carry the run's training
    digest (train.resume_changed: the driver let a changed training continue on purpose)."""
    from orchestrator.training.checkpoints import checkpoint_to_resume

    mine = _job(tmp_path)
    _store_checkpoint(mine, 1, "checkpoint_a")
    other = _job(tmp_path, "optim.lr=0.02")
    _store_checkpoint(other, 2, "checkpoint_b")
    with pytest.raises(RuntimeError, match="checkpoint_b: a checkpoint of another training"):
        checkpoint_to_resume(mine.plan)
    changed = dataclasses.replace(
        mine.plan, train=dataclasses.replace(mine.plan.train, resume_changed=True)
    )
    _, where = checkpoint_to_resume(changed)
    assert where.endswith("checkpoint_b")
    assert newest_checkpoint(mine.plan.run_folder, mine.plan.training_digest).epoch == 1


def test_a_second_driver_of_a_live_run_is_refused_and_default_names_differ(
    tmp_path, tiny_train_args, run_cli
):
    """Two drivers with one `name`: the second once adopted the first's RUNNING MLflow run and
    its checkpoint folder; and default names, per second, put two runs started in the same
    second into one folder. A driver now holds a lock in its run's folder (here held by this
    process, as a live driver holds it) and default names end in random digits."""
    from orchestrator.common.locks import sole_driver
    from orchestrator.experiments.training_run import default_run_name

    with sole_driver(str(tmp_path / "results" / "busy"), "name", "run 'busy'"):
        refused = run_cli(*tiny_train_args("name=busy"))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "config error: name: run 'busy' is running in another driver (held by" in (
        refused.stderr
    )
    assert not (tmp_path / "mlflow.db").exists()  # refused before any MLflow run

    config = load_config(DEMO_CONFIG)
    names = {default_run_name(config) for _ in range(20)}
    assert len(names) == 20 and all(n.startswith("alexnet-") for n in names)


def test_a_dry_run_prints_the_plan_and_does_nothing(ray_cluster, tiny_train_args, tmp_path, capsys):
    """`train --dry-run`: the workers and what is left for Ray Data, the data with its steps per
    epoch, where checkpoints go and whether the run is new; nothing tracked, stored or trained."""
    from orchestrator.run import main

    args = tiny_train_args("name=planned", "train.epochs=3")
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "plan of run 'planned' (--dry-run: nothing is prepared, tracked or trained)" in printed
    assert "workers: 2 x 0.75 CPU (no GPU), parallel data; Ray Data: up to 0.5 of the" in printed
    assert "(400 training / 100 validation images of 64 px, 5 classes), decoded by the worker" in (
        printed
    )
    assert "batch 16 per worker (32 global), 12 steps per epoch, 3 epochs" in printed
    assert f"checkpoints: {tmp_path / 'results' / 'planned'}" in printed
    assert "MLflow: a new MLflow run, experiment 'alexnet-demo'" in printed
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()


def test_epochs_whose_reports_never_reached_mlflow_are_logged_from_their_checkpoints(
    tmp_path, capsys
):
    """Ctrl-C: Ray Train aborts the run, but its workers finish an epoch or two meanwhile and
    store their checkpoints, whose reports never reach MLflow; the restart then resumed from
    the newest and left the epochs in between out of the history (epochs [1, 3, 4] of 4). Now a
    run logs the epochs its checkpoints hold before it goes on, and names those none holds."""
    from orchestrator.experiments.training_run import log_unreported_epochs
    from orchestrator.tracking.metrics import EpochMetrics

    def report(epoch):
        values = dict.fromkeys(("train_loss", "train_top1_error", "val_loss"), 0.5)
        values.update(val_top1_error=0.1 * epoch, val_top5_error=0.0, lr=0.01, lr_drops=0)
        values.update(images_per_second=100.0, data_wait_fraction=0.1, epoch_seconds=1.0)
        return EpochMetrics(epoch=epoch, **values).as_report()

    job = _job(tmp_path)
    run = _tracked(tmp_path, job)
    run.log_metrics(EpochMetrics.from_report(report(1)).logged(), step=1)
    for epoch in (2, 4):  # epoch 3's checkpoint was removed (train.keep_checkpoints)
        _store_checkpoint(job, epoch, f"checkpoint_{epoch}", report=report(epoch))
    other = _job(tmp_path, "optim.lr=0.02")  # another training's: never read
    _store_checkpoint(other, 5, "checkpoint_5", report=report(5))
    log_unreported_epochs(run, job.plan)
    history = dict(run.history("val_top1_error"))
    assert history == pytest.approx({1: 0.1, 2: 0.2, 4: 0.4})
    assert run.record().last_checkpoint[1] == 4
    printed = capsys.readouterr()
    assert "epoch   2  train loss 0.5000" in printed.out and "never reached MLflow" in printed.out
    assert "epochs 3 were trained, but neither MLflow nor a kept checkpoint holds" in printed.err
